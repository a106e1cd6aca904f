//! JWT header and claims parsing: a raw `Authorization` value, and a correctly signed token
//! whose header and claims bytes are arbitrary (so the fuzzer gets past the signature to the
//! claim checks). Either way the answer is a decision, never a panic, and a token that was not
//! signed with the configured key never gets through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{headers, jwt_policies, signed_token};
use modelgate_policies::{HeadersDecision, MemoryStore};

fuzz_target!(|data: &[u8]| {
    let store = MemoryStore::new();
    let policies = jwt_policies();
    let path = "/v1/models/sklearn-iris";

    // Unsigned material: whatever it is, it must not be let through.
    let raw = String::from_utf8_lossy(data);
    let authorization = format!("Bearer {raw}");
    let decision = headers(
        policies,
        &store,
        "GET",
        path,
        &[("authorization", &authorization)],
    );
    assert!(
        !matches!(decision, HeadersDecision::Continue(_)),
        "a token not signed with the configured key passed: {raw:?}"
    );

    // Signed material: header and claims split at the first 0xff byte.
    let (header, claims) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&br#"{"alg":"HS256","kid":"fuzz","typ":"JWT"}"#[..], data),
    };
    let token = signed_token(header, claims);
    let authorization = format!("Bearer {token}");
    headers(
        policies,
        &store,
        "GET",
        path,
        &[("authorization", &authorization)],
    );
});
