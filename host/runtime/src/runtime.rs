//! The process-wide runtime the embedding holds: the engine and what every VM shares
//! ([`RuntimeShared`]); it loads plugins and reports their metrics and counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::runtime::Handle;

use crate::clock::Clock;
use crate::engine::EngineHost;
use crate::host_state::RuntimeShared;
use crate::metrics::MetricSnapshot;
use crate::spec::{LoadError, PluginSpec, PluginStats};
use crate::{HostServices, Plugin};

/// Errors creating the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    #[error("cannot start the runtime's async worker: {0}")]
    Worker(String),
}

/// Owns the engine and what every VM shares ([`RuntimeShared`]). Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: &'static EngineHost,
    shared: Arc<RuntimeShared>,
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
            engine,
            shared: Arc::new(RuntimeShared::new(services, clock, handle, own_worker)),
        })
    }

    /// Compile (one Module + `InstancePre` per distinct wasm), build `vm_count` VMs, run
    /// `_initialize`/`_start`, `on_context_create(root)`, `on_vm_start`, `on_configure`.
    /// Its `http_call`s and gRPC calls reach the services the runtime was created with.
    pub fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let services = Arc::clone(&self.shared.services);
        Plugin::load(self.engine, &self.shared, spec, services)
    }

    /// As [`Runtime::load`], with the plugin's `http_call`s and gRPC calls going to `services`:
    /// an embedding whose clusters change with its configuration hands each plugin the
    /// clusters of the configuration that loads it, so loading one has no effect on the
    /// plugins already serving.
    pub fn load_with(
        &self,
        spec: PluginSpec,
        services: Arc<dyn HostServices>,
    ) -> Result<Plugin, LoadError> {
        Plugin::load(self.engine, &self.shared, spec, services)
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
        self.shared
            .all_counters()
            .into_iter()
            .map(|(name, c)| {
                let stats = PluginStats {
                    vm_failures: c.vm_failures.load(Ordering::Relaxed),
                    vm_reload_backoff: c.vm_reload_backoff.load(Ordering::Relaxed),
                    vm_reload_success: c.vm_reload_success.load(Ordering::Relaxed),
                    vm_reload_failure: c.vm_reload_failure.load(Ordering::Relaxed),
                };
                (name, stats)
            })
            .collect()
    }

    /// VMs of every plugin that failed at run time (a trap, the deadline, the memory limit).
    pub fn vm_failures(&self) -> u64 {
        self.plugin_stats().iter().map(|(_, s)| s.vm_failures).sum()
    }
}
