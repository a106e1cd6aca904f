//! The KServe V1 validator against a reference reading of the rule (`reference::v1_accepts`):
//! any body for `:predict` is forwarded exactly when the reference accepts it and refused with
//! a 400 (413 past the size limit) and a JSON error otherwise, for a model with feature-count
//! and batch limits and one without.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::reference::v1_accepts;
use modelgate_fuzz::{IRIS_V1, WINE_V1, assert_body_verdict, open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    let policies = open_policies();
    for (model, rules) in [("sklearn-iris", IRIS_V1), ("sklearn-wine", WINE_V1)] {
        let outcome = with_body(
            policies,
            "POST",
            &format!("/v1/models/{model}:predict"),
            data,
        );
        assert_body_verdict(&outcome, model, v1_accepts(data, &rules), data);
    }
});
