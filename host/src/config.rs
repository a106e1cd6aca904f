//! The gateway's YAML configuration: its serde shape, parsing with field paths in every error,
//! and the checks serde cannot express (references between sections, regexes, exclusive
//! fields). The format is documented in `docs/host-config.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats_tags::TagSpecifier;
use crate::units::{ByteSize, ConfigDuration};

pub(crate) mod global_ratelimit;

/// The only config version this gateway reads.
const VERSION: u32 = 1;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Names of the listeners the route attaches to (Gateway API's `parentRefs[].sectionName`);
    /// empty attaches it to every listener.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// The hosts the route serves (Gateway API's `hostnames`): exact names or a leading
    /// wildcard (`*.example.com`), matched on `:authority` without its port as Envoy matches a
    /// virtual host's domains; empty means the listener's `hostname`, else any host.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(rename = "match")]
    pub matcher: RouteMatchConfig,
    /// The upstream cluster. A route gives exactly one of `cluster`, `backends`, `redirect`
    /// and `directResponse`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Clusters picked at random by weight per request (Envoy's `weighted_clusters`, from an
    /// `HTTPRoute` rule's weighted `backendRefs`).
    #[serde(default)]
    pub backends: Vec<WeightedBackend>,
    /// Answer with a redirect instead of forwarding (`HTTPRoute`'s `RequestRedirect` filter).
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    /// Answer with this status and body instead of forwarding (Envoy's `direct_response`,
    /// from Envoy Gateway's `HTTPRouteFilter` `directResponse`).
    #[serde(default)]
    pub direct_response: Option<DirectResponseConfig>,
    /// Rewrite the host or path on the way upstream (`HTTPRoute`'s `URLRewrite` filter).
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Whole-request deadline upstream (headers and body); 504 when it passes first.
    #[serde(default = "default_route_timeout")]
    pub timeout: ConfigDuration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub request_headers: HeaderMutations,
    #[serde(default)]
    pub response_headers: HeaderMutations,
}

/// A route with every default: no match, no action (for code that builds configs).
impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            name: None,
            listeners: Vec::new(),
            hostnames: Vec::new(),
            matcher: RouteMatchConfig::default(),
            cluster: None,
            backends: Vec::new(),
            redirect: None,
            direct_response: None,
            rewrite: None,
            timeout: default_route_timeout(),
            retry: RetryConfig::default(),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
        }
    }
}

impl RouteConfig {
    /// The clusters a route may send to, with the field path of each.
    pub fn clusters(&self) -> Vec<(String, &str)> {
        let mut clusters: Vec<(String, &str)> = self
            .cluster
            .iter()
            .map(|c| ("cluster".to_owned(), c.as_str()))
            .collect();
        for (j, backend) in self.backends.iter().enumerate() {
            clusters.push((format!("backends[{j}].cluster"), backend.cluster.as_str()));
        }
        clusters
    }
}

/// One of a route's weighted clusters.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedBackend {
    pub cluster: String,
    /// Share of the requests, relative to the other backends' (Gateway API's default 1); a
    /// backend of weight 0 gets none.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// Envoy Gateway's `HTTPRouteFilter` `directResponse`: its `contentType` is a
/// `responseHeaders.set` of `content-type` on the route, as Envoy Gateway adds it
/// (`internal/gatewayapi/filters.go`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectResponseConfig {
    /// Envoy Gateway's default is 200.
    #[serde(default = "default_direct_status")]
    pub status_code: u16,
    /// The inline body; none sends an empty one.
    #[serde(default)]
    pub body: Option<String>,
}

/// `HTTPRoute`'s `HTTPRequestRedirectFilter`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedirectConfig {
    /// The `Location`'s scheme; the request's when absent.
    #[serde(default)]
    pub scheme: Option<RedirectScheme>,
    /// The `Location`'s host; the request's when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The `Location`'s port; 80 and 443 are never written (Envoy Gateway drops them).
    #[serde(default)]
    pub port: Option<std::num::NonZeroU16>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    /// 301 or 302.
    #[serde(default = "default_redirect_status")]
    pub status_code: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Http,
    Https,
}

impl RedirectScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectScheme::Http => "http",
            RedirectScheme::Https => "https",
        }
    }
}

/// `HTTPRoute`'s `HTTPURLRewriteFilter`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RewriteConfig {
    /// The host sent upstream (`:authority`); the client's goes to `x-forwarded-host`.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
}

/// `HTTPRoute`'s `HTTPPathModifier`: exactly one of the two.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(default)]
    pub replace_full_path: Option<String>,
    /// Replaces the prefix the route matched: needs a `prefix` or `pathPrefix` match.
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatchConfig {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// Gateway API's `PathPrefix` as Envoy Gateway gives it to Envoy: `/` is the prefix `/`;
    /// any other value, less one trailing `/`, matches whole path segments (Envoy's
    /// `path_separated_prefix`: `/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
    /// Query parameters (Envoy's `query_parameters`), all of which must match.
    #[serde(default)]
    pub query_params: Vec<QueryParamMatchConfig>,
    #[serde(default)]
    pub method: Option<String>,
}

/// A query parameter match: the first value of the parameter, as sent (not
/// percent-decoded), equal to `exact` or wholly matching `regex`; an absent parameter never
/// matches (Envoy's `QueryParameterMatcher` with a `string_match`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryParamMatchConfig {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderMatchConfig {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// When a request goes to another endpoint of the cluster (Envoy's `retry_on` names).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryConfig {
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    #[serde(default = "default_num_retries")]
    pub num_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            on: default_retry_on(),
            num_retries: default_num_retries(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum RetryOn {
    /// The TCP connection could not be made (or timed out).
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The connection broke before any response arrived.
    #[serde(rename = "reset")]
    Reset,
    /// The upstream answered 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderMutations {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these headers, keeping existing values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    pub name: String,
    pub wasm: PathBuf,
    /// Defaults to the policy's `rootID` when read from one, else "".
    #[serde(default)]
    pub root_id: Option<String>,
    /// Defaults to the filter's name (Envoy Gateway gives each wasm entry its own VM id).
    #[serde(default)]
    pub vm_id: Option<String>,
    /// Raw bytes handed to `on_vm_start`.
    #[serde(default)]
    pub vm_config: Option<String>,
    /// Inline plugin config (any YAML), delivered to `on_configure` as a JSON string.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Plugin config read verbatim from this file.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    #[serde(default)]
    pub from_envoy_extension_policy: Option<PolicySource>,
    /// Defaults to the policy's `failOpen` when read from one, else false. Envoy's legacy
    /// `fail_open`, the only failure setting Envoy Gateway's `EnvoyExtensionPolicy` exposes.
    #[serde(default)]
    pub fail_open: Option<bool>,
    /// Envoy's `PluginConfig.failure_policy`; only one of it and a true `failOpen` may be set.
    #[serde(default)]
    pub failure_policy: Option<FailurePolicyName>,
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+): a Pause from
    /// request headers holds only the headers and still delivers the body to the filter.
    /// False by default, as in Envoy, where the pause stops the body too.
    #[serde(default)]
    pub allow_on_headers_stop_iteration: bool,
    /// Envoy's `PluginConfig.reload_config`, read with `failurePolicy: FAIL_RELOAD`.
    #[serde(default)]
    pub reload_config: Option<VmReloadConfig>,
    #[serde(default)]
    pub env: Option<EnvConfig>,
    /// VMs per plugin (Envoy runs one per worker); 0 means one per CPU.
    #[serde(default)]
    pub vm_count: usize,
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    #[serde(default = "default_callback_deadline")]
    pub callback_deadline: ConfigDuration,
}

/// Envoy's `envoy.extensions.wasm.v3.FailurePolicy` values, spelled as in its JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants spell Envoy's FAIL_CLOSED, FAIL_OPEN and FAIL_RELOAD"
)]
pub enum FailurePolicyName {
    FailClosed,
    FailOpen,
    FailReload,
}

/// Envoy's `envoy.extensions.wasm.v3.ReloadConfig` (a failed VM's reload, not the config file's).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmReloadConfig {
    #[serde(default)]
    pub backoff: Option<ReloadBackoff>,
}

/// The part of Envoy's `config.core.v3.BackoffStrategy` the Wasm reload reads: Envoy builds
/// a `JitteredLowerBoundBackOffStrategy` from `base_interval` alone (wasm.cc).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReloadBackoff {
    pub base_interval: ConfigDuration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySource {
    pub file: PathBuf,
    /// Which `spec.wasm[]` entry; needed only when the manifest has several.
    #[serde(default)]
    pub wasm_name: Option<String>,
}

/// Host environment variables the VM may read, as Envoy Gateway's `env.hostKeys`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvConfig {
    #[serde(default)]
    pub host_keys: Vec<String>,
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
fn default_header_read_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(30_000)
}
fn default_tls_handshake_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}
fn default_h2_keep_alive_interval() -> ConfigDuration {
    ConfigDuration::from_millis(60_000)
}
fn default_drain_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
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
fn default_weight() -> u32 {
    1
}
fn default_direct_status() -> u16 {
    200
}
fn default_redirect_status() -> u16 {
    301
}
fn default_route_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(15_000)
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}
fn default_num_retries() -> u32 {
    1
}
fn default_memory_limit() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_callback_deadline() -> ConfigDuration {
    ConfigDuration::from_millis(1_000)
}
fn default_true() -> bool {
    true
}
fn default_poll_interval() -> ConfigDuration {
    ConfigDuration::from_millis(1_000)
}

/// Every problem found in a config, each naming its field path.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads and checks the config at `path`; relative paths inside it are made relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        let mut config = Config::parse(&text)?;
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

    /// Parses YAML text and checks it, without touching the file system.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // The YAML parser names the enclosing map itself; keep one, fuller path.
            let message = match message.split_once(": ") {
                Some((own, rest)) if path.starts_with(own) => rest.to_owned(),
                _ => message,
            };
            ConfigErrors(vec![if path == "." {
                message
            } else {
                format!("{path}: {message}")
            }])
        })?;
        let errors = config.check();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
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

    /// The checks serde cannot do; every error found, in document order.
    fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.version != VERSION {
            errors.push(format!(
                "version: unsupported version {}, expected {VERSION}",
                self.version
            ));
        }
        if let Some(limit) = &self.global_rate_limit {
            errors.extend(limit.check());
        }
        if self.listeners.is_empty() {
            errors.push("listeners: at least one listener is required".to_owned());
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(path) = &listener.health_path
                && !path.starts_with('/')
            {
                errors.push(format!("listeners[{i}].healthPath: must start with '/'"));
            }
            if let Some(host) = &listener.hostname
                && let Err(e) = check_hostname(host)
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
        let mut cluster_names = std::collections::HashSet::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if !cluster_names.insert(cluster.name.as_str()) {
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
        let listener_names: std::collections::HashSet<&str> =
            self.listeners.iter().map(|l| l.name.as_str()).collect();
        for (i, route) in self.routes.iter().enumerate() {
            check_route(i, route, &cluster_names, &listener_names, &mut errors);
        }
        let mut filter_names = std::collections::HashSet::new();
        for (i, filter) in self.filters.iter().enumerate() {
            if !filter_names.insert(filter.name.as_str()) {
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
        for (field, key) in &self.access_log.filter_state {
            if key.is_empty() {
                errors.push(format!(
                    "accessLog.filterState.{field}: the filter state key is empty"
                ));
            }
        }
        errors
    }
}

fn check_route(
    i: usize,
    route: &RouteConfig,
    clusters: &std::collections::HashSet<&str>,
    listeners: &std::collections::HashSet<&str>,
    errors: &mut Vec<String>,
) {
    for (j, name) in route.listeners.iter().enumerate() {
        if !listeners.contains(name.as_str()) {
            errors.push(format!(
                "routes[{i}].listeners[{j}]: unknown listener {name:?}"
            ));
        }
    }
    for (j, host) in route.hostnames.iter().enumerate() {
        if let Err(e) = check_hostname(host) {
            errors.push(format!("routes[{i}].hostnames[{j}]: {e}"));
        }
    }
    check_match(i, &route.matcher, errors);
    check_action(i, route, clusters, errors);
    if route.timeout.0.is_zero() {
        errors.push(format!("routes[{i}].timeout: must be greater than 0"));
    }
    for (section, mutations) in [
        ("requestHeaders", &route.request_headers),
        ("responseHeaders", &route.response_headers),
    ] {
        for (field, names) in [
            ("set", mutations.set.keys().collect::<Vec<_>>()),
            ("add", mutations.add.keys().collect()),
            ("remove", mutations.remove.iter().collect()),
        ] {
            for name in names {
                if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || name.starts_with(':')
                {
                    errors.push(format!(
                        "routes[{i}].{section}.{field}: {name:?} is not a valid header name"
                    ));
                }
            }
        }
        for (name, value) in mutations.set.iter().chain(&mutations.add) {
            if hyper::header::HeaderValue::from_str(value).is_err() {
                errors.push(format!(
                    "routes[{i}].{section}: the value of {name:?} is not a valid header value"
                ));
            }
        }
    }
}

fn check_match(i: usize, m: &RouteMatchConfig, errors: &mut Vec<String>) {
    let kinds = [
        m.path.is_some(),
        m.prefix.is_some(),
        m.path_prefix.is_some(),
        m.regex.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(format!(
            "routes[{i}].match: give exactly one of path, prefix, pathPrefix and regex"
        ));
    }
    if let Some(prefix) = &m.path_prefix
        && !prefix.starts_with('/')
    {
        errors.push(format!("routes[{i}].match.pathPrefix: must start with '/'"));
    }
    if let Some(regex) = &m.regex
        && let Err(e) = crate::pattern::compile_regex(regex)
    {
        errors.push(format!("routes[{i}].match.regex: {e}"));
    }
    for (j, header) in m.headers.iter().enumerate() {
        let at = format!("routes[{i}].match.headers[{j}]");
        let kinds = [
            header.exact.is_some(),
            header.regex.is_some(),
            header.present.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errors.push(format!(
                "{at}: give exactly one of exact, regex and present"
            ));
        }
        if let Some(regex) = &header.regex
            && let Err(e) = crate::pattern::compile_regex(regex)
        {
            errors.push(format!("{at}.regex: {e}"));
        }
        if hyper::header::HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            errors.push(format!(
                "{at}.name: {:?} is not a valid header name",
                header.name
            ));
        }
    }
    for (j, param) in m.query_params.iter().enumerate() {
        let at = format!("routes[{i}].match.queryParams[{j}]");
        if param.exact.is_some() == param.regex.is_some() {
            errors.push(format!("{at}: give exactly one of exact and regex"));
        }
        if param.name.is_empty() {
            errors.push(format!("{at}.name: must not be empty"));
        }
        if let Some(regex) = &param.regex
            && let Err(e) = crate::pattern::compile_regex(regex)
        {
            errors.push(format!("{at}.regex: {e}"));
        }
    }
}

/// What the route does: forward to a cluster or weighted clusters, or redirect; and rewrite.
fn check_action(
    i: usize,
    route: &RouteConfig,
    clusters: &std::collections::HashSet<&str>,
    errors: &mut Vec<String>,
) {
    let actions = [
        route.cluster.is_some(),
        !route.backends.is_empty(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        errors.push(format!(
            "routes[{i}]: give exactly one of cluster, backends, redirect and directResponse"
        ));
    }
    if let Some(direct) = &route.direct_response {
        // Envoy's `DirectResponseAction.status` range.
        if !(100..=599).contains(&direct.status_code) {
            errors.push(format!(
                "routes[{i}].directResponse.statusCode: must be between 100 and 599"
            ));
        }
        if route.rewrite.is_some() {
            errors.push(format!(
                "routes[{i}]: give at most one of directResponse and rewrite"
            ));
        }
    }
    for (field, cluster) in route.clusters() {
        if !clusters.contains(cluster) {
            errors.push(format!("routes[{i}].{field}: unknown cluster {cluster:?}"));
        }
    }
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total > u64::from(u32::MAX) {
        errors.push(format!(
            "routes[{i}].backends: the weights add up to more than {}",
            u32::MAX
        ));
    }
    let prefix_match = route.matcher.prefix.is_some() || route.matcher.path_prefix.is_some();
    if let Some(redirect) = &route.redirect {
        if route.rewrite.is_some() {
            errors.push(format!(
                "routes[{i}]: give at most one of redirect and rewrite"
            ));
        }
        if !matches!(redirect.status_code, 301 | 302) {
            errors.push(format!(
                "routes[{i}].redirect.statusCode: must be 301 or 302"
            ));
        }
        if let Some(host) = &redirect.hostname
            && let Err(e) = check_exact_hostname(host)
        {
            errors.push(format!("routes[{i}].redirect.hostname: {e}"));
        }
        check_path_modifier(
            &format!("routes[{i}].redirect.path"),
            redirect.path.as_ref(),
            prefix_match,
            errors,
        );
    }
    if let Some(rewrite) = &route.rewrite {
        if let Some(host) = &rewrite.hostname
            && let Err(e) = check_exact_hostname(host)
        {
            errors.push(format!("routes[{i}].rewrite.hostname: {e}"));
        }
        check_path_modifier(
            &format!("routes[{i}].rewrite.path"),
            rewrite.path.as_ref(),
            prefix_match,
            errors,
        );
    }
}

fn check_path_modifier(
    at: &str,
    modifier: Option<&PathModifier>,
    prefix_match: bool,
    errors: &mut Vec<String>,
) {
    let Some(modifier) = modifier else {
        return;
    };
    match (&modifier.replace_full_path, &modifier.replace_prefix_match) {
        (Some(path), None) => {
            if !path.starts_with('/') {
                errors.push(format!("{at}.replaceFullPath: must start with '/'"));
            }
        }
        (None, Some(_)) => {
            if !prefix_match {
                errors.push(format!(
                    "{at}.replacePrefixMatch: needs a prefix or pathPrefix match"
                ));
            }
        }
        _ => errors.push(format!(
            "{at}: give exactly one of replaceFullPath and replacePrefixMatch"
        )),
    }
}

/// A hostname for a redirect or rewrite: a name, with no wildcard.
fn check_exact_hostname(host: &str) -> Result<(), String> {
    if host.starts_with('*') {
        return Err(format!("{host:?}: a wildcard is not a host"));
    }
    check_hostname(host)
}

/// A hostname as a virtual host's domain: `*`, a name, or a name after a leading `*`
/// (`*.example.com`), without a port. Envoy also takes prefix wildcards (`example.*`);
/// Gateway API hostnames have none, so they are refused here.
fn check_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let name = host.strip_prefix('*').unwrap_or(host);
    if host != "*" && name.is_empty() {
        return Err(format!("{host:?}: a wildcard needs a suffix"));
    }
    if name.contains('*') {
        return Err(format!(
            "{host:?}: only a leading wildcard is supported (`*.example.com` or `*`)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{host:?}: {c:?} is not allowed (a hostname has no port, path or spaces)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(yaml: &str) -> Vec<String> {
        Config::parse(yaml)
            .expect_err("config should be rejected")
            .0
    }

    const MINIMAL: &str = "version: 1\nlisteners: [{address: 127.0.0.1:0}]\n";

    #[test]
    fn accepts_a_minimal_config_with_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.listeners[0].name, "main");
        assert_eq!(config.listeners[0].health_path.as_deref(), Some("/health"));
        assert_eq!(config.buffer_limit, ByteSize(1 << 20));
    }

    #[test]
    fn concurrency_zero_means_one_worker_per_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(Config::parse(MINIMAL).unwrap().workers(), cpus);
        let three = Config::parse(&format!("{MINIMAL}concurrency: 3\n")).unwrap();
        assert_eq!(three.workers(), 3);
        let errors = errors_of(&format!("{MINIMAL}concurrency: -1\n"));
        assert!(errors[0].starts_with("concurrency: "), "{errors:?}");
    }

    #[test]
    fn zero_listener_timeouts_are_refused() {
        let errors = errors_of(
            "version: 1\nlisteners: [{address: 127.0.0.1:0, headerReadTimeout: 0s, tlsHandshakeTimeout: 0ms}]\n",
        );
        assert_eq!(
            errors,
            [
                "listeners[0].headerReadTimeout: must be greater than 0",
                "listeners[0].tlsHandshakeTimeout: must be greater than 0",
            ]
        );
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let errors = errors_of(
            "version: 1\nlisteners: [{address: 127.0.0.1:0, tls: {certFile: a, keyFile: b, extra: 1}}]\n",
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("listeners[0].tls.extra: unknown field `extra`"),
            "{errors:?}"
        );
        assert!(errors[0].contains("unknown field `extra`"), "{errors:?}");
    }

    #[test]
    fn reports_every_semantic_error() {
        let yaml = format!(
            "{MINIMAL}clusters: [{{name: a, endpoints: []}}]\nroutes:\n  - match: {{prefix: /, regex: '('}}\n    cluster: b\n"
        );
        let errors = errors_of(&yaml);
        assert!(
            errors.contains(&"clusters[0].endpoints: at least one endpoint is required".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(
                &"routes[0].match: give exactly one of path, prefix, pathPrefix and regex"
                    .to_owned()
            ),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[0].match.regex: ")),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"routes[0].cluster: unknown cluster \"b\"".to_owned()),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_scalars_name_their_path() {
        let yaml = format!(
            "{MINIMAL}clusters: [{{name: a, endpoints: [127.0.0.1:1], connectTimeout: 5}}]\n"
        );
        let errors = errors_of(&yaml);
        assert!(
            errors[0].starts_with("clusters[0].connectTimeout: "),
            "{errors:?}"
        );
        let yaml = format!("{MINIMAL}clusters: [{{name: a, endpoints: [nowhere]}}]\n");
        assert!(errors_of(&yaml)[0].starts_with("clusters[0].endpoints[0]: "));
    }

    #[test]
    fn filter_config_sources_are_exclusive() {
        let yaml = format!(
            "{MINIMAL}filters: [{{name: f, wasm: f.wasm, config: {{}}, configFile: c.json}}]\n"
        );
        assert_eq!(
            errors_of(&yaml),
            ["filters[0]: give at most one of config, configFile and fromEnvoyExtensionPolicy"]
        );
    }

    #[test]
    fn rejects_other_versions() {
        let errors = errors_of("version: 2\nlisteners: [{address: 127.0.0.1:0}]\n");
        assert_eq!(errors, ["version: unsupported version 2, expected 1"]);
    }

    #[test]
    fn route_listener_and_hostname_errors_name_their_field() {
        let yaml = format!(
            "version: 1\nlisteners: [{{name: public, address: 127.0.0.1:0, hostname: 'a.*.com'}}]\n{}",
            "clusters: [{name: c, endpoints: [127.0.0.1:1]}]\nroutes:\n  - {listeners: [public, privat], hostnames: ['*', 'x.com:80', '*'], match: {prefix: /}, cluster: c}\n"
        );
        let errors = errors_of(&yaml);
        assert_eq!(
            errors,
            [
                "listeners[0].hostname: \"a.*.com\": only a leading wildcard is supported (`*.example.com` or `*`)",
                "routes[0].listeners[1]: unknown listener \"privat\"",
                "routes[0].hostnames[1]: \"x.com:80\": ':' is not allowed (a hostname has no port, path or spaces)",
            ]
        );
    }

    #[test]
    fn route_action_and_rewrite_errors_name_their_field() {
        let routes = "routes:
  - {match: {path: /a}}
  - {match: {path: /b, queryParams: [{name: q}, {name: '', regex: '('}]}, cluster: c, backends: [{cluster: nope}]}
  - {match: {regex: /c}, redirect: {statusCode: 307, hostname: '*.x.com', path: {replacePrefixMatch: /}}, rewrite: {}}
  - {match: {pathPrefix: d}, cluster: c, rewrite: {hostname: 'a b', path: {replaceFullPath: x, replacePrefixMatch: /y}}}
  - {match: {pathPrefix: /e}, cluster: c, rewrite: {path: {replaceFullPath: x}}}
  - {match: {path: /f}, directResponse: {statusCode: 600}, rewrite: {}}
";
        let yaml = format!(
            "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters: [{{name: c, endpoints: [127.0.0.1:1]}}]\n{routes}"
        );
        let errors = errors_of(&yaml);
        let expected = [
            "routes[0]: give exactly one of cluster, backends, redirect and directResponse",
            "routes[1].match.queryParams[0]: give exactly one of exact and regex",
            "routes[1].match.queryParams[1].name: must not be empty",
            "routes[1]: give exactly one of cluster, backends, redirect and directResponse",
            "routes[1].backends[0].cluster: unknown cluster \"nope\"",
            "routes[2]: give at most one of redirect and rewrite",
            "routes[2].redirect.statusCode: must be 301 or 302",
            "routes[2].redirect.hostname: \"*.x.com\": a wildcard is not a host",
            "routes[2].redirect.path.replacePrefixMatch: needs a prefix or pathPrefix match",
            "routes[3].match.pathPrefix: must start with '/'",
            "routes[3].rewrite.path: give exactly one of replaceFullPath and replacePrefixMatch",
            "routes[4].rewrite.path.replaceFullPath: must start with '/'",
            "routes[5].directResponse.statusCode: must be between 100 and 599",
            "routes[5]: give at most one of directResponse and rewrite",
        ];
        for e in expected {
            assert!(
                errors.contains(&e.to_owned()),
                "missing {e:?} in {errors:#?}"
            );
        }
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[1].match.queryParams[1].regex: ")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("routes[3].rewrite.hostname: ")),
            "{errors:#?}"
        );
    }
}
