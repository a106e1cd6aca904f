//! Envoy Gateway's `ClientTrafficPolicy` (the listeners' side) and `BackendTrafficPolicy` (the
//! routes' and clusters' side), with Envoy Gateway's defaults where no policy says otherwise
//! (`api/v1alpha1/clienttrafficpolicy_types.go`, `backendtrafficpolicy_types.go`; the xDS they
//! become: `internal/xds/translator/listener.go`, `cluster.go`, `route.go`).

use serde_json::{Map, Value, json};

use super::fields::Node;
use super::gateway::Gateways;
use super::rate_limit;
use super::{Translator, duration, quantity_bytes, target_refs};

/// Envoy Gateway's per-connection buffer limit when no `ClientTrafficPolicy` sets
/// `connection.bufferLimit` (internal/xds/translator/listener.go,
/// `tcpListenerPerConnectionBufferLimitBytes = 32768`): a body a filter buffers past it
/// gets 413.
pub(super) const DEFAULT_BUFFER_LIMIT: u64 = 32_768;

/// What the listeners do, for the host config's top level.
pub(super) struct Client {
    pub buffer_limit: u64,
    /// The host config's `clientTraffic` section.
    pub headers_and_ip: Value,
    pub request_timeout: Option<String>,
}

/// One `BackendTrafficPolicy`, as fields of the routes and clusters it covers.
pub(super) struct BackendPolicy {
    /// `(kind, namespace, name)` of a targeted route, or `None` for a Gateway target.
    route: Option<(String, String, String)>,
    gateway: Option<usize>,
    pub route_fields: Map<String, Value>,
    pub cluster_fields: Map<String, Value>,
}

pub(super) struct Traffic {
    pub client: Client,
    backend: Vec<BackendPolicy>,
}

impl Traffic {
    /// The policy that covers a route: one targeting the route itself wins over one
    /// targeting its Gateway (Envoy Gateway's more specific policy; it does not merge them).
    pub(super) fn for_route(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        gateways: &[usize],
    ) -> Option<&BackendPolicy> {
        self.backend
            .iter()
            .find(|p| {
                p.route
                    .as_ref()
                    .is_some_and(|(k, n, m)| k == kind && n == namespace && m == name)
            })
            .or_else(|| {
                self.backend
                    .iter()
                    .find(|p| p.gateway.is_some_and(|g| gateways.contains(&g)))
            })
    }
}

pub(super) fn read(t: &Translator<'_>, gateways: &Gateways) -> Traffic {
    Traffic {
        client: read_client(t, gateways),
        backend: t
            .of_kind("BackendTrafficPolicy")
            .into_iter()
            .filter_map(|index| read_backend(t, index))
            .collect(),
    }
}

/// The Gateway a policy's target names, or an error naming the policy and field.
fn target_gateway(
    t: &Translator<'_>,
    index: usize,
    spec: &Node<'_>,
) -> Vec<(usize, Option<String>, String)> {
    let namespace = &t.objects[index].namespace;
    let mut found = Vec::new();
    for target in target_refs(spec) {
        if target.kind != "Gateway" {
            continue;
        }
        match t.find("Gateway", namespace, &target.name) {
            Some(gateway) => found.push((gateway, target.section, target.path)),
            None => t.error(
                index,
                &target.path,
                format!(
                    "Gateway {namespace}/{} is not in the manifests",
                    target.name
                ),
            ),
        }
    }
    found
}

fn read_client(t: &Translator<'_>, gateways: &Gateways) -> Client {
    let mut client = Client {
        buffer_limit: DEFAULT_BUFFER_LIMIT,
        headers_and_ip: json!({}),
        request_timeout: None,
    };
    let mut applied = false;
    for index in t.of_kind("ClientTrafficPolicy") {
        let root = t.root(index);
        let Some(spec) = root.get("spec") else {
            continue;
        };
        let targets = target_gateway(t, index, &spec);
        for target in target_refs(&spec).iter().filter(|r| r.kind != "Gateway") {
            t.error(
                index,
                &target.path,
                format!(
                    "a {} target (a ClientTrafficPolicy targets Gateways)",
                    target.kind
                ),
            );
        }
        if targets.is_empty() {
            continue;
        }
        if applied {
            t.warn(index, "spec", "the host applies one ClientTrafficPolicy to every listener; an earlier one already applies");
            spec.take();
            continue;
        }
        applied = true;
        for (gateway, section, path) in &targets {
            let listeners = gateways
                .listeners
                .iter()
                .filter(|l| l.gateway == *gateway)
                .count();
            if section.is_some() || listeners < gateways.listeners.len() {
                t.warn(
                    index,
                    path,
                    "the host applies the policy to every listener it serves",
                );
            }
        }
        if let Some(limit) = spec.get("connection").and_then(|c| c.get("bufferLimit")) {
            match limit.text().map(|text| quantity_bytes(&text)) {
                Some(Ok(bytes)) => client.buffer_limit = bytes,
                Some(Err(e)) => t.error(index, limit.path(), e),
                None => t.error(index, limit.path(), "not a quantity"),
            }
        }
        if let Some(window) = spec
            .get("http2")
            .and_then(|h| h.get("initialStreamWindowSize"))
        {
            window.take();
            t.warn(
                index,
                window.path(),
                "the host applies connection.bufferLimit to HTTP/2 streams too (Envoy Gateway's default stream window is 64 KiB)",
            );
        }
        if let Some(id) = spec.get("headers").and_then(|h| h.str("requestID")) {
            client.headers_and_ip["headers"] = json!({"requestID": id});
        }
        if let Some(hops) = spec
            .get("clientIPDetection")
            .and_then(|c| c.get("xForwardedFor"))
            .and_then(|x| x.u64("numTrustedHops"))
        {
            client.headers_and_ip["clientIPDetection"] =
                json!({"xForwardedFor": {"numTrustedHops": hops}});
        }
        if let Some(received) = spec
            .get("timeout")
            .and_then(|t| t.get("http"))
            .and_then(|h| h.get("requestReceivedTimeout"))
        {
            match duration(&received) {
                Ok(d) => client.request_timeout = Some(d),
                Err(e) => t.error(index, received.path(), e),
            }
        }
    }
    client
}

fn read_backend(t: &Translator<'_>, index: usize) -> Option<BackendPolicy> {
    let object = &t.objects[index];
    let root = t.root(index);
    let spec = root.get("spec")?;
    let mut policy = BackendPolicy {
        route: None,
        gateway: None,
        route_fields: Map::new(),
        cluster_fields: Map::new(),
    };
    let targets = target_refs(&spec);
    if targets.len() > 1 {
        t.warn(
            index,
            "spec.targetRefs",
            "the host reads the first target only",
        );
    }
    let target = targets.first()?;
    let kind = target.kind.as_str();
    if !matches!(kind, "Gateway" | "HTTPRoute" | "GRPCRoute") {
        t.error(
            index,
            &target.path,
            format!("a {kind} target is not supported"),
        );
        return None;
    }
    let Some(found) = t.find(kind, &object.namespace, &target.name) else {
        t.error(
            index,
            &target.path,
            format!(
                "{kind} {}/{} is not in the manifests",
                object.namespace, target.name
            ),
        );
        return None;
    };
    if kind == "Gateway" {
        policy.gateway = Some(found);
    } else {
        policy.route = Some((
            kind.to_owned(),
            object.namespace.clone(),
            target.name.clone(),
        ));
    }
    if let Some(timeout) = spec.get("timeout") {
        read_timeouts(t, index, &timeout, &mut policy);
    }
    if let Some(retry) = spec.get("retry") {
        read_retry(t, index, &retry, &mut policy);
    }
    read_cluster_fields(t, index, &spec, &mut policy);
    if let Some(local) = rate_limit::read_local(t, index, &spec) {
        policy.route_fields.insert("localRateLimit".into(), local);
    }
    Some(policy)
}

/// `timeout.http.requestTimeout` (the route's) and `timeout.tcp.connectTimeout` (the
/// cluster's).
fn read_timeouts(t: &Translator<'_>, index: usize, timeout: &Node<'_>, policy: &mut BackendPolicy) {
    for (section, field, target, key) in [
        (
            "http",
            "requestTimeout",
            &mut policy.route_fields,
            "timeout",
        ),
        (
            "tcp",
            "connectTimeout",
            &mut policy.cluster_fields,
            "connectTimeout",
        ),
    ] {
        if let Some(node) = timeout.get(section).and_then(|s| s.get(field)) {
            match duration(&node) {
                Ok(d) => {
                    target.insert(key.into(), json!(d));
                }
                Err(e) => t.error(index, node.path(), e),
            }
        }
    }
}

/// `circuitBreaker`, `healthCheck.passive` and `loadBalancer.type`.
fn read_cluster_fields(
    t: &Translator<'_>,
    index: usize,
    spec: &Node<'_>,
    policy: &mut BackendPolicy,
) {
    if let Some(breaker) = spec.get("circuitBreaker") {
        let mut breakers = Map::new();
        for field in ["maxConnections", "maxPendingRequests"] {
            if let Some(n) = breaker.u64(field) {
                breakers.insert(field.into(), json!(n));
            }
        }
        policy
            .cluster_fields
            .insert("circuitBreakers".into(), Value::Object(breakers));
    }
    if let Some(passive) = spec.get("healthCheck").and_then(|h| h.get("passive")) {
        let mut outlier = Map::new();
        if let Some(n) = passive.u64("consecutive5XxErrors") {
            outlier.insert("consecutiveErrors".into(), json!(n));
        }
        if let Some(n) = passive.u64("maxEjectionPercent") {
            outlier.insert("maxEjectionPercent".into(), json!(n));
        }
        if let Some(base) = passive.get("baseEjectionTime") {
            match duration(&base) {
                Ok(d) => {
                    outlier.insert("baseEjectionTime".into(), json!(d));
                }
                Err(e) => t.error(index, base.path(), e),
            }
        }
        policy
            .cluster_fields
            .insert("outlierDetection".into(), Value::Object(outlier));
    }
    if let Some(kind) = spec.get("loadBalancer").and_then(|l| l.get("type")) {
        let policy_name = match kind.text().as_deref() {
            Some("RoundRobin") => "roundRobin",
            Some("LeastRequest") => "leastRequest",
            other => {
                t.warn(
                    index,
                    kind.path(),
                    format!("{other:?} (the host balances RoundRobin or LeastRequest)"),
                );
                return;
            }
        };
        policy
            .cluster_fields
            .insert("lbPolicy".into(), json!(policy_name));
    }
}

/// `retry`: the host retries on `connect-failure`, `reset` and `5xx`.
fn read_retry(t: &Translator<'_>, index: usize, retry: &Node<'_>, policy: &mut BackendPolicy) {
    // Envoy Gateway's default number of retries (api/v1alpha1/retry_types.go).
    let num = retry.u64("numRetries").unwrap_or(2);
    let mut on = Vec::new();
    if let Some(retry_on) = retry.get("retryOn") {
        for trigger in retry_on.list("triggers") {
            match trigger.text().as_deref() {
                Some(name @ ("connect-failure" | "reset" | "5xx")) => on.push(name.to_owned()),
                other => t.warn(
                    index,
                    trigger.path(),
                    format!(
                        "trigger {other:?} (the host retries on connect-failure, reset and 5xx)"
                    ),
                ),
            }
        }
    } else {
        on.push("connect-failure".to_owned());
        t.warn(
            index,
            &retry.path_of("retryOn"),
            "Envoy Gateway's default triggers (refused-stream, unavailable, cancelled, retriable-status-codes 503): the host retries on connect-failure",
        );
    }
    policy
        .route_fields
        .insert("retry".into(), json!({"on": on, "numRetries": num}));
}
