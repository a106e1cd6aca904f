//! The listeners' shapes: addresses, TLS, health path and timeouts, the admin listener, and
//! what every listener does with a client's forwarding and request-id headers.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stats_tags::TagSpecifier;
use crate::units::ConfigDuration;

/// The request-header settings of Envoy Gateway's `ClientTrafficPolicy` spec, with its field
/// names and defaults, applied to every listener (`api/v1alpha1/clienttrafficpolicy_types.go`;
/// `internal/xds/translator/listener.go` turns them into the connection manager's fields).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTrafficConfig {
    #[serde(default)]
    pub headers: ClientHeaders,
    #[serde(default, rename = "clientIPDetection")]
    pub client_ip_detection: ClientIpDetection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientHeaders {
    /// `spec.headers.requestID`; Envoy Gateway's default is `Generate`.
    #[serde(default, rename = "requestID")]
    pub request_id: Option<RequestIdAction>,
}

/// Envoy Gateway's `RequestIDAction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RequestIdAction {
    /// Keep a client's `x-request-id`, generate one when there is none.
    PreserveOrGenerate,
    /// Keep a client's `x-request-id`; generate none.
    Preserve,
    /// Always generate, replacing a client's (the default).
    #[default]
    Generate,
    /// Generate none (a client's passes as sent, as Envoy's code does with both flags off).
    Disable,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientIpDetection {
    #[serde(default)]
    pub x_forwarded_for: Option<XForwardedFor>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct XForwardedFor {
    /// Proxies in front of the gateway whose `x-forwarded-for` entries are trusted (Envoy's
    /// `xff_num_trusted_hops`); 0 trusts none.
    #[serde(default)]
    pub num_trusted_hops: u32,
}

impl ClientTrafficConfig {
    pub fn request_id(&self) -> RequestIdAction {
        self.headers.request_id.unwrap_or_default()
    }

    pub fn xff_num_trusted_hops(&self) -> u32 {
        self.client_ip_detection
            .x_forwarded_for
            .as_ref()
            .map_or(0, |x| x.num_trusted_hops)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerConfig {
    #[serde(default = "default_listener_name")]
    pub name: String,
    pub address: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The Gateway listener's `hostname`: routes attached here serve the hostnames they share
    /// with it (Envoy Gateway's `computeHosts`, `route::hosts`); none means any host.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Path answered by the gateway itself with 200 `{"status":"ok"}`; `null` turns it off.
    #[serde(default = "default_health_path")]
    pub health_path: Option<String>,
    /// Deadline for an HTTP/1.1 request head, and for the next one on an idle keep-alive
    /// connection: a client that trickles or withholds it is disconnected (hyper's header
    /// read timeout; Envoy's `request_headers_timeout`).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: ConfigDuration,
    /// Deadline for a TLS handshake (Envoy's `transport_socket_connect_timeout`).
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout: ConfigDuration,
    /// How long an HTTP/2 connection may stay silent before the gateway pings it, and closes
    /// it when the ping is not answered within the same time.
    #[serde(default = "default_h2_keep_alive_interval")]
    pub h2_keep_alive_interval: ConfigDuration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Envoy's `stats_config.stats_tags`: regexes over a filter metric's full name
    /// (`wasmcustom.<name>`) whose captures become Prometheus labels (`stats_tags.rs`).
    #[serde(default)]
    pub stats_tags: Vec<TagSpecifier>,
    /// An `EnvoyProxy` manifest whose bootstrap patches add `stats_tags`: read after
    /// `statsTags`, so `/metrics` names filter metrics as the cluster's Envoy does.
    #[serde(default)]
    pub stats_tags_from_envoy_proxy: Option<PathBuf>,
}

fn default_listener_name() -> String {
    "main".to_owned()
}
#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default for an Option field"
)]
fn default_health_path() -> Option<String> {
    Some("/health".to_owned())
}
fn default_header_read_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(30_000)
}
fn default_tls_handshake_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}
fn default_h2_keep_alive_interval() -> ConfigDuration {
    ConfigDuration::from_millis(60_000)
}
