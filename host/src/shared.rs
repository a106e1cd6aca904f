//! The state every connection, the admin listener and the reloader share: the runtime, the
//! host's metrics and the running [`Snapshot`] (with its clusters), swapped whole on reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use modelgate_runtime::Runtime;

use crate::config::{ConfigErrorKind, ConfigErrors, RawConfig};
use crate::metrics::HostMetrics;
use crate::snapshot::Snapshot;
use crate::source::{ConfigSource, Loaded};

/// State every connection and the admin listener share.
pub(crate) struct Shared {
    pub runtime: Runtime,
    pub metrics: HostMetrics,
    state: ArcSwapOption<Snapshot>,
    source: ConfigSource,
    /// The files the config was last read from (`ConfigSource::load`), watched for changes.
    source_files: Mutex<Vec<PathBuf>>,
    next_connection_id: AtomicU64,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Shared state with no config serving yet (`/ready` answers 503).
    pub(crate) fn new(runtime: Runtime, source: ConfigSource) -> Shared {
        Shared {
            runtime,
            metrics: HostMetrics::default(),
            state: ArcSwapOption::empty(),
            source,
            source_files: Mutex::default(),
            next_connection_id: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Puts the first snapshot in force, once the filters are configured (start-up).
    pub(crate) fn serve(&self, snapshot: Snapshot) {
        self.state.store(Some(Arc::new(snapshot)));
    }

    /// The config requests start with now; `None` until the filters are configured.
    pub(crate) fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.state.load_full()
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Loads the config from its source, logging what the manifests leave out and keeping the
    /// list of files to watch.
    pub(crate) fn load(&self) -> Result<Loaded, ConfigErrors> {
        let loaded = self.source.load()?;
        for warning in &loaded.warnings {
            log::warn!("{warning}");
        }
        if let Ok(mut files) = self.source_files.lock() {
            files.clone_from(&loaded.files);
        }
        Ok(loaded)
    }

    /// The files the config was last read from.
    pub(crate) fn source_files(&self) -> Vec<PathBuf> {
        self.source_files
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// Reads the config again and swaps in the new routes, clusters and filters; on any
    /// error the running config stays and the errors are returned (and logged).
    pub(crate) async fn reload(self: &Arc<Self>) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().await;
        let shared = Arc::clone(self);
        // Compiling wasm and running on_configure is CPU work: keep it off the reactor.
        let built = tokio::task::spawn_blocking(move || {
            let loaded = shared.load()?;
            Snapshot::build(loaded.config, &shared.runtime)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors::one(
                ConfigErrorKind::Internal,
                format!("reload task failed: {e}"),
            ))
        });
        match built {
            Ok(snapshot) => {
                if let Some(old) = self.snapshot() {
                    warn_about_fixed_fields(&old.config, &snapshot.config);
                }
                self.state.store(Some(Arc::new(snapshot)));
                self.metrics.count_reload(true);
                log::info!("reloaded {}", self.source.describe());
                Ok(())
            }
            Err(errors) => {
                self.metrics.count_reload(false);
                log::error!(
                    "reload of {} failed, keeping the running config:\n{errors}",
                    self.source.describe()
                );
                Err(errors)
            }
        }
    }
}

/// Sockets are bound once; say so when a reload asks to move them.
fn warn_about_fixed_fields(old: &RawConfig, new: &RawConfig) {
    let addresses = |c: &RawConfig| {
        let mut a: Vec<String> = c
            .listeners
            .iter()
            .map(|l| format!("{}={} tls={}", l.name, l.address, l.tls.is_some()))
            .collect();
        a.extend(c.admin.as_ref().map(|a| format!("admin={}", a.address)));
        a
    };
    if addresses(old) != addresses(new) {
        log::warn!(
            "listener and admin addresses, and whether a listener uses TLS, change only on \
             restart; keeping the bound sockets"
        );
    }
    if old.workers() != new.workers() {
        log::warn!("concurrency changes only on restart; keeping the worker threads");
    }
}
