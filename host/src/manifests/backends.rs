//! The Services routes send to: where each one is on this machine (`--backend`), and which
//! ones the manifests define (Service manifests, and the Services `KServe` makes for an
//! `InferenceService`: `<isvc>-predictor`, `<isvc>-explainer` and `<isvc>-transformer` on port
//! 80, `KServe`'s pkg/constants `PredictorServiceName` etc. and, in Standard mode, each further
//! container port of the component under its own number: `service_reconciler.go`
//! `createDefaultSvc`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;

use super::Translator;
use super::fields::Node;

/// `--backend SERVICE.NAMESPACE[:PORT]=HOST:PORT`: without a port, every port of the
/// Service. Several for one Service port are its endpoints (the pods behind it, which Envoy
/// Gateway routes to directly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendMapping {
    pub service: String,
    pub namespace: String,
    pub port: Option<u16>,
    pub address: SocketAddr,
}

impl FromStr for BackendMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("{text:?} is not SERVICE.NAMESPACE[:PORT]=HOST:PORT");
        let (service, address) = text.split_once('=').ok_or_else(usage)?;
        let (service, port) = match service.split_once(':') {
            Some((service, port)) => (service, Some(port.parse::<u16>().map_err(|_| usage())?)),
            None => (service, None),
        };
        let (service, namespace) = service.split_once('.').ok_or_else(usage)?;
        if service.is_empty() || namespace.is_empty() || namespace.contains('.') {
            return Err(usage());
        }
        let address = address
            .parse()
            .map_err(|e| format!("{text:?}: the address {address:?}: {e}"))?;
        Ok(BackendMapping {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            port,
            address,
        })
    }
}

/// A Service the manifests define: its ports and their `appProtocol`.
struct Defined {
    /// What defines it, for messages (`InferenceService ml-models/sklearn-iris`).
    by: String,
    ports: BTreeMap<u64, Option<String>>,
}

/// Where a backend is, and how to speak to it.
pub(super) struct Backend {
    pub addresses: Vec<SocketAddr>,
    pub app_protocol: Option<String>,
}

pub(super) struct Backends {
    /// (namespace, name) -> definition.
    defined: BTreeMap<(String, String), Defined>,
}

impl Backends {
    pub(super) fn read(t: &Translator<'_>) -> Backends {
        let mut defined = BTreeMap::new();
        for index in t.of_kind("Service") {
            let object = &t.objects[index];
            let root = t.root(index);
            let mut ports = BTreeMap::new();
            if let Some(spec) = root.get("spec") {
                for port in spec.list("ports") {
                    port.accept("name");
                    port.accept("protocol");
                    port.accept("targetPort");
                    if let Some(number) = port.u64("port") {
                        ports.insert(number, port.str("appProtocol"));
                    }
                }
            }
            defined.insert(
                (object.namespace.clone(), object.name.clone()),
                Defined {
                    by: object.id(),
                    ports,
                },
            );
        }
        for index in t.of_kind("InferenceService") {
            let object = &t.objects[index];
            let root = t.root(index);
            let Some(spec) = root.get("spec") else {
                continue;
            };
            for component in ["predictor", "explainer", "transformer"] {
                let Some(node) = spec.get(component) else {
                    continue;
                };
                let mut ports = BTreeMap::from([(80, None)]);
                for extra in container_ports(&node).into_iter().skip(1) {
                    ports.insert(extra, None);
                }
                node.take();
                t.warn(
                    index,
                    node.path(),
                    format!(
                        "the {component} runs wherever --backend {}-{component}.{} points",
                        object.name, object.namespace
                    ),
                );
                defined.insert(
                    (
                        object.namespace.clone(),
                        format!("{}-{component}", object.name),
                    ),
                    Defined {
                        by: object.id(),
                        ports,
                    },
                );
            }
        }
        Backends { defined }
    }

    /// Where the `backendRefs[]` entry at `node` (a Service port) is; an error naming the
    /// route and field when it is neither mapped nor a port the manifests define.
    pub(super) fn resolve(
        &self,
        t: &Translator<'_>,
        route: usize,
        node: &Node<'_>,
        namespace: &str,
        name: &str,
        port: Option<u64>,
    ) -> Option<Backend> {
        let Some(port) = port else {
            t.error(route, node.path(), "a Service backendRef needs a port");
            return None;
        };
        let defined = self.defined.get(&(namespace.to_owned(), name.to_owned()));
        if let Some(defined) = defined
            && !defined.ports.contains_key(&port)
        {
            t.error(
                route,
                node.path(),
                format!(
                    "Service {namespace}/{name} (from {}) has no port {port}",
                    defined.by
                ),
            );
            return None;
        }
        let addresses: Vec<SocketAddr> = t
            .options
            .backends
            .iter()
            .filter(|m| m.service == name && m.namespace == namespace)
            .filter(|m| m.port.is_none_or(|p| u64::from(p) == port))
            .map(|m| m.address)
            .collect();
        if !addresses.is_empty() {
            return Some(Backend {
                addresses,
                app_protocol: defined.and_then(|d| d.ports.get(&port).cloned().flatten()),
            });
        }
        let hint = format!("give one with --backend {name}.{namespace}:{port}=HOST:PORT");
        let Some(defined) = defined else {
            t.error(
                route,
                node.path(),
                format!(
                    "Service {namespace}/{name} is not in the manifests (a Service, or an InferenceService's predictor, explainer or transformer) and has no local address: {hint}"
                ),
            );
            return None;
        };
        t.missing(
            route,
            node.path(),
            format!(
                "Service {namespace}/{name} (from {}) port {port} has no local address: {hint}",
                defined.by
            ),
        );
        // `check` goes on with the discard port, which no request reaches.
        Some(Backend {
            addresses: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            app_protocol: None,
        })
    }
}

/// The container ports of an `InferenceService` component (`<framework>.ports` or
/// `containers[0].ports`), in order.
fn container_ports(component: &Node<'_>) -> Vec<u64> {
    let value = component.take();
    let from = |v: &serde_json::Value| -> Vec<u64> {
        v["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| p["containerPort"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(first) = value["containers"].as_array().and_then(|c| c.first()) {
        return from(first);
    }
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_object())
        .map(|(_, v)| from(v))
        .find(|ports| !ports.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_mappings() {
        let m: BackendMapping = "sklearn-iris-predictor.ml-models:80=127.0.0.1:8081"
            .parse()
            .unwrap();
        assert_eq!(
            m,
            BackendMapping {
                service: "sklearn-iris-predictor".into(),
                namespace: "ml-models".into(),
                port: Some(80),
                address: "127.0.0.1:8081".parse().unwrap(),
            }
        );
        let any: BackendMapping = "svc.ns=127.0.0.1:1".parse().unwrap();
        assert_eq!(any.port, None);
        for bad in [
            "svc=127.0.0.1:1",
            "svc.ns:x=127.0.0.1:1",
            "svc.ns",
            "svc.a.b=127.0.0.1:1",
        ] {
            assert!(bad.parse::<BackendMapping>().is_err(), "{bad}");
        }
        let error = "svc.ns=localhost".parse::<BackendMapping>().unwrap_err();
        assert!(
            error.starts_with("\"svc.ns=localhost\": the address \"localhost\": "),
            "{error}"
        );
    }
}
