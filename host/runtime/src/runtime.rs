//! The process-wide runtime: the engine, shared data and queues, the metric registry, and the
//! tokio handle async host work (ticks, `http_call` answers, queue wake-ups) runs on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::clock::Clock;
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
    /// What happens after the VM fails at run time.
    pub failure_policy: FailurePolicy,
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+, false by default):
    /// whether a Pause (`StopIteration`) from request headers still delivers the body to the
    /// filter, holding only the headers (see [`crate::ChainStream::request_headers`]).
    pub allow_on_headers_stop_iteration: bool,
    /// Variables visible through WASI `environ_*`.
    pub env: Vec<(String, String)>,
    /// One VM per worker, like Envoy (0 => available parallelism).
    pub vm_count: usize,
    pub memory_limit_bytes: usize,
    pub callback_deadline: Duration,
}

/// What a plugin does once a VM failed at run time (a trap, the callback deadline, the memory
/// limit), as Envoy's `PluginConfig.failure_policy` (api/envoy/extensions/wasm/v3/wasm.proto;
/// source/extensions/common/wasm/wasm.cc, `PluginConfig::PluginConfig` and
/// `PluginConfig::maybeReloadHandleIfNeeded`). A failed VM is never called again: a new one
/// comes only from a reload or from loading the plugin again (a config push).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Every stream that reaches the failed VM gets 503 (details `wasm_fail_stream`) until the
    /// plugin is loaded again. Envoy's default (`UNSPECIFIED` and `fail_open: false`), so what
    /// Envoy Gateway's `failOpen: false` gives: one trap is an outage of that worker's routes.
    #[default]
    FailClosed,
    /// The filter is skipped on every stream of the failed VM (Envoy's legacy `fail_open`,
    /// which Envoy Gateway's `failOpen: true` sets).
    FailOpen,
    /// A new stream that finds the VM failed builds a new one, at most once per backoff
    /// interval since the last load; in between streams fail closed (`FAIL_RELOAD` with
    /// `reload_config.backoff.base_interval`, 1s by default).
    FailReload { base_interval: Duration },
}

/// Envoy's default `ReloadConfig` backoff base interval (wasm.proto, `ReloadConfig.backoff`).
pub const DEFAULT_RELOAD_BASE_INTERVAL: Duration = Duration::from_secs(1);

/// Envoy's per-plugin Wasm stats (`wasm.<plugin name>.*`, documented in
/// `docs/root/configuration/other_features/wasm.rst`), plus the VM failures Envoy does not
/// count: there a failure shows only as `wasm_fail_stream` response details.
#[derive(Debug, Default)]
#[expect(clippy::struct_field_names, reason = "named after Envoy's stats")]
pub(crate) struct PluginCounters {
    pub(crate) vm_failures: AtomicU64,
    pub(crate) vm_reload_backoff: AtomicU64,
    pub(crate) vm_reload_success: AtomicU64,
    pub(crate) vm_reload_failure: AtomicU64,
}

/// A snapshot of one plugin's [`PluginCounters`], by plugin name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// VMs that failed at run time (host-only: Envoy has no such stat).
    pub vm_failures: u64,
    /// `wasm.<name>.vm_reload_backoff`: reloads skipped because the backoff had not elapsed.
    pub vm_reload_backoff: u64,
    /// `wasm.<name>.vm_reload_success`.
    pub vm_reload_success: u64,
    /// `wasm.<name>.vm_reload_failure`: a reload whose new VM did not start.
    pub vm_reload_failure: u64,
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
    /// By plugin name, kept across config reloads as Envoy keeps a stats scope's counters.
    pub(crate) clock: Clock,
    counters: Mutex<BTreeMap<String, Arc<PluginCounters>>>,
    /// A runtime of our own when created outside tokio.
    own_worker: Option<tokio::runtime::Runtime>,
}

impl RuntimeShared {
    /// The counters of the plugin named `name`, created on first use.
    pub(crate) fn counters(&self, name: &str) -> Arc<PluginCounters> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(counters.entry(name.to_owned()).or_default())
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
        Runtime::with_clock(services, Clock::System)
    }

    /// As [`Runtime::new`], with guests reading the time from `clock` (a [`Clock::Manual`]
    /// lets an embedding replay requests at chosen times).
    pub fn with_clock(
        services: Arc<dyn HostServices>,
        clock: Clock,
    ) -> Result<Runtime, RuntimeError> {
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
                clock,
                counters: Mutex::default(),
                own_worker,
            }),
        })
    }

    /// Compile (one Module + `InstancePre` per distinct wasm), build `vm_count` VMs, run
    /// `_initialize`/`_start`, `on_context_create(root)`, `on_vm_start`, `on_configure`.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        Plugin::load(&self.shared, spec)
    }

    /// Every metric filters defined, named as the filter gave it.
    pub fn metrics(&self) -> Vec<MetricSnapshot> {
        self.shared.metrics.snapshot()
    }

    /// How many shared-data keys the VMs of `vm_id` have written: shared data is never
    /// expired, so this is what a filter's state costs the process.
    pub fn shared_data_entries(&self, vm_id: &str) -> usize {
        self.shared.shared_data.len(vm_id)
    }

    /// Every plugin's failure and reload counters since start, by plugin name.
    pub fn plugin_stats(&self) -> Vec<(String, PluginStats)> {
        let counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|(name, c)| {
                let stats = PluginStats {
                    vm_failures: c.vm_failures.load(Ordering::Relaxed),
                    vm_reload_backoff: c.vm_reload_backoff.load(Ordering::Relaxed),
                    vm_reload_success: c.vm_reload_success.load(Ordering::Relaxed),
                    vm_reload_failure: c.vm_reload_failure.load(Ordering::Relaxed),
                };
                (name.clone(), stats)
            })
            .collect()
    }

    /// VMs of every plugin that failed at run time (a trap, the deadline, the memory limit).
    pub fn vm_failures(&self) -> u64 {
        self.plugin_stats().iter().map(|(_, s)| s.vm_failures).sum()
    }
}
