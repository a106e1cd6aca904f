//! The configuration parser and compiler: any bytes give a `Policies` or an error that names
//! where it is, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_policies::Policies;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = Policies::from_json(data) {
        // The message is what an operator reads: it must render.
        assert!(!error.to_string().is_empty());
    }
});
