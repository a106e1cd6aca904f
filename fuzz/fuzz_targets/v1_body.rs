//! The KServe V1 validator: any body for `:predict` is forwarded or refused with a 4xx and a JSON
//! error, never a panic, for a model with feature-count and batch limits and one without.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    let policies = open_policies();
    with_body(policies, "POST", "/v1/models/sklearn-iris:predict", data);
    with_body(policies, "POST", "/v1/models/sklearn-wine:predict", data);
});
