//! `HTTPRoute` and `GRPCRoute` rules as the host's routes and clusters, named and ordered as
//! Envoy Gateway names and orders them: one route per match
//! (`httproute/<ns>/<name>/rule/<i>/match/<j>`, internal/gatewayapi/helpers.go `irRouteName`),
//! one cluster per rule (`httproute/<ns>/<name>/rule/<i>`, `irRouteDestinationName`), sorted
//! by [`super::precedence`].

use serde_json::{Map, Value, json};

use super::backends::Backends;
use super::fields::Node;
use super::gateway::Gateways;
use super::precedence::{self, Origin, PathKind, Rank};
use super::traffic::Traffic;
use super::{Translator, duration};

/// Envoy Gateway's cluster connect timeout (internal/xds/translator/cluster.go,
/// `tcpClusterPerConnectTimeout`).
const CONNECT_TIMEOUT: &str = "10s";

/// gRPC service and method names as Envoy Gateway matches them when a `GRPCRoute` leaves one
/// out (internal/gatewayapi/route.go, `validServiceName`, `validMethodName`).
const VALID_SERVICE_NAME: &str = r"(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*";
const VALID_METHOD_NAME: &str = "[A-Za-z_][A-Za-z_0-9]*";

struct Generated {
    rank: Rank,
    origin: Origin,
    route: Value,
}

/// The host config's `routes` (in Envoy Gateway's order) and `clusters`.
pub(super) fn read(
    t: &Translator<'_>,
    gateways: &Gateways,
    backends: &Backends,
    traffic: &Traffic,
) -> (Vec<Value>, Vec<Value>) {
    let mut generated = Vec::new();
    let mut clusters = Vec::new();
    for kind in ["HTTPRoute", "GRPCRoute"] {
        for index in t.of_kind(kind) {
            read_route(
                t,
                index,
                gateways,
                backends,
                traffic,
                &mut generated,
                &mut clusters,
            );
        }
    }
    precedence::sort(&mut generated, |g| (&g.rank, &g.origin));
    (generated.into_iter().map(|g| g.route).collect(), clusters)
}

fn read_route(
    t: &Translator<'_>,
    index: usize,
    gateways: &Gateways,
    backends: &Backends,
    traffic: &Traffic,
    generated: &mut Vec<Generated>,
    clusters: &mut Vec<Value>,
) {
    let object = &t.objects[index];
    let grpc = object.kind == "GRPCRoute";
    let root = t.root(index);
    let Some(spec) = root.get("spec") else {
        t.error(index, "spec", "missing");
        return;
    };
    let (listeners, parent_gateways) = parents(t, index, &spec, gateways);
    let hostnames: Vec<String> = spec
        .list("hostnames")
        .iter()
        .filter_map(Node::text)
        .collect();
    let attached = !listeners.is_empty();
    let policy = traffic.for_route(
        &object.kind,
        &object.namespace,
        &object.name,
        &parent_gateways,
    );
    let created = object.doc["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let prefix = format!(
        "{}/{}/{}",
        object.kind.to_ascii_lowercase(),
        object.namespace,
        object.name
    );
    for (rule_index, rule) in spec.list("rules").iter().enumerate() {
        rule.accept("name");
        let cluster_name = format!("{prefix}/rule/{rule_index}");
        let Some(mutations) = read_filters(t, index, rule) else {
            // The warning about the filter covers the rest of the rule.
            rule.take();
            continue;
        };
        let Some(mut cluster) = read_backends(t, index, rule, backends, &cluster_name, grpc) else {
            continue;
        };
        let mut timeout = policy.and_then(|p| p.route_fields.get("timeout").cloned());
        if let Some(timeouts) = rule.get("timeouts")
            && let Some(request) = timeouts.get("request")
        {
            match duration(&request) {
                Ok(d) => timeout = Some(json!(d)),
                Err(e) => t.error(index, request.path(), e),
            }
        }
        // Envoy retries nothing unless a policy says so (the host's own default retries a
        // connect failure once).
        let retry = policy
            .and_then(|p| p.route_fields.get("retry").cloned())
            .unwrap_or_else(|| json!({"on": [], "numRetries": 0}));
        if let Some(p) = policy {
            cluster.extend(p.cluster_fields.clone());
        }
        let matches = if grpc {
            grpc_matches(t, index, rule)
        } else {
            http_matches(t, index, rule)
        };
        if !attached {
            continue;
        }
        clusters.push(Value::Object(cluster));
        for (match_index, (rank, matcher)) in matches.into_iter().enumerate() {
            let mut route = json!({
                "name": format!("{cluster_name}/match/{match_index}"),
                "listeners": listeners,
                "hostnames": hostnames,
                "match": matcher,
                "cluster": cluster_name,
                "retry": retry,
                "requestHeaders": mutations.0,
                "responseHeaders": mutations.1,
            });
            if let Some(timeout) = &timeout {
                route["timeout"] = timeout.clone();
            }
            generated.push(Generated {
                rank,
                origin: Origin {
                    grpc,
                    created: created.clone(),
                    namespace: object.namespace.clone(),
                    name: object.name.clone(),
                    rule: rule_index,
                    matched: match_index,
                },
                route,
            });
        }
    }
}

/// The host listeners a route attaches to, and the Gateways its `parentRefs` name.
fn parents(
    t: &Translator<'_>,
    index: usize,
    spec: &Node<'_>,
    gateways: &Gateways,
) -> (Vec<String>, Vec<usize>) {
    let object = &t.objects[index];
    let mut listeners = Vec::new();
    let mut parent_gateways = Vec::new();
    for parent in spec.list("parentRefs") {
        for name in gateways.attach(t, index, &parent, &object.kind) {
            if !listeners.contains(&name) {
                listeners.push(name);
            }
        }
        let namespace = parent
            .str("namespace")
            .unwrap_or_else(|| object.namespace.clone());
        let name = parent.str("name").unwrap_or_default();
        if let Some(g) = t.find("Gateway", &namespace, &name) {
            parent_gateways.push(g);
        }
    }
    (listeners, parent_gateways)
}

/// The `HTTPRoute` matches of a rule, with Gateway API's defaults (no matches, or a match
/// without a path, is `PathPrefix /`).
fn http_matches(t: &Translator<'_>, index: usize, rule: &Node<'_>) -> Vec<(Rank, Value)> {
    let nodes = rule.list("matches");
    if nodes.is_empty() {
        return vec![(Rank::of_path(PathKind::Prefix, "/"), json!({"prefix": "/"}))];
    }
    nodes
        .iter()
        .map(|m| {
            let (kind, value) = match m.get("path") {
                Some(path) => {
                    let kind = match path.str("type").as_deref() {
                        Some("Exact") => PathKind::Exact,
                        Some("RegularExpression") => PathKind::RegularExpression,
                        _ => PathKind::Prefix,
                    };
                    (kind, path.str("value").unwrap_or_else(|| "/".to_owned()))
                }
                None => (PathKind::Prefix, "/".to_owned()),
            };
            let mut rank = Rank::of_path(kind, &value);
            let key = match kind {
                PathKind::Exact => "path",
                PathKind::RegularExpression => "regex",
                PathKind::Prefix => "prefix",
            };
            let mut matcher = Map::new();
            matcher.insert(key.into(), json!(value));
            let headers = header_matches(m, &mut rank);
            if let Some(method) = m.str("method") {
                // Envoy Gateway matches the method as an Exact header match on `:method`.
                rank.headers += 1;
                rank.exact_headers += 1;
                matcher.insert("method".into(), json!(method));
            }
            matcher.insert("headers".into(), Value::Array(headers));
            for query in m.list("queryParams") {
                rank.query_params += 1;
                if query.get("type").and_then(|q| q.text()).is_none_or(|q| q == "Exact") {
                    rank.exact_query_params += 1;
                }
                query.take();
                t.warn(
                    index,
                    query.path(),
                    "the host does not match query parameters: the route matches without it (its precedence counts it)",
                );
            }
            (rank, Value::Object(matcher))
        })
        .collect()
}

/// Gateway API header matches (Exact by default) as the host's, counted into `rank`.
fn header_matches(m: &Node<'_>, rank: &mut Rank) -> Vec<Value> {
    m.list("headers")
        .iter()
        .map(|h| {
            rank.headers += 1;
            let name = h.str("name").unwrap_or_default();
            let value = h.str("value").unwrap_or_default();
            if h.str("type").as_deref() == Some("RegularExpression") {
                json!({"name": name, "regex": value})
            } else {
                rank.exact_headers += 1;
                json!({"name": name, "exact": value})
            }
        })
        .collect()
}

/// `GRPCRoute` matches as Envoy Gateway turns them into path and header matches
/// (internal/gatewayapi/route.go, `processGRPCRouteMethodExact` and
/// `processGRPCRouteMethodRegularExpression`).
fn grpc_matches(_t: &Translator<'_>, _index: usize, rule: &Node<'_>) -> Vec<(Rank, Value)> {
    let nodes = rule.list("matches");
    if nodes.is_empty() {
        return vec![(Rank::of_path(PathKind::Prefix, "/"), json!({"prefix": "/"}))];
    }
    nodes
        .iter()
        .map(|m| {
            let mut extra_headers = Vec::new();
            let (kind, key, value) = match m.get("method") {
                Some(method) => {
                    let regex = method.str("type").as_deref() == Some("RegularExpression");
                    let service = method.str("service");
                    let name = method.str("method");
                    match (regex, service, name) {
                        (false, Some(s), Some(n)) => (PathKind::Exact, "path", format!("/{s}/{n}")),
                        (false, Some(s), None) => (PathKind::Prefix, "prefix", format!("/{s}")),
                        (false, None, Some(n)) => {
                            // A suffix match on `:path`, as a whole-value regex.
                            extra_headers.push(json!({"name": ":path", "regex": format!(".*/{}", regex_escape(&n))}));
                            (PathKind::Prefix, "prefix", "/".to_owned())
                        }
                        (true, Some(s), Some(n)) => (PathKind::RegularExpression, "regex", format!("/{s}/{n}")),
                        (true, None, Some(n)) => {
                            (PathKind::RegularExpression, "regex", format!("/{VALID_SERVICE_NAME}/{n}"))
                        }
                        (true, Some(s), None) => {
                            (PathKind::RegularExpression, "regex", format!("/{s}/{VALID_METHOD_NAME}"))
                        }
                        (_, None, None) => (PathKind::Prefix, "prefix", "/".to_owned()),
                    }
                }
                None => (PathKind::Prefix, "prefix", "/".to_owned()),
            };
            let mut rank = Rank::of_path(kind, &value);
            rank.headers += extra_headers.len();
            let mut headers = header_matches(m, &mut rank);
            headers.extend(extra_headers);
            (rank, json!({key: value, "headers": headers}))
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    regex::escape(text)
}

/// A rule's filters as `(requestHeaders, responseHeaders)`; `None` when the rule does
/// something the host cannot (redirect, rewrite, direct response), which is then reported
/// and left out.
fn read_filters(t: &Translator<'_>, index: usize, rule: &Node<'_>) -> Option<(Value, Value)> {
    let mut request = json!({});
    let mut response = json!({});
    let mut servable = true;
    for filter in rule.list("filters") {
        let kind = filter.str("type").unwrap_or_default();
        match kind.as_str() {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => {
                let key = if kind == "RequestHeaderModifier" {
                    "requestHeaderModifier"
                } else {
                    "responseHeaderModifier"
                };
                let target = if kind == "RequestHeaderModifier" {
                    &mut request
                } else {
                    &mut response
                };
                if let Some(modifier) = filter.get(key) {
                    *target = header_modifier(&modifier);
                }
            }
            "ExtensionRef" => {
                let Some(reference) = filter.get("extensionRef") else {
                    continue;
                };
                reference.accept("group");
                let ref_kind = reference.str("kind").unwrap_or_default();
                let name = reference.str("name").unwrap_or_default();
                let namespace = &t.objects[index].namespace;
                let Some(target) = t.find(&ref_kind, namespace, &name) else {
                    t.error(
                        index,
                        reference.path(),
                        format!("{ref_kind} {namespace}/{name} is not in the manifests"),
                    );
                    servable = false;
                    continue;
                };
                // The referenced filter is read here, as part of this rule.
                t.root(target).get("spec").map(|s| s.take());
                t.warn(
                    index,
                    filter.path(),
                    format!(
                        "{ref_kind} {name} (a direct response or other extension): the rule is left out, and a request only it would match gets the host's own 404 (the filters still run first)"
                    ),
                );
                servable = false;
            }
            other => {
                filter.take();
                t.warn(
                    index,
                    filter.path(),
                    format!(
                        "{other}: the host has no such route action yet, so the rule is left out"
                    ),
                );
                servable = false;
            }
        }
    }
    servable.then_some((request, response))
}

fn header_modifier(modifier: &Node<'_>) -> Value {
    let pairs = |key: &str| -> Map<String, Value> {
        modifier
            .list(key)
            .iter()
            .map(|h| {
                (
                    h.str("name").unwrap_or_default(),
                    json!(h.str("value").unwrap_or_default()),
                )
            })
            .collect()
    };
    let remove: Vec<Value> = modifier
        .list("remove")
        .iter()
        .filter_map(Node::text)
        .map(Value::from)
        .collect();
    json!({"set": pairs("set"), "add": pairs("add"), "remove": remove})
}

/// The rule's cluster: the endpoints of its backendRefs (weight 0 left out). `None` when the
/// rule has no backend, which Envoy Gateway answers with 500 and the host leaves out.
fn read_backends(
    t: &Translator<'_>,
    index: usize,
    rule: &Node<'_>,
    backends: &Backends,
    cluster_name: &str,
    grpc: bool,
) -> Option<Map<String, Value>> {
    let refs = rule.list("backendRefs");
    if refs.is_empty() {
        t.warn(
            index,
            &rule.path_of("backendRefs"),
            "a rule without backends (Envoy Gateway answers 500) is left out",
        );
        return None;
    }
    let namespace = t.objects[index].namespace.clone();
    let mut endpoints = Vec::new();
    let mut weights = Vec::new();
    let mut app_protocol = grpc.then(|| "grpc".to_owned());
    for reference in &refs {
        reference.accept("group");
        let kind = reference
            .str("kind")
            .unwrap_or_else(|| "Service".to_owned());
        if kind != "Service" {
            t.warn(
                index,
                reference.path(),
                format!("a {kind} backend (the host reads Services)"),
            );
            reference.take();
            continue;
        }
        let weight = reference.u64("weight").unwrap_or(1);
        if weight == 0 {
            reference.take();
            continue;
        }
        if let Some(filters) = reference.get("filters") {
            filters.take();
            t.warn(index, filters.path(), "per-backend filters");
        }
        let ref_namespace = reference
            .str("namespace")
            .unwrap_or_else(|| namespace.clone());
        let name = reference.str("name").unwrap_or_default();
        let port = reference.u64("port");
        if let Some(backend) = backends.resolve(t, index, reference, &ref_namespace, &name, port) {
            endpoints.push(json!(backend.address.to_string()));
            weights.push(weight);
            if app_protocol.is_none() {
                app_protocol = backend.app_protocol;
            }
        }
    }
    if weights.windows(2).any(|w| w[0] != w[1]) {
        t.warn(
            index,
            &rule.path_of("backendRefs"),
            "weights: the host spreads requests evenly over the backends",
        );
    }
    if endpoints.is_empty() {
        return None;
    }
    let mut cluster = Map::new();
    cluster.insert("name".into(), json!(cluster_name));
    cluster.insert("endpoints".into(), Value::Array(endpoints));
    cluster.insert("connectTimeout".into(), json!(CONNECT_TIMEOUT));
    // Envoy Gateway turns on outlier detection only when a BackendTrafficPolicy asks.
    cluster.insert("outlierDetection".into(), json!({"consecutiveErrors": 0}));
    if let Some(protocol) = app_protocol {
        cluster.insert("appProtocol".into(), json!(protocol));
    }
    Some(cluster)
}
