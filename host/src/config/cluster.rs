//! The clusters' shapes: endpoints, load balancing, timeouts, circuit breakers, passive
//! health and the upstream protocol.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::ConfigDuration;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    #[serde(default)]
    pub outlier_detection: OutlierConfig,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// The upstream protocol, named as a Service port's `appProtocol`: `kubernetes.io/h2c`,
    /// `gateway.envoyproxy.io/h2c` or `grpc` make the cluster speak HTTP/2 (prior knowledge,
    /// or ALPN `h2` with `tls`); anything else, or nothing, HTTP/1.1. Envoy Gateway reads it
    /// the same way (`internal/gatewayapi/route.go`, `resolveBackendProtocol`).
    #[serde(default)]
    pub app_protocol: Option<String>,
    /// TLS to the endpoints, as a `BackendTLSPolicy` sets it up.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
}

impl ClusterConfig {
    /// Whether `appProtocol` selects HTTP/2 (see the field).
    pub fn speaks_http2(&self) -> bool {
        matches!(
            self.app_protocol.as_deref(),
            Some("kubernetes.io/h2c" | "gateway.envoyproxy.io/h2c" | "grpc")
        )
    }
}

/// Upstream TLS: what a `BackendTLSPolicy`'s `validation` holds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamTlsConfig {
    /// PEM trust roots for the endpoints' certificates (`caCertificateRefs`).
    pub ca_file: PathBuf,
    /// SNI, and the name the certificate must be valid for (`hostname`).
    pub hostname: String,
}

/// Envoy's cluster circuit breakers, for HTTP/1.1 upstreams where every request in flight
/// holds a connection of its own.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakers {
    /// Most upstream connections busy at once across the workers; more requests wait.
    #[serde(default = "default_breaker_limit")]
    pub max_connections: usize,
    /// Most requests waiting for a connection; past it the answer is 503 (overflow).
    #[serde(default = "default_breaker_limit")]
    pub max_pending_requests: usize,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: default_breaker_limit(),
            max_pending_requests: default_breaker_limit(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
}

/// Passive health checking, after Envoy's outlier detection.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierConfig {
    /// Consecutive connect errors or 5xx answers that eject an endpoint; 0 disables ejection.
    #[serde(default = "default_consecutive_errors")]
    pub consecutive_errors: u32,
    /// An ejected endpoint returns after this times the number of its ejections.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time: ConfigDuration,
    /// Upper bound of one ejection.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: ConfigDuration,
    /// At most this share of a cluster's endpoints is ejected at once (at least one always may be).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_errors: default_consecutive_errors(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(1_000)
}
/// Envoy's default for each threshold.
fn default_breaker_limit() -> usize {
    1024
}
fn default_consecutive_errors() -> u32 {
    5
}
fn default_base_ejection_time() -> ConfigDuration {
    ConfigDuration::from_millis(30_000)
}
fn default_max_ejection_time() -> ConfigDuration {
    ConfigDuration::from_millis(300_000)
}
fn default_max_ejection_percent() -> u8 {
    50
}
