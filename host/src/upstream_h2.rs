//! HTTP/2 to upstream endpoints: h2c (prior knowledge) on plain TCP, or h2 over TLS (ALPN
//! `h2`), for clusters whose `appProtocol` asks for HTTP/2.
//!
//! Envoy Gateway turns a backend's `appProtocol` of `kubernetes.io/h2c` (or
//! `gateway.envoyproxy.io/h2c`, or `grpc`) into an HTTP/2 upstream
//! (`internal/gatewayapi/route.go`, `resolveBackendProtocol`), which the xDS translator writes as
//! the cluster's `explicit_http_config.http2_protocol_options`
//! (`internal/xds/translator/cluster.go`, `buildTypedExtensionProtocolOptions`); with a
//! `BackendTLSPolicy` the same cluster gets a TLS transport socket, and Envoy's HTTP/2 pool then
//! offers ALPN `h2`. Envoy keeps one multiplexed connection per endpoint and opens another
//! when it closes; so does this client, one per worker thread as the HTTP/1.1 pools are.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::header::HOST;
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::GatewayBody;
use crate::config::UpstreamTlsConfig;

/// TLS towards the endpoints: the trust roots and the name their certificate must carry.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// Roots from `caFile` (PEM) and `hostname` as SNI and the name verified, as a
    /// `BackendTLSPolicy`'s `caCertificateRefs` and `hostname` set them. ALPN offers `h2` only:
    /// the cluster speaks HTTP/2.
    pub(crate) fn new(config: &UpstreamTlsConfig) -> Result<UpstreamTls, String> {
        let roots = read_roots(&config.ca_file)?;
        let server_name = ServerName::try_from(config.hostname.clone())
            .map_err(|e| format!("hostname {:?}: {e}", config.hostname))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}

fn read_roots(file: &Path) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(Iterator::collect)
        .map_err(|e| format!("caFile {}: {e}", file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("caFile {}: no certificate found", file.display()));
    }
    Ok(roots)
}

/// Why an HTTP/2 request got no response.
#[derive(Debug)]
pub(crate) enum H2Error {
    /// No connection: TCP connect, TLS handshake or HTTP/2 preface failed or timed out.
    Connect(String),
    /// The connection failed while the request was on it (reset, GOAWAY, protocol error).
    Request(hyper::Error),
}

impl fmt::Display for H2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H2Error::Connect(why) => write!(f, "connect: {why}"),
            H2Error::Request(e) => write!(f, "{e}"),
        }
    }
}

/// HTTP/2 connections of one worker to a cluster's endpoints, one per endpoint.
pub(crate) struct H2Client {
    connect_timeout: Duration,
    tls: Option<UpstreamTls>,
    connections: Mutex<HashMap<SocketAddr, SendRequest<GatewayBody>>>,
}

impl H2Client {
    pub(crate) fn new(connect_timeout: Duration, tls: Option<UpstreamTls>) -> Self {
        H2Client {
            connect_timeout,
            tls,
            connections: Mutex::default(),
        }
    }

    /// Sends `request` (as [`crate::headers::to_upstream_request`] builds it: the endpoint in
    /// the URI, the client's authority in `host`) to `endpoint`. On HTTP/2 the authority travels
    /// as `:authority`, so the URI is rewritten to carry it and `host` is dropped, as Envoy's
    /// HTTP/2 codec sends the request's host.
    pub(crate) async fn request(
        &self,
        endpoint: SocketAddr,
        mut request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, H2Error> {
        *request.uri_mut() = self.h2_uri(endpoint, &request)?;
        request.headers_mut().remove(HOST);
        let mut sender = self.sender(endpoint).await?;
        if sender.ready().await.is_err() {
            // Closed since it was stored (GOAWAY, idle close): one fresh connection.
            self.forget(endpoint);
            sender = self.sender(endpoint).await?;
            sender
                .ready()
                .await
                .map_err(|e| H2Error::Connect(e.to_string()))?;
        }
        sender.send_request(request).await.map_err(|e| {
            self.forget(endpoint);
            H2Error::Request(e)
        })
    }

    /// `<scheme>://<authority><path>`: the authority from `host` (the client's), else the
    /// endpoint.
    fn h2_uri(&self, endpoint: SocketAddr, request: &Request<GatewayBody>) -> Result<Uri, H2Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let authority = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| endpoint.to_string(), str::to_owned);
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| H2Error::Connect(format!("request URI: {e}")))
    }

    fn forget(&self, endpoint: SocketAddr) {
        self.lock().remove(&endpoint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SendRequest<GatewayBody>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint's open connection, or a new one. Two requests that find none at the same
    /// time each open one; the later is kept and the other closes once its stream ends.
    async fn sender(&self, endpoint: SocketAddr) -> Result<SendRequest<GatewayBody>, H2Error> {
        if let Some(sender) = self.lock().get(&endpoint).filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect(endpoint))
            .await
            .map_err(|_| H2Error::Connect("timed out".to_owned()))??;
        self.lock().insert(endpoint, sender.clone());
        Ok(sender)
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<SendRequest<GatewayBody>, H2Error> {
        let connect_error = |e: &dyn fmt::Display| H2Error::Connect(format!("{endpoint}: {e}"));
        let tcp = TcpStream::connect(endpoint)
            .await
            .map_err(|e| connect_error(&e))?;
        let _ = tcp.set_nodelay(true);
        // No keep-alive pings: Envoy sends none unless `connection_keepalive` is set.
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        match &self.tls {
            None => {
                let (sender, connection) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| connect_error(&e))?;
                tokio::spawn(connection);
                Ok(sender)
            }
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| connect_error(&e))?;
                let (sender, connection) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| connect_error(&e))?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}
