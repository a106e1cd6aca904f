//! The path router against KServe's own routes (`reference::kserve_model`): whatever the method
//! and path (query, encodings, odd bytes), a request KServe would hand to a model this policy
//! knows is either refused or routed to exactly that model (routing header and verdict), so no
//! request reaches a model without that model's policy. Replies are JSON and header values free
//! of line breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::reference::kserve_model;
use modelgate_fuzz::{headers, open_model, open_policies};
use modelgate_policies::{HeadersDecision, MemoryStore};

fuzz_target!(|data: &[u8]| {
    // The first line is the method, the rest the path, so both are explored.
    let text = String::from_utf8_lossy(data);
    let (method, path) = text.split_once('\n').unwrap_or(("GET", &text));
    let store = MemoryStore::new();
    let policies = open_policies();
    let decision = headers(policies, &store, method, path, &[]);
    let Some(model) = kserve_model(path).and_then(|m| open_model(&m)) else {
        return;
    };
    let routed = match &decision {
        HeadersDecision::Reply(_) => return,
        HeadersDecision::Continue(forward) => {
            let header = forward
                .headers
                .set
                .iter()
                .find(|(name, _)| **name == *policies.routing_header())
                .map(|(_, value)| value.as_str());
            assert_eq!(
                forward.verdict.model.as_deref(),
                header,
                "verdict and routing header disagree for {path:?}"
            );
            header
        }
        HeadersDecision::NeedBody(need) => need.pending.model().map(|m| &**m),
    };
    assert_eq!(
        routed,
        Some(model),
        "KServe would hand {method} {path:?} to {model}, the filter routes it to {routed:?}"
    );
});
