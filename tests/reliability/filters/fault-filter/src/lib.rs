//! A Proxy-Wasm HTTP filter that fails on demand: the request header `x-fault` picks how.
//!
//! - `trap`: the guest executes `unreachable` (what a panic in a Rust filter becomes);
//! - `loop`: the guest spins forever, until the host's callback deadline stops it;
//! - `memory`: the guest allocates without end, until the host's memory limit refuses to
//!   grow linear memory and the allocator aborts.
//!
//! Any other request passes untouched, so one module shows both sides of each fault: the
//! request that hit it gets the host's error, the requests around it are still served.
//! The host must treat each fault as Envoy does: fail the stream (503 when fail-closed)
//! and rebuild the VM, never take the process down.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FaultRoot) });
}}

struct FaultRoot;

impl Context for FaultRoot {}

impl RootContext for FaultRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FaultHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FaultHttp;

impl Context for FaultHttp {}

impl HttpContext for FaultHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read the header as bytes: the SDK's string accessor panics on non-UTF-8 values,
        // and this filter must fail only when asked to.
        let fault = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-fault")
            .ok()
            .flatten();
        match fault.as_deref() {
            Some(b"trap") => core::arch::wasm32::unreachable(),
            Some(b"loop") => spin_forever(),
            Some(b"memory") => exhaust_memory(),
            _ => Action::Continue,
        }
    }
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        // black_box keeps the optimiser from proving the loop has no effect.
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed, not just reserved.
        hoard.push(core::hint::black_box(vec![0xA5; 1 << 20]));
    }
}
