//! The policies through their public API, as the Proxy-Wasm adapter drives them.
//! Time is injected everywhere; nothing reads a clock.

mod authz;
mod config;
mod env_secrets;
mod grpc;
mod jwt;
mod lookalikes;
mod openai;
mod properties;
mod ratelimit;
mod remote_jwks;
mod routing;
mod support;
mod validation;
