//! `modelgate-host`: the gateway around the Proxy-Wasm runtime, a small Envoy stand-in.
//!
//! It knows nothing of models, JWT or `KServe`: it listens (HTTP/1.1, h2c, TLS with ALPN),
//! runs every request through the configured filter chain, routes it by path, headers and
//! method to a cluster of endpoints, and reports on an admin listener.

pub mod config;
pub mod plugin_source;
pub mod units;
