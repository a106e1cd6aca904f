//! `modelgate serve|check --manifests`: the host's configuration built from Kubernetes
//! manifests (Gateway API, Envoy Gateway's policies, `KServe`'s `InferenceServices`) with Envoy
//! Gateway's semantics, so that the routes, listeners, limits and filter a user deploys are
//! the ones the host runs. docs/manifests.md lists what is emulated and where upstream does
//! it.
//!
//! The translation writes a host config document (docs/host-config.md), exactly what a
//! hand-written YAML would hold, and checks and compiles it with [`crate::compile::parse`]: everything downstream
//! (listeners, routes, clusters, filters, TLS, stats tags) is the host's ordinary path.
//! Every manifest field the translation does not read is a warning naming its path and
//! "not emulated"; a reference to something that is not there is an error naming the object
//! and the field.
//!
//! Modules: `load` (files, directories, kustomizations), `fields` (which fields were read),
//! `gateway` (listeners, TLS Secrets, which routes a listener takes), `routes` (`HTTPRoute` and
//! `GRPCRoute` rules to routes and clusters), `precedence` (Envoy Gateway's route order),
//! `backends` (Services: `--backend` mappings, Service manifests, `InferenceService`
//! components), `traffic` (`ClientTrafficPolicy`, `BackendTrafficPolicy`), `extension`
//! (`EnvoyExtensionPolicy` to filters), `envoy_proxy` (the `EnvoyProxy`'s stats tags),
//! `rate_limit` (a `BackendTrafficPolicy`'s local and global rate limits).

mod backends;
mod envoy_proxy;
mod extension;
mod fields;
mod gateway;
pub(crate) mod load;
pub(crate) mod precedence;
mod rate_limit;
mod routes;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod traffic;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::compile::GatewayConfig;
use crate::config::{ConfigErrorKind, ConfigErrors};
use fields::{Fields, Node};
use load::Object;

pub(crate) use backends::BackendMapping;

/// What the command line gives besides the manifests: where things are on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// `--backend SERVICE.NAMESPACE[:PORT]=HOST:PORT`.
    pub backends: Vec<BackendMapping>,
    /// `--listener NAME=HOST:PORT`: the local address of a Gateway listener.
    pub listeners: Vec<(String, SocketAddr)>,
    /// `--wasm [NAME=]FILE`: the local module of an `EnvoyExtensionPolicy` `spec.wasm[]` entry.
    pub wasm: Vec<(Option<String>, PathBuf)>,
    /// `--admin HOST:PORT`: the admin listener (`/ready`, `/metrics`, `/config_dump`).
    pub admin: Option<SocketAddr>,
    /// `--ratelimit-redis HOST:PORT`: the Redis a global rate limit counts in (Envoy Gateway's
    /// `rateLimit.backend.redis.url`, which its own config holds, not the manifests).
    pub ratelimit_redis: Option<String>,
    /// Serving needs what exists only outside the manifests (a Service's local address, the
    /// TLS Secret cert-manager makes in the cluster): missing, it is an error. `check` only
    /// reports it.
    pub serving: bool,
}

/// The host config the manifests describe, with what it leaves out.
#[derive(Debug)]
pub(crate) struct Translation {
    pub config: GatewayConfig,
    /// The host config document, as YAML (`modelgate check --manifests --print-config`).
    pub host_yaml: String,
    /// `Kind namespace/name: field.path: not emulated[: why]`, in object order.
    pub warnings: Vec<String>,
    /// Every file read, to reload when one changes.
    pub files: Vec<PathBuf>,
}

/// Reads the manifests and builds the host config; every error found, each naming its
/// object and field.
pub(crate) fn translate(options: &Options) -> Result<Translation, ConfigErrors> {
    let loaded = load::load(&options.paths)
        .map_err(|errors| ConfigErrors::new(ConfigErrorKind::Manifest, errors))?;
    let translator = Translator::new(options, &loaded.objects);
    let document = translator.run();
    let mut warnings = loaded.warnings;
    warnings.extend(translator.warnings.into_inner());
    let errors = translator.errors.into_inner();
    if !errors.is_empty() {
        return Err(ConfigErrors::new(ConfigErrorKind::Manifest, errors));
    }
    let host_yaml = serde_norway::to_string(&document).map_err(|e| {
        ConfigErrors::one(
            ConfigErrorKind::Internal,
            format!("generated host config: {e}"),
        )
    })?;
    let config = crate::compile::parse(&host_yaml).map_err(|mut errors| {
        for error in &mut errors.0 {
            error.message = format!("generated host config: {}", error.message);
        }
        errors
    })?;
    let mut files = loaded.files;
    files.sort();
    files.dedup();
    Ok(Translation {
        config,
        host_yaml,
        warnings,
        files,
    })
}

/// The state of one translation: the objects, what was read of each, and what was found.
struct Translator<'a> {
    options: &'a Options,
    objects: &'a [Object],
    fields: Vec<Fields>,
    /// Objects whose kind the translation reads (the others get one warning each).
    read: RefCell<Vec<bool>>,
    errors: RefCell<Vec<String>>,
    warnings: RefCell<Vec<String>>,
}

impl<'a> Translator<'a> {
    fn new(options: &'a Options, objects: &'a [Object]) -> Translator<'a> {
        Translator {
            options,
            objects,
            fields: objects.iter().map(|_| Fields::default()).collect(),
            read: RefCell::new(vec![false; objects.len()]),
            errors: RefCell::default(),
            warnings: RefCell::default(),
        }
    }

    /// The root of object `index`, its identity fields read.
    fn root(&self, index: usize) -> Node<'_> {
        self.read.borrow_mut()[index] = true;
        let root = self.fields[index].root(&self.objects[index].doc);
        root.accept("apiVersion");
        root.accept("kind");
        // Names, labels and annotations carry no gateway behaviour (a Namespace's labels are
        // read through `labels` where allowedRoutes selects on them).
        root.accept("metadata");
        root
    }

    fn error(&self, index: usize, path: &str, message: impl std::fmt::Display) {
        let id = self.objects[index].id();
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" {path}:")
        };
        self.errors
            .borrow_mut()
            .push(format!("{id}:{at} {message}"));
    }

    /// Something the cluster provides and the manifests do not hold: an error when serving,
    /// a warning for `check`.
    fn missing(&self, index: usize, path: &str, what: impl std::fmt::Display) {
        if self.options.serving {
            self.error(index, path, what);
        } else {
            let id = self.objects[index].id();
            self.warnings
                .borrow_mut()
                .push(format!("{id}: {path}: {what} (serve needs it)"));
        }
    }

    fn warn(&self, index: usize, path: &str, why: impl std::fmt::Display) {
        let id = self.objects[index].id();
        self.warnings
            .borrow_mut()
            .push(format!("{id}: {path}: not emulated: {why}"));
    }

    /// Indexes of the objects of `kind`, in load order.
    fn of_kind(&self, kind: &str) -> Vec<usize> {
        (0..self.objects.len())
            .filter(|i| self.objects[*i].kind == kind)
            .collect()
    }

    fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<usize> {
        self.objects
            .iter()
            .position(|o| o.kind == kind && o.namespace == namespace && o.name == name)
    }

    fn run(&self) -> Value {
        let gateways = gateway::read(self);
        let traffic = traffic::read(self, &gateways);
        let backends = backends::Backends::read(self);
        let (routes, clusters) = routes::read(self, &gateways, &backends, &traffic);
        let filters = extension::read(self, &gateways);
        let stats_tags = envoy_proxy::read(self);
        let global_rate_limit = rate_limit::read_global(self);
        for (index, object) in self.objects.iter().enumerate() {
            if object.kind == "Namespace" {
                self.root(index);
            }
        }
        self.report_unread();
        let mut document = json!({
            "version": 1,
            "listeners": gateways.host_listeners(),
            "clusters": clusters,
            "routes": routes,
            "filters": filters,
            // Envoy Gateway's per-connection buffer limit, 32 KiB unless a
            // ClientTrafficPolicy sets `connection.bufferLimit`.
            "bufferLimit": traffic.client.buffer_limit,
            "clientTraffic": traffic.client.headers_and_ip,
        });
        if let Some(timeout) = &traffic.client.request_timeout {
            document["requestTimeout"] = json!(timeout);
        }
        if let Some(tracing) = &stats_tags.tracing {
            document["tracing"] = tracing.clone();
        }
        if !stats_tags.access_log_filter_state.is_empty() {
            document["accessLog"] = json!({"filterState": stats_tags.access_log_filter_state});
        }
        if let Some(section) = global_rate_limit {
            document["globalRateLimit"] = section;
        }
        if let Some(concurrency) = stats_tags.concurrency {
            document["concurrency"] = json!(concurrency);
        }
        if let Some(admin) = self.options.admin {
            document["admin"] = json!({"address": admin.to_string(), "statsTags": stats_tags.tags});
        }
        document
    }

    /// One warning per field nobody read, and per object of a kind the host has no use for.
    fn report_unread(&self) {
        let read = self.read.borrow().clone();
        for (index, object) in self.objects.iter().enumerate() {
            if read[index] {
                for path in self.fields[index].not_emulated(&object.doc) {
                    self.warn(index, &path, "the host does not read this field");
                }
            } else {
                self.warnings.borrow_mut().push(format!(
                    "{}: not emulated: the host has no equivalent of a {}",
                    object.id(),
                    object.kind
                ));
            }
        }
    }
}

/// A `targetRefs[]` entry (or the older single `targetRef`) of a policy.
struct TargetRef {
    path: String,
    kind: String,
    name: String,
    section: Option<String>,
}

fn target_refs(spec: &Node<'_>) -> Vec<TargetRef> {
    let mut refs: Vec<Node<'_>> = spec.list("targetRefs");
    refs.extend(spec.get("targetRef"));
    refs.iter()
        .map(|r| {
            r.accept("group");
            TargetRef {
                path: r.path().to_owned(),
                kind: r.str("kind").unwrap_or_default(),
                name: r.str("name").unwrap_or_default(),
                section: r.str("sectionName"),
            }
        })
        .collect()
}

/// A Kubernetes quantity (`32768`, `32Ki`, `2Mi`, `1G`) in bytes.
fn quantity_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => {
            return Err(format!(
                "quantity {text:?}: unit {other:?} is not supported"
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("quantity {text:?}: not a whole number of bytes"))?;
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("quantity {text:?}: too large"))
}

/// A Gateway API duration (`60s`, `1h30m`, `500ms`: one to four number-unit parts,
/// gateway-api `apis/v1/shared_types.go` `Duration`) as the host's `<n>ms`.
fn duration(node: &Node<'_>) -> Result<String, String> {
    let text = node.text().unwrap_or_default();
    let bad = || format!("{text:?} is not a Gateway API duration (such as 60s, 1h30m or 500ms)");
    let mut rest = text.as_str();
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, millis) = ["ms", "h", "m", "s"]
            .iter()
            .zip([1, 3_600_000, 60_000, 1_000])
            .find(|(unit, _)| rest.starts_with(**unit))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        total = value
            .checked_mul(millis)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(format!("{total}ms"))
}
