//! What every VM reaches of the host: shared data and queues, the metric registry, the filters'
//! services (clusters for `http_call` and gRPC), the clock, and the tokio handle async host work
//! (ticks, `http_call` answers, queue wake-ups) runs on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;

use crate::HostServices;
use crate::clock::Clock;
use crate::metrics::MetricRegistry;
use crate::shared::{Queues, SharedData};
use crate::spec::PluginCounters;

pub(crate) struct RuntimeShared {
    /// The services of plugins loaded without their own ([`crate::Runtime::load`]).
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
    /// `own_worker`: the runtime `handle` belongs to, when the embedding has none of its own.
    pub(crate) fn new(
        services: Arc<dyn HostServices>,
        clock: Clock,
        handle: Handle,
        own_worker: Option<tokio::runtime::Runtime>,
    ) -> RuntimeShared {
        RuntimeShared {
            services,
            shared_data: SharedData::default(),
            queues: Queues::default(),
            metrics: MetricRegistry::default(),
            handle,
            clock,
            counters: Mutex::default(),
            own_worker,
        }
    }

    /// The counters of the plugin named `name`, created on first use.
    pub(crate) fn counters(&self, name: &str) -> Arc<PluginCounters> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(counters.entry(name.to_owned()).or_default())
    }

    /// Every plugin's counters, by plugin name.
    pub(crate) fn all_counters(&self) -> Vec<(String, Arc<PluginCounters>)> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|(name, c)| (name.clone(), Arc::clone(c)))
            .collect()
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
