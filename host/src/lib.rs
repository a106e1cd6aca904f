//! `modelgate-host`: the gateway around the Proxy-Wasm runtime, a small Envoy stand-in.
//!
//! It knows nothing of models, JWT or `KServe`: it listens (HTTP/1.1, h2c, TLS with ALPN),
//! reaches clusters over HTTP/1.1 or HTTP/2 (h2c, or TLS with ALPN `h2`),
//! runs every request through the configured filter chain, routes it by listener, host, path,
//! headers, query and method to a cluster of endpoints (or one of several by weight, or
//! answers with a redirect), and reports on an admin listener. The one exception is
//! `policy_test::tokens`, which signs the test tokens a `modelgate test` case describes and
//! never verifies one.
//!
//! Start one in-process with [`gateway::Gateway::start`]; `main.rs` only parses arguments.
//! Beside the gateway, [`token`] backs `modelgate token`, a tool that mints test tokens; nothing
//! the gateway runs calls it.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_dump;
pub mod conn_info;
pub mod connection;
pub mod filter_stream;
pub mod gateway;
pub mod global_ratelimit;
pub mod headers;
pub mod listener;
pub mod manifests;
pub mod metrics;
pub mod outlier;
pub mod pattern;
pub mod plugin_source;
pub mod policy_test;
pub mod proxy;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod services;
pub mod shared;
pub mod snapshot;
pub mod source;
pub mod stats_tags;
pub mod tls;
pub mod token;
pub mod tracing;
pub mod units;
pub mod upstream_h2;
pub mod worker;
