//! Worker threads, as Envoy's: each runs its own single-threaded tokio runtime and serves the
//! connections handed to it whole, with its own upstream connection pools and its own VM of
//! each filter. A request never changes threads, so serving it wakes no other thread: on the
//! work-stealing runtime a proxied request cost about 5 context switches against nginx's 2
//! (bench/results/profile.txt).
//!
//! The listeners accept on the main runtime and deal connections round robin, so the workers
//! stay evenly loaded however few connections there are (Envoy's exact connection balance).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn_info::ListenerInfo;
use crate::connection;
use crate::shared::Shared;

/// An accepted connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    listener: Arc<ListenerInfo>,
}

/// The running workers; the listeners deal their connections through it.
pub(crate) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
}

/// Resolves when every worker has drained its connections and stopped.
pub(crate) struct Stopped(Vec<oneshot::Receiver<()>>);

impl Workers {
    /// Starts `count` worker threads; each stops accepting hand-offs when `stop` turns true and
    /// returns once its open connections finished their requests.
    pub(crate) fn start(
        count: usize,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<(Workers, Stopped)> {
        let mut queues = Vec::with_capacity(count);
        let mut stopped = Vec::with_capacity(count);
        for index in 0..count {
            let (queue, incoming) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            // Built here so that a failure is a start-up error, not a dead thread.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (shared, stop) = (Arc::clone(shared), stop.clone());
            std::thread::Builder::new()
                .name(format!("modelgate-worker-{index}"))
                .spawn(move || {
                    modelgate_runtime::set_worker_index(index);
                    runtime.block_on(serve(incoming, shared, stop));
                    let _ = done.send(());
                })?;
            queues.push(queue);
            stopped.push(finished);
        }
        let workers = Workers {
            queues,
            next: AtomicUsize::new(0),
        };
        Ok((workers, Stopped(stopped)))
    }

    /// Hands an accepted connection to the next worker.
    pub(crate) fn dispatch(&self, stream: TcpStream, listener: &Arc<ListenerInfo>) {
        // Off this runtime's reactor; the worker registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!(
                    "listener {}: cannot hand a connection over: {e}",
                    listener.name
                );
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let handoff = Handoff {
            stream,
            listener: Arc::clone(listener),
        };
        // A worker only goes away after `stop`, and then the connection is not wanted.
        let _ = self.queues[i].send(handoff);
    }
}

impl Stopped {
    pub(crate) async fn wait(self) {
        for worker in self.0 {
            let _ = worker.await;
        }
    }
}

/// One worker's loop: take connections until `stop`, then drain them.
async fn serve(
    mut incoming: mpsc::UnboundedReceiver<Handoff>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            handoff = incoming.recv() => {
                let Some(Handoff { stream, listener }) = handoff else { break };
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let watcher = graceful.watcher();
                        let shared = Arc::clone(&shared);
                        tokio::spawn(connection::serve(stream, listener, shared, watcher));
                    }
                    Err(e) => log::warn!("listener {}: cannot take a connection: {e}", listener.name),
                }
            }
            _ = stop.changed() => break,
        }
    }
    graceful.shutdown().await;
}
