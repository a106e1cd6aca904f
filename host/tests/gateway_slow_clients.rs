//! Clients that never finish: a trickled request head and a stalled TLS handshake are cut off
//! at the listener's deadlines, and an HTTP/2 request without `:path` is refused.

mod gateway_support;

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use gateway_support::{TestGateway, Upstream, catch_all, client, cluster, get};

/// Far above the configured deadlines: only a gateway that never closes reaches it.
const BOUND: Duration = Duration::from_secs(10);

/// Reads until the gateway closes the connection; what it sent before closing.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the gateway kept the slow connection open")
        .ok();
    received
}

#[tokio::test]
async fn a_trickled_request_head_is_closed_while_others_are_served() {
    let upstream = Upstream::start("iris").await;
    let yaml = catch_all(
        "{address: 127.0.0.1:0, headerReadTimeout: 300ms}",
        &upstream,
    );
    let gw = TestGateway::start(&yaml).await;
    let mut slow = TcpStream::connect(gw.address).await.unwrap();
    slow.write_all(b"GET /v1/models/iris HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = get(&client(), &gw.url("/v1/models/iris")).await;
    assert_eq!(answer.status, hyper::StatusCode::OK);
    let received = read_until_closed(&mut slow).await;
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(upstream.count(), 1, "only the honest request goes upstream");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed() {
    let upstream = Upstream::start("iris").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let yaml = format!(
        "version: 1
listeners:
  - address: 127.0.0.1:0
    tls: {{certFile: server.pem, keyFile: server-key.pem}}
    tlsHandshakeTimeout: 300ms
clusters:
{}routes: [{{match: {{prefix: /}}, cluster: iris}}]
",
        cluster("iris", &[&upstream])
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write("server.pem", certified.cert.pem());
    config.write("server-key.pem", certified.signing_key.serialize_pem());
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap();
    let mut stalled = TcpStream::connect(gateway.listeners()[0].1).await.unwrap();
    // The first bytes of a ClientHello record, and then nothing.
    stalled
        .write_all(b"\x16\x03\x01\x02\x00\x01")
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut stalled).await, b"");
}

#[tokio::test]
async fn an_h2_request_without_path_gets_400() {
    let upstream = Upstream::start("iris").await;
    let yaml = catch_all("{address: 127.0.0.1:0}", &upstream);
    let gw = TestGateway::start(&yaml).await;
    let mut stream = TcpStream::connect(gw.address).await.unwrap();
    // Written by hand because HTTP/2 clients refuse to send it: the preface, empty SETTINGS,
    // and HEADERS (END_STREAM | END_HEADERS, stream 1) holding only the HPACK static
    // entries `:method: POST` (3) and `:scheme: http` (6).
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 2, 1, 5, 0, 0, 0, 1, 0x83, 0x86]);
    stream.write_all(&bytes).await.unwrap();
    let status = tokio::time::timeout(BOUND, first_headers_on_stream_1(&mut stream))
        .await
        .expect("no answer on stream 1");
    // 0x8c is the HPACK static entry `:status: 400`.
    assert_eq!(status, 0x8c);
    assert_eq!(upstream.count(), 0);
}

/// Reads frames until the HEADERS frame on stream 1; the first byte of its header block.
async fn first_headers_on_stream_1(stream: &mut TcpStream) -> u8 {
    loop {
        let mut head = [0_u8; 9];
        stream.read_exact(&mut head).await.unwrap();
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0_u8; length];
        stream.read_exact(&mut payload).await.unwrap();
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        assert!(
            !(head[3] == 3 && stream_id == 1),
            "stream 1 was reset instead of answered"
        );
        if head[3] == 1 && stream_id == 1 {
            return payload[0];
        }
    }
}
