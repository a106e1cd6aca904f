//! The one compile step: the document as written (`config::RawConfig`) into the
//! `GatewayConfig` the gateway runs, as `RawConfig` becomes `Policies` in the policies crate.
//! Every check serde cannot make is made here, once, and every problem is reported in
//! document order with its field path; the routes come out compiled (`route::compile`), each
//! regex compiled once. It is pure: what the config names on disk (certificates, Wasm
//! modules, `EnvoyProxy` manifests) is read by `Snapshot::build`.

use std::collections::HashSet;
use std::path::Path;

use crate::config::{ConfigErrorKind, ConfigErrors, RawConfig, VERSION};
use crate::route::RouteTable;

#[cfg(test)]
mod tests;

/// A checked configuration: the document, and what requests use of it compiled.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The document as read: the sections the gateway runs as written (listeners, clusters,
    /// filters, timeouts), the config dump, and the files a reload watches.
    pub document: RawConfig,
    /// Every route, checked and compiled once.
    pub(crate) routes: RouteTable,
}

/// Reads, checks and compiles the host config file at `path`.
pub(crate) fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    compile(RawConfig::read(path)?)
}

/// Parses, checks and compiles YAML text, without touching the file system.
pub(crate) fn parse(text: &str) -> Result<GatewayConfig, ConfigErrors> {
    compile(RawConfig::parse(text)?)
}

/// Checks `document` and compiles its routes; every error found, in document order.
pub(crate) fn compile(document: RawConfig) -> Result<GatewayConfig, ConfigErrors> {
    let mut errors = Vec::new();
    if document.version != VERSION {
        errors.push(format!(
            "version: unsupported version {}, expected {VERSION}",
            document.version
        ));
    }
    if let Some(limit) = &document.global_rate_limit {
        errors.extend(limit.check());
    }
    check_listeners(&document, &mut errors);
    check_clusters(&document, &mut errors);
    let routes = RouteTable::compile(&document, &mut errors);
    check_filters(&document, &mut errors);
    for (field, key) in &document.access_log.filter_state {
        if key.is_empty() {
            errors.push(format!(
                "accessLog.filterState.{field}: the filter state key is empty"
            ));
        }
    }
    if errors.is_empty() {
        Ok(GatewayConfig { document, routes })
    } else {
        Err(ConfigErrors::new(ConfigErrorKind::Invalid, errors))
    }
}

fn check_listeners(document: &RawConfig, errors: &mut Vec<String>) {
    if document.listeners.is_empty() {
        errors.push("listeners: at least one listener is required".to_owned());
    }
    for (i, listener) in document.listeners.iter().enumerate() {
        if let Some(path) = &listener.health_path
            && !path.starts_with('/')
        {
            errors.push(format!("listeners[{i}].healthPath: must start with '/'"));
        }
        if let Some(host) = &listener.hostname
            && let Err(e) = crate::hostname::check_domain(host)
        {
            errors.push(format!("listeners[{i}].hostname: {e}"));
        }
        for (field, value) in [
            ("headerReadTimeout", listener.header_read_timeout),
            ("tlsHandshakeTimeout", listener.tls_handshake_timeout),
            ("h2KeepAliveInterval", listener.h2_keep_alive_interval),
        ] {
            if value.0.is_zero() {
                errors.push(format!("listeners[{i}].{field}: must be greater than 0"));
            }
        }
    }
}

fn check_clusters(document: &RawConfig, errors: &mut Vec<String>) {
    let mut names = HashSet::new();
    for (i, cluster) in document.clusters.iter().enumerate() {
        if !names.insert(cluster.name.as_str()) {
            errors.push(format!(
                "clusters[{i}].name: duplicate cluster {:?}",
                cluster.name
            ));
        }
        if cluster.endpoints.is_empty() {
            errors.push(format!(
                "clusters[{i}].endpoints: at least one endpoint is required"
            ));
        }
        if cluster.outlier_detection.max_ejection_percent > 100 {
            errors.push(format!(
                "clusters[{i}].outlierDetection.maxEjectionPercent: must be at most 100"
            ));
        }
        if cluster.circuit_breakers.max_connections == 0 {
            errors.push(format!(
                "clusters[{i}].circuitBreakers.maxConnections: must be greater than 0"
            ));
        }
        if cluster.tls.is_some() && !cluster.speaks_http2() {
            errors.push(format!(
                "clusters[{i}].tls: upstream TLS needs an HTTP/2 appProtocol \
                 (kubernetes.io/h2c or grpc); HTTP/1.1 over TLS is not supported"
            ));
        }
    }
}

fn check_filters(document: &RawConfig, errors: &mut Vec<String>) {
    let mut names = HashSet::new();
    for (i, filter) in document.filters.iter().enumerate() {
        if !names.insert(filter.name.as_str()) {
            errors.push(format!(
                "filters[{i}].name: duplicate filter {:?}",
                filter.name
            ));
        }
        let sources = [
            filter.config.is_some(),
            filter.config_file.is_some(),
            filter.from_envoy_extension_policy.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            errors.push(format!(
                "filters[{i}]: give at most one of config, configFile and fromEnvoyExtensionPolicy"
            ));
        }
    }
}
