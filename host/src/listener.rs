//! Client listeners: accept, optional TLS (rustls, ALPN `h2` and `http/1.1`), HTTP/1.1 and
//! HTTP/2 on one port (h2c by prior knowledge on plain sockets). Connections are served on
//! the worker threads ([`crate::worker`]).

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, TlsConfig};
use crate::gateway::Shared;
use crate::proxy::{ConnInfo, handle};
use crate::worker::Workers;

pub struct ListenerInfo {
    pub index: usize,
    pub name: String,
    /// Whether connections start with a TLS handshake; the certificate is the current
    /// snapshot's, so a reload can replace it.
    pub tls: bool,
}

/// A TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| format!("certFile {}: {e}", config.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certFile {}: no certificate found",
            config.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| format!("keyFile {}: {e}", config.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certFile/keyFile: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accepts until `stop` turns true, dealing connections to the workers, which serve them
/// and drain them on shutdown.
pub async fn serve(
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
pub(crate) async fn connection(
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
