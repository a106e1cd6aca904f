//! The least a Proxy-Wasm HTTP filter can do that still looks at a request: read one request
//! header (`:path`) and set one (`x-floor-path`, its length). bench/filter_cost.py runs it
//! beside modelgate.wasm so the filter's cost is also given as a ratio to this floor, in V8 and
//! in wasmtime alike.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Floor) });
}}

struct Floor;

impl Context for Floor {}

impl RootContext for Floor {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Direct host calls, as modelgate makes them: the SDK's helpers unwrap.
        let length = match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path") {
            Ok(Some(path)) => path.len(),
            Ok(None) | Err(_) => 0,
        };
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-floor-path",
            Some(&length.to_string()),
        );
        Action::Continue
    }
}
