//! The running gateway: start-up (admin first, then the filters, then the listeners), the
//! current [`Snapshot`] behind an atomic pointer, reloads, and draining shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use modelgate_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigErrors};
use crate::listener;
use crate::metrics::HostMetrics;
use crate::services::GatewayServices;
use crate::snapshot::Snapshot;
use crate::source::{ConfigSource, Loaded};
use crate::worker::{Stopped, Workers};

/// State every connection and the admin listener share.
pub struct Shared {
    pub runtime: Runtime,
    pub services: Arc<GatewayServices>,
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
    pub fn new(runtime: Runtime, services: Arc<GatewayServices>, source: ConfigSource) -> Shared {
        Shared {
            runtime,
            services,
            metrics: HostMetrics::default(),
            state: ArcSwapOption::empty(),
            source,
            source_files: Mutex::default(),
            next_connection_id: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The config requests start with now; `None` until the filters are configured.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.state.load_full()
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Loads the config from its source, logging what the manifests leave out and keeping the
    /// list of files to watch.
    fn load(&self) -> Result<Loaded, ConfigErrors> {
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
    pub fn source_files(&self) -> Vec<PathBuf> {
        self.source_files
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// Reads the config again and swaps in the new routes, clusters and filters; on any
    /// error the running config stays and the errors are returned (and logged).
    pub async fn reload(self: &Arc<Self>) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().await;
        let shared = Arc::clone(self);
        // Compiling wasm and running on_configure is CPU work: keep it off the reactor.
        let built = tokio::task::spawn_blocking(move || {
            let loaded = shared.load()?;
            Snapshot::build(loaded.config, &shared.runtime, &shared.services)
        })
        .await
        .unwrap_or_else(|e| Err(ConfigErrors(vec![format!("reload task failed: {e}")])));
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
fn warn_about_fixed_fields(old: &Config, new: &Config) {
    let addresses = |c: &Config| {
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

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("{what} {address}: {source}")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A started gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: Stopped,
    drain_timeout: std::time::Duration,
}

impl Gateway {
    /// Loads the config file, starts the admin listener (answering `/ready` 503), configures
    /// the filters, then binds the listeners.
    pub async fn start(config_path: &Path) -> Result<Gateway, StartError> {
        Gateway::start_from(ConfigSource::File(config_path.to_path_buf())).await
    }

    /// [`Gateway::start`] from any source of configuration.
    pub async fn start_from(source: ConfigSource) -> Result<Gateway, StartError> {
        let services = Arc::new(GatewayServices::default());
        let runtime =
            Runtime::new(Arc::clone(&services) as Arc<dyn modelgate_runtime::HostServices>)
                .map_err(|e| StartError::Runtime(e.to_string()))?;
        let shared = Arc::new(Shared::new(runtime, services, source));
        let config = shared.load()?.config;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut admin = None;
        if let Some(admin_config) = &config.admin {
            let socket = bind("admin listener", admin_config.address).await?;
            let address = socket.local_addr().map_err(|source| StartError::Bind {
                what: "admin listener".into(),
                address: admin_config.address,
                source,
            })?;
            log::info!("admin listening on {address}");
            admin = Some(address);
            tasks.push(tokio::spawn(crate::admin::serve(
                socket,
                Arc::clone(&shared),
                stopped.clone(),
            )));
        }
        let mut sockets = Vec::new();
        for (index, listener_config) in config.listeners.iter().enumerate() {
            let tls = listener_config.tls.is_some();
            let what = format!("listener {}", listener_config.name);
            let socket = bind(&what, listener_config.address).await?;
            let address = socket.local_addr().map_err(|source| StartError::Bind {
                what: what.clone(),
                address: listener_config.address,
                source,
            })?;
            sockets.push((index, listener_config.name.clone(), address, socket, tls));
        }
        let drain_timeout = config.drain_timeout.0;
        let build_shared = Arc::clone(&shared);
        let snapshot = tokio::task::spawn_blocking(move || {
            Snapshot::build(config, &build_shared.runtime, &build_shared.services)
        })
        .await
        .map_err(|e| StartError::Runtime(e.to_string()))?;
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(errors) => {
                let _ = stop.send(true);
                return Err(errors.into());
            }
        };
        let watch = snapshot.config.reload.watch;
        let worker_count = snapshot.config.workers();
        shared.state.store(Some(Arc::new(snapshot)));
        let (workers, workers_stopped) = Workers::start(worker_count, &shared, &stopped)
            .map_err(|e| StartError::Runtime(format!("cannot start the worker threads: {e}")))?;
        let workers = Arc::new(workers);
        log::info!("{worker_count} worker thread(s)");
        let mut listeners = Vec::new();
        for (index, name, address, socket, tls) in sockets {
            log::info!(
                "listener {name} on {address}{}",
                if tls { " (TLS)" } else { "" }
            );
            listeners.push((name.clone(), address));
            let info = listener::ListenerInfo { index, name, tls };
            tasks.push(tokio::spawn(listener::serve(
                socket,
                info,
                Arc::clone(&workers),
                stopped.clone(),
            )));
        }
        if watch {
            tasks.push(tokio::spawn(crate::reload::watch_files(
                Arc::clone(&shared),
                stopped,
            )));
        }
        Ok(Gateway {
            shared,
            listeners,
            admin,
            stop,
            tasks,
            workers: workers_stopped,
            drain_timeout,
        })
    }

    /// `(name, bound address)` of every listener, in config order.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        self.shared.reload().await
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.drain_timeout, async {
            for task in self.tasks {
                let _ = task.await;
            }
            self.workers.wait().await;
        })
        .await;
        if drained.is_err() {
            log::warn!("drain timeout passed with requests still in flight");
        }
    }

    /// Serves until SIGTERM or SIGINT (then drains); SIGHUP reloads.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading");
                    let _ = self.reload().await;
                }
            }
        }
        log::info!("draining in-flight requests");
        self.shutdown().await;
        log::info!("stopped");
        Ok(())
    }
}

async fn bind(what: &str, address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_owned(),
            address,
            source,
        })
}
