//! The gateway with a real Proxy-Wasm filter in its chain (the runtime's `conformance` test
//! filter): routing by a header the filter sets, body buffering and rewriting, local replies,
//! response edits, filter metrics, filter state in the config dump, and config taken from an
//! `EnvoyExtensionPolicy` manifest.

mod gateway_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use gateway_support::{TestGateway, Upstream, client, cluster, get, send, test_filter};

/// The conformance filter tagged `A` sets `x-order: A` on every request: only the header
/// route leads to `tagged`, and nothing matches without the filter's edit.
async fn gateway(extra: &str) -> (Upstream, TestGateway) {
    let tagged = Upstream::start("tagged").await;
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0, statsTags: [{{tagName: case, regex: '^wasmcustom\\.\\w+(\\.case\\.([^.]+))'}}]}}
clusters:
{}routes:
  - name: by-filter-header
    match: {{prefix: /, headers: [{{name: x-order, exact: A}}]}}
    cluster: tagged
filters:
  - name: conformance
    wasm: {}
    rootId: conformance
    configFile: plugin.txt
    vmCount: 2
{extra}",
        cluster("tagged", &[&tagged]),
        test_filter("conformance").display()
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write("plugin.txt", "name=A");
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (address, admin) = (gateway.listeners()[0].1, gateway.admin_address());
    (
        tagged,
        TestGateway {
            gateway,
            config,
            address,
            admin,
        },
    )
}

fn request(gw: &TestGateway, case: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(gw.url("/v1/models/m:predict"))
        .header("x-case", case)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn routes_by_the_header_the_filter_sets() {
    let (tagged, gw) = gateway("").await;
    let c = client();
    let answer = get(&c, &gw.url("/anything")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-upstream"), Some("tagged"));
    assert_eq!(tagged.last().headers["x-order"], "A");
    // The response passed the filter too: it saw the status and tagged the response.
    assert_eq!(answer.header("x-seen-status"), Some("200"));
    assert_eq!(answer.header("x-order"), Some("A"));
}

#[tokio::test]
async fn the_filter_sees_the_upstream_the_gateway_picked() {
    let (tagged, gw) = gateway("").await;
    let answer = send(&client(), request(&gw, "properties", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("x-p-upstream-address"),
        Some(tagged.address.to_string().as_str())
    );
    assert_eq!(answer.header("x-p-cluster"), Some("tagged"));
}

#[tokio::test]
async fn a_buffered_body_rewritten_by_the_filter_goes_upstream() {
    let (tagged, gw) = gateway("").await;
    let answer = send(
        &client(),
        request(&gw, "body-rewrite", "{\"instances\": [[1, 2]]}"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let seen = tagged.last();
    assert_eq!(&seen.body[..], b"{\"INSTANCES\": [[1, 2]]}");
    assert_eq!(seen.headers["content-length"], "23");
}

#[tokio::test]
async fn a_body_buffered_past_the_limit_gets_413() {
    let (tagged, gw) = gateway("bufferLimit: 1Ki\n").await;
    // Four 512-byte chunks: the filter buffers until the end, which the limit cuts short.
    let (tx, body) = modelgate_host::body::ChannelBody::new();
    tokio::spawn(async move {
        for _ in 0..4 {
            let chunk = hyper::body::Frame::data(Bytes::from(vec![b'x'; 512]));
            if tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
    });
    let streaming: hyper_util::client::legacy::Client<_, modelgate_host::body::GatewayBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = Request::post(gw.url("/v1/models/m:predict"))
        .header("x-case", "body-rewrite")
        .body(modelgate_host::body::GatewayBody::new(body))
        .unwrap();
    let response = streaming.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The runtime's local reply still passed the filter's response callbacks, as in Envoy.
    assert_eq!(response.headers()["x-seen-status"], "413");
    assert_eq!(tagged.count(), 0);
}

#[tokio::test]
async fn a_single_frame_body_past_the_limit_gets_413_without_waiting_for_the_filter() {
    // A request timeout well past the test's bound: waiting for the filter would end in 408.
    let (tagged, gw) = gateway("bufferLimit: 1Ki\nrequestTimeout: 60s\n").await;
    let request = Request::post(gw.url("/v1/models/m:predict"))
        .header("x-case", "body-buffer-forever")
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), send(&client(), request))
        .await
        .expect("answered without waiting for the filter")
        .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.header("x-seen-status"), Some("413"));
    assert_eq!(tagged.count(), 0);
}

#[tokio::test]
async fn a_filter_local_reply_is_sent_as_is() {
    let (tagged, gw) = gateway("").await;
    let answer = send(&client(), request(&gw, "local-reply", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.header("x-reply"), Some("1"));
    // The filter's own response callbacks wrapped the body, as Envoy runs them on local replies.
    assert_eq!(answer.body, "[denied]");
    // Envoy adds no x-request-id to responses (no always_set_request_id_in_response).
    assert_eq!(answer.header("x-request-id"), None);
    assert_eq!(tagged.count(), 0);
}

#[tokio::test]
async fn a_response_body_changed_by_the_filter_gets_a_matching_length() {
    let (_tagged, gw) = gateway("").await;
    let answer = send(&client(), request(&gw, "resp-body", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "<{\"upstream\":\"tagged\"}!");
    assert_eq!(answer.header("content-length"), Some("23"));
}

// Envoy's default failure policy (FAIL_CLOSED; Envoy Gateway sets only `fail_open`, false by
// default): a VM that trapped stays failed and every later stream on its worker gets 503 with
// details `wasm_fail_stream` until the config is pushed again (source/extensions/common/wasm/
// wasm.cc `PluginConfig::createContext`, context.cc `Context::failStream`). One worker, so
// every request of the test lands on the failed VM.
#[tokio::test]
async fn after_a_trap_every_later_request_on_that_worker_is_503_until_reload() {
    let (_tagged, gw) = gateway("concurrency: 1\n").await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &gw.url("/")).await.status, StatusCode::OK);
    }
    let trapped = send(&c, request(&gw, "trap", "")).await.unwrap();
    assert_eq!(trapped.status, StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..3 {
        let failed = get(&c, &gw.url("/")).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (failed.body.as_str(), failed.header("content-length")),
            ("", Some("0"))
        );
    }
    let text = get(&c, &gw.admin_url("/metrics")).await.body;
    assert!(
        text.contains("# TYPE conformance_requests counter\n"),
        "{text}"
    );
    // The requests after the trap never reached the filter.
    assert!(text.contains("conformance_requests{} 4\n"), "{text}");
    assert!(
        text.contains("# TYPE conformance_latency histogram\n"),
        "{text}"
    );
    assert!(
        text.contains("modelgate_wasm_vm_failures_total{plugin=\"conformance\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("envoy_wasm_conformance_vm_reload_success{} 0\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"tagged\"} 3\n"
        ),
        "{text}"
    );
    assert!(!text.contains("wasmcustom"), "{text}");

    // A config push builds new VMs: the worker serves again.
    gw.gateway.reload().await.unwrap();
    assert_eq!(get(&c, &gw.url("/")).await.status, StatusCode::OK);
}

// `failurePolicy: FAIL_RELOAD` (Envoy's `PluginConfig.failure_policy`, set in the cluster
// with an EnvoyPatchPolicy, deploy/failure-policy-reload/): the first stream
// after the backoff builds a new VM (wasm.cc `maybeReloadHandleIfNeeded`), and Envoy's
// `wasm.<name>.vm_reload_success` counts it.
#[tokio::test]
async fn fail_reload_builds_a_new_vm_after_the_backoff() {
    let (_tagged, gw) = gateway(
        "    failurePolicy: FAIL_RELOAD\n    reloadConfig: {backoff: {baseInterval: 200ms}}\nconcurrency: 1\n",
    )
    .await;
    let c = client();
    let trapped = send(&c, request(&gw, "trap", "")).await.unwrap();
    assert_eq!(trapped.status, StatusCode::SERVICE_UNAVAILABLE);
    // Within the backoff (counted from the VM's start, which was just now) streams fail closed.
    let early = get(&c, &gw.url("/")).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get(&c, &gw.url("/")).await.status, StatusCode::OK);
    let text = get(&c, &gw.admin_url("/metrics")).await.body;
    assert!(
        text.contains("envoy_wasm_conformance_vm_reload_success{} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("envoy_wasm_conformance_vm_reload_backoff{} 1\n"),
        "{text}"
    );
    let dump = get(&c, &gw.admin_url("/config_dump")).await.json();
    assert_eq!(
        dump["filters"][0]["effective"]["failurePolicy"],
        "FAIL_RELOAD"
    );
}

#[tokio::test]
async fn plugin_config_comes_from_an_envoy_extension_policy() {
    let tagged = Upstream::start("tagged").await;
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
clusters:
{}routes: [{{match: {{prefix: /}}, cluster: tagged}}]
filters:
  - name: conformance
    wasm: {}
    fromEnvoyExtensionPolicy: {{file: policy.yaml, wasmName: conformance}}
",
        cluster("tagged", &[&tagged]),
        test_filter("conformance").display()
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write(
        "policy.yaml",
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
metadata: {name: modelgate, namespace: kserve}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: kserve-ingress-gateway}]
  wasm:
    - name: conformance
      rootID: conformance
      failOpen: true
      code: {type: HTTP, http: {url: 'https://example.com/conformance.wasm'}}
      config: {hmacSecret: do-not-print, models: [iris]}
",
    );
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (address, admin) = (gateway.listeners()[0].1, gateway.admin_address());
    let gw = TestGateway {
        gateway,
        config,
        address,
        admin,
    };
    let c = client();
    let dump = get(&c, &gw.admin_url("/config_dump")).await.json();
    let effective = &dump["filters"][0]["effective"];
    assert_eq!(effective["rootId"], "conformance");
    assert_eq!(effective["failOpen"], true);
    assert_eq!(effective["vmId"], "conformance");
    assert_eq!(
        effective["pluginConfig"],
        serde_json::json!({"hmacSecret": "[redacted]", "models": ["iris"]})
    );
    assert!(!dump.to_string().contains("do-not-print"));
    // failOpen from the policy: a trap skips the filter instead of failing the request.
    let answer = send(&c, request(&gw, "trap", "")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-upstream"), Some("tagged"));
}

#[tokio::test]
async fn check_loads_the_filter_and_reports_a_rejecting_on_configure() {
    let yaml = format!(
        "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nfilters: [{{name: conformance, wasm: {}, configFile: plugin.txt}}]\n",
        test_filter("conformance").display()
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write("plugin.txt", "name=A");
    assert_eq!(gateway_support::check(&config), (true, "OK\n".to_owned()));
    config.write("plugin.txt", "reject");
    let (ok, stdout) = gateway_support::check(&config);
    assert!(!ok);
    assert!(stdout.contains(": filters[0] (conformance): "), "{stdout}");
}

#[tokio::test]
async fn a_filter_that_never_resumes_is_cut_off_by_the_request_timeout() {
    let (tagged, gw) = gateway("requestTimeout: 300ms\n").await;
    let started = std::time::Instant::now();
    let answer = send(&client(), request(&gw, "body-buffer-forever", "held"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "request timeout"})
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(tagged.count(), 0);
    // The held stream ended cleanly: the filter's VMs serve the next requests.
    let c = client();
    for _ in 0..2 {
        let answer = send(&c, request(&gw, "noop", "next")).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-seen-status"), Some("200"));
    }
    assert_eq!(tagged.count(), 2);
}

#[tokio::test]
async fn a_filter_http_call_goes_to_a_gateway_cluster() {
    let (tagged, pinger) = (
        Upstream::start("tagged").await,
        Upstream::start("pinger").await,
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{}{}  - {{name: failing, endpoints: ['{closed}']}}
routes: [{{match: {{prefix: /}}, cluster: tagged}}]
filters: [{{name: conformance, wasm: {}, vmCount: 1}}]
",
        cluster("tagged", &[&tagged]),
        cluster("upstream", &[&pinger]),
        test_filter("conformance").display()
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    let answer = send(&c, request(&gw, "http-call", "")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let call = pinger.last();
    assert_eq!((call.method.as_str(), call.path.as_str()), ("GET", "/ping"));
    assert_eq!(&call.body[..], b"ping");
    assert_eq!(call.headers["host"], "upstream");
    let seen = tagged.last();
    assert_eq!(seen.headers["x-call-status"], "200");
    assert_eq!(seen.headers["x-call-body"], "{\"upstream\":\"pinger\"}");

    // A call to a cluster that cannot be reached reports a failure to the filter.
    let answer = send(&c, request(&gw, "http-call-fail", "")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(tagged.last().headers["x-call-failed"], "1");
}

#[tokio::test]
async fn a_changed_plugin_config_file_reloads_the_filter_chain() {
    let (tagged, gw) = gateway("reload: {watch: true, pollInterval: 50ms}\n").await;
    let c = client();
    assert_eq!(get(&c, &gw.url("/")).await.status, StatusCode::OK);
    assert_eq!(tagged.last().headers["x-order"], "A");
    // The filter now tags B: no route matches its header any more, so the reload shows as a 404.
    gw.config.write("plugin.txt", "name=B");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = get(&c, &gw.url("/")).await;
        if answer.status == StatusCode::NOT_FOUND {
            assert_eq!(
                answer.json(),
                serde_json::json!({"error": "no route for /"})
            );
            assert_eq!(answer.header("x-order"), Some("B"));
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin config change was not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

// A local reply to a gRPC request is a trailers-only gRPC answer, as Envoy sends it
// (`source/common/http/utility.cc`, `prepareLocalReply`): 200, `application/grpc`, the
// filter's gRPC status (Envoy's `failStream` gives UNAVAILABLE) or the HTTP status mapped by
// `Grpc::Utility::httpToGrpcStatus`, and the body as `grpc-message`.
#[tokio::test]
async fn local_replies_to_a_grpc_request_are_trailers_only() {
    let (tagged, gw) = gateway("concurrency: 1\n").await;
    let grpc = |case: &str| {
        Request::post(gw.url("/inference.GRPCInferenceService/ModelInfer"))
            .header("content-type", "application/grpc")
            .header("x-case", case)
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    };
    let c = client();
    let denied = send(&c, grpc("local-reply")).await.unwrap();
    assert_eq!(denied.status, StatusCode::OK);
    assert_eq!(denied.header("content-type"), Some("application/grpc"));
    assert_eq!(
        denied.header("grpc-status"),
        Some("7"),
        "403 is PERMISSION_DENIED"
    );
    assert_eq!(denied.header("grpc-message"), Some("[denied]"));
    assert_eq!(denied.body, "");
    let trapped = send(&c, grpc("trap")).await.unwrap();
    assert_eq!(trapped.status, StatusCode::OK);
    assert_eq!(
        trapped.header("grpc-status"),
        Some("14"),
        "wasm_fail_stream is UNAVAILABLE"
    );
    // And so is every later gRPC request on the failed worker.
    let after = send(&c, grpc("noop")).await.unwrap();
    assert_eq!(
        (after.status, after.header("grpc-status")),
        (StatusCode::OK, Some("14"))
    );
    assert_eq!(tagged.count(), 0);
}

/// A gateway whose filter (case `hold-headers-for-body`) pauses the request headers and, from
/// its body callback, adds `x-from-body: <body>`, which the first route matches on; the
/// plugin's `allowOnHeadersStopIteration` as given.
async fn body_routing_gateway(allow: bool) -> (Upstream, Upstream, TestGateway) {
    let (by_body, tagged) = (
        Upstream::start("by-body").await,
        Upstream::start("tagged").await,
    );
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
requestTimeout: 1s
clusters:
{}{}routes:
  - name: by-body
    match: {{prefix: /, headers: [{{name: x-from-body, exact: to-body}}]}}
    cluster: by-body
  - name: by-filter-header
    match: {{prefix: /, headers: [{{name: x-order, exact: A}}]}}
    cluster: tagged
filters:
  - name: conformance
    wasm: {}
    configFile: plugin.txt
    allowOnHeadersStopIteration: {allow}
",
        cluster("by-body", &[&by_body]),
        cluster("tagged", &[&tagged]),
        test_filter("conformance").display()
    );
    let config = gateway_support::ConfigFile::new(&yaml);
    config.write("plugin.txt", "name=A");
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (address, admin) = (gateway.listeners()[0].1, gateway.admin_address());
    let gw = TestGateway {
        gateway,
        config,
        address,
        admin,
    };
    (by_body, tagged, gw)
}

#[tokio::test]
async fn allow_on_headers_stop_iteration_routes_by_a_header_set_from_the_body() {
    let (by_body, tagged, gw) = body_routing_gateway(true).await;
    let answer = send(&client(), request(&gw, "hold-headers-for-body", "to-body"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-upstream"), Some("by-body"));
    let seen = by_body.last();
    assert_eq!(seen.headers["x-from-body"], "to-body");
    assert_eq!(&seen.body[..], b"to-body");
    assert_eq!(tagged.count(), 0);
}

#[tokio::test]
async fn by_default_a_filter_that_pauses_headers_for_its_body_stalls_until_the_request_timeout() {
    // Envoy's default: the pause stops the body too, so the filter never sees it.
    let (by_body, tagged, gw) = body_routing_gateway(false).await;
    let answer = send(&client(), request(&gw, "hold-headers-for-body", "to-body"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(by_body.count() + tagged.count(), 0);
}

// Envoy rewrites and redirects in the router, after the filter chain
// (`RouteEntryImplBase::finalizeRequestHeaders`, the router's direct response): the filter
// sees the client's path and host, the upstream the rewritten ones, and a redirect passes the
// filter's response callbacks like any local reply.
#[tokio::test]
async fn the_filter_sees_the_clients_url_and_the_router_rewrites_or_redirects_after_it() {
    let upstream = Upstream::start("models").await;
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{}routes:
  - match: {{pathPrefix: /api}}
    cluster: models
    rewrite: {{hostname: models.internal, path: {{replacePrefixMatch: /v1/models}}}}
  - match: {{pathPrefix: /go}}
    redirect: {{scheme: https, hostname: elsewhere.example.com}}
filters:
  - name: conformance
    wasm: {}
    rootId: conformance
",
        cluster("models", &[&upstream]),
        test_filter("conformance").display()
    );
    let gw = TestGateway::start(&yaml).await;
    let request = Request::get(gw.url("/api/iris?x=1"))
        .header("host", "gw.example.com")
        .header("x-case", "properties")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/models/iris?x=1");
    assert_eq!(seen.headers["host"], "models.internal");
    // What the filter read in its request callback, forwarded as headers.
    assert_eq!(seen.headers["x-p-request-path"], "/api/iris?x=1");
    assert_eq!(seen.headers["x-p-request-host"], "gw.example.com");
    let request = Request::get(gw.url("/go/there"))
        .header("host", "gw.example.com")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        answer.header("location"),
        Some("https://elsewhere.example.com/go/there")
    );
    assert_eq!(answer.header("x-seen-status"), Some("301"));
    assert_eq!(upstream.count(), 1);
}
