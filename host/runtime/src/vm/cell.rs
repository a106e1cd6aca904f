//! A VM's slot and what every VM of a plugin shares. A VM's store data points back at both
//! (timers, `http_call` answers and queues re-enter the VM through its slot), and the slot holds
//! the VM, so they live beside the VM. A VM whose guest call traps, runs out of time or out of
//! memory is failed for good; only `FailReload` builds a new one in its slot, when a stream
//! arrives after the backoff (Envoy's `PluginConfig::maybeReloadHandleIfNeeded`,
//! `source/extensions/common/wasm/wasm.cc`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::{InstancePre, Trap};

use super::{StartError, Vm, VmState};
use crate::context::StreamCtx;
use crate::host_state::RuntimeShared;
use crate::shared::QueueReady;
use crate::spec::PluginCounters;
use crate::{FailurePolicy, HostServices, HttpCallResponse, PluginSpec};

/// What every VM of a plugin shares.
pub(crate) struct PluginShared {
    pub(crate) spec: PluginSpec,
    pub(crate) runtime: Arc<RuntimeShared>,
    /// The clusters its `http_call`s and gRPC calls reach.
    pub(crate) services: Arc<dyn HostServices>,
    /// The callback deadline in epoch ticks.
    pub(crate) deadline_ticks: u64,
    pub(crate) counters: Arc<PluginCounters>,
}

/// One VM slot. The lock is held for the length of one guest call and never across an await.
pub(crate) struct VmCell {
    pub(crate) plugin: Arc<PluginShared>,
    pre: InstancePre<VmState>,
    slot: Mutex<VmSlot>,
}

pub(crate) struct VmSlot {
    /// `None` once the VM failed: streams then follow the plugin's failure policy.
    pub(crate) vm: Option<Vm>,
    /// Bumped whenever the VM fails or a new one starts, so work begun for an older VM (a
    /// paused stream, a tick, an `http_call` answer) finds it gone.
    pub(crate) generation: u64,
    /// When the last VM was started (or a reload tried), for the reload backoff; Envoy keeps
    /// this `last_load` per worker handle.
    last_load: Instant,
    /// Stream contexts of a VM that died, kept (with any maps they held) until their stream
    /// comes back for them.
    pub(crate) orphans: HashMap<(u64, u32), StreamCtx>,
}

impl VmCell {
    pub(crate) fn new(
        plugin: Arc<PluginShared>,
        pre: InstancePre<VmState>,
    ) -> Result<Arc<VmCell>, StartError> {
        let cell = Arc::new(VmCell {
            plugin,
            pre,
            slot: Mutex::new(VmSlot {
                vm: None,
                generation: 0,
                last_load: Instant::now(),
                orphans: HashMap::new(),
            }),
        });
        let vm = cell.start(0)?;
        cell.lock().vm = Some(vm);
        Ok(cell)
    }

    fn start(self: &Arc<Self>, generation: u64) -> Result<Vm, StartError> {
        let state = VmState::new(Arc::clone(&self.plugin), Arc::downgrade(self), generation);
        Vm::start(&self.pre, state)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VmSlot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn name(&self) -> &str {
        &self.plugin.spec.name
    }

    /// A guest call failed: the VM is dropped and never called again (proxy-wasm-cpp-host marks
    /// it `FailState::RuntimeError`; every later callback finds it failed). Its stream
    /// contexts are kept as orphans for their streams to collect, and those streams are woken.
    pub(crate) fn fail(self: &Arc<Self>, slot: &mut VmSlot, err: &wasmtime::Error) {
        let why = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => "callback deadline exceeded".to_owned(),
            Some(trap) => format!("trap: {trap}"),
            None => format!("{err:#}"),
        };
        // Envoy's `Wasm::error` logs "Wasm VM failed {message}" at error level.
        log::error!("wasm plugin {}: Wasm VM failed ({why})", self.name());
        let old_generation = slot.generation;
        if let Some(vm) = slot.vm.take() {
            let mut store = vm.store;
            for (id, ctx) in store.data_mut().streams.drain() {
                ctx.notify.notify_one();
                slot.orphans.insert((old_generation, id), ctx);
            }
        }
        slot.generation += 1;
        self.plugin
            .counters
            .vm_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A new stream found the VM failed: under `FailReload`, once the backoff since the last
    /// load has passed, start a new VM (start-up and `on_configure` again). True if the slot
    /// has a VM afterwards. As Envoy, each attempt restarts the backoff, whether it worked or
    /// not, and counts `vm_reload_backoff`, `vm_reload_success` or `vm_reload_failure`.
    pub(crate) fn reload_if_due(self: &Arc<Self>, slot: &mut VmSlot) -> bool {
        if slot.vm.is_some() {
            return true;
        }
        let FailurePolicy::FailReload { base_interval } = self.plugin.spec.failure_policy else {
            return false;
        };
        let counters = &self.plugin.counters;
        let now = Instant::now();
        if now.duration_since(slot.last_load) < jittered(base_interval) {
            counters.vm_reload_backoff.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        slot.last_load = now;
        slot.generation += 1;
        match self.start(slot.generation) {
            Ok(vm) => {
                slot.vm = Some(vm);
                counters.vm_reload_success.fetch_add(1, Ordering::Relaxed);
                log::info!("wasm plugin {}: failed VM reloaded", self.name());
                true
            }
            Err(err) => {
                counters.vm_reload_failure.fetch_add(1, Ordering::Relaxed);
                log::error!("wasm plugin {}: cannot reload the VM: {err}", self.name());
                false
            }
        }
    }

    /// Run `f` on the VM if it is still the generation the async work was started for.
    fn with_vm(
        self: &Arc<Self>,
        generation: u64,
        f: impl FnOnce(&mut Vm) -> wasmtime::Result<()>,
    ) -> bool {
        let mut slot = self.lock();
        if slot.generation != generation {
            return false;
        }
        let Some(vm) = slot.vm.as_mut() else {
            return false;
        };
        match f(vm) {
            Ok(()) => true,
            Err(err) => {
                self.fail(&mut slot, &err);
                false
            }
        }
    }

    /// One tick; false once the ticker is stale (period changed or VM rebuilt).
    pub(crate) fn deliver_tick(self: &Arc<Self>, generation: u64, epoch: u64) -> bool {
        let mut current = true;
        let delivered = self.with_vm(generation, |vm| {
            current = vm.store.data().tick_epoch == epoch;
            if current { vm.on_tick() } else { Ok(()) }
        });
        delivered && current
    }

    pub(crate) fn deliver_http_call_response(
        self: &Arc<Self>,
        generation: u64,
        token: u32,
        response: Option<HttpCallResponse>,
    ) {
        self.with_vm(generation, |vm| vm.on_http_call_response(token, response));
    }

    pub(crate) fn deliver_grpc(
        self: &Arc<Self>,
        generation: u64,
        token: u32,
        callback: crate::grpc::Callback,
    ) {
        self.with_vm(generation, |vm| vm.on_grpc(token, callback));
    }
}

impl QueueReady for VmCell {
    fn queue_ready(self: Arc<Self>, generation: u64, token: u32) {
        self.with_vm(generation, |vm| vm.on_queue_ready(token));
    }
}

/// One backoff interval: a random value in `[base, 1.5 × base)`, as Envoy's
/// `JitteredLowerBoundBackOffStrategy::nextBackOffMs` (`source/common/common/backoff_strategy.cc`)
/// draws it for every reload check.
fn jittered(base: Duration) -> Duration {
    let spread = base / 2;
    if spread.is_zero() {
        return base;
    }
    let mut bytes = [0u8; 8];
    // Without randomness the lower bound is still a correct backoff.
    if getrandom::fill(&mut bytes).is_err() {
        return base;
    }
    let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
    base + Duration::from_nanos(u64::from_le_bytes(bytes) % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_interval_lies_between_the_base_and_one_and_a_half_times_it() {
        let base = Duration::from_millis(200);
        for _ in 0..100 {
            let interval = jittered(base);
            assert!(interval >= base && interval < base * 3 / 2, "{interval:?}");
        }
        assert_eq!(jittered(Duration::from_nanos(1)), Duration::from_nanos(1));
    }
}
