//! `proxy_grpc_call` and `proxy_grpc_stream` as Envoy's wasm context runs them
//! (`source/extensions/common/wasm/context.cc`, `source/common/grpc/async_client_impl.cc`),
//! driven by the conformance filter (proxy-wasm Rust SDK) over the runtime's
//! `HostServices::open_stream`. The cluster here is the support module's stand-in; the
//! gateway's HTTP/2 client is exercised against `KServe`'s gRPC server by
//! `tests/e2e/test_grpc_callouts.py`.

mod support;

use modelgate_runtime::{FilterChain, Flow, Headers};
use support::{capture_logs, conformance, get, request, run_request, runtime};

fn grpc_request(case: &str, extra: &[(&str, &str)]) -> Headers {
    let mut headers = request(case);
    headers.push(("x-grpc-method".into(), b"Echo".to_vec()));
    headers.push(("x-grpc-request-hex".into(), b"0a0268690a".to_vec()));
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())),
    );
    headers
}

/// The filter's transcript (its local reply's body), one line per step.
fn transcript(flow: Flow) -> Vec<String> {
    let Flow::LocalReply(reply) = flow else {
        panic!("expected the filter's transcript, got {flow:?}")
    };
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_unary_call_sends_envoys_headers_and_delivers_the_message_on_close() {
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let headers = grpc_request("grpc-call", &[("x-grpc-service", "upstream")]);
    let (stream, flow, _) = run_request(&chain, headers).await;
    let lines = transcript(flow);
    // The first gRPC call id of a VM: 1 + 4 (proxy-wasm-cpp-host `nextGrpcCallId`).
    assert_eq!(lines[0], "dispatch=ok token=5");
    // The echo answers the framed request; the unary client strips the frame.
    assert_eq!(
        lines[1],
        "response token=5 status=0 body=0a0268690a message="
    );
    stream.finish();
    let streams = services.streams.lock().unwrap();
    let (cluster, sent) = &streams[0];
    assert_eq!(cluster, "upstream");
    let expect = [
        (":method", "POST"),
        (":path", "/inference.GRPCInferenceService/Echo"),
        (":authority", "upstream"),
        ("te", "trailers"),
        ("grpc-timeout", "5000m"),
        ("content-type", "application/grpc"),
        ("x-callout", "conformance"),
        ("x-envoy-internal", "true"),
        ("x-envoy-expected-rq-timeout-ms", "5000"),
    ];
    let names: Vec<&str> = sent.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, expect.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    for (name, value) in expect {
        assert_eq!(get(sent, name), Some(value), "{name}");
    }
}

#[tokio::test]
async fn a_stream_delivers_metadata_each_message_trailers_and_the_close() {
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    for case in ["grpc-stream", "grpc-stream-close"] {
        let headers = grpc_request(case, &[("x-grpc-service", "upstream")]);
        let (stream, flow, _) = run_request(&chain, headers).await;
        let lines = transcript(flow);
        let token = if case == "grpc-stream" { 6 } else { 10 };
        assert_eq!(
            lines,
            [
                format!("dispatch=ok token={token}"),
                format!("initial token={token} n=2 status=200 content-type=application/grpc"),
                // The echo returns the frame as sent, so the message is the request again.
                format!("message token={token} body=0a0268690a"),
                format!("trailing token={token} n=1 grpc-status=0"),
                format!("close token={token} status=0 message="),
            ],
            "{case}"
        );
        stream.finish();
    }
    let streams = services.streams.lock().unwrap();
    // Streams carry no timeout.
    assert_eq!(get(&streams[0].1, "grpc-timeout"), None);
    assert_eq!(get(&streams[0].1, "x-envoy-expected-rq-timeout-ms"), None);
}

#[tokio::test]
async fn a_reset_closes_internal_and_a_service_proto_names_cluster_and_authority() {
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let headers = grpc_request("grpc-call", &[("x-grpc-service", "failing")]);
    let (stream, flow, _) = run_request(&chain, headers).await;
    // `AsyncStreamImpl::onReset` -> streamError(Internal).
    assert_eq!(
        transcript(flow)[1],
        "response token=5 status=13 body= message="
    );
    stream.finish();
    // GrpcService { envoy_grpc { cluster_name: "upstream", authority: "svc.example" } }.
    let proto = "0a170a08757073747265616d120b7376632e6578616d706c65";
    let headers = grpc_request("grpc-call", &[("x-grpc-service-hex", proto)]);
    let (stream, flow, _) = run_request(&chain, headers).await;
    assert_eq!(
        transcript(flow)[1],
        "response token=9 status=0 body=0a0268690a message="
    );
    stream.finish();
    let streams = services.streams.lock().unwrap();
    assert_eq!(streams[1].0, "upstream");
    assert_eq!(get(&streams[1].1, ":authority"), Some("svc.example"));
}

#[tokio::test]
async fn a_missing_cluster_is_parse_failure_by_name_and_internal_failure_by_proto() {
    capture_logs();
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let headers = grpc_request("grpc-call", &[("x-grpc-service", "nowhere")]);
    let (stream, flow, _) = run_request(&chain, headers).await;
    assert_eq!(transcript(flow), ["dispatch=ParseFailure"]);
    stream.finish();
    // GrpcService { envoy_grpc { cluster_name: "nowhere" } }.
    let proto = "0a090a076e6f7768657265";
    let headers = grpc_request("grpc-stream", &[("x-grpc-service-hex", proto)]);
    let (stream, flow, _) = run_request(&chain, headers).await;
    assert_eq!(transcript(flow), ["dispatch=InternalFailure"]);
    stream.finish();
    assert!(services.streams.lock().unwrap().is_empty());
    // Envoy still delivers the client's "Cluster not available" close for the token the
    // filter never got; the Rust SDK logs and drops it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !support::logged(log::Level::Trace, "on_grpc_close: invalid token_id") {
        assert!(
            std::time::Instant::now() < deadline,
            "no close was delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
