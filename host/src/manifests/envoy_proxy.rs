//! The `EnvoyProxy` that parameterizes the Gateways (through their `GatewayClass`'s
//! `parametersRef`, or a Gateway's own `spec.infrastructure.parametersRef`): its stats tag
//! rules (read as `admin.statsTagsFromEnvoyProxy` reads them, `stats_tags.rs`) and Envoy's
//! worker count.

use serde_json::Value;

use super::Translator;

#[derive(Default)]
pub(super) struct ProxySettings {
    /// The admin config's `statsTags`.
    pub tags: Vec<Value>,
    /// `spec.concurrency`: worker threads, as Envoy's `--concurrency`.
    pub concurrency: Option<u64>,
    /// The access log's `filterState` (field -> filter state key): the JSON access-log
    /// fields whose value is `%FILTER_STATE(KEY:PLAIN)%`.
    pub access_log_filter_state: serde_json::Map<String, Value>,
    /// The host config's `tracing` section, when the `EnvoyProxy` traces and its collector
    /// has a local address.
    pub tracing: Option<Value>,
}

pub(super) fn read(t: &Translator<'_>) -> ProxySettings {
    let mut settings = ProxySettings::default();
    for (n, proxy) in proxies(t).into_iter().enumerate() {
        let root = t.root(proxy);
        let Some(spec) = root.get("spec") else {
            continue;
        };
        if n > 0 {
            t.warn(
                proxy,
                "spec",
                "the host runs one Envoy: the first EnvoyProxy applies",
            );
            spec.take();
            continue;
        }
        settings = read_proxy(t, proxy, &spec);
    }
    settings
}

/// The `EnvoyProxy` objects the Gateways name, each once.
fn proxies(t: &Translator<'_>) -> Vec<usize> {
    let mut proxies = Vec::new();
    for gateway in t.of_kind("Gateway") {
        let object = &t.objects[gateway];
        let spec = t.root(gateway).get("spec");
        if let Some(reference) = spec
            .as_ref()
            .and_then(|s| s.get("infrastructure"))
            .and_then(|i| i.get("parametersRef"))
        {
            reference.accept("group");
            reference.accept("kind");
            let name = reference.str("name").unwrap_or_default();
            match t.find("EnvoyProxy", &object.namespace, &name) {
                Some(proxy) => proxies.push(proxy),
                None => t.error(
                    gateway,
                    reference.path(),
                    format!(
                        "EnvoyProxy {}/{name} is not in the manifests",
                        object.namespace
                    ),
                ),
            }
            continue;
        }
        let class_name = object.doc["spec"]["gatewayClassName"]
            .as_str()
            .unwrap_or_default();
        let Some(class) = t.find("GatewayClass", "", class_name) else {
            t.warn(
                gateway,
                "spec.gatewayClassName",
                format!(
                    "GatewayClass {class_name} is not in the manifests, so no EnvoyProxy is read"
                ),
            );
            continue;
        };
        let class_root = t.root(class);
        let Some(class_spec) = class_root.get("spec") else {
            continue;
        };
        class_spec.accept("controllerName");
        class_spec.accept("description");
        if let Some(reference) = class_spec.get("parametersRef") {
            reference.accept("group");
            reference.accept("kind");
            let namespace = reference.str("namespace").unwrap_or_default();
            let name = reference.str("name").unwrap_or_default();
            match t.find("EnvoyProxy", &namespace, &name) {
                Some(proxy) => proxies.push(proxy),
                None => t.error(
                    class,
                    reference.path(),
                    format!("EnvoyProxy {namespace}/{name} is not in the manifests"),
                ),
            }
        }
    }
    proxies.sort_unstable();
    proxies.dedup();
    proxies
}

fn read_proxy(t: &Translator<'_>, proxy: usize, spec: &super::fields::Node<'_>) -> ProxySettings {
    let mut settings = ProxySettings {
        concurrency: spec.u64("concurrency"),
        ..ProxySettings::default()
    };
    match crate::stats_tags::from_envoy_proxy_document(&t.objects[proxy].doc) {
        Ok(tags) => {
            settings.tags = tags
                .into_iter()
                .map(|tag| serde_json::json!({"tag_name": tag.tag_name, "regex": tag.regex}))
                .collect();
        }
        Err(e) => t.error(proxy, "", e),
    }
    if let Some(tracing) = spec.get("telemetry").and_then(|t| t.get("tracing")) {
        settings.tracing = read_tracing(t, proxy, &tracing);
    }
    if let Some(access_log) = spec.get("telemetry").and_then(|t| t.get("accessLog")) {
        settings.access_log_filter_state = read_access_log(t, proxy, &access_log);
    }
    if let Some(bootstrap) = spec.get("bootstrap") {
        bootstrap.accept("type");
        for patch in bootstrap.list("jsonPatches") {
            if patch.take()["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/stats_config/stats_tags"))
            {
                continue;
            }
            t.warn(
                proxy,
                patch.path(),
                "a bootstrap patch other than stats_tags",
            );
        }
    }
    settings
}

/// `telemetry.accessLog`: the fields of a JSON format that name filter state become the host
/// access log's `filterState` (its other fields are the host's own, Envoy's usual ones under
/// its names); the format's other fields and the sinks are reported.
fn read_access_log(
    t: &Translator<'_>,
    proxy: usize,
    access_log: &super::fields::Node<'_>,
) -> serde_json::Map<String, Value> {
    let mut filter_state = serde_json::Map::new();
    for setting in access_log.list("settings") {
        let Some(format) = setting.get("format") else {
            continue;
        };
        format.accept("type");
        let Some(json) = format.get("json") else {
            continue;
        };
        for (field, value) in json.take().as_object().into_iter().flatten() {
            let key = value
                .as_str()
                .and_then(|v| v.strip_prefix("%FILTER_STATE("))
                .and_then(|v| v.strip_suffix(":PLAIN)%"));
            match key {
                Some(key) => {
                    filter_state.insert(field.clone(), Value::from(key));
                }
                None => t.warn(
                    proxy,
                    &format!("{}.{field}", json.path()),
                    "the host writes its own access-log fields (docs/host-config.md); only %FILTER_STATE(KEY:PLAIN)% fields are taken",
                ),
            }
        }
    }
    filter_state
}

/// `telemetry.tracing`, read by the host's tracing (`tracing::config`, which checks it as
/// `tracing.fromEnvoyProxy` does), with the collector's local address: the `--backend`
/// mapping of the provider's first `backendRefs` Service. Without one there is nowhere to
/// export to, so tracing is reported as not emulated rather than failing the run.
fn read_tracing(t: &Translator<'_>, proxy: usize, node: &super::fields::Node<'_>) -> Option<Value> {
    let mut section = node.take().clone();
    let parsed = match crate::tracing::config::from_envoy_proxy_manifest(&t.objects[proxy].doc) {
        Ok(parsed) => parsed?,
        Err(e) => {
            t.error(proxy, "", e);
            return None;
        }
    };
    let namespace = &t.objects[proxy].namespace;
    let collector = parsed.provider.backend_refs.first().and_then(|backend| {
        let backend_namespace = backend.namespace.as_deref().unwrap_or(namespace);
        t.options
            .backends
            .iter()
            .filter(|m| m.service == backend.name && m.namespace == backend_namespace)
            .find(|m| m.port.is_none_or(|p| Some(p) == backend.port))
            .map(|m| m.address)
    });
    let Some(collector) = collector else {
        t.warn(
            proxy,
            node.path(),
            "the collector (provider.backendRefs[0]) has no local address: map it with --backend NAME.NAMESPACE:PORT=HOST:PORT to export spans",
        );
        return None;
    };
    section["collector"] = Value::from(collector.to_string());
    Some(section)
}
