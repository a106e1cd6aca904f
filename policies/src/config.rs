//! The configuration document as written (`RawConfig`), parsed with field paths in every error.
//!
//! One versioned JSON document, the `config` of an `EnvoyExtensionPolicy` wasm entry.
//! Unknown fields are errors everywhere: we write both the config and its reader, so a field
//! the reader does not know is a typo, not version drift. `docs/config.md` documents each field.
//! Compiling it into [`crate::Policies`] (keys, routes, quotas) happens in `compile.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::ConfigError;

/// Log level for the filter's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    /// Everything, including per-request decisions.
    Trace,
    /// Per-request denials and their reasons.
    Debug,
    /// Start-up and configuration (the default).
    #[default]
    Info,
    /// Internal faults and shadow-mode rate limit hits.
    Warn,
    /// Internal faults only.
    Error,
    /// Only what precedes a crash.
    Critical,
}

/// What to do on an internal fault (not on a policy deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Answer 503: a fault never lets a request through unchecked (the default).
    #[default]
    Deny,
    /// Forward the request as if the failed check had passed.
    Allow,
}

/// What to do with a client-sent header whose name reads as one the policy sets (the routing
/// header, forwarded claims, the limit-key header) once ASCII case is folded and `_` taken for
/// `-`, but is not spelled the same: `x_jwt_sub` beside the `x-jwt-sub` the filter sets.
/// Envoy's `headers_with_underscores_action` does the same for every underscored name
/// (`ALLOW` by default in Envoy; `REJECT_REQUEST` under Envoy Gateway's `ClientTrafficPolicy`
/// default); this covers the policy's own headers whatever the proxy is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum LookalikeHeaders {
    /// Remove them before forwarding (the default).
    #[default]
    Drop,
    /// Answer 400 naming the header.
    Reject,
}

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawConfig {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) log_level: LogLevel,
    #[serde(default)]
    pub(crate) failure_mode: FailureMode,
    #[serde(default)]
    pub(crate) lookalike_headers: LookalikeHeaders,
    #[serde(default)]
    pub(crate) routing: RawRouting,
    pub(crate) jwt: Option<RawJwt>,
    #[serde(default)]
    pub(crate) rate_limit: RawRateLimit,
    #[serde(default)]
    pub(crate) validation: RawValidationSettings,
    /// KServe's OpenAI-compatible endpoints; absent, they get no special treatment.
    pub(crate) openai: Option<RawOpenAi>,
    pub(crate) models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawOpenAi {
    /// KServe's `KSERVE_OPENAI_ROUTE_PREFIX`.
    #[serde(default = "default_openai_prefix")]
    pub(crate) prefix: String,
    /// Envoy's `allow_on_headers_stop_iteration` is set: headers may be held for the body.
    #[serde(default)]
    pub(crate) hold_headers_for_body: bool,
    pub(crate) caller_class: Option<RawCallerClass>,
}

/// The `caller_class` metric label: a claim's value among a fixed set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawCallerClass {
    pub(crate) claim: String,
    pub(crate) values: Vec<String>,
}

/// A model's OpenAI settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawModelOpenAi {
    pub(crate) max_tokens: Option<u32>,
    pub(crate) default_max_tokens: Option<u32>,
    pub(crate) max_n: Option<u32>,
    pub(crate) bytes_per_token: Option<u32>,
    #[serde(default)]
    pub(crate) token_budgets: Vec<RawTokenBudget>,
}

/// One token budget window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawTokenBudget {
    pub(crate) tokens: u64,
    pub(crate) per: BudgetWindow,
}

/// The length of a token budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum BudgetWindow {
    Minute,
    Hour,
    Day,
}

impl BudgetWindow {
    pub(crate) const fn seconds(self) -> u64 {
        match self {
            BudgetWindow::Minute => 60,
            BudgetWindow::Hour => 3_600,
            BudgetWindow::Day => 86_400,
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Minute => "minute",
            BudgetWindow::Hour => "hour",
            BudgetWindow::Day => "day",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawRouting {
    #[serde(default = "default_routing_header")]
    pub(crate) header: String,
    #[serde(default)]
    pub(crate) unknown_model: UnknownModel,
    #[serde(default = "default_true")]
    pub(crate) list_models: bool,
    pub(crate) body_model: Option<RawBodyModel>,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            header: default_routing_header(),
            unknown_model: UnknownModel::default(),
            list_models: true,
            body_model: None,
        }
    }
}

/// What happens to a request naming a model the configuration does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum UnknownModel {
    /// 404 in KServe's shape (the default).
    #[default]
    Reject,
    /// Forward untouched (no routing header, no model policy).
    PassThrough,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawBodyModel {
    #[serde(default = "default_body_field")]
    pub(crate) field: String,
    pub(crate) paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawJwt {
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) audiences: OneOrMany,
    pub(crate) jwks: Option<RawJwks>,
    pub(crate) remote_jwks: Option<RawRemoteJwks>,
    pub(crate) algorithms: Option<Vec<String>>,
    #[serde(default = "default_leeway")]
    pub(crate) leeway_seconds: u64,
    pub(crate) token_sources: Option<Vec<RawTokenSource>>,
    #[serde(default)]
    pub(crate) forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) strip_authorization: bool,
    #[serde(default = "default_max_token_bytes")]
    pub(crate) max_token_bytes: usize,
    #[serde(default = "default_cache_size")]
    pub(crate) cache_size: usize,
    #[serde(default = "default_realm")]
    pub(crate) realm: String,
}

/// A string or a list of strings (`"aud": "a"` and `"aud": ["a", "b"]` both appear in the wild).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawJwks {
    pub(crate) keys: Vec<RawJwk>,
}

/// A JWKS fetched from the identity provider through a cluster of the proxy (`http_call`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawRemoteJwks {
    /// The proxy's cluster that reaches the provider (under Envoy Gateway, one an
    /// `EnvoyPatchPolicy` adds; see docs/config.md).
    pub(crate) cluster: String,
    /// The `:authority` (host) of the request, as the provider expects it.
    pub(crate) authority: String,
    /// The JWKS path (`/.well-known/jwks.json`, Keycloak's `/realms/R/protocol/openid-connect/certs`).
    pub(crate) path: String,
    #[serde(default = "default_jwks_timeout_ms")]
    pub(crate) timeout_ms: u32,
    #[serde(default = "default_jwks_refresh")]
    pub(crate) refresh_interval_seconds: u64,
    #[serde(default = "default_jwks_min_refresh")]
    pub(crate) min_refresh_interval_seconds: u64,
    #[serde(default)]
    pub(crate) until_fetched: UntilFetched,
}

/// What verifies tokens before the first good fetch of a remote JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum UntilFetched {
    /// Nothing: requests that need a token are answered 503 (the default).
    #[default]
    Deny,
    /// The inline `jwt.jwks`, until the first good fetch replaces them.
    InlineKeys,
}

/// One public JWK (RFC 7517/7518 members). Private members such as `d` are unknown fields,
/// so a private key pasted by mistake is rejected instead of being published in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwk {
    pub(crate) kty: String,
    pub(crate) kid: Option<String>,
    pub(crate) alg: Option<String>,
    #[serde(rename = "use")]
    pub(crate) use_: Option<String>,
    pub(crate) key_ops: Option<Vec<String>>,
    pub(crate) n: Option<String>,
    pub(crate) e: Option<String>,
    pub(crate) crv: Option<String>,
    pub(crate) x: Option<String>,
    pub(crate) y: Option<String>,
    pub(crate) k: Option<String>,
    /// Not a JWK member: the name of the environment variable that holds an `oct` key's
    /// secret, so the secret stays out of the config (Envoy Gateway's `env.hostKeys`).
    #[serde(rename = "kFromEnv")]
    pub(crate) k_from_env: Option<String>,
    // Certificate members are accepted (JWKS endpoints publish them) but not used: the key is
    // trusted because it is in the config, not because of a chain.
    #[serde(rename = "x5u")]
    _x5u: Option<serde::de::IgnoredAny>,
    #[serde(rename = "x5c")]
    _x5c: Option<serde::de::IgnoredAny>,
    #[serde(rename = "x5t")]
    _x5t: Option<serde::de::IgnoredAny>,
    #[serde(rename = "x5t#S256")]
    _x5t_s256: Option<serde::de::IgnoredAny>,
}

/// A JWKS as an identity provider publishes it (`jwt.remoteJwks`). Unlike in the config,
/// members this reader does not know are ignored (RFC 7517 section 4: providers add `x5c`,
/// `issuer`, ...), and private members are read only to refuse the key that has them.
#[derive(Debug, Deserialize)]
pub(crate) struct RemoteJwksDocument {
    pub(crate) keys: Vec<RemoteJwk>,
}

/// One key of a fetched JWKS.
#[derive(Debug, Deserialize)]
pub(crate) struct RemoteJwk {
    #[serde(default)]
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    // Members only a private (or symmetric) key has (RFC 7518 sections 6.2.2, 6.3.2, 6.4).
    d: Option<serde::de::IgnoredAny>,
    p: Option<serde::de::IgnoredAny>,
    q: Option<serde::de::IgnoredAny>,
    dp: Option<serde::de::IgnoredAny>,
    dq: Option<serde::de::IgnoredAny>,
    qi: Option<serde::de::IgnoredAny>,
    oth: Option<serde::de::IgnoredAny>,
    k: Option<serde::de::IgnoredAny>,
}

impl RemoteJwk {
    /// The first private member the key carries, if any.
    pub(crate) fn private_member(&self) -> Option<&'static str> {
        [
            ("d", self.d.is_some()),
            ("p", self.p.is_some()),
            ("q", self.q.is_some()),
            ("dp", self.dp.is_some()),
            ("dq", self.dq.is_some()),
            ("qi", self.qi.is_some()),
            ("oth", self.oth.is_some()),
            ("k", self.k.is_some()),
        ]
        .into_iter()
        .find_map(|(name, present)| present.then_some(name))
    }

    pub(crate) fn kty(&self) -> &str {
        &self.kty
    }

    /// The public members, as a config JWK.
    pub(crate) fn into_public(self) -> RawJwk {
        RawJwk {
            kty: self.kty,
            kid: self.kid,
            alg: self.alg,
            use_: self.use_,
            key_ops: self.key_ops,
            n: self.n,
            e: self.e,
            crv: self.crv,
            x: self.x,
            y: self.y,
            k: None,
            k_from_env: None,
            _x5u: None,
            _x5c: None,
            _x5t: None,
            _x5t_s256: None,
        }
    }
}

/// Where to find the token: exactly one of `header` or `query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawTokenSource {
    pub(crate) header: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) query: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawRateLimit {
    /// Defaults to the `sub` claim with JWT configured, else the client address.
    pub(crate) key: Option<RawLimitKey>,
    #[serde(default)]
    pub(crate) shadow: bool,
    pub(crate) key_header: Option<String>,
    /// Callers with live state at once, per model (the size of each quota's slot table).
    pub(crate) max_keys: Option<u32>,
}

/// What identifies a caller for rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) enum RawLimitKey {
    /// A JWT claim (`{"claim": "sub"}`).
    Claim(String),
    /// A request header (`{"header": "x-api-key"}`).
    Header(String),
    /// The client address (`"clientAddress"`).
    ClientAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawValidationSettings {
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: usize,
    #[serde(default)]
    pub(crate) cloud_events: CloudEvents,
}

impl Default for RawValidationSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            cloud_events: CloudEvents::default(),
        }
    }
}

/// What to do with a V1 body KServe reads as a structured `CloudEvent` (it predicts on `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloudEvents {
    /// Answer 400: the gateway accepts plain V1 bodies only (the default: one reading of a
    /// body, and nothing the model could be fed that the caller did not plainly send).
    #[default]
    Reject,
    /// Validate the event's `data` as the V1 body, as KServe will feed it to the model.
    Unwrap,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawModel {
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    pub(crate) protocols: Option<Vec<RawProtocol>>,
    #[serde(default)]
    pub(crate) required_scopes: Vec<String>,
    #[serde(default)]
    pub(crate) required_claims: BTreeMap<String, OneOrMany>,
    /// Scopes that KServe's model repository extension (`load`/`unload`) needs; absent, the
    /// extension is refused for this model.
    pub(crate) admin_scopes: Option<Vec<String>>,
    pub(crate) rate_limit: Option<RawQuota>,
    pub(crate) validation: Option<RawModelValidation>,
    pub(crate) openai: Option<RawModelOpenAi>,
}

/// A KServe inference protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Protocol {
    V1,
    V2,
}

/// A protocol a model's configuration may list: a KServe inference protocol, or KServe's
/// OpenAI-compatible endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum RawProtocol {
    V1,
    V2,
    #[serde(rename = "openai")]
    OpenAi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawQuota {
    pub(crate) requests_per_second: Option<u32>,
    pub(crate) requests_per_minute: Option<u32>,
    pub(crate) burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawModelValidation {
    pub(crate) feature_count: Option<usize>,
    pub(crate) max_instances: Option<usize>,
    /// V1 default: numbers. V2: checked only when set.
    pub(crate) element_type: Option<ElementType>,
    pub(crate) v2_inputs: Option<Vec<RawV2Input>>,
    #[serde(default)]
    pub(crate) explain: ExplainFormat,
}

/// What a model's `:explain` body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ExplainFormat {
    /// The same V1 rows as `:predict` (an explainer that explains rows).
    #[default]
    V1,
    /// KServe's ART explainer: `instances` is `[inputs, labels]` (`kserve_art`).
    Art,
}

/// A V2 input as KServe/Triton model metadata declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawV2Input {
    pub(crate) name: String,
    pub(crate) datatype: String,
    /// Dimensions; `-1` for any size.
    pub(crate) shape: Vec<i64>,
}

/// What V1 row elements may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ElementType {
    /// JSON numbers only (the default: what scikit-learn models take).
    #[default]
    Number,
    /// JSON strings only.
    String,
    /// JSON booleans only.
    Bool,
    /// Any JSON scalar (not null, not an object).
    Any,
}

fn default_true() -> bool {
    true
}
fn default_routing_header() -> String {
    "x-gateway-model-name".to_owned()
}
fn default_openai_prefix() -> String {
    "/openai".to_owned()
}
fn default_body_field() -> String {
    "model".to_owned()
}
fn default_leeway() -> u64 {
    60
}
fn default_jwks_timeout_ms() -> u32 {
    5000
}
/// Envoy's `jwt_authn` keeps a remote JWKS 600 s when `cache_duration` is not set
/// (`PubkeyCacheExpirationSec` in `source/extensions/filters/http/jwt_authn/jwks_cache.cc`).
fn default_jwks_refresh() -> u64 {
    600
}
fn default_jwks_min_refresh() -> u64 {
    10
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_cache_size() -> usize {
    1024
}
fn default_realm() -> String {
    "modelgate".to_owned()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// Parse the document, naming the field path of any error.
pub(crate) fn parse(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::at(&path, e.into_inner().to_string())
    })
}
