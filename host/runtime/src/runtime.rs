//! The process-wide runtime: engine, shared state and the plugins loaded into it.

use std::sync::Arc;
use std::time::Duration;

use crate::HostServices;

/// Everything needed to load one Proxy-Wasm plugin, as Envoy's `PluginConfig` + `VmConfig`.
#[derive(Clone)]
pub struct PluginSpec {
    /// Plugin name: log tag and the `plugin_name` property.
    pub name: String,
    pub root_id: String,
    /// Namespace for shared data and queues.
    pub vm_id: String,
    pub wasm: Arc<[u8]>,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub fail_open: bool,
    /// Variables visible through WASI `environ_*`.
    pub env: Vec<(String, String)>,
    /// One VM per worker, like Envoy (0 => available parallelism).
    pub vm_count: usize,
    pub memory_limit_bytes: usize,
    pub callback_deadline: Duration,
}

/// Errors creating the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
}

/// Why a plugin could not be loaded; the message always names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin}: {reason}")]
    Unsupported {
        plugin: String,
        reason: &'static str,
    },
}

/// One metric a filter defined, named as the filter gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSnapshot {
    pub name: String,
    pub value: MetricValue,
}

/// A metric's current value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

/// Owns the engine, shared data and queues, and the metric registry. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    services: Arc<dyn HostServices>,
}

impl Runtime {
    pub fn new(services: Arc<dyn HostServices>) -> Result<Runtime, RuntimeError> {
        Ok(Runtime {
            inner: Arc::new(Inner { services }),
        })
    }

    /// Compile the module, build `vm_count` VMs and run their start-up callbacks.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let _ = &self.inner.services;
        Err(LoadError::Unsupported {
            plugin: spec.name,
            reason: "the proxy-wasm lifecycle is not implemented yet",
        })
    }

    /// Every metric filters defined.
    pub fn metrics(&self) -> Vec<MetricSnapshot> {
        Vec::new()
    }

    /// VMs rebuilt after a trap, deadline or memory blow-up, since start.
    pub fn vm_restarts(&self) -> u64 {
        0
    }
}

/// A loaded plugin: its VMs and configuration. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    _private: Arc<()>,
}
