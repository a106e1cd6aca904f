//! Routing, load balancing and header handling through the gateway, with real upstreams.

mod gateway_support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use gateway_support::{TestGateway, Upstream, client, cluster, get, send};

async fn two_clusters() -> (Upstream, Upstream, Upstream, TestGateway) {
    two_clusters_with("").await
}

async fn two_clusters_with(extra: &str) -> (Upstream, Upstream, Upstream, TestGateway) {
    let (iris_a, iris_b, wine) = (
        Upstream::start("iris-a").await,
        Upstream::start("iris-b").await,
        Upstream::start("wine").await,
    );
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters:
{}{}routes:
  - name: wine-by-header
    match: {{prefix: /, headers: [{{name: x-model, exact: wine}}]}}
    cluster: wine
  - name: exact
    match: {{path: /v1/models}}
    cluster: wine
  - name: iris-regex
    match: {{regex: '/v[12]/models/iris([:/].*)?'}}
    cluster: iris
    requestHeaders: {{set: {{kserve-isvc-name: iris}}, remove: [x-drop-me]}}
    responseHeaders: {{add: {{x-route: iris-regex}}}}
  - name: post-only
    match: {{prefix: /post, method: POST}}
    cluster: wine
{extra}",
        cluster("iris", &[&iris_a, &iris_b]),
        cluster("wine", &[&wine]),
    );
    let gateway = TestGateway::start(&yaml).await;
    (iris_a, iris_b, wine, gateway)
}

#[tokio::test]
async fn routes_by_path_header_and_method_first_match_wins() {
    let (iris_a, iris_b, wine, gw) = two_clusters().await;
    let c = client();
    let answer = get(&c, &gw.url("/v1/models/iris:predict")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header("x-upstream").unwrap().starts_with("iris-"));
    assert_eq!(
        get(&c, &gw.url("/v1/models")).await.header("x-upstream"),
        Some("wine")
    );
    // The header route comes first, so it wins over the iris path.
    let request = Request::get(gw.url("/v1/models/iris:predict"))
        .header("x-model", "wine")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(&c, request).await.unwrap().header("x-upstream"),
        Some("wine")
    );
    let request = Request::post(gw.url("/post/x"))
        .body(Full::from("{}"))
        .unwrap();
    assert_eq!(
        send(&c, request).await.unwrap().header("x-upstream"),
        Some("wine")
    );
    assert_eq!(iris_a.count() + iris_b.count(), 1);
    assert_eq!(wine.count(), 3);
}

#[tokio::test]
async fn unmatched_requests_get_a_json_404_and_health_answers_locally() {
    let (iris_a, iris_b, wine, gw) = two_clusters().await;
    let c = client();
    let answer = get(&c, &gw.url("/v1/models/unknown:predict?x=1")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "no route for /v1/models/unknown:predict"})
    );
    // A GET on a POST-only route does not match either.
    assert_eq!(
        get(&c, &gw.url("/post/x")).await.status,
        StatusCode::NOT_FOUND
    );
    let health = get(&c, &gw.url("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(iris_a.count() + iris_b.count() + wine.count(), 0);
}

#[tokio::test]
async fn round_robin_spreads_traffic_over_both_replicas() {
    let (iris_a, iris_b, _wine, gw) = two_clusters().await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            get(&c, &gw.url("/v2/models/iris/infer")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!((iris_a.count(), iris_b.count()), (5, 5));
}

// What Envoy does to an edge request under Envoy Gateway's defaults
// (source/common/http/conn_manager_utility.cc `mutateRequestHeaders`, `cleanInternalHeaders`,
// `mutateResponseHeaders`): x-forwarded-for extended, x-envoy-external-address set, internal
// x-envoy-* headers from the client removed, the client's request id replaced, and no
// x-request-id on the response.
#[tokio::test]
async fn custom_headers_reach_the_upstream_and_envoy_rewrites_the_edge_headers() {
    let (iris_a, iris_b, _wine, gw) = two_clusters().await;
    let c = client();
    let body = r#"{"instances": [[1, 2, 3, 4]]}"#;
    let request = Request::post(gw.url("/v1/models/iris:predict?verbose=1"))
        .header("x-custom-thing", "Keep Me")
        .header("x-drop-me", "route removes this")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-request-id", "client-id-42")
        .header("x-envoy-internal", "true")
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-upstream-rq-timeout-ms", "1")
        .header("x-envoy-external-address", "198.51.100.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = send(&c, request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let seen = if iris_a.count() == 1 {
        iris_a.last()
    } else {
        iris_b.last()
    };
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/models/iris:predict?verbose=1");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["x-custom-thing"], "Keep Me");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["kserve-isvc-name"], "iris");
    assert!(!seen.headers.contains_key("x-drop-me"));
    assert_eq!(seen.headers["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-envoy-external-address"], "127.0.0.1");
    for internal in [
        "x-envoy-internal",
        "x-envoy-retry-on",
        "x-envoy-upstream-rq-timeout-ms",
    ] {
        assert!(
            !seen.headers.contains_key(internal),
            "{internal} reached the upstream"
        );
    }
    assert_eq!(seen.headers["host"], gw.address.to_string());
    let generated = &seen.headers["x-request-id"];
    assert_eq!(
        uuid::Uuid::parse_str(generated).unwrap().get_version_num(),
        4,
        "the client's request id is replaced on an edge request"
    );
    assert_eq!(answer.header("x-request-id"), None);
    assert_eq!(answer.header("x-upstream-custom"), Some("from-upstream"));
    assert_eq!(answer.header("x-route"), Some("iris-regex"));
}

// ClientTrafficPolicy `headers.requestID: PreserveOrGenerate` (Envoy's
// `preserve_external_request_id`): the client's request id is kept end to end.
#[tokio::test]
async fn a_client_request_id_is_kept_when_the_client_traffic_policy_preserves_it() {
    let (iris_a, iris_b, _wine, gw) =
        two_clusters_with("clientTraffic: {headers: {requestID: PreserveOrGenerate}}\n").await;
    let request = Request::get(gw.url("/v1/models/iris"))
        .header("x-request-id", "client-id-42")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let seen = if iris_a.count() == 1 {
        iris_a.last()
    } else {
        iris_b.last()
    };
    assert_eq!(seen.headers["x-request-id"], "client-id-42");
    assert_eq!(answer.header("x-request-id"), None);
}

#[tokio::test]
async fn bodies_larger_than_the_buffer_limit_stream_both_ways() {
    let big = 3 << 20;
    let upstream = Upstream::start_with(
        "big",
        gateway_support::Behaviour {
            body_size: Some(big),
            ..Default::default()
        },
    )
    .await;
    let yaml = format!(
        "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters:\n{}routes: [{{match: {{prefix: /}}, cluster: big}}]\nbufferLimit: 64Ki\n",
        cluster("big", &[&upstream])
    );
    let gw = TestGateway::start(&yaml).await;
    let body = Bytes::from(vec![b'r'; 1 << 20]);
    let request = Request::post(gw.url("/upload"))
        .body(Full::new(body.clone()))
        .unwrap();
    let answer = send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), big);
    assert_eq!(upstream.last().body, body);
}

/// A GET of `path` on `address` with the given `Host` header.
async fn get_with_host(
    address: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> gateway_support::Answer {
    let request = Request::get(format!("http://{address}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap();
    send(&client(), request).await.unwrap()
}

// Virtual hosts as Envoy Gateway builds them (one per hostname, `ignore_port_in_host_matching`)
// and Envoy picks them (exact, longest suffix wildcard, `*`); routes attached by listener name.
#[tokio::test]
async fn hostnames_pick_the_virtual_host_and_routes_attach_to_named_listeners() {
    let (iris, wine, admin) = (
        Upstream::start("iris").await,
        Upstream::start("wine").await,
        Upstream::start("admin").await,
    );
    let yaml = format!(
        "version: 1
listeners:
  - {{name: public, address: 127.0.0.1:0}}
  - {{name: internal, address: 127.0.0.1:0, hostname: '*.internal'}}
clusters:
{}{}{}routes:
  - name: iris
    hostnames: [iris.example.com]
    match: {{prefix: /}}
    cluster: iris
  - name: any-example
    hostnames: ['*.example.com']
    match: {{prefix: /}}
    cluster: wine
  - name: admin
    listeners: [internal]
    match: {{prefix: /admin}}
    cluster: admin
",
        cluster("iris", &[&iris]),
        cluster("wine", &[&wine]),
        cluster("admin", &[&admin]),
    );
    let gw = TestGateway::start(&yaml).await;
    let public = gw.address;
    let internal = gw.gateway.listeners()[1].1;
    let upstream_of =
        |answer: &gateway_support::Answer| answer.header("x-upstream").map(str::to_owned);
    let answer = get_with_host(public, "IRIS.example.com:8080", "/v1/models/iris").await;
    assert_eq!(upstream_of(&answer).as_deref(), Some("iris"));
    let answer = get_with_host(public, "wine.example.com", "/v1/models/wine").await;
    assert_eq!(upstream_of(&answer).as_deref(), Some("wine"));
    // No virtual host for the host: Envoy's 404, and nothing reaches an upstream.
    let answer = get_with_host(public, "example.org", "/v1/models/iris").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "no route for /v1/models/iris"})
    );
    // The admin route is on the internal listener only, for hosts its hostname admits.
    let answer = get_with_host(public, "wine.example.com", "/admin").await;
    assert_eq!(upstream_of(&answer).as_deref(), Some("wine"));
    let answer = get_with_host(internal, "ops.internal", "/admin").await;
    assert_eq!(upstream_of(&answer).as_deref(), Some("admin"));
    let answer = get_with_host(internal, "ops.elsewhere", "/admin").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // The example.com routes are outside the internal listener's hostname.
    let answer = get_with_host(internal, "iris.example.com", "/v1/models/iris").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!((iris.count(), wine.count(), admin.count()), (1, 2, 1));
    // The upstream sees the client's host as sent.
    assert_eq!(iris.last().headers["host"], "IRIS.example.com:8080");
}

/// A gateway whose routes are `routes` (YAML list items) over clusters `iris` and `wine`.
async fn with_routes(routes: &str) -> (Upstream, Upstream, TestGateway) {
    let (iris, wine) = (Upstream::start("iris").await, Upstream::start("wine").await);
    let yaml = format!(
        "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters:\n{}{}routes:\n{routes}",
        cluster("iris", &[&iris]),
        cluster("wine", &[&wine]),
    );
    (iris, wine, TestGateway::start(&yaml).await)
}

// Envoy's `query_parameters` (Gateway API `queryParams`, Exact and RegularExpression) and
// Gateway API's `PathPrefix` as Envoy Gateway emits it (`path_separated_prefix`).
#[tokio::test]
async fn query_parameters_and_path_prefixes_route_as_envoy_matches_them() {
    let (iris, wine, gw) = with_routes(
        "  - {match: {pathPrefix: /v1/models/, queryParams: [{name: model, exact: wine}]}, cluster: wine}
  - {match: {pathPrefix: /v1/models/, queryParams: [{name: canary, regex: '[0-9]+'}]}, cluster: wine}
  - {match: {pathPrefix: /v1/models/}, cluster: iris}
",
    )
    .await;
    let c = client();
    let upstream = |path: &str| {
        let url = gw.url(path);
        let c = c.clone();
        async move { get(&c, &url).await.header("x-upstream").map(str::to_owned) }
    };
    assert_eq!(
        upstream("/v1/models/m?model=wine").await.as_deref(),
        Some("wine")
    );
    assert_eq!(
        upstream("/v1/models?canary=42").await.as_deref(),
        Some("wine")
    );
    // The first value counts; a regex matches the whole value; names are case-sensitive.
    assert_eq!(
        upstream("/v1/models/m?model=iris&model=wine")
            .await
            .as_deref(),
        Some("iris")
    );
    assert_eq!(
        upstream("/v1/models/m?canary=4x2").await.as_deref(),
        Some("iris")
    );
    assert_eq!(
        upstream("/v1/models/m?Model=wine").await.as_deref(),
        Some("iris")
    );
    // A path prefix matches whole segments only.
    let answer = get(&c, &gw.url("/v1/modelsx?model=wine")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!((wine.count(), iris.count()), (2, 3));
    assert_eq!(wine.last().path, "/v1/models?canary=42");
}

// Envoy's `weighted_clusters` as Envoy Gateway emits them from weighted backendRefs: a random
// pick by weight per request, weight 0 left out, and Envoy Gateway's direct 500 when every
// weight is 0 (internal/gatewayapi/route.go).
#[tokio::test]
async fn weighted_backends_split_traffic_and_all_zero_weights_answer_500() {
    let (iris, wine, gw) = with_routes(
        "  - {name: split, match: {path: /split}, backends: [{cluster: iris, weight: 3}, {cluster: wine, weight: 1}]}
  - {name: zero-one, match: {path: /one}, backends: [{cluster: iris, weight: 0}, {cluster: wine}]}
  - {name: all-zero, match: {path: /none}, backends: [{cluster: iris, weight: 0}, {cluster: wine, weight: 0}]}
",
    )
    .await;
    let c = client();
    for _ in 0..400 {
        assert_eq!(get(&c, &gw.url("/split")).await.status, StatusCode::OK);
    }
    let (to_iris, to_wine) = (iris.count(), wine.count());
    assert_eq!(to_iris + to_wine, 400);
    // Binomial(400, 1/4): mean 100, standard deviation 8.7; these bounds are 5 of them out.
    assert!(
        (57..=143).contains(&to_wine),
        "{to_wine} of 400 went to weight 1 of 4"
    );
    for _ in 0..20 {
        assert_eq!(
            get(&c, &gw.url("/one")).await.header("x-upstream"),
            Some("wine")
        );
    }
    assert_eq!((iris.count(), wine.count()), (to_iris, to_wine + 20));
    let answer = get(&c, &gw.url("/none")).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "route all-zero has no backend with a weight above 0"})
    );
    assert_eq!(iris.count() + wine.count(), 420);
}

/// A GET of `path` with `Host: host`, answered without following a redirect.
async fn location_of(gw: &TestGateway, host: &str, path: &str) -> (StatusCode, Option<String>) {
    let answer = get_with_host(gw.address, host, path).await;
    (answer.status, answer.header("location").map(str::to_owned))
}

// Gateway API `RequestRedirect` as Envoy Gateway translates it and Envoy answers it
// (`Utility::newUri`): scheme, host and port handling, path replacement, 301/302.
#[tokio::test]
async fn redirects_answer_with_envoys_location() {
    let (iris, wine, gw) = with_routes(
        "  - {match: {pathPrefix: /secure}, redirect: {scheme: https}, responseHeaders: {set: {x-redirected: 'yes'}}}
  - {match: {pathPrefix: /moved}, redirect: {hostname: new.example.com, port: 8443, statusCode: 302}}
  - {match: {pathPrefix: /old/}, redirect: {path: {replacePrefixMatch: /new}}}
  - {match: {path: /page}, redirect: {path: {replaceFullPath: /other}, port: 443}}
",
    )
    .await;
    let moved = StatusCode::MOVED_PERMANENTLY;
    let location = |url: &str| (moved, Some(url.to_owned()));
    // http -> https drops the default port of http and keeps any other.
    assert_eq!(
        location_of(&gw, "a.example.com:80", "/secure/x?q=1").await,
        location("https://a.example.com/secure/x?q=1")
    );
    assert_eq!(
        location_of(&gw, "a.example.com:8080", "/secure").await,
        location("https://a.example.com:8080/secure")
    );
    assert_eq!(
        location_of(&gw, "a.example.com", "/moved/x").await,
        (
            StatusCode::FOUND,
            Some("http://new.example.com:8443/moved/x".to_owned())
        )
    );
    assert_eq!(
        location_of(&gw, "a.example.com", "/old/m?v=2").await,
        location("http://a.example.com/new/m?v=2")
    );
    // Port 443 is never written; the request's port stays as the scheme does not change.
    assert_eq!(
        location_of(&gw, "a.example.com:9000", "/page?x").await,
        location("http://a.example.com:9000/other?x")
    );
    let answer = get_with_host(gw.address, "a.example.com", "/secure").await;
    assert_eq!(answer.header("x-redirected"), Some("yes"));
    assert_eq!(answer.body, "");
    assert_eq!(iris.count() + wine.count(), 0);
}

// Gateway API `URLRewrite` as Envoy Gateway translates it: the router rewrites the path
// (prefix, or the whole path with the query kept) and host, and appends the client's host
// to `x-forwarded-host` (append_x_forwarded_host).
#[tokio::test]
async fn rewrites_change_the_upstream_request_only() {
    let (iris, wine, gw) = with_routes(
        "  - {match: {pathPrefix: /api/v1}, cluster: iris, rewrite: {path: {replacePrefixMatch: /v1/models}, hostname: iris.internal}}
  - {match: {pathPrefix: /strip}, cluster: iris, rewrite: {path: {replacePrefixMatch: /}}}
  - {match: {path: /predict}, cluster: wine, rewrite: {path: {replaceFullPath: '/v1/models/wine:predict'}}}
",
    )
    .await;
    let answer = get_with_host(gw.address, "gw.example.com:8080", "/api/v1/iris?verbose=1").await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = iris.last();
    assert_eq!(seen.path, "/v1/models/iris?verbose=1");
    assert_eq!(seen.headers["host"], "iris.internal");
    assert_eq!(seen.headers["x-forwarded-host"], "gw.example.com:8080");
    get_with_host(gw.address, "gw.example.com", "/strip/x/y").await;
    let seen = iris.last();
    assert_eq!(seen.path, "/x/y");
    assert_eq!(seen.headers["host"], "gw.example.com");
    assert!(!seen.headers.contains_key("x-forwarded-host"));
    get_with_host(gw.address, "gw.example.com", "/predict?trace=1").await;
    assert_eq!(wine.last().path, "/v1/models/wine:predict?trace=1");
}

// Envoy Gateway's `HTTPRouteFilter` `directResponse` (deploy/gateway/model-fallback.yaml):
// Envoy's `direct_response` with the body, `text/plain` unless the filter's `contentType`
// (a response header Envoy Gateway sets on the route) says otherwise.
#[tokio::test]
async fn direct_responses_answer_without_an_upstream() {
    let (iris, wine, gw) = with_routes(
        "  - {match: {pathPrefix: /v1}, directResponse: {statusCode: 404, body: '{\"error\":\"no model route for this request\"}'}, responseHeaders: {set: {content-type: application/json}}}
  - {match: {path: /teapot}, directResponse: {statusCode: 418, body: short and stout}}
  - {match: {path: /empty}, directResponse: {}}
",
    )
    .await;
    let c = client();
    let answer = get(&c, &gw.url("/v1/models/nope:predict")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "no model route for this request"})
    );
    let answer = get(&c, &gw.url("/teapot")).await;
    assert_eq!(answer.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.body, "short and stout");
    let answer = get(&c, &gw.url("/empty")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        (answer.header("content-type"), answer.body.as_str()),
        (None, "")
    );
    assert_eq!(iris.count() + wine.count(), 0);
}

// Envoy Gateway's local rate limit (`BackendTrafficPolicy` `rateLimit.local`) as Envoy's local
// rate limit filter runs it on each route: its own buckets per route, a bucket per value of a
// `Distinct` header, the default bucket for requests no rule picks, and 429
// `local_rate_limited` with `x-envoy-ratelimited` that never reaches the upstream.
#[tokio::test]
async fn local_rate_limits_answer_429_before_the_upstream_per_route_and_caller() {
    let limit = "localRateLimit: {rules: [{limit: {requests: 2, unit: Hour}}, {clientSelectors: [{headers: [{type: Distinct, name: x-user}]}], limit: {requests: 3, unit: Hour}}]}";
    let (iris, wine, gw) = with_routes(&format!(
        "  - {{match: {{pathPrefix: /iris}}, cluster: iris, {limit}}}
  - {{match: {{pathPrefix: /wine}}, cluster: wine, {limit}}}
"
    ))
    .await;
    let c = client();
    let send_as = |path: &'static str, user: Option<&'static str>| {
        let mut request = Request::get(gw.url(path));
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        send(&c, request.body(Full::default()).unwrap())
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send_as("/iris", Some("alice")).await.unwrap().status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let refused = send_as("/iris", Some("alice")).await.unwrap();
    assert_eq!(refused.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(refused.header("content-type"), Some("text/plain"));
    assert_eq!(refused.body, "local_rate_limited");
    // Another caller has a bucket of its own; no caller header, the default bucket of 2.
    assert_eq!(
        send_as("/iris", Some("bob")).await.unwrap().status,
        StatusCode::OK
    );
    let anonymous: Vec<StatusCode> = [
        send_as("/iris", None).await.unwrap().status,
        send_as("/iris", None).await.unwrap().status,
        send_as("/iris", None).await.unwrap().status,
    ]
    .into();
    assert_eq!(anonymous, [200, 200, 429]);
    assert_eq!(iris.count(), 3 + 1 + 2);
    // The other route, under the same policy, counts on its own buckets.
    assert_eq!(
        send_as("/wine", Some("alice")).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(wine.count(), 1);
}
