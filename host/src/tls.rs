//! Server-side TLS for the client listeners: the acceptor a listener's certificate and key
//! build (rustls, ALPN `h2` and `http/1.1`), made when a snapshot is built so a reload can
//! replace the certificate.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// A TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 through ALPN.
pub(crate) fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
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
