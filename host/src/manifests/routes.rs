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
use super::traffic::{BackendPolicy, Traffic};
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
        let Some(actions) = read_filters(t, index, rule) else {
            // The warning about the filter covers the rest of the rule.
            rule.take();
            continue;
        };
        let Some(RuleBackends {
            clusters: rule_clusters,
            target,
        }) = rule_backends(t, index, rule, &actions, backends, &cluster_name, grpc)
        else {
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
        let policy_fields = policy_route_fields(policy);
        let rule_clusters = rule_clusters.into_iter().map(|mut cluster| {
            if let Some(p) = policy {
                cluster.extend(p.cluster_fields.clone());
            }
            Value::Object(cluster)
        });
        let matches = if grpc {
            grpc_matches(rule)
        } else {
            http_matches(rule)
        };
        if !attached {
            continue;
        }
        clusters.extend(rule_clusters);
        for (match_index, (rank, matcher)) in matches.into_iter().enumerate() {
            let mut route = json!({
                "name": format!("{cluster_name}/match/{match_index}"),
                "listeners": listeners,
                "hostnames": hostnames,
                "match": matcher,
            });
            for (key, value) in target.iter().chain(&actions.fields).chain(&policy_fields) {
                route[key] = value.clone();
            }
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

/// What a `BackendTrafficPolicy` sets on each route it covers: retries (Envoy retries nothing
/// unless a policy says so; the host's own default retries a connect failure once) and the
/// local rate limit (Envoy Gateway puts it on every route it covers, each with buckets of its
/// own: `internal/xds/translator/local_ratelimit.go`, `patchRoute`).
fn policy_route_fields(policy: Option<&BackendPolicy>) -> Map<String, Value> {
    let retry = policy
        .and_then(|p| p.route_fields.get("retry").cloned())
        .unwrap_or_else(|| json!({"on": [], "numRetries": 0}));
    let mut fields = Map::from_iter([("retry".to_owned(), retry)]);
    if let Some(limit) = policy.and_then(|p| p.route_fields.get("localRateLimit")) {
        fields.insert("localRateLimit".to_owned(), limit.clone());
    }
    fields
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
fn http_matches(rule: &Node<'_>) -> Vec<(Rank, Value)> {
    let nodes = rule.list("matches");
    if nodes.is_empty() {
        return vec![(
            Rank::of_path(PathKind::Prefix, "/"),
            json!({"pathPrefix": "/"}),
        )];
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
            // Gateway API's PathPrefix matches whole path segments (Envoy Gateway's
            // `path_separated_prefix`), the host's `pathPrefix`.
            let key = match kind {
                PathKind::Exact => "path",
                PathKind::RegularExpression => "regex",
                PathKind::Prefix => "pathPrefix",
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
            let mut queries = Vec::new();
            for query in m.list("queryParams") {
                rank.query_params += 1;
                let name = query.str("name").unwrap_or_default();
                let value = query.str("value").unwrap_or_default();
                if query.str("type").as_deref() == Some("RegularExpression") {
                    queries.push(json!({"name": name, "regex": value}));
                } else {
                    rank.exact_query_params += 1;
                    queries.push(json!({"name": name, "exact": value}));
                }
            }
            matcher.insert("queryParams".into(), Value::Array(queries));
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
fn grpc_matches(rule: &Node<'_>) -> Vec<(Rank, Value)> {
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

/// What a rule's filters make of its route: header changes and, at most one, a redirect, a
/// URL rewrite or a direct response (the route's fields of those names).
struct Actions {
    fields: Map<String, Value>,
}

impl Actions {
    /// A redirect or a direct response: the route answers without a backend.
    fn answers_itself(&self) -> bool {
        self.fields.contains_key("redirect") || self.fields.contains_key("directResponse")
    }
}

/// A rule's filters as the host route's fields; `None` when a filter is something the host
/// cannot do, which is then reported and the rule left out.
fn read_filters(t: &Translator<'_>, index: usize, rule: &Node<'_>) -> Option<Actions> {
    let mut fields = Map::new();
    let mut response = json!({});
    let mut servable = true;
    for filter in rule.list("filters") {
        let kind = filter.str("type").unwrap_or_default();
        match kind.as_str() {
            "RequestHeaderModifier" => {
                if let Some(modifier) = filter.get("requestHeaderModifier") {
                    fields.insert("requestHeaders".into(), header_modifier(&modifier));
                }
            }
            "ResponseHeaderModifier" => {
                if let Some(modifier) = filter.get("responseHeaderModifier") {
                    merge(&mut response, &header_modifier(&modifier));
                }
            }
            "RequestRedirect" => {
                if let Some(redirect) = filter.get("requestRedirect") {
                    let mut out = Map::new();
                    for key in ["scheme", "hostname"] {
                        if let Some(v) = redirect.str(key) {
                            out.insert(key.into(), json!(v));
                        }
                    }
                    for key in ["port", "statusCode"] {
                        if let Some(v) = redirect.u64(key) {
                            out.insert(key.into(), json!(v));
                        }
                    }
                    if let Some(path) = redirect.get("path") {
                        out.insert("path".into(), path_modifier(&path));
                    }
                    fields.insert("redirect".into(), Value::Object(out));
                }
            }
            "URLRewrite" => {
                if let Some(rewrite) = filter.get("urlRewrite") {
                    let mut out = Map::new();
                    if let Some(host) = rewrite.str("hostname") {
                        out.insert("hostname".into(), json!(host));
                    }
                    if let Some(path) = rewrite.get("path") {
                        out.insert("path".into(), path_modifier(&path));
                    }
                    fields.insert("rewrite".into(), Value::Object(out));
                }
            }
            "ExtensionRef" => {
                let Some(reference) = filter.get("extensionRef") else {
                    continue;
                };
                match extension_ref(t, index, &reference, &mut response) {
                    Some(direct) => {
                        fields.insert("directResponse".into(), direct);
                    }
                    None => servable = false,
                }
            }
            other => {
                filter.take();
                t.warn(
                    index,
                    filter.path(),
                    format!("{other}: the host has no such route action, so the rule is left out"),
                );
                servable = false;
            }
        }
    }
    fields.insert("responseHeaders".into(), response);
    servable.then_some(Actions { fields })
}

/// Adds one header modifier's `set`, `add` and `remove` to another's.
fn merge(into: &mut Value, from: &Value) {
    for (key, value) in from.as_object().into_iter().flatten() {
        match (into.get_mut(key), value) {
            (Some(Value::Object(a)), Value::Object(b)) => a.extend(b.clone()),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
            _ => into[key] = value.clone(),
        }
    }
}

/// Gateway API's `HTTPPathModifier` as the host's `{replaceFullPath}` or
/// `{replacePrefixMatch}`.
fn path_modifier(path: &Node<'_>) -> Value {
    path.accept("type");
    let mut out = Map::new();
    for key in ["replaceFullPath", "replacePrefixMatch"] {
        if let Some(v) = path.str(key) {
            out.insert(key.into(), json!(v));
        }
    }
    Value::Object(out)
}

/// An `ExtensionRef` filter: Envoy Gateway's `HTTPRouteFilter` with a `directResponse` (its
/// `contentType` a `content-type` response header, as `internal/gatewayapi/filters.go` adds
/// it). `None` when it is missing (an error) or holds something else (reported).
fn extension_ref(
    t: &Translator<'_>,
    index: usize,
    reference: &Node<'_>,
    response: &mut Value,
) -> Option<Value> {
    reference.accept("group");
    let kind = reference.str("kind").unwrap_or_default();
    let name = reference.str("name").unwrap_or_default();
    let namespace = &t.objects[index].namespace;
    let Some(target) = t.find(&kind, namespace, &name) else {
        t.error(
            index,
            reference.path(),
            format!("{kind} {namespace}/{name} is not in the manifests"),
        );
        return None;
    };
    let root = t.root(target);
    let direct = (kind == "HTTPRouteFilter")
        .then(|| root.get("spec").and_then(|s| s.get("directResponse")))
        .flatten();
    let Some(direct) = direct else {
        t.warn(
            index,
            reference.path(),
            format!("{kind} {name} holds no directResponse (the one extension the host runs): the rule is left out"),
        );
        return None;
    };
    let mut out = Map::new();
    if let Some(status) = direct.u64("statusCode") {
        out.insert("statusCode".into(), json!(status));
    }
    if let Some(body) = direct.get("body") {
        body.accept("type");
        if let Some(inline) = body.str("inline") {
            out.insert("body".into(), json!(inline));
        }
    }
    if let Some(content_type) = direct.str("contentType") {
        merge(response, &json!({"set": {"content-type": content_type}}));
    }
    Some(Value::Object(out))
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

/// A rule's clusters, and the route fields that send to them (`cluster` or `backends`).
struct RuleBackends {
    clusters: Vec<Map<String, Value>>,
    target: Map<String, Value>,
}

/// A rule's backends, none when it answers itself (a redirect or direct response never
/// reaches one).
fn rule_backends(
    t: &Translator<'_>,
    index: usize,
    rule: &Node<'_>,
    actions: &Actions,
    backends: &Backends,
    rule_name: &str,
    grpc: bool,
) -> Option<RuleBackends> {
    if actions.answers_itself() {
        if let Some(refs) = rule.get("backendRefs") {
            refs.take();
        }
        return Some(RuleBackends {
            clusters: Vec::new(),
            target: Map::new(),
        });
    }
    read_backends(t, index, rule, backends, rule_name, grpc)
}

/// The rule's clusters and the route fields that send to them: one backend is the cluster
/// `<rule>`; several are Envoy's weighted clusters (`backends`), one cluster
/// `<rule>/backend/<j>` each with its `weight` (a weight of 0 gets nothing, as Envoy Gateway
/// leaves it out). `None` when the rule has no backend, which Envoy Gateway answers with 500
/// and the host leaves out.
fn read_backends(
    t: &Translator<'_>,
    index: usize,
    rule: &Node<'_>,
    backends: &Backends,
    rule_name: &str,
    grpc: bool,
) -> Option<RuleBackends> {
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
    let mut clusters = Vec::new();
    let mut weighted = Vec::new();
    for (j, reference) in refs.iter().enumerate() {
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
        if let Some(filters) = reference.get("filters") {
            filters.take();
            t.warn(index, filters.path(), "per-backend filters");
        }
        let ref_namespace = reference
            .str("namespace")
            .unwrap_or_else(|| namespace.clone());
        let name = reference.str("name").unwrap_or_default();
        let port = reference.u64("port");
        let Some(backend) = backends.resolve(t, index, reference, &ref_namespace, &name, port)
        else {
            continue;
        };
        let cluster_name = if refs.len() == 1 {
            rule_name.to_owned()
        } else {
            format!("{rule_name}/backend/{j}")
        };
        let mut cluster = Map::new();
        cluster.insert("name".into(), json!(cluster_name));
        let endpoints: Vec<String> = backend.addresses.iter().map(ToString::to_string).collect();
        cluster.insert("endpoints".into(), json!(endpoints));
        cluster.insert("connectTimeout".into(), json!(CONNECT_TIMEOUT));
        // Envoy Gateway turns on outlier detection only when a BackendTrafficPolicy asks.
        cluster.insert("outlierDetection".into(), json!({"consecutiveErrors": 0}));
        // Envoy Gateway balances by least request unless a BackendTrafficPolicy's
        // `loadBalancer` says otherwise (internal/xds/translator/cluster.go, buildXdsCluster).
        cluster.insert("lbPolicy".into(), json!("leastRequest"));
        let protocol = if grpc {
            Some("grpc".to_owned())
        } else {
            backend.app_protocol
        };
        if let Some(protocol) = protocol {
            cluster.insert("appProtocol".into(), json!(protocol));
        }
        clusters.push(cluster);
        weighted.push(json!({"cluster": cluster_name, "weight": weight}));
    }
    if clusters.is_empty() {
        return None;
    }
    let mut target = Map::new();
    if refs.len() == 1 && weighted[0]["weight"] != 0 {
        target.insert("cluster".into(), json!(rule_name));
    } else {
        target.insert("backends".into(), Value::Array(weighted));
    }
    Some(RuleBackends { clusters, target })
}
