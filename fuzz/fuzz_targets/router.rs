//! The path router: any method and path (query, encodings, odd bytes) routes, replies or asks
//! for the body, with a JSON reply and header values free of line breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::{headers, open_policies};
use modelgate_policies::MemoryStore;

fuzz_target!(|data: &[u8]| {
    // The first line is the method, the rest the path, so both are explored.
    let text = String::from_utf8_lossy(data);
    let (method, path) = text.split_once('\n').unwrap_or(("GET", &text));
    let store = MemoryStore::new();
    headers(open_policies(), &store, method, path, &[]);
});
