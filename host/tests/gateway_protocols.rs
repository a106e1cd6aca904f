//! HTTPS with a certificate made in the test (ALPN h2 and http/1.1), and h2c on a plain
//! listener, end to end to a real upstream.

mod gateway_support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use gateway_support::{TestGateway, Upstream, catch_all, cluster};

struct TlsSetup {
    gateway: TestGateway,
    upstream: Upstream,
    root: CertificateDer<'static>,
}

async fn tls_gateway() -> TlsSetup {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let upstream = Upstream::start("iris").await;
    // Certificate files are written next to the config and named relative to it.
    let yaml = format!(
        "version: 1
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls: {{certFile: server.pem, keyFile: server-key.pem}}
clusters:
{}routes: [{{match: {{prefix: /}}, cluster: iris}}]
reload: {{watch: false}}
",
        cluster("iris", &[&upstream])
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write("server.pem", certified.cert.pem());
    config.write("server-key.pem", certified.signing_key.serialize_pem());
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap();
    let address = gateway.listeners()[0].1;
    let gateway = TestGateway {
        gateway,
        config,
        address,
        admin: None,
    };
    TlsSetup {
        gateway,
        upstream,
        root: certified.cert.der().clone(),
    }
}

/// A TLS connection to the gateway offering the given ALPN protocols.
async fn connect(setup: &TlsSetup, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    try_connect(setup, &setup.root, alpn).await.unwrap()
}

/// A TLS connection that trusts only `root`.
async fn try_connect(
    setup: &TlsSetup,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(setup.gateway.address).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test]
async fn a_reload_replaces_the_certificate_and_a_bad_one_is_refused() {
    let setup = tls_gateway().await;
    let config = &setup.gateway.config;
    let next = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let next_root = next.cert.der().clone();
    // Until the reload the old certificate is served.
    assert!(try_connect(&setup, &next_root, &[b"h2"]).await.is_err());
    config.write("server.pem", next.cert.pem());
    config.write("server-key.pem", next.signing_key.serialize_pem());
    setup.gateway.gateway.reload().await.unwrap();
    assert!(try_connect(&setup, &next_root, &[b"h2"]).await.is_ok());
    assert!(try_connect(&setup, &setup.root, &[b"h2"]).await.is_err());
    // A certificate file that is not PEM is refused and the running one stays.
    config.write("server.pem", "not a certificate");
    let errors = setup.gateway.gateway.reload().await.unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors.messages()[0].starts_with("listeners[0].tls: certFile "),
        "{errors}"
    );
    assert_eq!(
        errors.0[0].kind,
        modelgate_host::gateway::ConfigErrorKind::Resource
    );
    assert!(try_connect(&setup, &next_root, &[b"h2"]).await.is_ok());
}

#[tokio::test]
async fn https_with_alpn_h2_reaches_the_upstream() {
    let setup = tls_gateway().await;
    let tls = connect(&setup, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post("https://localhost/v1/models/iris:predict")
        .header("x-custom", "over-h2")
        .body(Full::new(Bytes::from_static(b"{\"instances\":[[1]]}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"{\"upstream\":\"iris\"}"));
    let seen = setup.upstream.last();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-custom"], "over-h2");
    assert_eq!(seen.headers["host"], "localhost");
    assert_eq!(&seen.body[..], b"{\"instances\":[[1]]}");
}

#[tokio::test]
async fn https_with_http1_still_works() {
    let setup = tls_gateway().await;
    let tls = connect(&setup, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/v2/health/ready")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(setup.upstream.last().path, "/v2/health/ready");
}

#[tokio::test]
async fn plain_listener_speaks_h2c_with_prior_knowledge() {
    let upstream = Upstream::start("iris").await;
    let yaml = catch_all("{address: 127.0.0.1:0}", &upstream);
    let gw = TestGateway::start(&yaml).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = client
        .request(
            Request::get(gw.url("/v1/models/iris"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.last().path, "/v1/models/iris");
    assert_eq!(upstream.last().headers["host"], gw.address.to_string());
}
