//! Route precedence, case by case: each table gives `HTTPRoutes` in an order that is not the
//! answer and the order Envoy Gateway's rules give, derived by hand from
//! internal/gatewayapi/sort.go (`XdsIRRoutes.Less`, a stable descending sort),
//! internal/gatewayapi/resource/resource.go (`Resources.Sort`: creation time, then
//! namespace/name) and Gateway API's "Route Precedence" (`HTTPRouteRule`, apis/v1/
//! `httproute_types.go`).

use std::fmt::Write as _;

use super::super::testing::{routes_in_order, serve_options};

/// One `HTTPRoute` of a case: namespace, name, creation time ("" for none), and its rules'
/// `matches` lists as YAML flow sequences.
struct Route<'a> {
    namespace: &'a str,
    name: &'a str,
    created: &'a str,
    rules: &'a [&'a str],
}

const fn route<'a>(name: &'a str, rules: &'a [&'a str]) -> Route<'a> {
    Route {
        namespace: "ml",
        name,
        created: "",
        rules,
    }
}

fn manifests(routes: &[Route<'_>]) -> String {
    let mut out = String::new();
    for r in routes {
        let created = if r.created.is_empty() {
            String::new()
        } else {
            format!(", creationTimestamp: '{}'", r.created)
        };
        let rules: Vec<String> = r
            .rules
            .iter()
            .map(|m| {
                format!("      - matches: {m}\n        backendRefs: [{{name: svc, port: 80}}]\n")
            })
            .collect();
        let _ = write!(
            out,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {}, namespace: {}{created}}}\nspec:\n  parentRefs: [{{name: gw, namespace: gw}}]\n  rules:\n{}",
            r.name,
            r.namespace,
            rules.concat()
        );
    }
    out
}

/// The route names (`<name>/rule/<i>/match/<j>`, short for Envoy Gateway's
/// `httproute/<ns>/<name>/rule/<i>/match/<j>`) in the order the host tries them.
fn order(routes: &[Route<'_>]) -> Vec<String> {
    routes_in_order(&manifests(routes), &serve_options())
        .into_iter()
        .map(|name| name.splitn(3, '/').nth(2).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn path_match_types_rank_exact_then_regular_expression_then_prefix() {
    // sort.go step 1, whatever the lengths: a long prefix loses to a short exact path.
    let routes = [
        route(
            "prefix",
            &["[{path: {type: PathPrefix, value: /v1/models/sklearn-mnist}}]"],
        ),
        route(
            "regex",
            &["[{path: {type: RegularExpression, value: '/v1/models/[a-z-]+:explain'}}]"],
        ),
        route("exact", &["[{path: {type: Exact, value: /a}}]"]),
    ];
    assert_eq!(
        order(&routes),
        [
            "exact/rule/0/match/0",
            "regex/rule/0/match/0",
            "prefix/rule/0/match/0"
        ]
    );
}

#[test]
fn longer_paths_of_one_type_come_first_and_a_root_prefix_counts_zero() {
    // Step 2: the path value's length; `PathPrefix /` counts 0, so a rule without matches
    // (Gateway API's default `PathPrefix /`) comes last.
    let routes = [
        route("root", &["[]"]),
        route("v1", &["[{path: {type: PathPrefix, value: /v1}}]"]),
        route(
            "models",
            &["[{path: {type: PathPrefix, value: /v1/models}}]"],
        ),
        route(
            "short-re",
            &["[{path: {type: RegularExpression, value: '/.*'}}]"],
        ),
        route(
            "long-re",
            &["[{path: {type: RegularExpression, value: '/v1/.*'}}]"],
        ),
    ];
    assert_eq!(
        order(&routes),
        [
            "long-re/rule/0/match/0",
            "short-re/rule/0/match/0",
            "models/rule/0/match/0",
            "v1/rule/0/match/0",
            "root/rule/0/match/0",
        ]
    );
}

#[test]
fn path_length_outranks_header_matches() {
    let routes = [
        route(
            "root-with-headers",
            &[
                "[{path: {type: PathPrefix, value: /}, headers: [{name: a, value: '1'}, {name: b, value: '2'}]}]",
            ],
        ),
        route("v1", &["[{path: {type: PathPrefix, value: /v1}}]"]),
    ];
    assert_eq!(
        order(&routes),
        ["v1/rule/0/match/0", "root-with-headers/rule/0/match/0"]
    );
}

#[test]
fn more_header_matches_then_more_exact_ones_come_first() {
    // Step 3: the number of header matches, then how many are Exact; a `method` match is an
    // Exact header match on `:method` (route.go `processHTTPRouteRule`).
    let routes = [
        route("none", &["[{path: {type: PathPrefix, value: /v1}}]"]),
        route(
            "one-regex",
            &[
                "[{path: {type: PathPrefix, value: /v1}, headers: [{type: RegularExpression, name: a, value: 'x.*'}]}]",
            ],
        ),
        route(
            "method",
            &["[{path: {type: PathPrefix, value: /v1}, method: POST}]"],
        ),
        route(
            "two",
            &[
                "[{path: {type: PathPrefix, value: /v1}, headers: [{type: RegularExpression, name: a, value: 'x'}, {name: b, value: 'y'}]}]",
            ],
        ),
    ];
    assert_eq!(
        order(&routes),
        [
            "two/rule/0/match/0",
            "method/rule/0/match/0",
            "one-regex/rule/0/match/0",
            "none/rule/0/match/0",
        ]
    );
}

#[test]
fn query_parameter_matches_come_after_headers_in_the_ranking() {
    // Step 4 (after cookies, which HTTPRoute has none of): the number of query parameter
    // matches, then how many are Exact. Headers still come first.
    let routes = [
        route("plain", &["[{path: {type: PathPrefix, value: /v1}}]"]),
        route(
            "query-regex",
            &[
                "[{path: {type: PathPrefix, value: /v1}, queryParams: [{type: RegularExpression, name: q, value: 'a.*'}]}]",
            ],
        ),
        route(
            "query-exact",
            &["[{path: {type: PathPrefix, value: /v1}, queryParams: [{name: q, value: a}]}]"],
        ),
        route(
            "header",
            &["[{path: {type: PathPrefix, value: /v1}, headers: [{name: h, value: v}]}]"],
        ),
    ];
    assert_eq!(
        order(&routes),
        [
            "header/rule/0/match/0",
            "query-exact/rule/0/match/0",
            "query-regex/rule/0/match/0",
            "plain/rule/0/match/0",
        ]
    );
}

#[test]
fn ties_go_to_the_oldest_route_then_namespace_and_name_then_rule_and_match_order() {
    let same = "[{path: {type: PathPrefix, value: /v1}}]";
    let routes = [
        Route {
            namespace: "b",
            name: "a-newer",
            created: "2026-02-01T00:00:00Z",
            rules: &[same],
        },
        Route {
            namespace: "b",
            name: "z-older",
            created: "2026-01-01T00:00:00Z",
            rules: &[same],
        },
        Route {
            namespace: "b",
            name: "m",
            created: "2026-02-01T00:00:00Z",
            rules: &[
                same,
                "[{path: {type: PathPrefix, value: /v1}}, {path: {type: PathPrefix, value: /v1}}]",
            ],
        },
        Route {
            namespace: "a",
            name: "z",
            created: "2026-02-01T00:00:00Z",
            rules: &[same],
        },
    ];
    assert_eq!(
        order(&routes),
        [
            "z-older/rule/0/match/0",
            "z/rule/0/match/0",
            "a-newer/rule/0/match/0",
            "m/rule/0/match/0",
            "m/rule/1/match/0",
            "m/rule/1/match/1",
        ]
    );
}

#[test]
fn an_exact_explain_rule_wins_over_the_predict_prefix_in_either_rule_order() {
    let explain = "[{path: {type: Exact, value: '/v1/models/m:explain'}, headers: [{name: x-gateway-model-name, value: m}]}]";
    let predict = "[{path: {type: PathPrefix, value: /v1/models}, headers: [{name: x-gateway-model-name, value: m}]}]";
    for rules in [[explain, predict], [predict, explain]] {
        let first = order(&[route("m", &rules)])[0].clone();
        let explain_rule = usize::from(rules[0] != explain);
        assert_eq!(first, format!("m/rule/{explain_rule}/match/0"), "{rules:?}");
    }
}
