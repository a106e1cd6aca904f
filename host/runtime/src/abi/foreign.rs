//! `proxy_call_foreign_function`. The one function Envoy (1.33+) offers HTTP filters that a
//! gateway can honour is `clear_route_cache`: it takes no arguments, returns nothing and
//! answers OK in every phase. Unknown names are `NOT_FOUND`.

use wasmtime::Linker;

use super::memory::{read, read_string, write_u32};
use super::stream_control::clear_route_cache;
use super::{AbiResult, Caller, Status, status};
use crate::vm::VmState;

fn call(
    caller: &mut Caller<'_>,
    name: (u32, u32),
    args: (u32, u32),
    results: (u32, u32),
) -> AbiResult {
    let name = read_string(caller, name.0, name.1)?;
    read(caller, args.0, args.1)?;
    if name != "clear_route_cache" {
        return Err(Status::NotFound.into());
    }
    clear_route_cache(caller.data_mut());
    // No results: pointer and size 0 (written only where the guest asked for them).
    if results.0 != 0 {
        write_u32(caller, results.0, 0)?;
    }
    if results.1 != 0 {
        write_u32(caller, results.1, 0)?;
    }
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Caller<'_>, np: u32, ns: u32, ap: u32, asz: u32, rp: u32, rs: u32| {
            status(call(&mut c, (np, ns), (ap, asz), (rp, rs)))
        },
    )?;
    Ok(())
}
