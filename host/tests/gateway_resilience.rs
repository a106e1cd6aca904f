//! Passive health, retries and timeouts, with real upstreams that die, fail or stall.

mod gateway_support;

use std::time::{Duration, Instant};

use hyper::StatusCode;

use gateway_support::{Behaviour, TestGateway, Upstream, client, get};

fn config(endpoints: &[&Upstream], extra_cluster: &str, route_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|u| u.address.to_string()).collect();
    format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
clusters:
  - name: iris
    endpoints: [{}]
{extra_cluster}routes:
  - name: all
    match: {{prefix: /}}
    cluster: iris
{route_extra}",
        endpoints.join(", ")
    )
}

async fn metrics(gw: &TestGateway) -> String {
    get(&client(), &gw.admin_url("/metrics")).await.body
}

#[tokio::test]
async fn a_killed_replica_is_retried_around_ejected_and_later_returns() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let yaml = config(
        &[&a, &b],
        "    outlierDetection: {consecutiveErrors: 1, baseEjectionTime: 500ms}\n",
        "    retry: {on: [connect-failure, reset], numRetries: 1}\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..30 {
        if i == 10 {
            b.kill();
        }
        statuses.push(get(&c, &gw.url("/v1/models/iris:predict")).await.status);
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let (a_before, b_total) = (a.count(), b.count());
    assert_eq!(b_total, 5, "b took its round-robin share until it died");
    assert_eq!(a_before, 25);
    let text = metrics(&gw).await;
    let b_label = format!("cluster=\"iris\",endpoint=\"{}\"", b.address);
    assert!(
        text.contains(&format!("modelgate_upstream_ejections_total{{{b_label}}} ")),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "modelgate_upstream_ejections_total{{{b_label}}} 0\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("envoy_cluster_upstream_rq_retry{envoy_cluster_name=\"iris\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"iris\"} 30\n"),
        "{text}"
    );

    // Bring b back on the same address: once its ejection ends it gets traffic again.
    let b_again = Upstream::start_on("b", b.address, Behaviour::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b_again.count() == 0 {
        assert!(Instant::now() < deadline, "the replica never came back");
        assert_eq!(get(&c, &gw.url("/")).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn five_hundreds_eject_a_replica_and_can_be_retried() {
    let good = Upstream::start("good").await;
    let bad = Upstream::start_with(
        "bad",
        Behaviour {
            status: 500,
            ..Behaviour::default()
        },
    )
    .await;
    let yaml = config(
        &[&good, &bad],
        "    outlierDetection: {consecutiveErrors: 2, baseEjectionTime: 60s}\n",
        "    retry: {on: [5xx], numRetries: 1}\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    for _ in 0..12 {
        let answer = get(&c, &gw.url("/")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-upstream"), Some("good"));
    }
    // Two 500s in a row eject the bad replica; after that it sees nothing.
    assert_eq!(bad.count(), 2);
    let text = metrics(&gw).await;
    assert!(
        text.contains(&format!(
            "modelgate_upstream_endpoint_healthy{{cluster=\"iris\",endpoint=\"{}\"}} 0\n",
            bad.address
        )),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_retry_policy_for_5xx_the_upstream_answer_is_passed_on() {
    let bad = Upstream::start_with(
        "bad",
        Behaviour {
            status: 503,
            ..Behaviour::default()
        },
    )
    .await;
    let gw = TestGateway::start(&config(&[&bad], "", "")).await;
    let answer = get(&client(), &gw.url("/")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json(), serde_json::json!({"upstream": "bad"}));
}

#[tokio::test]
async fn a_slow_upstream_is_answered_504_at_the_route_timeout() {
    let slow = Upstream::start_with(
        "slow",
        Behaviour {
            delay: Duration::from_secs(5),
            ..Behaviour::default()
        },
    )
    .await;
    let gw = TestGateway::start(&config(&[&slow], "", "    timeout: 300ms\n")).await;
    let started = Instant::now();
    let answer = get(&client(), &gw.url("/v2/models/iris/infer")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "upstream request timeout"})
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn an_unreachable_cluster_gets_503_then_no_healthy_upstream() {
    // A port nothing listens on: bind, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
clusters: [{{name: iris, endpoints: ['{closed}'], outlierDetection: {{consecutiveErrors: 2, baseEjectionTime: 60s}}}}]
routes: [{{match: {{prefix: /}}, cluster: iris}}]
"
    );
    let gw = TestGateway::start(&yaml).await;
    let c = client();
    let first = get(&c, &gw.url("/")).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        first.json(),
        serde_json::json!({"error": "upstream connect error or disconnect/reset before headers"})
    );
    // The first request and its retry were two connect failures: the endpoint is ejected.
    let second = get(&c, &gw.url("/")).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        second.json(),
        serde_json::json!({"error": "no healthy upstream"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_concurrent_load_fails_no_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let yaml = config(
        &[&a, &b],
        "    outlierDetection: {consecutiveErrors: 1, baseEjectionTime: 60s}\n",
        "    retry: {on: [connect-failure, reset], numRetries: 1}\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let mut load = Vec::new();
    for _ in 0..4 {
        let url = gw.url("/v1/models/iris:predict");
        load.push(tokio::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            for _ in 0..50 {
                let request = hyper::Request::get(&url)
                    .body(http_body_util::Full::default())
                    .unwrap();
                statuses.push(gateway_support::send(&c, request).await.map(|a| a.status));
            }
            statuses
        }));
    }
    // Kill b while the four clients are mid-way.
    while a.count() + b.count() < 60 {
        tokio::task::yield_now().await;
    }
    b.kill();
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.extend(task.await.unwrap());
    }
    assert_eq!(outcomes.len(), 200);
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok(StatusCode::OK)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        b.count() > 0 && a.count() > b.count(),
        "a {} b {}",
        a.count(),
        b.count()
    );
}

#[tokio::test]
async fn circuit_breakers_queue_past_max_connections_and_overflow_past_max_pending() {
    let slow = Upstream::start_with(
        "slow",
        Behaviour {
            delay: Duration::from_millis(600),
            ..Behaviour::default()
        },
    )
    .await;
    let breakers = "    circuitBreakers: {maxConnections: 1, maxPendingRequests: 1}\n";
    let gw = TestGateway::start(&config(&[&slow], breakers, "")).await;
    let http = client();
    let url = gw.url("/v2/models/iris/infer");
    let first = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { get(&http, &url).await }
    });
    while slow.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move { get(&http, &url).await }
    });
    // Time for the second request to start waiting (nothing outside shows it).
    tokio::time::sleep(Duration::from_millis(150)).await;
    // One request holds the only connection, one waits: the third overflows at once.
    let overflow = get(&http, &url).await;
    assert_eq!(overflow.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        overflow.json(),
        serde_json::json!({"error": "upstream connect error or disconnect/reset before headers"})
    );
    assert_eq!(
        slow.count(),
        1,
        "the queued request must not reach the upstream yet"
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(queued.await.unwrap().status, StatusCode::OK);
    assert_eq!(slow.count(), 2);
}
