//! The admin listener: `/ready`, `/metrics` and `/config_dump` contents.

mod gateway_support;

use hyper::StatusCode;

use gateway_support::{ConfigFile, TestGateway, Upstream, client, cluster, get};

async fn gateway_with_tls_and_traffic() -> (Upstream, TestGateway) {
    let upstream = Upstream::start("iris").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let yaml = format!(
        "version: 1
listeners:
  - {{name: main, address: 127.0.0.1:0}}
  - {{name: secure, address: 127.0.0.1:0, tls: {{certFile: cert.pem, keyFile: key.pem}}}}
admin: {{address: 127.0.0.1:0}}
clusters:
{}routes:
  - {{name: iris, match: {{prefix: /v1/models/iris}}, cluster: iris, timeout: 2s}}
",
        cluster("iris", &[&upstream])
    );
    let config = ConfigFile::new(&yaml);
    config.write("cert.pem", certified.cert.pem());
    config.write("key.pem", certified.signing_key.serialize_pem());
    let gateway = modelgate_host::gateway::Gateway::start(&config.path)
        .await
        .unwrap();
    let address = gateway.listeners()[0].1;
    let admin = gateway.admin_address();
    (
        upstream,
        TestGateway {
            gateway,
            config,
            address,
            admin,
        },
    )
}

#[tokio::test]
async fn ready_answers_once_configured_and_unknown_paths_404() {
    let (_upstream, gw) = gateway_with_tls_and_traffic().await;
    let c = client();
    let ready = get(&c, &gw.admin_url("/ready")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, "ready\n");
    assert_eq!(
        get(&c, &gw.admin_url("/nope")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_cluster_and_status() {
    let (upstream, gw) = gateway_with_tls_and_traffic().await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            get(&c, &gw.url("/v1/models/iris:predict")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&c, &gw.url("/unrouted")).await.status,
        StatusCode::NOT_FOUND
    );
    let metrics = get(&c, &gw.admin_url("/metrics")).await;
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = metrics.body;
    // Named as Envoy's /stats/prometheus names the same counters (the 404 had no upstream).
    for line in [
        "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"main\"} 4\n",
        "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"main\"} 3\n",
        "envoy_http_downstream_rq_xx{envoy_response_code_class=\"4\",envoy_http_conn_manager_prefix=\"main\"} 1\n",
        "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"iris\"} 3\n",
        "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"iris\"} 3\n",
        "# TYPE envoy_cluster_upstream_rq_time histogram\n",
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"iris\",le=\"+Inf\"} 3\n",
        "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"iris\"} 3\n",
        // The test client keeps its connection open, so the gauge counts it.
        "envoy_http_downstream_cx_active{envoy_http_conn_manager_prefix=\"main\"} 1\n",
        "envoy_http_downstream_rq_active{envoy_http_conn_manager_prefix=\"main\"} 0\n",
        "envoy_cluster_membership_healthy{envoy_cluster_name=\"iris\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains("# TYPE modelgate_wasm_vm_failures_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "modelgate_upstream_endpoint_healthy{{cluster=\"iris\",endpoint=\"{}\"}} 1\n",
            upstream.address
        )),
        "{text}"
    );
}

#[tokio::test]
async fn config_dump_shows_the_effective_config_with_secrets_redacted() {
    let (_upstream, gw) = gateway_with_tls_and_traffic().await;
    let dump = get(&client(), &gw.admin_url("/config_dump")).await;
    assert_eq!(dump.status, StatusCode::OK);
    let json = dump.json();
    let tls = &json["listeners"][1]["tls"];
    assert_eq!(tls["keyFile"], "[redacted]");
    // Relative paths are shown resolved against the config's directory.
    assert_eq!(
        tls["certFile"],
        gw.config.dir.join("cert.pem").to_str().unwrap()
    );
    // Defaults are filled in.
    assert_eq!(json["clusters"][0]["lbPolicy"], "roundRobin");
    assert_eq!(json["clusters"][0]["connectTimeout"], "1000ms");
    assert_eq!(json["routes"][0]["timeout"], "2000ms");
    assert_eq!(
        json["routes"][0]["retry"]["on"],
        serde_json::json!(["connect-failure"])
    );
    assert_eq!(json["bufferLimit"], 1_048_576);
}
