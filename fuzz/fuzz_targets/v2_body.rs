//! The KServe V2 (Open Inference Protocol) validator: any body for `infer` is forwarded or
//! refused with a 4xx and a JSON error, never a panic (shape products that overflow, deep
//! nesting, huge numbers included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    let policies = open_policies();
    with_body(policies, "POST", "/v2/models/sklearn-iris/infer", data);
    with_body(
        policies,
        "POST",
        "/v2/models/sklearn-wine/versions/1/infer",
        data,
    );
});
