//! Client listeners: the accept loop, which deals each connection to a worker thread
//! ([`crate::worker`]); the worker serves it ([`crate::connection`]: optional TLS, HTTP/1.1 and
//! HTTP/2 on one port).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::conn_info::ListenerInfo;
use crate::worker::Workers;

/// Accepts until `stop` turns true, dealing connections to the workers, which serve them
/// and drain them on shutdown.
pub(crate) async fn serve(
    socket: TcpListener,
    info: ListenerInfo,
    workers: Arc<Workers>,
    mut stop: watch::Receiver<bool>,
) {
    let info = Arc::new(info);
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => workers.dispatch(stream, &info),
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    log::warn!("listener {}: accept failed: {e}", info.name);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}
