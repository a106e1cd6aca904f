//! Client header values: the routing header a client tries to set, the header that keys rate
//! limits, and the path, all arbitrary. Three requests share one store, so the limiter's state
//! under odd keys is exercised too. Decisions must hold the usual invariants (JSON replies, no
//! line break in any header the filter would set) and a client's routing header must never be
//! forwarded as is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{headers, keyed_policies};
use modelgate_policies::{HeadersDecision, MemoryStore};

/// Envoy refuses header values with CR, LF or NUL before any filter runs.
fn header_value(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1f}');
    let path = fields.next().unwrap_or("/v1/models/iris");
    let route = header_value(fields.next().unwrap_or(""));
    let key = header_value(fields.next().unwrap_or(""));
    let store = MemoryStore::new();
    for _ in 0..3 {
        let decision = headers(
            keyed_policies(),
            &store,
            "GET",
            path,
            &[("x-gateway-model-name", &route), ("x-api-key", &key)],
        );
        if let HeadersDecision::Continue(forward) = &decision {
            let keeps_client_route = !forward
                .headers
                .remove
                .iter()
                .any(|h| &**h == "x-gateway-model-name")
                && !forward
                    .headers
                    .set
                    .iter()
                    .any(|(h, _)| &**h == "x-gateway-model-name");
            assert!(
                !keeps_client_route,
                "the client's routing header {route:?} would be forwarded for {path:?}"
            );
        }
    }
});
