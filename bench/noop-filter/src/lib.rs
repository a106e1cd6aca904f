//! A no-op Proxy-Wasm HTTP filter for the benchmark (bench/run.sh, case 5).
//!
//! Every callback keeps the SDK's default, `Action::Continue`, so a request
//! still crosses the host's ABI for each phase Envoy would call (context
//! create, headers, body, response, log, done, delete) while the guest does no
//! work: the difference between case 4 and case 5 is the wasm path itself.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {}
