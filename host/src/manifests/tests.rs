//! The translation of whole manifest sets: deploy/ itself, Envoy Gateway's defaults, and the
//! errors and warnings a user sees.

use std::path::PathBuf;

use super::testing::{serve_options, translate_text};
use super::{Options, translate};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy_options(serving: bool) -> Options {
    Options {
        paths: vec![repo().join("deploy")],
        wasm: vec![(None, repo().join("target/modelgate.wasm"))],
        backends: [
            "sklearn-iris-predictor.ml-models",
            "sklearn-mnist-predictor.ml-models",
            "sklearn-mnist-explainer.ml-models",
        ]
        .iter()
        .map(|s| format!("{s}=127.0.0.1:9").parse().unwrap())
        .collect(),
        serving,
        ..Options::default()
    }
}

#[test]
fn deploy_becomes_its_routes_in_envoy_gateways_order_with_its_client_policy() {
    let translation = translate(&deploy_options(false)).unwrap_or_else(|e| panic!("{e}"));
    let config = &translation.config.document;
    let names: Vec<&str> = config
        .routes
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect();
    // The explain rule (Exact) before every prefix; then the gRPC service's longer prefix
    // (`/inference.GRPCInferenceService`); the /v1/models and /v2/models prefixes tie (same
    // length, one Exact header each) and keep namespace/name, rule and match order; then the
    // fallback's shorter /v1 and /v2, then the redirect's `PathPrefix /` (length 0).
    assert_eq!(
        names,
        [
            "httproute/ml-models/sklearn-mnist/rule/0/match/0",
            "grpcroute/ml-models/sklearn-iris-grpc/rule/0/match/0",
            "httproute/ml-models/sklearn-iris/rule/0/match/0",
            "httproute/ml-models/sklearn-iris/rule/0/match/1",
            "httproute/ml-models/sklearn-mnist/rule/1/match/0",
            "httproute/ml-models/sklearn-mnist/rule/1/match/1",
            "httproute/kserve/model-fallback/rule/0/match/0",
            "httproute/kserve/model-fallback/rule/0/match/1",
            "httproute/kserve/https-redirect/rule/0/match/0",
        ]
    );
    // The model routes attach to the HTTPS listener only (sectionName: https); the gRPC route
    // serves its own host name.
    let (redirect, model_routes) = config.routes.split_last().unwrap();
    assert!(model_routes.iter().all(|r| r.listeners == ["https"]));
    assert_eq!(redirect.listeners, ["http"]);
    let location = redirect.redirect.as_ref().unwrap();
    assert_eq!(location.status_code, 301);
    assert_eq!(location.scheme, Some(crate::config::RedirectScheme::Https));
    let fallback = &config.routes[6];
    let direct = fallback.direct_response.as_ref().unwrap();
    assert_eq!(direct.status_code, 404);
    assert_eq!(
        direct.body.as_deref(),
        Some(r#"{"error":"no model route for this request"}"#)
    );
    assert_eq!(
        fallback.response_headers.set["content-type"],
        "application/json"
    );
    assert_eq!(
        config.routes[1].hostnames,
        ["sklearn-iris-grpc.models.example.com"]
    );
    assert!(config.routes[0].hostnames.is_empty());
    // deploy/gateway/clienttrafficpolicy.yaml: connection.bufferLimit 2Mi, PreserveOrGenerate.
    assert_eq!(config.buffer_limit.as_usize(), 2 << 20);
    assert_eq!(
        config.client_traffic.request_id(),
        crate::config::RequestIdAction::PreserveOrGenerate
    );
    let filter = &config.filters[0];
    assert_eq!(filter.root_id.as_deref(), Some("modelgate"));
    assert_eq!(filter.fail_open, Some(false));
    assert_eq!(
        filter.config.as_ref().unwrap()["routing"]["header"],
        "x-gateway-model-name"
    );
    assert_eq!(config.concurrency, 2);
    // Tracing needs the collector's local address, which these options do not give.
    assert!(config.tracing.is_none());
    assert!(
        translation.warnings.iter().any(|w| w.starts_with(
            "EnvoyProxy envoy-gateway-system/modelgate-proxy: spec.telemetry.tracing: not emulated: the collector"
        )),
        "{:#?}",
        translation.warnings
    );
    let mut traced = deploy_options(false);
    traced.backends.push(
        "jaeger-collector.monitoring:4317=127.0.0.1:4317"
            .parse()
            .unwrap(),
    );
    let tracing = translate(&traced).unwrap().config.document.tracing.unwrap();
    assert_eq!(tracing.collector, Some("127.0.0.1:4317".parse().unwrap()));
    assert_eq!(
        tracing.tags["modelgate.model"],
        "%FILTER_STATE(wasm.modelgate.model:PLAIN)%"
    );
    // deploy/gateway/envoyproxy.yaml's JSON access log: its filter-state fields.
    assert_eq!(
        config.access_log.filter_state["model"],
        "wasm.modelgate.model"
    );
    assert_eq!(
        config.access_log.filter_state["subject"],
        "wasm.modelgate.subject"
    );
    assert!(
        translation
            .warnings
            .iter()
            .any(|w| w == "NetworkPolicy ml-models/model-servers-from-gateway-only: not emulated: the host has no equivalent of a NetworkPolicy"),
        "{:#?}",
        translation.warnings
    );
}

#[test]
fn several_backend_mappings_of_one_service_are_its_endpoints_balanced_by_least_request() {
    let mut options = deploy_options(false);
    options.backends.push(
        "sklearn-iris-predictor.ml-models:80=127.0.0.1:10"
            .parse()
            .unwrap(),
    );
    let config = translate(&options)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
        .document;
    let cluster = |name: &str| config.clusters.iter().find(|c| c.name == name).unwrap();
    let iris = cluster("httproute/ml-models/sklearn-iris/rule/0");
    let endpoints: Vec<String> = iris.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(endpoints, ["127.0.0.1:9", "127.0.0.1:10"]);
    // Envoy Gateway's default load balancer (no BackendTrafficPolicy in deploy/).
    assert_eq!(iris.lb_policy, crate::config::LbPolicy::LeastRequest);
    // The mapping without a port covers the gRPC port too; the one with :80 does not.
    let grpc = cluster("grpcroute/ml-models/sklearn-iris-grpc/rule/0");
    assert_eq!(grpc.endpoints.len(), 1);
}

#[test]
fn without_a_client_traffic_policy_the_buffer_limit_is_envoy_gateways_32_kib() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n";
    let translation = translate_text(route, &serve_options()).unwrap();
    assert_eq!(
        translation.config.document.buffer_limit.as_usize(),
        32 * 1024
    );
    let route = &translation.config.document.routes[0];
    // Envoy Gateway sets no retries, and the cluster has no outlier detection.
    assert_eq!(route.retry.num_retries, 0);
    assert_eq!(
        translation.config.document.clusters[0]
            .outlier_detection
            .consecutive_errors,
        0
    );
}

#[test]
fn a_route_to_a_service_nobody_defines_or_maps_is_an_error_naming_the_route_and_field() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw}]\n  rules:\n    - backendRefs: [{name: svc, port: 80}]\n    - backendRefs: [{name: gone, port: 80}]\n";
    let errors = translate_text(route, &serve_options())
        .unwrap_err()
        .into_messages();
    assert_eq!(
        errors,
        [
            "HTTPRoute ml/r: spec.rules[1].backendRefs[0]: Service ml/gone is not in the manifests (a Service, or an InferenceService's predictor, explainer or transformer) and has no local address: give one with --backend gone.ml:80=HOST:PORT"
        ]
    );
}

#[test]
fn references_to_missing_gateways_listeners_and_ports_are_errors() {
    let manifests = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy\nmetadata: {name: p, namespace: gw}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: nowhere}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw, sectionName: https}, {name: other}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n---\napiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: iris, namespace: ml}\nspec: {predictor: {sklearn: {storageUri: 'gs://x'}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: explain, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw}]\n  rules: [{backendRefs: [{name: iris-explainer, port: 80}]}, {backendRefs: [{name: iris-predictor, port: 8080}]}]\n";
    let errors = translate_text(manifests, &serve_options())
        .unwrap_err()
        .into_messages();
    assert_eq!(
        errors,
        [
            "ClientTrafficPolicy gw/p: spec.targetRefs[0]: Gateway gw/nowhere is not in the manifests",
            "HTTPRoute ml/r: spec.parentRefs[0]: Gateway gw/gw has no listener named \"https\" the host serves",
            "HTTPRoute ml/r: spec.parentRefs[1]: Gateway ml/other is not in the manifests",
            "HTTPRoute ml/explain: spec.rules[0].backendRefs[0]: Service ml/iris-explainer is not in the manifests (a Service, or an InferenceService's predictor, explainer or transformer) and has no local address: give one with --backend iris-explainer.ml:80=HOST:PORT",
            "HTTPRoute ml/explain: spec.rules[1].backendRefs[0]: Service ml/iris-predictor (from InferenceService ml/iris) has no port 8080",
        ]
    );
}

#[test]
fn fields_the_host_does_not_read_are_warnings_with_their_path() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw}]\n  rules:\n    - backendRefs: [{name: svc, port: 80}]\n      sessionPersistence: {sessionName: s}\n      timeouts: {request: 1m30s, backendRequest: 10s}\n      filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier: {set: [{name: x-a, value: '1'}], remove: [x-b]}\n";
    let translation = translate_text(route, &serve_options()).unwrap();
    assert_eq!(
        translation.warnings,
        [
            "Gateway gw/gw: spec.gatewayClassName: not emulated: GatewayClass eg is not in the manifests, so no EnvoyProxy is read",
            "HTTPRoute ml/r: spec.rules[0].sessionPersistence: not emulated: the host does not read this field",
            "HTTPRoute ml/r: spec.rules[0].timeouts.backendRequest: not emulated: the host does not read this field",
        ]
    );
    let route = &translation.config.document.routes[0];
    assert_eq!(route.timeout.0, std::time::Duration::from_secs(90));
    assert_eq!(route.request_headers.set["x-a"], "1");
    assert_eq!(route.request_headers.remove, ["x-b"]);
}

#[test]
fn a_tls_secret_becomes_the_listeners_certificate_and_must_exist_to_serve() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tls, namespace: gw}\nspec:\n  gatewayClassName: eg\n  listeners: [{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]\n";
    let errors = translate_text(gateway, &serve_options())
        .unwrap_err()
        .into_messages();
    assert_eq!(
        errors,
        [
            "Gateway gw/tls: spec.listeners[0].tls.certificateRefs[0]: Secret gw/cert is not in the manifests (in a cluster cert-manager or an operator makes it)"
        ]
    );
    let check = Options {
        serving: false,
        ..serve_options()
    };
    let warnings = translate_text(gateway, &check).unwrap().warnings;
    assert!(warnings[0].ends_with("(serve needs it)"), "{warnings:?}");
}

#[test]
fn weights_query_matches_and_rewrites_become_the_hosts_route_fields() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ml}\nspec:\n  parentRefs: [{name: gw, namespace: gw}]\n  rules:\n    - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: v, value: '2'}]}]\n      filters: [{type: URLRewrite, urlRewrite: {hostname: svc.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]\n      backendRefs: [{name: svc, port: 80, weight: 1}, {name: svc, port: 81, weight: 3}]\n";
    let translation = translate_text(route, &serve_options()).unwrap();
    assert!(
        translation.warnings.len() == 1,
        "{:?}",
        translation.warnings
    );
    let route = &translation.config.document.routes[0];
    assert_eq!(route.matcher.path_prefix.as_deref(), Some("/api"));
    assert_eq!(route.matcher.query_params[0].name, "v");
    assert_eq!(route.matcher.query_params[0].exact.as_deref(), Some("2"));
    let weights: Vec<(String, u32)> = route
        .backends
        .iter()
        .map(|b| (b.cluster.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("httproute/ml/r/rule/0/backend/0".to_owned(), 1),
            ("httproute/ml/r/rule/0/backend/1".to_owned(), 3)
        ]
    );
    let rewrite = route.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.hostname.as_deref(), Some("svc.internal"));
    assert_eq!(
        rewrite
            .path
            .as_ref()
            .unwrap()
            .replace_prefix_match
            .as_deref(),
        Some("/v2")
    );
}
