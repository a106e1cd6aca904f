//! A loaded plugin: `vm_count` VMs built from one `InstancePre`, each in its own slot
//! ([`crate::vm::cell`], where a failed VM is replaced or not as the plugin's
//! [`crate::FailurePolicy`] says), and the stream-to-VM pinning by worker.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::HostServices;
use crate::engine::{EPOCH_TICK, EngineHost};
use crate::host_state::RuntimeShared;
use crate::spec::{LoadError, PluginSpec};
use crate::vm::StartError;
use crate::vm::cell::{PluginShared, VmCell};

/// A loaded plugin: its VMs and configuration. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub(crate) shared: Arc<PluginShared>,
    vms: Vec<Arc<VmCell>>,
    next_vm: AtomicUsize,
}

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Streams started on this thread from now on use VM `index` (modulo the VM count) of each
/// plugin, as each Envoy worker thread has its own VM: the VM's lock is then never contended
/// and its memory stays in this core's cache.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// The index given to [`set_worker_index`] on this thread, if any.
pub fn worker_index() -> Option<usize> {
    WORKER.with(Cell::get)
}

impl PluginInner {
    /// The VM a new stream is pinned to: the worker's own, or round robin on other threads.
    pub(crate) fn pick_vm(&self) -> Arc<VmCell> {
        let i = worker_index().unwrap_or_else(|| self.next_vm.fetch_add(1, Ordering::Relaxed))
            % self.vms.len();
        Arc::clone(&self.vms[i])
    }
}

impl Plugin {
    pub(crate) fn load(
        engine: &EngineHost,
        runtime: &Arc<RuntimeShared>,
        spec: PluginSpec,
        services: Arc<dyn HostServices>,
    ) -> Result<Plugin, LoadError> {
        let name = spec.name.clone();
        let pre = engine
            .instance_pre(&spec.wasm)
            .map_err(|err| LoadError::Compile {
                plugin: name.clone(),
                reason: format!("{err:#}"),
            })?;
        let vm_count = match spec.vm_count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let tick = EPOCH_TICK.as_millis().max(1);
        // One extra tick: the deadline may start just before the epoch advances.
        let deadline_ticks = u64::try_from(spec.callback_deadline.as_millis().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let counters = runtime.counters(&spec.name);
        let shared = Arc::new(PluginShared {
            spec,
            runtime: Arc::clone(runtime),
            services,
            deadline_ticks,
            counters,
        });
        let vms = (0..vm_count)
            .map(|_| VmCell::new(Arc::clone(&shared), pre.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| match err {
                StartError::Rejected(callback) => LoadError::Rejected {
                    plugin: name.clone(),
                    callback,
                },
                other => LoadError::Start {
                    plugin: name.clone(),
                    reason: format!("{other:#}"),
                },
            })?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                shared,
                vms,
                next_vm: AtomicUsize::new(0),
            }),
        })
    }

    /// The plugin's name, as configured.
    pub fn name(&self) -> &str {
        &self.inner.shared.spec.name
    }

    /// How many VMs serve this plugin.
    pub fn vm_count(&self) -> usize {
        self.inner.vms.len()
    }
}
