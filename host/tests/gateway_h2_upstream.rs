//! HTTP/2 upstream clusters, selected by `appProtocol` as Envoy Gateway selects them
//! (`internal/gatewayapi/route.go`, `resolveBackendProtocol`): h2c with prior knowledge, and
//! h2 over TLS with ALPN `h2` checked against the cluster's CA and hostname. The upstreams are
//! real HTTP/2 servers (hyper) on loopback that answer with trailers, as gRPC servers do.

mod gateway_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use gateway_support::{TestGateway, check, client, get};

/// What an HTTP/2 upstream saw of one request.
#[derive(Clone, Debug)]
struct SeenH2 {
    version: Version,
    authority: Option<String>,
    scheme: Option<String>,
    host_header: Option<String>,
    te: Option<String>,
    alpn: Option<Vec<u8>>,
}

type Seen = Arc<Mutex<Vec<SeenH2>>>;

/// An HTTP/2-only server (h2c, or TLS with ALPN `h2` when `tls` is given) answering every
/// request with `ok` and the trailer `grpc-status: 0`.
async fn h2_upstream(tls: Option<TlsAcceptor>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (seen, tls) = (Arc::clone(&recorded), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(TokioIo::new(tcp), seen, None).await,
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        serve(TokioIo::new(stream), seen, alpn).await;
                    }
                }
            });
        }
    });
    (address, seen)
}

async fn serve<IO>(io: IO, seen: Seen, alpn: Option<Vec<u8>>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        seen.lock().unwrap().push(SeenH2 {
            version: request.version(),
            authority: request.uri().authority().map(ToString::to_string),
            scheme: request.uri().scheme_str().map(str::to_owned),
            host_header: header("host"),
            te: header("te"),
            alpn: alpn.clone(),
        });
        async move {
            let _ = request.into_body().collect().await;
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = Frames(
                vec![
                    Frame::data(Bytes::from_static(b"ok")),
                    Frame::trailers(trailers),
                ]
                .into_iter(),
            );
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// A body of fixed frames: data, then trailers.
struct Frames(std::vec::IntoIter<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.next().map(Ok))
    }
}

fn config(cluster: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{cluster}
routes: [{{match: {{prefix: /}}, cluster: grpc}}]
reload: {{watch: false}}
"
    )
}

/// A gRPC-shaped call over h2c to the gateway; the response's trailers come back with it.
async fn call_h2(gw: &TestGateway) -> (StatusCode, Bytes, Option<hyper::HeaderMap>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(gw.url("/inference.GRPCInferenceService/ServerLive"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn an_h2c_cluster_speaks_http2_with_prior_knowledge_and_trailers_come_back() {
    let (address, seen) = h2_upstream(None).await;
    let gw = TestGateway::start(&config(&format!(
        "  - {{name: grpc, appProtocol: kubernetes.io/h2c, endpoints: [{address}]}}"
    )))
    .await;
    let (status, body, trailers) = call_h2(&gw).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen.version, Version::HTTP_2);
    // The client's authority goes on as :authority, with no separate host header; `te:
    // trailers` is the one TE HTTP/2 allows and gRPC servers require.
    assert_eq!(seen.authority.as_deref(), Some(&*gw.address.to_string()));
    assert_eq!(seen.scheme.as_deref(), Some("http"));
    assert_eq!(seen.host_header, None);
    assert_eq!(seen.te.as_deref(), Some("trailers"));

    // An HTTP/1.1 client reaches the same HTTP/2 upstream.
    let answer = get(&client(), &gw.url("/v2/health/live")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "ok");
}

#[tokio::test]
async fn grpc_app_protocol_also_selects_http2_and_other_values_http1() {
    let (address, seen) = h2_upstream(None).await;
    let gw = TestGateway::start(&config(&format!(
        "  - {{name: grpc, appProtocol: grpc, endpoints: [{address}]}}"
    )))
    .await;
    assert_eq!(call_h2(&gw).await.0, StatusCode::OK);
    assert_eq!(seen.lock().unwrap()[0].version, Version::HTTP_2);

    // `kubernetes.io/ws` is not HTTP/2 for Envoy Gateway: HTTP/1.1 reaches an h2-only server,
    // which closes the connection, and the client gets Envoy's 503.
    let (address, seen) = h2_upstream(None).await;
    let gw = TestGateway::start(&config(&format!(
        "  - {{name: grpc, appProtocol: kubernetes.io/ws, endpoints: [{address}]}}"
    )))
    .await;
    let answer = get(&client(), &gw.url("/")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_tls_cluster_negotiates_h2_and_verifies_the_hostname() {
    let certified = rcgen::generate_simple_self_signed(vec!["kserve.test".to_owned()]).unwrap();
    let key =
        rustls_pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let (address, seen) = h2_upstream(Some(TlsAcceptor::from(Arc::new(server)))).await;

    let cluster = |hostname: &str| {
        format!(
            "  - {{name: grpc, appProtocol: kubernetes.io/h2c, endpoints: [{address}], \
             tls: {{caFile: ca.pem, hostname: {hostname}}}}}"
        )
    };
    let gw = start_with_ca(&config(&cluster("kserve.test")), &certified.cert.pem()).await;
    let (status, body, trailers) = call_h2(&gw).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(first.version, Version::HTTP_2);
    assert_eq!(first.scheme.as_deref(), Some("https"));

    // A hostname the certificate does not carry: no connection, Envoy's 503.
    let gw = start_with_ca(&config(&cluster("other.test")), &certified.cert.pem()).await;
    let answer = get(&client(), &gw.url("/")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

async fn start_with_ca(yaml: &str, ca_pem: &str) -> TestGateway {
    let config = gateway_support::ConfigFile::new(yaml);
    config.write("ca.pem", ca_pem);
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
    let address = gateway.listeners()[0].1;
    TestGateway {
        gateway,
        config,
        address,
        admin: None,
    }
}

#[test]
fn tls_config_errors_name_the_field() {
    let http1_over_tls = gateway_support::ConfigFile::new(&config(
        "  - {name: grpc, endpoints: [127.0.0.1:1], tls: {caFile: ca.pem, hostname: x}}",
    ));
    let (ok, out) = check(&http1_over_tls);
    assert!(!ok);
    assert!(
        out.contains("clusters[0].tls: upstream TLS needs an HTTP/2 appProtocol"),
        "{out}"
    );
    let missing_ca = gateway_support::ConfigFile::new(&config(
        "  - {name: grpc, appProtocol: grpc, endpoints: [127.0.0.1:1], \
         tls: {caFile: missing.pem, hostname: x}}",
    ));
    let (ok, out) = check(&missing_ca);
    assert!(!ok);
    assert!(out.contains("clusters[0].tls: caFile "), "{out}");
}
