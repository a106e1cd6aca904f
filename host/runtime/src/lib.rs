//! `modelgate-runtime`: a general Proxy-Wasm host on wasmtime that behaves like Envoy.
//!
//! It knows nothing of models, JWT or `KServe`: it loads any Proxy-Wasm module (ABI 0.2.0 and
//! 0.2.1), runs several VMs per plugin like Envoy's worker VMs, and drives HTTP streams through
//! an ordered chain of plugins. The gateway (`modelgate-host`) uses it only through the types
//! re-exported here: [`Runtime`], [`FilterChain`] and [`ChainStream`].
//!
//! Inside: `engine` (the process's one `Engine` and `Linker`, the epoch ticker, one
//! `InstancePre` per module), `vm` (one `Store` per VM, start-up, deadline-bounded guest
//! calls), `abi` (every host function), `context` (a stream's state inside a VM), `shared`
//! (shared data and queues), `clock` (the wall clock guests read: the system's, or a
//! [`ManualClock`] an embedding sets), `metrics`, `plugin` (the VMs of a plugin, what a
//! failure does to them, and their reload), `stream` (the chain), `header_map` (maps and the
//! pairs wire format).

mod abi;
mod clock;
mod context;
mod engine;
mod grpc;
mod header_map;
mod host_state;
mod local_reply;
mod metrics;
mod plugin;
mod runtime;
mod services;
mod shared;
mod spec;
mod status;
mod stream;
mod vm;

pub use clock::{Clock, ManualClock};
pub use context::StreamInfo;
pub use engine::{compile_for_a_short_run, compile_in_child, serve_compile_request};
pub use local_reply::LocalReply;
pub use metrics::ENVOY_HISTOGRAM_BUCKETS;
pub use metrics::{MetricSnapshot, MetricValue};
pub use plugin::{Plugin, set_worker_index, worker_index};
pub use runtime::{Runtime, RuntimeError};
pub use services::{HostServices, HttpCallRequest, HttpCallResponse, NoClusters, StreamEvent};
pub use spec::{DEFAULT_RELOAD_BASE_INTERVAL, FailurePolicy, LoadError, PluginSpec, PluginStats};
pub use stream::{ChainStream, DEFAULT_BUFFER_LIMIT, FilterChain, Flow};

/// Log target of guest lines at Proxy-Wasm's `critical` level (other guest lines use `wasm`).
/// Envoy logs them at its own `critical` level; the `log` crate stops at `Error`, so the target
/// carries the difference and the `modelgate` binary prints such lines as `CRITICAL`.
pub const CRITICAL_LOG_TARGET: &str = "wasm::critical";

/// Header map as a filter sees it: lower-case keys, pseudo-headers first
/// (request: `:authority :path :method :scheme`; response: `:status`), in wire order.
pub type Headers = Vec<(String, Vec<u8>)>;
