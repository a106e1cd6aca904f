//! The KServe V2 (Open Inference Protocol) validator against a reference reading of the rule
//! (`reference::v2_accepts`): any `infer` body, on the plain and the versioned path, is
//! forwarded exactly when the reference accepts it and refused with a 400 (413 past the size
//! limit) and a JSON error otherwise (shape products that overflow, deep nesting, huge numbers
//! included). The model has no rules of its own, so the protocol's rule is what is compared.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::reference::v2_accepts;
use modelgate_fuzz::{assert_body_verdict, open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    let policies = open_policies();
    let accepts = v2_accepts(data);
    for path in [
        "/v2/models/tensor-model/infer",
        "/v2/models/tensor-model/versions/1/infer",
    ] {
        let outcome = with_body(policies, "POST", path, data);
        assert_body_verdict(&outcome, "tensor-model", accepts, data);
    }
});
