//! Gateways: their HTTP and HTTPS listeners (the certificate from the referenced Secret
//! manifest), and which routes each listener takes (`parentRefs` against `allowedRoutes`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Translator;
use super::fields::Node;

/// One Gateway listener the host serves.
pub(super) struct Listener {
    /// The Gateway object's index.
    pub gateway: usize,
    /// The listener's name in the Gateway (`sectionName`).
    pub section: String,
    /// The host listener's name: the section name, or `namespace/gateway/section` when two
    /// Gateways use the same section name.
    pub host_name: String,
    pub port: u64,
    /// The listener's `hostname`: its routes serve the names they share with it.
    hostname: Option<String>,
    allowed: Allowed,
    address: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
}

struct Allowed {
    namespaces: From,
    /// `allowedRoutes.kinds`; empty means the protocol's defaults (`HTTPRoute`, `GRPCRoute`).
    kinds: Vec<String>,
}

enum From {
    Same,
    All,
    Selector(Selector),
}

#[derive(Default)]
struct Selector {
    labels: BTreeMap<String, String>,
    /// (key, operator, values)
    expressions: Vec<(String, String, Vec<String>)>,
}

#[derive(Default)]
pub(super) struct Gateways {
    pub listeners: Vec<Listener>,
}

impl Gateways {
    /// The host config's `listeners`. Envoy Gateway's listeners answer no health path of
    /// their own, so the host's is off.
    pub(super) fn host_listeners(&self) -> Vec<Value> {
        self.listeners
            .iter()
            .map(|l| {
                let mut listener = json!({
                    "name": l.host_name,
                    "address": l.address.to_string(),
                    "healthPath": null,
                });
                if let Some(hostname) = &l.hostname {
                    listener["hostname"] = json!(hostname);
                }
                if let Some((cert, key)) = &l.tls {
                    listener["tls"] = json!({"certFile": cert, "keyFile": key});
                }
                listener
            })
            .collect()
    }

    /// The host listeners a route's `parentRefs[]` entry attaches it to. A reference to a
    /// Gateway or listener that is not there is an error; a listener that does not allow the
    /// route is a warning (Envoy Gateway reports it in the route's status and serves nothing).
    pub(super) fn attach(
        &self,
        t: &Translator<'_>,
        route: usize,
        parent: &Node<'_>,
        route_kind: &str,
    ) -> Vec<String> {
        let object = &t.objects[route];
        parent.accept("group");
        let kind = parent.str("kind").unwrap_or_else(|| "Gateway".to_owned());
        if kind != "Gateway" {
            t.warn(
                route,
                parent.path(),
                format!("a {kind} parent (only Gateways are read)"),
            );
            return Vec::new();
        }
        let namespace = parent
            .str("namespace")
            .unwrap_or_else(|| object.namespace.clone());
        let name = parent.str("name").unwrap_or_default();
        let Some(gateway) = t.find("Gateway", &namespace, &name) else {
            t.error(
                route,
                parent.path(),
                format!("Gateway {namespace}/{name} is not in the manifests"),
            );
            return Vec::new();
        };
        let section = parent.str("sectionName");
        let port = parent.u64("port");
        let candidates: Vec<&Listener> = self
            .listeners
            .iter()
            .filter(|l| l.gateway == gateway)
            .filter(|l| section.as_ref().is_none_or(|s| *s == l.section))
            .filter(|l| port.is_none_or(|p| p == l.port))
            .collect();
        if candidates.is_empty() {
            t.error(
                route,
                parent.path(),
                format!(
                    "Gateway {namespace}/{name} has no listener{}{} the host serves",
                    section.map(|s| format!(" named {s:?}")).unwrap_or_default(),
                    port.map(|p| format!(" on port {p}")).unwrap_or_default(),
                ),
            );
            return Vec::new();
        }
        let mut attached = Vec::new();
        for listener in candidates {
            if !listener.allowed.kinds.is_empty()
                && !listener.allowed.kinds.iter().any(|k| k == route_kind)
            {
                t.warn(
                    route,
                    parent.path(),
                    format!(
                        "listener {:?} does not allow {route_kind}s (allowedRoutes.kinds): not attached",
                        listener.section
                    ),
                );
                continue;
            }
            let gateway_namespace = &t.objects[listener.gateway].namespace;
            let allowed = match &listener.allowed.namespaces {
                From::All => true,
                From::Same => object.namespace == *gateway_namespace,
                From::Selector(selector) => {
                    selector.matches(&namespace_labels(t, &object.namespace))
                }
            };
            if allowed {
                attached.push(listener.host_name.clone());
            } else {
                t.warn(
                    route,
                    parent.path(),
                    format!(
                        "listener {:?} does not allow routes from namespace {} (allowedRoutes.namespaces): not attached",
                        listener.section, object.namespace
                    ),
                );
            }
        }
        attached
    }
}

/// A namespace's labels, with the `kubernetes.io/metadata.name` label Kubernetes sets on
/// every namespace.
fn namespace_labels(t: &Translator<'_>, namespace: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = t
        .find("Namespace", "", namespace)
        .and_then(|i| t.objects[i].doc["metadata"]["labels"].as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
        .collect();
    labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    labels
}

impl Selector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, op, values)| {
                let value = labels.get(key);
                match op.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    // DoesNotExist (the only other operator the schema allows).
                    _ => value.is_none(),
                }
            })
    }
}

pub(super) fn read(t: &Translator<'_>) -> Gateways {
    let mut gateways = Gateways::default();
    for index in t.of_kind("Gateway") {
        let root = t.root(index);
        let Some(spec) = root.get("spec") else {
            t.error(index, "spec", "missing");
            continue;
        };
        spec.accept("gatewayClassName");
        for listener in spec.list("listeners") {
            if let Some(l) = read_listener(t, index, &listener) {
                gateways.listeners.push(l);
            }
        }
    }
    // Host listener names must be unique: qualify the sections two Gateways share.
    let sections: Vec<String> = gateways
        .listeners
        .iter()
        .map(|l| l.section.clone())
        .collect();
    for listener in &mut gateways.listeners {
        if sections.iter().filter(|s| **s == listener.section).count() > 1 {
            let gateway = &t.objects[listener.gateway];
            listener.host_name = format!(
                "{}/{}/{}",
                gateway.namespace, gateway.name, listener.section
            );
        }
    }
    for listener in &mut gateways.listeners {
        if let Some((_, address)) = t
            .options
            .listeners
            .iter()
            .find(|(name, _)| *name == listener.host_name || *name == listener.section)
        {
            listener.address = *address;
        }
    }
    for (name, _) in &t.options.listeners {
        if !gateways
            .listeners
            .iter()
            .any(|l| l.host_name == *name || l.section == *name)
        {
            t.errors.borrow_mut().push(format!(
                "--listener {name}: no Gateway listener the host serves is named {name:?}"
            ));
        }
    }
    gateways
}

fn read_listener(t: &Translator<'_>, gateway: usize, node: &Node<'_>) -> Option<Listener> {
    let section = node.str("name").unwrap_or_default();
    let protocol = node.str("protocol").unwrap_or_default();
    let port = node.u64("port").unwrap_or_default();
    if protocol != "HTTP" && protocol != "HTTPS" {
        t.warn(
            gateway,
            node.path(),
            format!("a {protocol} listener (the host serves HTTP and HTTPS): not served"),
        );
        node.take();
        return None;
    }
    let hostname = node.str("hostname");
    let allowed = read_allowed(node.get("allowedRoutes"));
    let tls = if protocol == "HTTPS" {
        read_tls(t, gateway, node, &section)
    } else {
        None
    };
    Some(Listener {
        gateway,
        host_name: section.clone(),
        section,
        port,
        hostname,
        allowed,
        // A listener given no --listener address takes any free port (logged at start-up):
        // the manifest's ports (80, 443) are privileged on a laptop.
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
    })
}

fn read_allowed(node: Option<Node<'_>>) -> Allowed {
    let Some(node) = node else {
        return Allowed {
            namespaces: From::Same,
            kinds: Vec::new(),
        };
    };
    let kinds = node
        .list("kinds")
        .iter()
        .map(|k| {
            k.accept("group");
            k.str("kind").unwrap_or_default()
        })
        .collect();
    // Gateway API's default is `Same`.
    let namespaces = match node.get("namespaces") {
        None => From::Same,
        Some(ns) => match ns.str("from").as_deref() {
            Some("All") => From::All,
            Some("Selector") => {
                let mut selector = Selector::default();
                if let Some(s) = ns.get("selector") {
                    if let Some(labels) = s.get("matchLabels")
                        && let Some(map) = labels.take().as_object()
                    {
                        for (k, v) in map {
                            selector
                                .labels
                                .insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
                        }
                    }
                    for e in s.list("matchExpressions") {
                        let values = e.list("values").iter().filter_map(Node::text).collect();
                        selector.expressions.push((
                            e.str("key").unwrap_or_default(),
                            e.str("operator").unwrap_or_default(),
                            values,
                        ));
                    }
                }
                From::Selector(selector)
            }
            _ => From::Same,
        },
    };
    Allowed { namespaces, kinds }
}

/// The certificate of an HTTPS listener: its first `certificateRefs` Secret, written to files
/// the host's TLS reads.
fn read_tls(
    t: &Translator<'_>,
    gateway: usize,
    node: &Node<'_>,
    section: &str,
) -> Option<(PathBuf, PathBuf)> {
    let Some(tls) = node.get("tls") else {
        t.error(
            gateway,
            &node.path_of("tls"),
            "an HTTPS listener needs tls.certificateRefs",
        );
        return None;
    };
    if let Some(mode) = tls.str("mode")
        && mode != "Terminate"
    {
        t.warn(
            gateway,
            &tls.path_of("mode"),
            format!("{mode} (the host terminates TLS)"),
        );
    }
    let refs = tls.list("certificateRefs");
    let Some(first) = refs.first() else {
        t.error(
            gateway,
            &tls.path_of("certificateRefs"),
            "an HTTPS listener needs a certificate",
        );
        return None;
    };
    for extra in refs.iter().skip(1) {
        t.warn(
            gateway,
            extra.path(),
            "the host serves the first certificate only",
        );
        extra.take();
    }
    first.accept("group");
    first.accept("kind");
    let gateway_object = &t.objects[gateway];
    let namespace = first
        .str("namespace")
        .unwrap_or_else(|| gateway_object.namespace.clone());
    let name = first.str("name").unwrap_or_default();
    let Some(secret) = t.find("Secret", &namespace, &name) else {
        t.missing(
            gateway,
            first.path(),
            format!("Secret {namespace}/{name} is not in the manifests (in a cluster cert-manager or an operator makes it)"),
        );
        return None;
    };
    let root = t.root(secret);
    root.accept("type");
    let value = |key: &str| -> Option<Vec<u8>> {
        if let Some(text) = root.get("stringData").and_then(|d| d.str(key)) {
            return Some(text.into_bytes());
        }
        let encoded = root.get("data").and_then(|d| d.str(key))?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| t.error(secret, &format!("data.{key}"), format!("not base64: {e}")))
            .ok()
    };
    let (Some(cert), Some(key)) = (value("tls.crt"), value("tls.key")) else {
        t.error(
            secret,
            "data",
            "a TLS Secret needs tls.crt and tls.key (data or stringData)",
        );
        return None;
    };
    let dir = work_dir();
    let stem = format!(
        "{}-{}-{section}",
        gateway_object.namespace, gateway_object.name
    );
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    for (file, bytes) in [(&cert_file, &cert), (&key_file, &key)] {
        if let Err(e) = write_if_changed(file, bytes) {
            t.error(
                secret,
                "data",
                format!("cannot write {}: {e}", file.display()),
            );
            return None;
        }
    }
    Some((cert_file, key_file))
}

/// Where Secrets become files the host reads: a directory of this process only.
fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("modelgate-manifests-{}", std::process::id()))
}

/// Writes only when the content differs, so a reload does not see its own write as a change.
fn write_if_changed(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if std::fs::read(file).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    std::io::Write::write_all(&mut out, bytes)
}
