//! `proxy_set_tick_period_milliseconds` and `proxy_get_current_time_nanoseconds`.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval_at};
use wasmtime::Linker;

use super::memory::write_u64;
use super::{AbiResult, Caller, status};
use crate::vm::VmState;

/// Ticks belong to the VM's root context; a new period replaces the old one, 0 stops them,
/// and the first tick comes one period after the call.
fn set_tick_period(state: &mut VmState, millis: u32) {
    let period = Duration::from_millis(u64::from(millis));
    state.tick_period = period;
    state.tick_epoch += 1;
    if period.is_zero() {
        return;
    }
    let cell = state.cell.clone();
    let (generation, epoch) = (state.generation, state.tick_epoch);
    state.plugin.runtime.handle.spawn(async move {
        let mut ticks = interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(cell) = cell.upgrade() else { return };
            if !cell.deliver_tick(generation, epoch) {
                return;
            }
        }
    });
}

/// The runtime's clock: the system's, or the one its embedding sets (see `clock`).
pub(super) fn now_nanos(caller: &Caller<'_>) -> u64 {
    caller.data().plugin.runtime.clock.now_nanos()
}

fn current_time(caller: &mut Caller<'_>, ptr: u32) -> AbiResult {
    let now = now_nanos(caller);
    write_u64(caller, ptr, now)
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_>, ms: u32| {
            set_tick_period(c.data_mut(), ms);
            0u32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_>, ptr: u32| status(current_time(&mut c, ptr)),
    )?;
    Ok(())
}
