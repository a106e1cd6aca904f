//! The host side of the Proxy-Wasm ABI (0.2.0 and 0.2.1, plus the legacy names SDKs still
//! import) and the WASI subset Envoy provides. Each module registers its functions on the
//! one `Linker`; ABI failures go back to the guest as Envoy's status codes, and a host
//! function traps only on a guest allocator trap or a deadline.

mod buffers;
mod foreign;
mod grpc;
mod headers;
mod http_call;
mod logging;
mod memory;
mod metrics;
mod properties;
mod queues;
mod shared_data;
mod stream_control;

mod timers;
mod wasi;

use wasmtime::Linker;

use crate::vm::VmState;

pub(crate) type Caller<'a> = wasmtime::Caller<'a, VmState>;

pub(crate) use crate::status::Status;

/// Either a status for the guest or a trap (guest allocator trapped, deadline hit).
pub(crate) enum AbiError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for AbiError {
    fn from(status: Status) -> AbiError {
        AbiError::Status(status)
    }
}

impl From<wasmtime::Error> for AbiError {
    fn from(err: wasmtime::Error) -> AbiError {
        AbiError::Trap(err)
    }
}

pub(crate) type AbiResult = Result<(), AbiError>;

/// Turn a host function's outcome into the `i32` status the guest sees (or a trap).
pub(crate) fn status(result: AbiResult) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(AbiError::Status(s)) => Ok(s as u32),
        Err(AbiError::Trap(err)) => Err(err),
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    logging::add(linker)?;
    headers::add(linker)?;
    buffers::add(linker)?;
    stream_control::add(linker)?;
    properties::add(linker)?;
    shared_data::add(linker)?;
    queues::add(linker)?;
    http_call::add(linker)?;
    grpc::add(linker)?;
    metrics::add(linker)?;
    timers::add(linker)?;
    foreign::add(linker)?;
    wasi::add(linker, "wasi_snapshot_preview1")?;
    wasi::add(linker, "wasi_unstable")?;
    Ok(())
}
