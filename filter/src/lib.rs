//! The modelgate Proxy-Wasm filter: the thin adapter between a Proxy-Wasm host (Envoy, or the
//! `modelgate` host) and the pure decisions of `modelgate-policies`.
//!
//! [`root::FilterRoot`] compiles the plugin configuration once per VM in `on_configure` and
//! defines the metrics; [`http::HttpFilter`] turns each stream's callbacks into `policies` calls
//! and applies the returned decision through host calls; [`jwks`] fetches a remote JWKS on the
//! root context's timer.
//! This is the only crate that imports `proxy_wasm`.
//!
//! A panic traps the VM in Envoy, and a trapped VM answers 503 to every later request until it is
//! reloaded, so nothing here may panic: the panic family is denied below, host calls whose SDK
//! helpers would unwrap are made through `proxy_wasm::hostcalls` directly, and a panic hook logs at
//! critical should one happen anyway (in the SDK or a dependency).

// Unit tests may unwrap: a failing test should stop loudly.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod body;
mod configured;
mod gen_ai;
mod http;
mod jwks;
mod metrics;
mod root;
mod store;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Until `on_configure` reads the configured level, log warnings and worse.
    proxy_wasm::set_log_level(LogLevel::Warn);
    // Replaces the SDK's hook, which unwraps the result of logging the panic.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("modelgate: {info}"));
    }));
    proxy_wasm::set_root_context(|_context_id| Box::new(root::FilterRoot::new()));
}}
