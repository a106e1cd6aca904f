//! `modelgate-runtime`: a general Proxy-Wasm host on wasmtime that behaves like Envoy.
//!
//! It knows nothing of models, JWT or `KServe`: it loads any Proxy-Wasm module (ABI 0.2.0 and
//! 0.2.1), runs several VMs per plugin like Envoy's worker VMs, and drives HTTP streams through
//! an ordered chain of plugins. The gateway (`modelgate-host`) uses it only through the types
//! re-exported here; the contract is the API of [`Runtime`], [`FilterChain`] and [`ChainStream`].

mod runtime;
mod services;
mod stream;

pub use runtime::{
    LoadError, MetricSnapshot, MetricValue, Plugin, PluginSpec, Runtime, RuntimeError,
};
pub use services::{HostServices, HttpCallRequest, HttpCallResponse};
pub use stream::{ChainStream, FilterChain, Flow, LocalReply, StreamInfo};

/// Header map as a filter sees it: lower-case keys, pseudo-headers first
/// (request: `:authority :path :method :scheme`; response: `:status`), in wire order.
pub type Headers = Vec<(String, Vec<u8>)>;
