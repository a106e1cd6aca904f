//! Body-model routing (`routing.bodyModel`, OpenAI-style `{"model": ...}`) against a reference
//! reading (`reference::body_model`): a body is forwarded, for the canonical model, exactly when
//! it is a JSON object whose one `model` field is a string naming a configured model or alias;
//! a configured name is never refused, an unknown one gets 404 and anything else 400.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::reference::{Json, body_model};
use modelgate_fuzz::{BodyOutcome, MAX_BODY_BYTES, open_model, open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    let outcome = with_body(open_policies(), "POST", "/openai/v1/chat/completions", data);
    let named = Json::parse(data);
    let named = named.as_ref().and_then(|doc| body_model(doc, "model"));
    let expected = match named {
        _ if data.len() > MAX_BODY_BYTES => BodyOutcome::Refused(413),
        Some(name) => match open_model(name) {
            Some(canonical) => BodyOutcome::Forwarded(Some(canonical.to_owned())),
            None => BodyOutcome::Refused(404),
        },
        None => BodyOutcome::Refused(400),
    };
    assert_eq!(
        outcome,
        expected,
        "the filter and the reference disagree on {:?}",
        String::from_utf8_lossy(data)
    );
});
