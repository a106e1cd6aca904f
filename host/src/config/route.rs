//! The routes' shapes as written: matches, actions (cluster, weighted backends, redirect,
//! direct response), rewrites, retries and header mutations. Exclusive fields stay optional
//! here, so that one pass of the compile step (`route::compile`) reports every mistake of a
//! document with its field path, where a serde enum would stop at the first one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::ConfigDuration;

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
    /// Envoy Gateway's local rate limit (a `BackendTrafficPolicy`'s `rateLimit.local`), with
    /// buckets of this route's own.
    #[serde(default)]
    pub local_rate_limit: Option<super::local_ratelimit::LocalRateLimitConfig>,
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
            local_rate_limit: None,
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
