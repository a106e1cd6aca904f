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

mod access_log;
mod admin;
pub mod body;
pub mod cli;
mod cluster;
mod compile;
mod config;
mod config_dump;
mod conn_info;
mod connection;
mod envoy_proxy;
mod filter_stream;
pub mod gateway;
mod global_ratelimit;
mod headers;
mod hostname;
mod listener;
mod local_ratelimit;
mod manifests;
mod metrics;
mod outlier;
mod pattern;
mod plugin_source;
pub mod policy_test;
mod proxy;
mod reload;
mod rewrite;
mod route;
mod services;
mod shared;
mod snapshot;
pub mod source;
mod stats_tags;
mod tls;
pub mod token;
mod tracing;
mod units;
mod upstream_h2;
mod worker;
