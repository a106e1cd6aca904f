//! `proxy_log` and `proxy_get_log_level`: guest logs go to the `log` crate, tagged with the
//! plugin name as Envoy tags them (`wasm log <plugin>: <message>`).

use log::{Level, LevelFilter};
use wasmtime::Linker;

use super::memory::{read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::vm::VmState;

/// Log target of every guest log line.
pub(crate) const TARGET: &str = "wasm";

/// Proxy-Wasm levels: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
fn level(value: u32) -> Option<Level> {
    Some(match value {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 | 5 => Level::Error,
        _ => return None,
    })
}

pub(crate) fn guest_log(state: &VmState, level: Level, message: &[u8]) {
    let message = String::from_utf8_lossy(message);
    log::log!(target: TARGET, level, "wasm log {}: {message}", state.plugin.spec.name);
}

fn proxy_log(caller: &Caller<'_>, lvl: u32, msg: (u32, u32)) -> AbiResult {
    let lvl = level(lvl).ok_or(Status::BadArgument)?;
    let message = read(caller, msg.0, msg.1)?;
    guest_log(caller.data(), lvl, &message);
    Ok(())
}

fn current_level() -> u32 {
    match log::max_level() {
        LevelFilter::Trace => 0,
        LevelFilter::Debug => 1,
        LevelFilter::Info => 2,
        LevelFilter::Warn => 3,
        LevelFilter::Error => 4,
        LevelFilter::Off => 5,
    }
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |c: Caller<'_>, lvl: u32, p: u32, s: u32| status(proxy_log(&c, lvl, (p, s))),
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_>, ptr: u32| status(write_u32(&mut c, ptr, current_level())),
    )?;
    Ok(())
}
