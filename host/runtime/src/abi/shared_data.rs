//! `proxy_get_shared_data` and `proxy_set_shared_data`.

use wasmtime::Linker;

use super::memory::{copy_out, read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::vm::VmState;

fn get(caller: &mut Caller<'_>, key: (u32, u32), out: (u32, u32), cas_ptr: u32) -> AbiResult {
    let key = read(caller, key.0, key.1)?;
    let plugin = &caller.data().plugin;
    let (value, cas) = plugin
        .runtime
        .shared_data
        .get(&plugin.spec.vm_id, &key)
        .ok_or(Status::NotFound)?;
    copy_out(caller, &value, out.0, out.1)?;
    write_u32(caller, cas_ptr, cas)
}

fn set(caller: &mut Caller<'_>, key: (u32, u32), value: (u32, u32), cas: u32) -> AbiResult {
    let key = read(caller, key.0, key.1)?;
    let value = read(caller, value.0, value.1)?;
    let plugin = &caller.data().plugin;
    plugin
        .runtime
        .shared_data
        .set(&plugin.spec.vm_id, &key, value, cas)?;
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_>, kp: u32, ks: u32, vpp: u32, vsp: u32, cas_ptr: u32| {
            status(get(&mut c, (kp, ks), (vpp, vsp), cas_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_>, kp: u32, ks: u32, vp: u32, vs: u32, cas: u32| {
            status(set(&mut c, (kp, ks), (vp, vs), cas))
        },
    )?;
    Ok(())
}
