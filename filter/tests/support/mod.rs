//! What the tests of the built `modelgate.wasm` share: the artifact itself, and the connection a
//! test request arrives on. Each test binary uses part of it, hence `dead_code` is allowed.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use modelgate_runtime::{Headers, StreamInfo};

/// How the artifact is made, for the message when it is missing.
pub(crate) const BUILD_COMMAND: &str = "make wasm  (scripts/build-wasm.sh: cargo, then wasm-opt)";

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/modelgate.wasm`, read once per test binary; a missing artifact fails with the
/// command that builds it.
pub(crate) fn module() -> Arc<[u8]> {
    static MODULE: OnceLock<Arc<[u8]>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let path = repo().join("target/modelgate.wasm");
            match std::fs::read(&path) {
                Ok(bytes) => bytes.into(),
                Err(error) => panic!(
                    "cannot read {}: {error}; build it first with: {BUILD_COMMAND}",
                    path.display()
                ),
            }
        })
        .clone()
}

/// A plain HTTP/1.1 connection from loopback.
pub(crate) fn stream_info() -> StreamInfo {
    StreamInfo {
        source: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        destination: SocketAddr::from(([127, 0, 0, 1], 18_080)),
        connection_id: 1,
        tls: false,
        protocol: "HTTP/1.1",
        start_time: SystemTime::now(),
    }
}

/// The first value of header `name` (any case), as text.
pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| std::str::from_utf8(v).expect("header value is UTF-8"))
}
