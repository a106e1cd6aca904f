//! `proxy_register_shared_queue`, `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`,
//! `proxy_dequeue_shared_queue`. `on_queue_ready` reaches the owning VM asynchronously, never
//! inside the enqueuing call.

use wasmtime::Linker;

use super::memory::{copy_out, read, read_string, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::shared::QueueOwner;
use crate::vm::VmState;

fn register(caller: &mut Caller<'_>, name: (u32, u32), token_ptr: u32) -> AbiResult {
    let name = read_string(caller, name.0, name.1)?;
    let state = caller.data();
    let owner = QueueOwner {
        cell: state.cell.clone(),
        generation: state.generation,
    };
    let token = state
        .plugin
        .runtime
        .queues
        .register(&state.plugin.spec.vm_id, &name, owner);
    write_u32(caller, token_ptr, token)
}

fn resolve(
    caller: &mut Caller<'_>,
    vm_id: (u32, u32),
    name: (u32, u32),
    token_ptr: u32,
) -> AbiResult {
    let vm_id = read_string(caller, vm_id.0, vm_id.1)?;
    let name = read_string(caller, name.0, name.1)?;
    let token = caller
        .data()
        .plugin
        .runtime
        .queues
        .resolve(&vm_id, &name)
        .ok_or(Status::NotFound)?;
    write_u32(caller, token_ptr, token)
}

fn enqueue(caller: &mut Caller<'_>, token: u32, value: (u32, u32)) -> AbiResult {
    let value = read(caller, value.0, value.1)?;
    let runtime = &caller.data().plugin.runtime;
    let owner = runtime.queues.enqueue(token, value)?;
    runtime.handle.spawn(async move {
        if let Some(cell) = owner.cell.upgrade() {
            cell.queue_ready(owner.generation, token);
        }
    });
    Ok(())
}

fn dequeue(caller: &mut Caller<'_>, token: u32, out: (u32, u32)) -> AbiResult {
    let value = caller.data().plugin.runtime.queues.dequeue(token)?;
    copy_out(caller, &value, out.0, out.1)
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_>, np: u32, ns: u32, tp: u32| status(register(&mut c, (np, ns), tp)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_>, vp: u32, vs: u32, np: u32, ns: u32, tp: u32| {
            status(resolve(&mut c, (vp, vs), (np, ns), tp))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_>, token: u32, vp: u32, vs: u32| status(enqueue(&mut c, token, (vp, vs))),
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_>, token: u32, pp: u32, sp: u32| status(dequeue(&mut c, token, (pp, sp))),
    )?;
    Ok(())
}
