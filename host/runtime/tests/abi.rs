//! ABI conformance: the `conformance` test filter calls every host function and reports what
//! the host answered; these tests assert Envoy's answers and the outcomes a client would see.

mod support;

use modelgate_runtime::{FilterChain, Flow, LocalReply, MetricValue};
use support::{
    capture_logs, conformance, get, info, logged, logged_critical, request, response, run_request,
    runtime, shared_value, values,
};

fn local_reply(flow: Flow) -> LocalReply {
    match flow {
        Flow::LocalReply(reply) => reply,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

#[tokio::test]
async fn header_maps_get_add_replace_remove_including_pseudo_headers_and_multiple_values() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut headers = request("headers");
    headers.push(("x-multi".into(), b"a".to_vec()));
    headers.push(("x-replaced".into(), b"r1".to_vec()));
    headers.push(("x-replaced".into(), b"r2".to_vec()));
    headers.push(("x-removed".into(), b"gone".to_vec()));
    let (mut stream, flow, headers) = run_request(&chain, headers).await;
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(get(&headers, ":path"), Some("/rewritten"));
    assert_eq!(
        headers[0].0, ":authority",
        "pseudo-headers stay first: {headers:?}"
    );
    assert_eq!(get(&headers, "x-first"), Some("a"));
    assert_eq!(values(&headers, "x-multi"), ["a", "b"]);
    assert_eq!(values(&headers, "x-replaced"), ["new"]);
    assert_eq!(get(&headers, "x-removed"), None);
    assert_eq!(get(&headers, "x-seen-method"), Some("POST"));
    assert_eq!(get(&headers, "x-seen-authority"), Some("example.com"));
    assert_eq!(get(&headers, "x-missing-status"), Some("1"), "NOT_FOUND");
    assert_eq!(
        get(&headers, "x-response-map-status"),
        Some("2"),
        "no response map yet: BAD_ARGUMENT"
    );
    assert_eq!(get(&headers, "x-bad-map-status"), Some("2"));
    assert!(
        get(&headers, "x-map-size")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 50
    );
    assert_eq!(
        get(&headers, "x-context-id"),
        Some("2"),
        "first stream context id is 2"
    );
    assert!(
        stream.take_route_cache_cleared(),
        "changing request headers clears the route cache"
    );
    assert!(
        !stream.take_route_cache_cleared(),
        "the flag resets once taken"
    );

    let mut resp = response("200");
    let flow = stream.response_headers(&mut resp, false).await;
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(get(&resp, ":status"), Some("201"));
    assert_eq!(resp[0].0, ":status");
    assert_eq!(get(&resp, "x-seen-status"), Some("200"));
    assert_eq!(
        get(&resp, "x-late-request-status"),
        Some("2"),
        "request headers are gone after their phase"
    );
    assert_eq!(get(&resp, "x-p-response-code"), Some("200"));
    stream.finish();

    // Context ids are never reused.
    let (stream, _, headers) = run_request(&chain, request("headers")).await;
    assert_eq!(get(&headers, "x-context-id"), Some("3"));
    stream.finish();
}

#[tokio::test]
async fn header_map_pairs_replace_the_whole_map() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut headers = request("pairs");
    headers.push(("x-drop".into(), b"1".to_vec()));
    let (stream, _, headers) = run_request(&chain, headers).await;
    assert_eq!(get(&headers, "x-drop"), None);
    assert_eq!(get(&headers, "x-set-by-pairs"), Some("1"));
    assert_eq!(get(&headers, ":path"), Some("/v1/models/m:predict?x=1"));
    stream.finish();
}

#[tokio::test]
async fn trailers_are_editable_in_their_phase() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut stream = chain.stream(info());
    let mut headers = request("trailers");
    stream.request_headers(&mut headers, false).await;
    let mut trailers = vec![("grpc-status".to_string(), b"0".to_vec())];
    assert!(matches!(
        stream.request_trailers(&mut trailers).await,
        Flow::Continue
    ));
    assert_eq!(get(&trailers, "x-trailer-added"), Some("1"));
    let mut resp = response("200");
    stream.response_headers(&mut resp, false).await;
    let mut trailers = Vec::new();
    stream.response_trailers(&mut trailers).await;
    assert_eq!(get(&trailers, "x-response-trailer-added"), Some("1"));
    stream.finish();
}

#[tokio::test]
async fn a_buffered_body_is_readable_when_trailers_end_the_stream() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut stream = chain.stream(info());
    let mut headers = request("body-then-trailers");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"partial".to_vec();
    assert!(matches!(
        stream.request_body(&mut body, false).await,
        Flow::StopAndBuffer
    ));
    let mut trailers = Vec::new();
    assert!(matches!(
        stream.request_trailers(&mut trailers).await,
        Flow::Continue
    ));
    let state = stream.filter_state();
    let seen = state
        .iter()
        .find(|(k, _)| k == "wasm.trailers.body")
        .unwrap();
    assert_eq!(seen.1, b"partial");
    assert_eq!(body, b"partial", "the gateway keeps its body");
    stream.finish();
}

#[tokio::test]
async fn status_codes_match_envoy() {
    capture_logs(); // the log level the guest reads is the host's: trace here
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, h) = run_request(&chain, request("statuses")).await;
    stream.finish();
    let expect = [
        ("x-plugin-config-status", "1"), // plugin config only during on_configure
        ("x-vm-config", "vm-config"),    // VM config always
        ("x-call-body-status", "1"),     // no http_call answer being delivered
        ("x-body-outside-phase", "0:true"), // empty: pointer 0, length 0
        ("x-set-body-outside-phase", "1"),
        ("x-bad-buffer-type", "2"),
        // "svc" is neither a GrpcService proto nor a cluster: PARSE_FAILURE, as Envoy's grpcCall.
        ("x-grpc-status", "4"),
        ("x-effective-bad", "2"),
        ("x-effective-root", "0:2:0"), // root has no request map
        ("x-done-status", "1"),
        ("x-log-bad-level", "2"),
        ("x-foreign-unknown", "1"),
        ("x-dequeue-unknown", "1"),
        ("x-enqueue-unknown", "1"),
        ("x-dequeue-empty", "7"),
        ("x-metric-bad-type", "2"),
        ("x-metric-unknown", "1"),
        ("x-log-level", "0"),
        (
            "x-legacy",
            // Token 1 is a gRPC call's kind (low bits 01) that was never opened: send is for
            // streams only (BAD_ARGUMENT), cancel and close find nothing (NOT_FOUND).
            "get_configuration=0 continue_request=0 continue_response=0 clear_route_cache=0 grpc_stream=4 \
             grpc_send=2 grpc_cancel=1 grpc_close=1 get_status=0 config= grpc_code=0",
        ),
    ];
    for (key, want) in expect {
        assert_eq!(get(&h, key), Some(want), "{key}");
    }
    let now: u128 = get(&h, "x-now-ns").unwrap().parse().unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(
        wall.abs_diff(now) < 5_000_000_000,
        "proxy_get_current_time_nanoseconds is wall time"
    );
}

#[tokio::test]
async fn request_body_is_buffered_cumulatively_and_rewritten() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    for (case, want) in [
        ("body-rewrite", "ABCDEF"),
        ("body-append", "abcdef+tail"),
        ("body-prepend", "head+abcdef"),
    ] {
        let mut stream = chain.stream(info());
        let mut headers = request(case);
        assert!(matches!(
            stream.request_headers(&mut headers, false).await,
            Flow::Continue
        ));
        let mut body = b"abc".to_vec();
        assert!(
            matches!(
                stream.request_body(&mut body, false).await,
                Flow::StopAndBuffer
            ),
            "{case}"
        );
        body.extend_from_slice(b"def");
        assert!(
            matches!(stream.request_body(&mut body, true).await, Flow::Continue),
            "{case}"
        );
        assert_eq!(String::from_utf8(body).unwrap(), want, "{case}");
        let state = stream.filter_state();
        let sizes = state.iter().find(|(k, _)| k == "wasm.body.sizes").unwrap();
        assert_eq!(sizes.1, b"3,6", "the second call sees the cumulative size");
        stream.finish();
    }
}

#[tokio::test]
async fn set_buffer_bytes_in_the_middle_is_bad_argument_and_reads_clamp() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut stream = chain.stream(info());
    let mut headers = request("body-bad-start");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"abcdef".to_vec();
    assert!(matches!(
        stream.request_body(&mut body, true).await,
        Flow::Continue
    ));
    assert_eq!(body, b"abcdef");
    let state = stream.filter_state();
    let report = state.iter().find(|(k, _)| k == "wasm.body.report").unwrap();
    assert_eq!(String::from_utf8_lossy(&report.1), "2:cde:0");
    stream.finish();
}

#[tokio::test]
async fn buffering_past_the_limit_gives_413_request_side_and_500_response_side() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]).with_buffer_limit(8);
    let mut stream = chain.stream(info());
    let mut headers = request("body-buffer-forever");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"12345".to_vec();
    assert!(matches!(
        stream.request_body(&mut body, false).await,
        Flow::StopAndBuffer
    ));
    body.extend_from_slice(b"6789");
    let reply = local_reply(stream.request_body(&mut body, false).await);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.body, b"Payload Too Large");
    stream.finish();

    let mut stream = chain.stream(info());
    let mut headers = request("resp-body-buffer-forever");
    stream.request_headers(&mut headers, true).await;
    let mut resp = response("200");
    stream.response_headers(&mut resp, false).await;
    let mut body = b"123456789".to_vec();
    let reply = local_reply(stream.response_body(&mut body, false).await);
    assert_eq!(reply.status, 500);
    stream.finish();
}

/// A bound on calls that must resolve now: a hang fails the test instead of stalling it.
const NO_HANG: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn a_single_frame_body_past_the_limit_gets_413_or_500_even_at_the_end_of_the_stream() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]).with_buffer_limit(8);
    // Envoy buffers what a StopIterationAndBuffer filter holds in a watermark buffer: past
    // the limit the stream is answered, whether or not the frame ended the stream.
    let mut stream = chain.stream(info());
    let mut headers = request("body-buffer-forever");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"123456789".to_vec();
    let flow = tokio::time::timeout(NO_HANG, stream.request_body(&mut body, true)).await;
    let reply = local_reply(flow.expect("the over-limit body must not wait for the filter"));
    assert_eq!(reply.status, 413);
    assert_eq!(reply.body, b"Payload Too Large");
    assert_eq!(get(&reply.headers, "x-seen-status"), Some("413"));
    stream.finish();

    // Chunked, with the last chunk ending the stream.
    let mut stream = chain.stream(info());
    let mut headers = request("body-buffer-forever");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"12345".to_vec();
    assert!(matches!(
        stream.request_body(&mut body, false).await,
        Flow::StopAndBuffer
    ));
    body.extend_from_slice(b"6789");
    let flow = tokio::time::timeout(NO_HANG, stream.request_body(&mut body, true)).await;
    assert_eq!(local_reply(flow.expect("no hang")).status, 413);
    stream.finish();

    let mut stream = chain.stream(info());
    let mut headers = request("resp-body-buffer-forever");
    stream.request_headers(&mut headers, true).await;
    let mut resp = response("200");
    stream.response_headers(&mut resp, false).await;
    let mut body = b"123456789".to_vec();
    let flow = tokio::time::timeout(NO_HANG, stream.response_body(&mut body, true)).await;
    let reply = local_reply(flow.expect("the over-limit body must not wait for the filter"));
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, b"Internal Server Error");
    stream.finish();
}

#[tokio::test]
async fn a_body_within_the_limit_paused_at_its_end_waits_and_ends_cleanly_when_dropped() {
    use std::future::Future as _;
    use std::task::{Context, Waker};

    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]).with_buffer_limit(8);
    let mut stream = chain.stream(info());
    let mut headers = request("body-buffer-forever");
    stream.request_headers(&mut headers, false).await;
    let mut body = b"12345678".to_vec();
    {
        // Envoy waits for proxy_continue_stream; the gateway's requestTimeout drops the wait.
        let mut wait = std::pin::pin!(stream.request_body(&mut body, true));
        let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "a body within the limit waits");
    }
    stream.finish();
    let last = shared_value(&chain, "last-log").await.unwrap();
    assert_eq!(
        last, "2:/v1/models/m:predict?x=1:2",
        "on_log ran for the abandoned stream"
    );
    // The VM is not wedged: the next stream on it runs through.
    let (stream, flow, _) = run_request(&chain, request("noop")).await;
    assert!(matches!(flow, Flow::Continue));
    stream.finish();
    assert_eq!(shared_value(&chain, "logs").await.as_deref(), Some("3"));
}

#[tokio::test]
async fn response_body_append_and_prepend() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let mut stream = chain.stream(info());
    let mut headers = request("resp-body");
    stream.request_headers(&mut headers, true).await;
    let mut resp = response("200");
    stream.response_headers(&mut resp, false).await;
    let mut body = b"hel".to_vec();
    assert!(matches!(
        stream.response_body(&mut body, false).await,
        Flow::StopAndBuffer
    ));
    body.extend_from_slice(b"lo");
    assert!(matches!(
        stream.response_body(&mut body, true).await,
        Flow::Continue
    ));
    assert_eq!(body, b"<hello!");
    stream.finish();
}

#[tokio::test]
async fn local_reply_passes_through_the_filters_response_callbacks() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, flow, _) = run_request(&chain, request("local-reply")).await;
    let reply = local_reply(flow);
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.body, b"[denied]",
        "on_http_response_body rewrote the local reply"
    );
    assert_eq!(get(&reply.headers, "x-reply"), Some("1"));
    assert_eq!(
        get(&reply.headers, "x-seen-status"),
        Some("403"),
        "on_http_response_headers saw it"
    );
    assert_eq!(get(&reply.headers, "content-type"), Some("text/plain"));
    assert_eq!(get(&reply.headers, "content-length"), Some("8"));
    assert!(reply.headers.iter().all(|(k, _)| k != ":status"));
    stream.finish();

    // A local reply wins even when the callback returned Continue; given headers are kept.
    let (stream, flow, _) = run_request(&chain, request("local-reply-typed")).await;
    let reply = local_reply(flow);
    assert_eq!(reply.status, 429);
    assert_eq!(values(&reply.headers, "content-type"), ["application/json"]);
    stream.finish();
}

#[tokio::test]
async fn local_reply_from_the_response_side_replaces_the_upstream_response() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (mut stream, _, _) = run_request(&chain, request("resp-local-reply")).await;
    let mut resp = response("200");
    let reply = local_reply(stream.response_headers(&mut resp, false).await);
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, b"bad upstream");
    stream.finish();
}

#[tokio::test]
async fn pause_then_resume_after_http_call() {
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, flow, headers) = run_request(&chain, request("http-call")).await;
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(get(&headers, "x-call-status"), Some("200"));
    assert_eq!(get(&headers, "x-call-body"), Some("pong"));
    assert_eq!(get(&headers, "x-call-body-status-buffer"), Some("4"));
    stream.finish();
    let calls = services.calls.lock().unwrap();
    let (cluster, call) = &calls[0];
    assert_eq!(cluster, "upstream");
    assert_eq!(get(&call.headers, ":path"), Some("/ping"));
    assert_eq!(call.body, b"ping");
    // What Envoy's async client adds (async_client_impl.cc `AsyncStreamImpl::sendHeaders`;
    // router.cc `FilterUtility::finalTimeout`, the async client's router not suppressing
    // Envoy headers).
    assert_eq!(get(&call.headers, "x-envoy-internal"), Some("true"));
    assert_eq!(
        get(&call.headers, "x-envoy-expected-rq-timeout-ms"),
        Some(CALL_TIMEOUT_MS)
    );
}

/// The timeout the conformance filter gives its `http_call`.
const CALL_TIMEOUT_MS: &str = "1000";

#[tokio::test]
async fn http_call_failure_delivers_zero_headers_and_a_reply_after_a_call_works() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, flow, headers) = run_request(&chain, request("http-call-fail")).await;
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(get(&headers, "x-call-failed"), Some("1"));
    stream.finish();

    let (stream, flow, _) = run_request(&chain, request("http-call-reply")).await;
    let reply = local_reply(flow);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, b"from call");
    assert_eq!(get(&reply.headers, "x-after-call"), Some("1"));
    stream.finish();
}

#[tokio::test]
async fn http_call_to_unknown_cluster_or_without_required_headers_is_bad_argument() {
    let (runtime, services) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, headers) = run_request(&chain, request("http-call-bad")).await;
    assert_eq!(get(&headers, "x-unknown-cluster"), Some("2"));
    assert_eq!(get(&headers, "x-missing-authority"), Some("2"));
    assert_eq!(get(&headers, "x-missing-method"), Some("2"));
    stream.finish();
    assert!(services.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn properties_have_envoys_names_and_encodings() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (mut stream, _, h) = run_request(&chain, request("properties")).await;
    let expect = [
        ("x-p-request-path", "/v1/models/m:predict?x=1"),
        ("x-p-request-url_path", "/v1/models/m:predict"),
        ("x-p-request-host", "example.com"),
        ("x-p-request-scheme", "http"),
        ("x-p-request-method", "POST"),
        ("x-p-request-id", "req-1"),
        ("x-p-request-protocol", "HTTP/1.1"),
        ("x-p-request-time", "1700000000000000000"),
        ("x-p-request-headers-match", "true"),
        ("x-p-source-address", "10.0.0.7:40000"),
        ("x-p-source-port", "40000"),
        ("x-p-destination-address", "127.0.0.1:8080"),
        ("x-p-destination-port", "8080"),
        ("x-p-connection-id", "42"),
        ("x-p-connection-mtls", "[0]"),
        ("x-p-plugin-name", "conformance"),
        ("x-p-plugin-root-id", "conformance-root"),
        ("x-p-plugin-vm-id", "conformance-vm"),
        ("x-p-dotted-status", "1"),
        ("x-p-unknown-status", "1"),
        ("x-p-filter-state", "stored"),
    ];
    for (key, want) in expect {
        assert_eq!(get(&h, key), Some(want), "{key}");
    }
    assert_eq!(
        stream.filter_state(),
        vec![("wasm.my.key".to_string(), b"stored".to_vec())]
    );
    stream.set_upstream("models", "127.0.0.1:9001".parse().unwrap());
    let mut resp = response("404");
    stream.response_headers(&mut resp, true).await;
    assert_eq!(get(&resp, "x-p-response-code"), Some("404"));
    assert_eq!(
        get(&resp, "x-p-request-path-later"),
        Some("/v1/models/m:predict?x=1")
    );
    assert_eq!(get(&resp, "x-p-upstream-address"), Some("127.0.0.1:9001"));
    assert_eq!(get(&resp, "x-p-cluster"), Some("models"));
    stream.finish();
}

#[tokio::test]
async fn metrics_have_envoys_id_encoding_and_values() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, h) = run_request(&chain, request("metrics")).await;
    stream.finish();
    assert_eq!(get(&h, "x-counter-id-type"), Some("0"));
    assert_eq!(get(&h, "x-gauge-id-type"), Some("1"));
    assert_eq!(get(&h, "x-histogram-id-type"), Some("2"));
    assert_eq!(get(&h, "x-gauge-after-increments"), Some("3"));
    assert_eq!(
        get(&h, "x-counter"),
        Some("6"),
        "1 per request + increment 2 + record 3"
    );
    assert_eq!(get(&h, "x-gauge"), Some("7"), "record sets a gauge");
    assert_eq!(
        get(&h, "x-histogram-get"),
        Some("2"),
        "histograms are not readable"
    );
    assert_eq!(get(&h, "x-counter-negative"), Some("2"));
    assert_eq!(get(&h, "x-histogram-increment"), Some("2"));
    let metrics = runtime.metrics();
    let find = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value.clone())
            .unwrap()
    };
    assert_eq!(find("conformance_requests"), MetricValue::Counter(6));
    assert_eq!(find("conformance_gauge"), MetricValue::Gauge(7));
    let MetricValue::Histogram {
        buckets,
        sum,
        count,
    } = find("conformance_latency")
    else {
        panic!()
    };
    assert_eq!((sum, count), (703.0, 2));
    assert_eq!(
        buckets
            .iter()
            .find(|(le, _)| (*le - 5.0).abs() < f64::EPSILON)
            .unwrap()
            .1,
        1
    );
    assert_eq!(buckets.last().unwrap().1, 2);
}

#[tokio::test]
async fn wasi_clock_random_environ_and_fd_write() {
    capture_logs();
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, a) = run_request(&chain, request("wasi")).await;
    stream.finish();
    let (stream, _, b) = run_request(&chain, request("wasi")).await;
    stream.finish();
    assert_eq!(get(&a, "x-env"), Some("from-spec"));
    assert_eq!(
        get(&a, "x-env-count"),
        Some("1"),
        "only the variables the plugin names"
    );
    let now: u64 = get(&a, "x-now-s").unwrap().parse().unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(wall.abs_diff(now) < 5);
    assert_eq!(get(&a, "x-monotonic-ok"), Some("true"));
    assert_eq!(get(&a, "x-random-status"), Some("0"));
    assert_eq!(get(&a, "x-random").unwrap().len(), 64);
    assert_ne!(get(&a, "x-random"), get(&b, "x-random"));
    assert_eq!(
        get(&a, "x-random-too-big"),
        Some("28"),
        "EINVAL past 64 KiB"
    );
    assert!(logged(
        log::Level::Info,
        "wasm log conformance conformance-root conformance-vm: stdout from stream 2"
    ));
    assert!(logged(
        log::Level::Error,
        "wasm log conformance conformance-root conformance-vm: stderr from stream 2"
    ));
    assert!(
        logged(
            log::Level::Info,
            "wasm log conformance-root conformance-vm: stdout from vm 0"
        ),
        "fd_write works during start-up"
    );
}

// Envoy's `Context::log` writes `wasm log<prefix>: <message>` at the guest's level, critical
// included (source/extensions/common/wasm/context.cc); the prefix is proxy-wasm-cpp-host's
// `PluginBase::makeLogPrefix` on a stream (` <name> <root_id> <vm_id>`) and
// `ContextBase::makeRootLogPrefix` on the root context (` <root_id> <vm_id>`).
#[tokio::test]
async fn guest_logs_carry_proxy_wasm_cpp_host_prefixes_and_levels() {
    capture_logs();
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, _) = run_request(&chain, request("log")).await;
    stream.finish();
    assert!(logged(
        log::Level::Warn,
        "wasm log conformance conformance-root conformance-vm: warning from stream 2"
    ));
    assert!(logged_critical(
        "wasm log conformance conformance-root conformance-vm: critical from stream 2"
    ));
    assert!(logged(
        log::Level::Info,
        "wasm log conformance-root conformance-vm: configured vm 0"
    ));
}

#[tokio::test]
async fn on_log_sees_read_only_maps_and_every_stream_ends() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, _, _) = run_request(&chain, request("noop")).await;
    stream.finish();
    // Drop ends a stream too.
    let (stream, _, _) = run_request(&chain, request("noop")).await;
    drop(stream);
    let last = shared_value(&chain, "last-log").await.unwrap();
    assert_eq!(
        last, "3:/v1/models/m:predict?x=1:2",
        "context 3 read :path and could not add a header"
    );
    assert_eq!(shared_value(&chain, "logs").await.as_deref(), Some("3"));
}

#[tokio::test]
async fn clear_route_cache_foreign_function() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (mut stream, _, _) = run_request(&chain, request("noop")).await;
    assert!(!stream.take_route_cache_cleared(), "nothing changed");
    stream.finish();
    let (mut stream, _, _) = run_request(&chain, request("foreign")).await;
    assert!(stream.take_route_cache_cleared());
    let state = stream.filter_state();
    assert_eq!(state[0], ("wasm.foreign.status".to_string(), b"0".to_vec()));
    stream.finish();
}

#[tokio::test]
async fn continue_inside_the_callback_and_close_stream() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![conformance(&runtime, "")]);
    let (stream, flow, _) = run_request(&chain, request("pause-then-continue-inline")).await;
    assert!(matches!(flow, Flow::Continue));
    stream.finish();
    let (stream, flow, _) = run_request(&chain, request("close")).await;
    assert_eq!(local_reply(flow).status, 503);
    stream.finish();
}

#[tokio::test]
async fn chain_runs_request_callbacks_in_order_and_response_callbacks_in_reverse() {
    let (runtime, _) = runtime();
    let wasm = support::filter("conformance");
    let a = runtime
        .load(support::spec("a", wasm.clone(), "name=a"))
        .unwrap();
    let b = runtime.load(support::spec("b", wasm, "name=b")).unwrap();
    let chain = FilterChain::new(vec![a, b]);
    let (mut stream, _, headers) = run_request(&chain, request("noop")).await;
    assert_eq!(get(&headers, "x-order"), Some("ab"));
    let mut resp = response("200");
    stream.response_headers(&mut resp, true).await;
    assert_eq!(get(&resp, "x-order"), Some("ba"));
    stream.finish();
}

#[tokio::test]
async fn a_false_from_on_configure_or_on_vm_start_rejects_the_plugin_by_name() {
    let (runtime, _) = runtime();
    let err = runtime
        .load(support::spec(
            "picky",
            support::filter("conformance"),
            "reject",
        ))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "plugin picky: on_configure returned false");
    let mut spec = support::spec("early", support::filter("conformance"), "");
    spec.vm_config = b"reject-start".to_vec();
    let err = runtime.load(spec).err().unwrap();
    assert_eq!(err.to_string(), "plugin early: on_vm_start returned false");
    let err = runtime
        .load(support::spec("junk", b"not wasm".to_vec().into(), ""))
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with("plugin junk: cannot compile"),
        "{err}"
    );
}
