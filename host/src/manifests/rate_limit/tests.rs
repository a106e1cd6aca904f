//! A `BackendTrafficPolicy`'s global rate limit as the host's `globalRateLimit`.

use std::path::PathBuf;

use serde_json::Value;

use super::super::testing::{serve_options, translate_text};
use super::super::{Options, translate};
use crate::config::global_ratelimit::HeaderSelectorKind;

const REDIS: &str = "127.0.0.1:6379";

fn with_redis(options: Options) -> Options {
    Options {
        ratelimit_redis: Some(REDIS.to_owned()),
        ..options
    }
}

/// A Gateway-targeted policy with `rules` (YAML flow text).
fn policy(name: &str, target: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {{name: {name}, namespace: gw}}\nspec:\n  targetRefs: [{target}]\n  \
         rateLimit:\n    type: Global\n    global:\n      rules: {rules}\n"
    )
}

const ON_GATEWAY: &str = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";
const DISTINCT_CALLER: &str = "{clientSelectors: [{headers: [{type: Distinct, name: x-caller}]}], limit: {requests: 3, unit: Minute}}";

#[test]
fn deploys_global_policy_becomes_the_hosts_rules_with_the_redis_given() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let options = with_redis(Options {
        paths: vec![repo.join("deploy"), repo.join("deploy/ratelimit-global")],
        wasm: vec![(None, repo.join("target/modelgate.wasm"))],
        ..Options::default()
    });
    let translation = translate(&options).unwrap_or_else(|e| panic!("{e}"));
    let limit = translation
        .config
        .document
        .global_rate_limit
        .expect("globalRateLimit");
    assert_eq!(limit.redis, REDIS);
    // Envoy Gateway's defaults: the filter's 20 ms, failing open.
    assert_eq!(limit.timeout.0.as_millis(), 20);
    assert!(!limit.fail_closed);
    // Rule for rule, what deploy/ratelimit-global/backendtrafficpolicy.yaml states.
    let text =
        std::fs::read_to_string(repo.join("deploy/ratelimit-global/backendtrafficpolicy.yaml"))
            .unwrap();
    let manifest: Value = serde_norway::from_str(&text).unwrap();
    let rules = manifest["spec"]["rateLimit"]["global"]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(limit.rules.len(), rules.len());
    for (host, rule) in limit.rules.iter().zip(rules) {
        assert_eq!(
            host.limit.requests,
            rule["limit"]["requests"].as_u64().unwrap()
        );
        assert_eq!(
            format!("{:?}", host.limit.unit),
            rule["limit"]["unit"].as_str().unwrap()
        );
        let headers = rule["clientSelectors"][0]["headers"].as_array().unwrap();
        let host_headers = &host.client_selectors[0].headers;
        assert_eq!(host_headers.len(), headers.len());
        for (h, header) in host_headers.iter().zip(headers) {
            assert_eq!(h.name, header["name"].as_str().unwrap());
            assert_eq!(format!("{:?}", h.kind), header["type"].as_str().unwrap());
            assert_eq!(h.value.as_deref(), header["value"].as_str());
        }
    }
    assert!(
        !translation
            .warnings
            .iter()
            .any(|w| w.contains("BackendTrafficPolicy")),
        "{:#?}",
        translation.warnings
    );
}

#[test]
fn serving_without_the_redis_is_an_error_and_check_says_serve_needs_it() {
    let manifests = policy("limits", ON_GATEWAY, &format!("[{DISTINCT_CALLER}]"));
    let error = translate_text(&manifests, &serve_options())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("BackendTrafficPolicy gw/limits: spec.rateLimit.global:")
            && error.contains("--ratelimit-redis"),
        "{error}"
    );
    let checking = Options {
        serving: false,
        ..serve_options()
    };
    let translation = translate_text(&manifests, &checking).unwrap();
    assert!(translation.config.document.global_rate_limit.is_none());
    assert!(
        translation
            .warnings
            .iter()
            .any(|w| w.contains("--ratelimit-redis") && w.ends_with("(serve needs it)")),
        "{:#?}",
        translation.warnings
    );
    let served = translate_text(&manifests, &with_redis(serve_options())).unwrap();
    let rule = &served.config.document.global_rate_limit.unwrap().rules[0];
    assert_eq!(
        rule.client_selectors[0].headers[0].kind,
        HeaderSelectorKind::Distinct
    );
    assert_eq!(rule.limit.requests, 3);
}

#[test]
fn rules_the_host_cannot_count_as_the_cluster_does_are_left_out_and_named() {
    let left_out = [
        (
            "{clientSelectors: [{headers: [{type: RegularExpression, name: x-caller, value: 'a.*'}]}], limit: {requests: 1, unit: Second}}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].headers[0]",
        ),
        (
            "{clientSelectors: [{headers: [{name: x-caller, value: a, invert: true}]}], limit: {requests: 1, unit: Second}}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].headers[0]",
        ),
        (
            "{clientSelectors: [{sourceCIDR: {type: Distinct, value: 10.0.0.0/8}}], limit: {requests: 1, unit: Second}}",
            "spec.rateLimit.global.rules[0].clientSelectors[0].sourceCIDR",
        ),
        (
            "{clientSelectors: [{headers: [{type: Distinct, name: x-caller}]}], limit: {requests: 1, unit: Second}, shadowMode: true}",
            "spec.rateLimit.global.rules[0].shadowMode",
        ),
        (
            "{clientSelectors: [{headers: [{type: Distinct, name: x-caller}]}], limit: {requests: 1, unit: Week}}",
            "spec.rateLimit.global.rules[0].limit",
        ),
    ];
    for (rule, path) in left_out {
        // The rule the host cannot count, then one it can: only the second is kept.
        let manifests = policy(
            "limits",
            ON_GATEWAY,
            &format!("[{rule}, {DISTINCT_CALLER}]"),
        );
        let translation = translate_text(&manifests, &with_redis(serve_options()))
            .unwrap_or_else(|e| panic!("{rule}: {e}"));
        let rules = translation.config.document.global_rate_limit.unwrap().rules;
        assert_eq!(rules.len(), 1, "{rule}");
        assert_eq!(rules[0].limit.requests, 3, "{rule}");
        let warning = format!("BackendTrafficPolicy gw/limits: {path}: not emulated:");
        let found: Vec<&String> = translation
            .warnings
            .iter()
            .filter(|w| w.contains("BackendTrafficPolicy"))
            .collect();
        assert!(
            found.len() == 1
                && found[0].starts_with(&warning)
                && found[0].ends_with("the rule is left out"),
            "{rule}: {found:#?}"
        );
    }
}

#[test]
fn only_one_gateway_targeted_policy_applies_and_route_targets_are_reported() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: gw}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: svc, namespace: ml, port: 80}]}]\n";
    let manifests = [
        route.to_owned(),
        policy("first", ON_GATEWAY, &format!("[{DISTINCT_CALLER}]")),
        policy(
            "second",
            ON_GATEWAY,
            "[{limit: {requests: 9, unit: Second}}]",
        ),
        policy(
            "on-route",
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}",
            "[{limit: {requests: 9, unit: Second}}]",
        ),
    ]
    .join("---\n");
    let translation =
        translate_text(&manifests, &with_redis(serve_options())).unwrap_or_else(|e| panic!("{e}"));
    let rules = translation.config.document.global_rate_limit.unwrap().rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].limit.requests, 3);
    for (name, why) in [
        ("second", "an earlier one already applies"),
        ("on-route", "a policy that targets a Gateway only"),
    ] {
        let prefix =
            format!("BackendTrafficPolicy gw/{name}: spec.rateLimit.global: not emulated:");
        assert!(
            translation
                .warnings
                .iter()
                .any(|w| w.starts_with(&prefix) && w.contains(why)),
            "{name}: {:#?}",
            translation.warnings
        );
    }
}

/// An `HTTPRoute` `name` in namespace `gw` with one rule to the Service `svc` in `ml`.
fn route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: gw}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{name}}}}}], \
         backendRefs: [{{name: svc, namespace: ml, port: 80}}]}}]\n"
    )
}

fn local_policy(name: &str, target: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {{name: {name}, namespace: gw}}\nspec:\n  targetRefs: [{target}]\n  \
         rateLimit:\n    local:\n      rules: {rules}\n"
    )
}

#[test]
fn a_local_limit_goes_on_every_route_the_policy_covers_and_a_routes_own_policy_wins() {
    let manifests = [
        route("a"),
        route("b"),
        local_policy(
            "everywhere",
            ON_GATEWAY,
            &format!("[{{limit: {{requests: 10, unit: Second}}}}, {DISTINCT_CALLER}]"),
        ),
        local_policy(
            "on-b",
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: b}",
            "[{limit: {requests: 1, unit: Minute}}]",
        ),
    ]
    .join("---\n");
    let translation =
        translate_text(&manifests, &serve_options()).unwrap_or_else(|e| panic!("{e}"));
    let limits: Vec<(String, Vec<u64>)> = translation
        .config
        .document
        .routes
        .iter()
        .map(|r| {
            let limit = r.local_rate_limit.as_ref().expect("a local limit");
            (
                r.name.clone().unwrap_or_default(),
                limit.rules.iter().map(|rule| rule.limit.requests).collect(),
            )
        })
        .collect();
    assert_eq!(
        limits,
        [
            ("httproute/gw/a/rule/0/match/0".to_owned(), vec![10, 3]),
            ("httproute/gw/b/rule/0/match/0".to_owned(), vec![1]),
        ]
    );
    assert!(
        !translation.warnings.iter().any(|w| w.contains("rateLimit")),
        "{:#?}",
        translation.warnings
    );
}

#[test]
fn local_rules_the_host_cannot_count_as_the_cluster_does_are_left_out_and_named() {
    let manifests = [
        route("a"),
        local_policy(
            "limits",
            ON_GATEWAY,
            &format!("[{{clientSelectors: [{{path: {{type: Exact, value: /a}}}}], limit: {{requests: 1, unit: Second}}}}, {DISTINCT_CALLER}]"),
        ),
    ]
    .join("---\n");
    let translation =
        translate_text(&manifests, &serve_options()).unwrap_or_else(|e| panic!("{e}"));
    let limit = translation.config.document.routes[0]
        .local_rate_limit
        .as_ref()
        .unwrap();
    assert_eq!(limit.rules.len(), 1);
    assert_eq!(limit.rules[0].limit.requests, 3);
    assert!(
        translation.warnings.iter().any(|w| w.starts_with(
            "BackendTrafficPolicy gw/limits: spec.rateLimit.local.rules[0].clientSelectors[0].path: not emulated:"
        ) && w.ends_with("the rule is left out")),
        "{:#?}",
        translation.warnings
    );
}
