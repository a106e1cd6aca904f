//! The running gateway: start-up (admin first, then the filters, then the listeners), the
//! current [`Snapshot`] behind an atomic pointer, reloads, and draining shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use modelgate_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::config::{ConfigError, ConfigErrorKind, ConfigErrors};
use crate::listener;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::source::ConfigSource;
use crate::worker::{Stopped, Workers};

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
        // Plugins reach clusters through their snapshot's services (`Snapshot::build`).
        let runtime = Runtime::new(Arc::new(modelgate_runtime::NoClusters))
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let shared = Arc::new(Shared::new(runtime, source));
        let config = shared.load()?.config;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut admin = None;
        if let Some(admin_config) = &config.document.admin {
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
        for (index, listener_config) in config.document.listeners.iter().enumerate() {
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
        let drain_timeout = config.document.drain_timeout.0;
        let build_shared = Arc::clone(&shared);
        let snapshot =
            tokio::task::spawn_blocking(move || Snapshot::build(config, &build_shared.runtime))
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
        shared.serve(snapshot);
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
            let info = crate::conn_info::ListenerInfo { index, name, tls };
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
