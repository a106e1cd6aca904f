//! The process-wide runtime: the engine, shared data and queues, the metric registry, and the
//! tokio handle async host work (ticks, `http_call` answers, queue wake-ups) runs on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::engine::EngineHost;
use crate::metrics::MetricRegistry;
use crate::shared::{Queues, SharedData};
use crate::{HostServices, Plugin};

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
    #[error("cannot start the runtime's async worker: {0}")]
    Worker(String),
}

/// Why a plugin could not be loaded; the message always names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin}: cannot compile the module: {reason}")]
    Compile { plugin: String, reason: String },
    #[error("plugin {plugin}: cannot start a VM: {reason}")]
    Start { plugin: String, reason: String },
    #[error("plugin {plugin}: {callback} returned false")]
    Rejected {
        plugin: String,
        callback: &'static str,
    },
}

/// One metric a filter defined, named as the filter gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSnapshot {
    pub name: String,
    pub value: MetricValue,
}

/// A metric's current value. Histogram buckets are cumulative `(upper bound, count)` pairs.
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
    shared: Arc<RuntimeShared>,
}

pub(crate) struct RuntimeShared {
    pub(crate) engine: &'static EngineHost,
    pub(crate) services: Arc<dyn HostServices>,
    pub(crate) shared_data: SharedData,
    pub(crate) queues: Queues,
    pub(crate) metrics: MetricRegistry,
    pub(crate) handle: Handle,
    restarts: AtomicU64,
    /// A runtime of our own when created outside tokio.
    own_worker: Option<tokio::runtime::Runtime>,
}

impl RuntimeShared {
    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for RuntimeShared {
    fn drop(&mut self) {
        // Dropping a tokio runtime inside async code panics; let it wind down in the background.
        if let Some(worker) = self.own_worker.take() {
            worker.shutdown_background();
        }
    }
}

impl Runtime {
    /// Create the runtime. Async host work runs on the current tokio runtime, or on a
    /// one-thread runtime of its own when called outside one.
    pub fn new(services: Arc<dyn HostServices>) -> Result<Runtime, RuntimeError> {
        let engine =
            EngineHost::global().map_err(|err| RuntimeError::Engine(format!("{err:#}")))?;
        let (handle, own_worker) = if let Ok(handle) = Handle::try_current() {
            (handle, None)
        } else {
            let worker = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("wasm-host-async")
                .enable_all()
                .build()
                .map_err(|err| RuntimeError::Worker(err.to_string()))?;
            (worker.handle().clone(), Some(worker))
        };
        Ok(Runtime {
            shared: Arc::new(RuntimeShared {
                engine,
                services,
                shared_data: SharedData::default(),
                queues: Queues::default(),
                metrics: MetricRegistry::default(),
                handle,
                restarts: AtomicU64::new(0),
                own_worker,
            }),
        })
    }

    /// Compile (one Module + `InstancePre` per distinct wasm), build `vm_count` VMs, run
    /// `_initialize`/`_start`, `on_context_create(root)`, `on_vm_start`, `on_configure`.
    ///
    /// Compiling is a burst of temporary allocations that glibc keeps in its arenas, so the
    /// heap is trimmed afterwards, whether the load succeeded or not.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let loaded = Plugin::load(&self.shared, spec);
        trim_heap();
        loaded
    }

    /// Every metric filters defined, named as the filter gave it.
    pub fn metrics(&self) -> Vec<MetricSnapshot> {
        self.shared.metrics.snapshot()
    }

    /// VMs rebuilt after a trap, deadline or memory blow-up, since start.
    pub fn vm_restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }
}

/// Give the free pages of every malloc arena back to the kernel.
///
/// Cranelift frees most of what it allocates to compile a module, but glibc keeps those pages:
/// for the full-policy gateway idle RSS was 58.3 MiB after start-up and 31.8 MiB after
/// `malloc_trim(0)` (the 1,000-connection peak fell from 123 to 102 MiB with it). Elsewhere
/// than glibc this does nothing.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "FFI into glibc")]
    // SAFETY: malloc_trim has no preconditions; it walks glibc's arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
