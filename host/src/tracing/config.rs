//! The `tracing:` section of the gateway's config, shaped after Envoy Gateway's
//! `EnvoyProxy.spec.telemetry.tracing` (`api/v1alpha1/envoyproxy_tracing_types.go`,
//! `ProxyTracing`, and `api/v1alpha1/shared_types.go`, `Tracing`), and the reader that takes it
//! straight out of an `EnvoyProxy` manifest, as `stats_tags::from_envoy_proxy` does for stats
//! tags.
//!
//! Only what Envoy Gateway turns into Envoy's tracing config for the OpenTelemetry provider is
//! read; a field of the spec the gateway does not emulate (`spanName`, `zipkin`,
//! `openTelemetry.sampler`, ...) is an error naming it, never silently dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::ConfigDuration;

/// The gateway's `tracing:` section: Envoy Gateway's fields inline, or `fromEnvoyProxy`, plus
/// what only a gateway outside Kubernetes needs (where the collector answers) and Envoy's
/// runtime knobs for the exporter.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingConfig {
    /// An `EnvoyProxy` manifest whose `spec.telemetry.tracing` is the tracing config; exclusive
    /// with the inline fields below.
    #[serde(default)]
    pub from_envoy_proxy: Option<PathBuf>,
    #[serde(default)]
    pub sampling_rate: Option<u32>,
    #[serde(default)]
    pub sampling_fraction: Option<Fraction>,
    #[serde(default)]
    pub provider: Option<TracingProvider>,
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where the provider's backend (a Kubernetes Service in the manifest) answers OTLP/gRPC.
    /// Unset, the provider's `host` and `port` must be an address.
    #[serde(default)]
    pub collector: Option<SocketAddr>,
    /// How often buffered spans are exported, at the latest (Envoy's runtime key
    /// `tracing.opentelemetry.flush_interval_ms`, 5 s by default).
    #[serde(default = "default_flush_interval")]
    pub flush_interval: ConfigDuration,
    /// Spans that trigger an export before the interval (Envoy's runtime key
    /// `tracing.opentelemetry.min_flush_spans`, 5 by default).
    #[serde(default = "default_min_flush_spans")]
    pub min_flush_spans: usize,
    /// Spans waiting for the exporter, at most; past it new spans are dropped and counted
    /// (`modelgate_tracing_spans_dropped_total`), so a dead collector never holds a request.
    #[serde(default = "default_max_queued_spans")]
    pub max_queued_spans: usize,
}

fn default_flush_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_min_flush_spans() -> usize {
    5
}

fn default_max_queued_spans() -> usize {
    8192
}

/// `EnvoyProxy.spec.telemetry.tracing`, the fields Envoy Gateway reads for OpenTelemetry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyTracing {
    /// Percent of requests without a sampling decision of their own that are traced
    /// (0-100; 100 when neither this nor `samplingFraction` is set).
    #[serde(default)]
    pub sampling_rate: Option<u32>,
    #[serde(default)]
    pub sampling_fraction: Option<Fraction>,
    pub provider: TracingProvider,
    /// Deprecated in Envoy Gateway in favour of `tags`, still honoured (a key in `tags` wins).
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Tag name to an Envoy format string (literal text and command operators).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Gateway API's `Fraction`: `denominator` defaults to 100.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fraction {
    pub numerator: u32,
    #[serde(default)]
    pub denominator: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingProvider {
    /// Only `OpenTelemetry` is emulated.
    #[serde(rename = "type")]
    pub kind: String,
    /// Deprecated in Envoy Gateway in favour of `backendRefs`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// `service.name` of the exported resource; Envoy Gateway's default is the Gateway's
    /// `<name>.<namespace>`.
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub open_telemetry: Option<OpenTelemetryProvider>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// `provider.openTelemetry`: the resource attributes and the export's gRPC metadata. Its
/// `sampler` is not emulated (the field is refused by `deny_unknown_fields`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenTelemetryProvider {
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: Vec<HeaderPair>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// Envoy Gateway's `CustomTag`: `Literal`, `Environment` or `RequestHeader`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomTag {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub literal: Option<LiteralTag>,
    #[serde(default)]
    pub environment: Option<NamedTag>,
    #[serde(default)]
    pub request_header: Option<NamedTag>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedTag {
    pub name: String,
    #[serde(default)]
    pub default_value: Option<String>,
}

impl ProxyTracing {
    /// Envoy Gateway's sampling percentage (`proxySamplingRate`, `internal/gatewayapi/
    /// listener.go`): `samplingRate` if set, else the fraction as a percentage (denominator
    /// 100 by default) clamped to [0, 100], else 100.
    pub fn sampling_percent(&self) -> f64 {
        if let Some(rate) = self.sampling_rate {
            return f64::from(rate).min(100.0);
        }
        let Some(fraction) = self.sampling_fraction else {
            return 100.0;
        };
        let denominator = fraction.denominator.unwrap_or(100);
        if denominator == 0 {
            return 100.0;
        }
        (f64::from(fraction.numerator) * 100.0 / f64::from(denominator)).clamp(0.0, 100.0)
    }
}

impl TracingConfig {
    /// The Envoy Gateway spec this section describes: read from `fromEnvoyProxy`, or the
    /// inline fields. Errors name the field (`tracing.<...>`).
    pub fn proxy_tracing(&self) -> Result<ProxyTracing, String> {
        if let Some(file) = &self.from_envoy_proxy {
            let inline = self.sampling_rate.is_some()
                || self.sampling_fraction.is_some()
                || self.provider.is_some()
                || !self.custom_tags.is_empty()
                || !self.tags.is_empty();
            if inline {
                return Err("tracing: give either fromEnvoyProxy or the inline fields \
                     (samplingRate, samplingFraction, provider, customTags, tags)"
                    .into());
            }
            return from_envoy_proxy(file)
                .map_err(|e| format!("tracing.fromEnvoyProxy: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "tracing.fromEnvoyProxy: {}: the EnvoyProxy has no spec.telemetry.tracing",
                        file.display()
                    )
                });
        }
        let provider = self
            .provider
            .clone()
            .ok_or("tracing.provider: required (or give fromEnvoyProxy)")?;
        Ok(ProxyTracing {
            sampling_rate: self.sampling_rate,
            sampling_fraction: self.sampling_fraction,
            provider,
            custom_tags: self.custom_tags.clone(),
            tags: self.tags.clone(),
        })
    }
}

/// `spec.telemetry.tracing` of the `EnvoyProxy` in the manifest file at `path` (the first
/// `EnvoyProxy` of a multi-document file); `None` when it has no tracing section.
pub(crate) fn from_envoy_proxy(path: &Path) -> Result<Option<ProxyTracing>, String> {
    let proxy = &crate::envoy_proxy::read(path)?;
    from_envoy_proxy_manifest(proxy).map_err(|e| format!("{}: {e}", path.display()))
}

/// `spec.telemetry.tracing` of one parsed `EnvoyProxy` manifest; errors name the field path
/// (`spec.telemetry.tracing.provider.type: ...`). Serialized to JSON, with `collector` added,
/// the value is the host's inline `tracing:` section (`--manifests` builds it so).
pub(crate) fn from_envoy_proxy_manifest(
    proxy: &serde_json::Value,
) -> Result<Option<ProxyTracing>, String> {
    let tracing = &proxy["spec"]["telemetry"]["tracing"];
    if tracing.is_null() {
        return Ok(None);
    }
    let tracing: ProxyTracing = serde_path_to_error::deserialize(tracing)
        .map_err(|e| format!("spec.telemetry.tracing.{}: {}", e.path(), e.inner()))?;
    Ok(Some(tracing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tracing: &str) -> serde_json::Value {
        let mut text = String::from("kind: EnvoyProxy\nspec:\n  telemetry:\n    tracing:\n");
        for line in tracing.lines() {
            text.push_str("      ");
            text.push_str(line);
            text.push('\n');
        }
        serde_norway::from_str(&text).unwrap()
    }

    #[test]
    fn reads_the_deploy_envoy_proxy() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway/envoyproxy.yaml");
        let tracing = from_envoy_proxy(&path).unwrap().unwrap();
        assert_eq!(tracing.provider.kind, "OpenTelemetry");
        assert_eq!(tracing.provider.backend_refs[0].port, Some(4317));
        assert!((tracing.sampling_percent() - 10.0).abs() < 1e-9);
        assert_eq!(
            tracing.tags["modelgate.model"],
            "%FILTER_STATE(wasm.modelgate.model:PLAIN)%"
        );
    }

    #[test]
    fn sampling_follows_envoy_gateway() {
        let mut t = ProxyTracing::default();
        assert!((t.sampling_percent() - 100.0).abs() < 1e-9);
        t.sampling_fraction = Some(Fraction {
            numerator: 1,
            denominator: None,
        });
        assert!((t.sampling_percent() - 1.0).abs() < 1e-9);
        t.sampling_fraction = Some(Fraction {
            numerator: 3,
            denominator: Some(2),
        });
        assert!((t.sampling_percent() - 100.0).abs() < 1e-9);
        // The rate wins over the fraction.
        t.sampling_rate = Some(0);
        assert!(t.sampling_percent().abs() < 1e-9);
    }

    #[test]
    fn fields_not_emulated_are_errors_with_their_path() {
        let err = from_envoy_proxy_manifest(&manifest(
            "provider:\n  type: OpenTelemetry\n  port: 4317\nspanName:\n  client: x\n",
        ))
        .unwrap_err();
        assert!(err.starts_with("spec.telemetry.tracing"), "{err}");
        assert!(err.contains("spanName"), "{err}");
        let err = from_envoy_proxy_manifest(&manifest(
            "provider:\n  type: OpenTelemetry\n  openTelemetry:\n    sampler: {type: AlwaysOn}\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("spec.telemetry.tracing.provider.openTelemetry"),
            "{err}"
        );
    }

    /// How `--manifests` fills the host's `tracing:` section: the reader's value as JSON plus
    /// the collector address, read back as the same spec.
    #[test]
    fn a_read_spec_is_the_inline_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway/envoyproxy.yaml");
        let spec = from_envoy_proxy(&path).unwrap().unwrap();
        let mut section = serde_json::to_value(&spec).unwrap();
        section["collector"] = "127.0.0.1:4317".into();
        let config: TracingConfig = serde_json::from_value(section).unwrap();
        assert_eq!(config.proxy_tracing().unwrap(), spec);
        assert_eq!(config.collector, Some("127.0.0.1:4317".parse().unwrap()));
    }

    #[test]
    fn no_tracing_section_is_none() {
        let proxy: serde_json::Value =
            serde_norway::from_str("kind: EnvoyProxy\nspec: {}\n").unwrap();
        assert_eq!(from_envoy_proxy_manifest(&proxy).unwrap(), None);
    }
}
