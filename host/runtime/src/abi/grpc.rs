//! The gRPC part of the ABI, not implemented yet: calls answer UNIMPLEMENTED where Envoy makes
//! them through its async gRPC client (`source/extensions/common/wasm/context.cc`, `grpcCall`,
//! `grpcStream`), though the gateway's HTTP/2 clusters could carry them. The imports exist
//! because wasmtime refuses modules with unresolved imports.

use wasmtime::Linker;

use super::memory::{copy_out, write_u32};
use super::{Caller, Status, status};
use crate::vm::VmState;

const UNIMPLEMENTED: u32 = Status::Unimplemented as u32;

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Caller<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32| { UNIMPLEMENTED },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            UNIMPLEMENTED
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Caller<'_>, _: u32, _: u32, _: u32, _: u32| UNIMPLEMENTED,
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_: Caller<'_>, _: u32| {
        UNIMPLEMENTED
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |_: Caller<'_>, _: u32| {
        UNIMPLEMENTED
    })?;
    // The status of the last gRPC call: there never is one, so code 0 and no message.
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_>, code_ptr: u32, pp: u32, sp: u32| {
            status(write_u32(&mut c, code_ptr, 0).and_then(|()| copy_out(&mut c, &[], pp, sp)))
        },
    )?;
    Ok(())
}
