//! `proxy_log` and `proxy_get_log_level`: guest logs go to the `log` crate as Envoy writes
//! them: `wasm log<prefix>: <message>` (source/extensions/common/wasm/context.cc,
//! `Context::log`), where the prefix is proxy-wasm-cpp-host's (src/context.cc): on a stream
//! ` <plugin name> <root_id> <vm_id>` (`PluginBase::makeLogPrefix`), on the root context
//! ` <root_id> <vm_id>` (`ContextBase::makeRootLogPrefix`), each part left out when empty.

use log::{Level, LevelFilter};
use wasmtime::Linker;

use super::memory::{read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::CRITICAL_LOG_TARGET;
use crate::vm::VmState;

/// Log target of every guest log line.
pub(crate) const TARGET: &str = "wasm";

/// A Proxy-Wasm log level: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestLevel {
    Level(Level),
    Critical,
}

impl From<Level> for GuestLevel {
    fn from(level: Level) -> GuestLevel {
        GuestLevel::Level(level)
    }
}

fn level(value: u32) -> Option<GuestLevel> {
    Some(GuestLevel::Level(match value {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        5 => return Some(GuestLevel::Critical),
        _ => return None,
    }))
}

pub(crate) fn guest_log(state: &VmState, level: impl Into<GuestLevel>, message: &[u8]) {
    let message = String::from_utf8_lossy(message);
    let spec = &state.plugin.spec;
    let mut prefix = String::new();
    // The effective context is a stream's during its callbacks, else the root context's.
    let parts = if state.stream().is_some() {
        [
            spec.name.as_str(),
            spec.root_id.as_str(),
            spec.vm_id.as_str(),
        ]
    } else {
        ["", spec.root_id.as_str(), spec.vm_id.as_str()]
    };
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        prefix.push(' ');
        prefix.push_str(part);
    }
    match level.into() {
        GuestLevel::Level(level) => log::log!(target: TARGET, level, "wasm log{prefix}: {message}"),
        GuestLevel::Critical => {
            log::log!(target: CRITICAL_LOG_TARGET, Level::Error, "wasm log{prefix}: {message}");
        }
    }
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
