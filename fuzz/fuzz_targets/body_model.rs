//! Body-model routing (`routing.bodyModel`, OpenAI-style `{"model": ...}`): any body is routed
//! to a configured model, refused (400, 404) or rate limited, with a JSON reply, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{open_policies, with_body};

fuzz_target!(|data: &[u8]| {
    with_body(open_policies(), "POST", "/openai/v1/chat/completions", data);
});
