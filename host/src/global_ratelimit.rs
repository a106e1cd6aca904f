//! Envoy Gateway's global rate limit, as its Envoy runs it, for local runs with a real Redis
//! (reached with a minimal RESP client, [`resp`]):
//! one budget for every gateway process (every Envoy replica) that shares the store.
//!
//! Under Envoy Gateway a `BackendTrafficPolicy` with `rateLimit.type: Global` becomes, per
//! route, Envoy's `envoy.filters.http.ratelimit` filter (after the Wasm filters, so it sees the
//! headers they set) calling the rate limit service, envoyproxy/ratelimit, which counts in
//! Redis. This module plays both halves inside the gateway:
//!
//! - **Descriptors**, as Envoy Gateway's translator builds them
//!   (`internal/xds/translator/ratelimit.go`, `buildRouteRateLimits`): per rule, a generic key
//!   `(route name, route name)`, then per header selector `rule-<r>-match-<m>` with the
//!   header's first value (`Distinct`, Envoy's `request_headers` action) or the key again
//!   when the header equals the value (`Exact`, `header_value_match`); a rule with no selector
//!   adds `(rule-<r>-match--1, rule-<r>-match--1)`. A selector that does not match (a header
//!   absent, or different) produces no descriptor, so the rule does not count the request.
//! - **Counting**, as envoyproxy/ratelimit's fixed window does (`src/limiter/cache_key.go`,
//!   `src/redis/fixed_cache_impl.go`): the key is the domain, `_`, each entry's key and value
//!   each followed by `_`, then the window's start in Unix seconds; one pipeline of `INCRBY key
//!   1` and `EXPIRE key <unit in seconds>` per descriptor; over the limit when the count after
//!   the increment exceeds `requests`. Every descriptor is counted even when another is over.
//! - **The answer**, as Envoy's filter gives it: 429 with `x-envoy-ratelimited: true` and an
//!   empty body, through the filters' response callbacks like any local reply; when the store
//!   does not answer within `timeout`, the request passes (Envoy Gateway's default) or gets
//!   500 with `failClosed`.
//!
//! The domain is the listener's name (Envoy Gateway's default, one domain per listener). The
//! rules know nothing of models: they name request headers, such as the ones the modelgate
//! filter sets (`x-gateway-model-name`, `rateLimit.keyHeader`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use modelgate_runtime::Headers;

use crate::headers;
use crate::units::ConfigDuration;

mod resp;

use resp::Redis;

/// `globalRateLimit` in the gateway's config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalRateLimitConfig {
    /// The Redis envoyproxy/ratelimit counts in (its `REDIS_URL`), `host:port`.
    pub redis: String,
    /// How long to wait for the count (Envoy Gateway's `rateLimit.timeout`, 20 ms by default,
    /// as Envoy's filter).
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Refuse (500) rather than pass a request when the count fails (Envoy Gateway's
    /// `rateLimit.failClosed`).
    #[serde(default)]
    pub fail_closed: bool,
    /// A `BackendTrafficPolicy`'s `spec.rateLimit.global.rules`, applied to every route (a
    /// policy that targets the Gateway).
    pub rules: Vec<RuleConfig>,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(20))
}

/// One rule: which requests it counts and how many a window lets through.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    #[serde(default)]
    pub client_selectors: Vec<ClientSelector>,
    pub limit: LimitConfig,
}

/// Envoy Gateway's `RateLimitSelectCondition`; only header selectors run here.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientSelector {
    pub headers: Vec<HeaderSelector>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderSelector {
    #[serde(rename = "type", default)]
    pub kind: HeaderSelectorKind,
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// `Exact` (the default) or `Distinct` (one bucket per value).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum HeaderSelectorKind {
    #[default]
    Exact,
    Distinct,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitConfig {
    pub requests: u64,
    pub unit: Unit,
}

/// The window; its length in seconds is envoyproxy/ratelimit's `UnitToDivider`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
        }
    }
}

impl GlobalRateLimitConfig {
    /// The checks serde cannot do, each naming its field.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self
            .redis
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            errors.push(format!(
                "globalRateLimit.redis: expected host:port, got {:?}",
                self.redis
            ));
        }
        if self.timeout.0.is_zero() {
            errors.push("globalRateLimit.timeout: must be greater than 0".to_owned());
        }
        if self.rules.is_empty() {
            errors.push("globalRateLimit.rules: at least one rule is required".to_owned());
        }
        for (r, rule) in self.rules.iter().enumerate() {
            if rule.limit.requests == 0 {
                errors.push(format!(
                    "globalRateLimit.rules[{r}].limit.requests: must be greater than 0"
                ));
            }
            for (s, selector) in rule.client_selectors.iter().enumerate() {
                for (h, header) in selector.headers.iter().enumerate() {
                    let at =
                        format!("globalRateLimit.rules[{r}].clientSelectors[{s}].headers[{h}]");
                    match (header.kind, &header.value) {
                        (HeaderSelectorKind::Exact, None) => {
                            errors.push(format!("{at}.value: required for type Exact"));
                        }
                        (HeaderSelectorKind::Distinct, Some(_)) => {
                            errors.push(format!("{at}.value: not allowed for type Distinct"));
                        }
                        _ => {}
                    }
                }
            }
        }
        errors
    }
}

/// One descriptor entry: (key, value).
type Entry = (String, String);

/// A descriptor and the limit the service configuration gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<Entry>,
    pub requests: u64,
    pub unit_seconds: u64,
}

impl Descriptor {
    /// envoyproxy/ratelimit's cache key (`GenerateCacheKey`, no `CACHE_KEY_PREFIX`).
    pub fn cache_key(&self, domain: &str, now_secs: u64) -> String {
        let mut key = format!("{domain}_");
        for (k, v) in &self.entries {
            key.push_str(k);
            key.push('_');
            key.push_str(v);
            key.push('_');
        }
        let window = now_secs / self.unit_seconds * self.unit_seconds;
        key.push_str(&window.to_string());
        key
    }
}

/// The descriptors the rules produce for a request on `route`.
pub fn descriptors(rules: &[RuleConfig], route: &str, request: &Headers) -> Vec<Descriptor> {
    let mut out = Vec::new();
    'rules: for (r, rule) in rules.iter().enumerate() {
        let mut entries = vec![(route.to_owned(), route.to_owned())];
        // Envoy Gateway flattens every selector's headers into one list of matches.
        let matches = rule.client_selectors.iter().flat_map(|s| &s.headers);
        for (m, header) in matches.enumerate() {
            let key = format!("rule-{r}-match-{m}");
            let name = header.name.to_ascii_lowercase();
            match header.kind {
                HeaderSelectorKind::Distinct => {
                    // Envoy's request_headers action takes the first value; no header, no
                    // descriptor.
                    let Some(value) = headers::get_str(request, &name) else {
                        continue 'rules;
                    };
                    entries.push((key, value.to_owned()));
                }
                HeaderSelectorKind::Exact => {
                    // header_value_match compares every value joined with ',', as Envoy's
                    // header matchers read a repeated header.
                    let joined = all_values(request, &name);
                    if joined.as_deref() != header.value.as_deref() {
                        continue 'rules;
                    }
                    entries.push((key.clone(), key));
                }
            }
        }
        if entries.len() == 1 {
            let key = format!("rule-{r}-match--1");
            entries.push((key.clone(), key));
        }
        out.push(Descriptor {
            entries,
            requests: rule.limit.requests,
            unit_seconds: rule.limit.unit.seconds(),
        });
    }
    out
}

fn all_values(request: &Headers, name: &str) -> Option<String> {
    let values: Vec<&str> = request
        .iter()
        .filter(|(n, _)| n == name)
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What the limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No rule applies, or every descriptor is within its limit.
    Pass,
    /// A descriptor is over its limit: 429.
    OverLimit,
    /// The store did not answer in time or at all; `failClosed` decides.
    Failed,
}

/// The compiled limit of one config snapshot, with its connections to Redis.
pub struct GlobalRateLimit {
    config: GlobalRateLimitConfig,
    redis: Redis,
}

impl GlobalRateLimit {
    /// Connections are made by the requests that need them.
    pub fn new(config: &GlobalRateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            redis: Redis::new(&config.redis),
        }
    }

    pub fn fail_closed(&self) -> bool {
        self.config.fail_closed
    }

    /// Count the request on `route` of `listener` (the domain) against every rule it matches.
    pub async fn check(&self, listener: &str, route: &str, request: &Headers) -> Verdict {
        let descriptors = descriptors(&self.config.rules, route, request);
        if descriptors.is_empty() {
            return Verdict::Pass;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let keys: Vec<(String, u64)> = descriptors
            .iter()
            .map(|d| (d.cache_key(listener, now), d.unit_seconds))
            .collect();
        let counted =
            tokio::time::timeout(self.config.timeout.0, self.redis.incr_and_expire(&keys));
        match counted.await {
            Ok(Ok(counts)) => {
                let over = descriptors
                    .iter()
                    .zip(counts)
                    .any(|(d, count)| count > d.requests);
                if over {
                    Verdict::OverLimit
                } else {
                    Verdict::Pass
                }
            }
            Ok(Err(e)) => {
                log::warn!("global rate limit: redis {}: {e}", self.config.redis);
                Verdict::Failed
            }
            Err(_) => {
                log::warn!(
                    "global rate limit: redis {} did not answer within {:?}",
                    self.config.redis,
                    self.config.timeout.0
                );
                Verdict::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests;
