//! The Proxy-Wasm status codes, shared by the ABI's host functions and the shared state
//! (shared data and queues) whose operations return them.

/// Proxy-Wasm `WasmResult` codes, as Envoy returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
}
