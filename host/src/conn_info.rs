//! Where a connection came from: the listener that accepted it ([`ListenerInfo`]) and the
//! connection a request arrived on ([`ConnInfo`]), as the proxy, the access log and the
//! filters' connection properties see it.

use std::net::SocketAddr;

/// The connection a request arrived on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub listener: String,
    pub listener_index: usize,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub connection_id: u64,
    pub tls: bool,
}

pub(crate) struct ListenerInfo {
    pub index: usize,
    pub name: String,
    /// Whether connections start with a TLS handshake; the certificate is the current
    /// snapshot's, so a reload can replace it.
    pub tls: bool,
}
