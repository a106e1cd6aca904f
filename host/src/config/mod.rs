//! The gateway's YAML configuration document as written (`docs/host-config.md`): its serde
//! shapes with their defaults, read with the field path in every error, and its relative paths
//! resolved. Nothing here checks what serde cannot: the one compile step (`crate::compile`)
//! turns a `RawConfig` into the running `GatewayConfig`, reporting every problem by field path.
//! A host YAML file and the manifests' translation (`crate::manifests`) both arrive here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, ConfigDuration};

mod cluster;
mod error;
mod filter;
pub(crate) mod global_ratelimit;
mod listener;
pub(crate) mod local_ratelimit;
mod route;

pub(crate) use cluster::*;
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors};
pub(crate) use filter::*;
pub(crate) use listener::*;
pub(crate) use route::*;

/// The only config version this gateway reads.
pub(crate) const VERSION: u32 = 1;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// Pinned format version: `1`.
    pub version: u32,
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Most bytes of a request or response body a filter may ask to buffer
    /// (Envoy's per-connection buffer limit): 413 (request) or 500 (response) past it.
    #[serde(default = "default_buffer_limit")]
    pub buffer_limit: ByteSize,
    /// Deadline for receiving the whole request and passing it through the request filters
    /// (a slow client, or a filter that never resumes): 408 past it, as Envoy's request timeout.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: ConfigDuration,
    /// Worker threads (Envoy's `--concurrency`); 0 means one per CPU. Fixed at start-up.
    #[serde(default)]
    pub concurrency: usize,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// What the listeners do with a client's forwarding and request-id headers.
    #[serde(default)]
    pub client_traffic: ClientTrafficConfig,
    /// Envoy Gateway's global rate limit, counted in Redis (`global_ratelimit`).
    #[serde(default)]
    pub global_rate_limit: Option<global_ratelimit::GlobalRateLimitConfig>,
    /// Tracing as Envoy Gateway's `EnvoyProxy.spec.telemetry.tracing` sets it up (`tracing`).
    #[serde(default)]
    pub tracing: Option<crate::tracing::TracingConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Access-log field name -> filter state key (e.g. `model: wasm.model`).
    #[serde(default)]
    pub filter_state: BTreeMap<String, String>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            filter_state: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReloadConfig {
    /// Reload when the config file or a file it names changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            poll_interval: default_poll_interval(),
        }
    }
}

fn default_buffer_limit() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_request_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(300_000)
}
fn default_drain_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}
fn default_true() -> bool {
    true
}
fn default_poll_interval() -> ConfigDuration {
    ConfigDuration::from_millis(1_000)
}

impl RawConfig {
    /// Reads the document at `path`; relative paths inside it are made relative to the file's
    /// directory.
    pub fn read(path: &Path) -> Result<RawConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(ConfigErrorKind::Read, format!("{}: {e}", path.display()))
        })?;
        let mut config = RawConfig::parse(&text)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// How many worker threads serve connections: `concurrency`, or one per CPU when it is 0.
    pub fn workers(&self) -> usize {
        match self.concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// Parses YAML text into the document's shapes, with the field path of the first error
    /// serde meets; the checks serde cannot do are the compile step's.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // The YAML parser names the enclosing map itself; keep one, fuller path.
            let message = match message.split_once(": ") {
                Some((own, rest)) if path.starts_with(own) => rest.to_owned(),
                _ => message,
            };
            let message = if path == "." {
                message
            } else {
                format!("{path}: {message}")
            };
            ConfigErrors::one(ConfigErrorKind::Syntax, message)
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for listener in &mut self.listeners {
            if let Some(tls) = &mut listener.tls {
                join(&mut tls.cert_file);
                join(&mut tls.key_file);
            }
        }
        for cluster in &mut self.clusters {
            if let Some(tls) = &mut cluster.tls {
                join(&mut tls.ca_file);
            }
        }
        for filter in &mut self.filters {
            join(&mut filter.wasm);
            if let Some(file) = &mut filter.config_file {
                join(file);
            }
            if let Some(source) = &mut filter.from_envoy_extension_policy {
                join(&mut source.file);
            }
        }
        if let Some(file) = self
            .admin
            .as_mut()
            .and_then(|a| a.stats_tags_from_envoy_proxy.as_mut())
        {
            join(file);
        }
        if let Some(file) = self
            .tracing
            .as_mut()
            .and_then(|t| t.from_envoy_proxy.as_mut())
        {
            join(file);
        }
    }

    /// Files whose change should trigger a reload, besides the config itself.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for listener in &self.listeners {
            if let Some(tls) = &listener.tls {
                files.push(tls.cert_file.clone());
                files.push(tls.key_file.clone());
            }
        }
        for cluster in &self.clusters {
            files.extend(cluster.tls.as_ref().map(|tls| tls.ca_file.clone()));
        }
        for filter in &self.filters {
            files.push(filter.wasm.clone());
            files.extend(filter.config_file.clone());
            files.extend(
                filter
                    .from_envoy_extension_policy
                    .as_ref()
                    .map(|s| s.file.clone()),
            );
        }
        files.extend(
            self.admin
                .as_ref()
                .and_then(|a| a.stats_tags_from_envoy_proxy.clone()),
        );
        files.extend(
            self.tracing
                .as_ref()
                .and_then(|t| t.from_envoy_proxy.clone()),
        );
        files
    }
}
