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

use std::time::{SystemTime, UNIX_EPOCH};

use modelgate_runtime::Headers;

use crate::headers;

mod resp;

use resp::Redis;

pub(crate) use crate::config::global_ratelimit::{
    GlobalRateLimitConfig, HeaderSelector, HeaderSelectorKind, RuleConfig,
};

/// One descriptor entry: (key, value).
type Entry = (String, String);

/// A descriptor and the limit the service configuration gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub entries: Vec<Entry>,
    pub requests: u64,
    pub unit_seconds: u64,
}

impl Descriptor {
    /// envoyproxy/ratelimit's cache key (`GenerateCacheKey`, no `CACHE_KEY_PREFIX`).
    pub(crate) fn cache_key(&self, domain: &str, now_secs: u64) -> String {
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
pub(crate) fn descriptors(rules: &[RuleConfig], route: &str, request: &Headers) -> Vec<Descriptor> {
    let mut out = Vec::new();
    'rules: for (r, rule) in rules.iter().enumerate() {
        let mut entries = vec![(route.to_owned(), route.to_owned())];
        // Envoy Gateway flattens every selector's headers into one list of matches.
        let matches = rule.client_selectors.iter().flat_map(|s| &s.headers);
        for (m, header) in matches.enumerate() {
            let key = format!("rule-{r}-match-{m}");
            match select(header, request) {
                Some(Selected::Value(value)) => entries.push((key, value)),
                Some(Selected::Matched) => entries.push((key.clone(), key)),
                None => continue 'rules,
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

/// The entry one header selector makes of a request, as Envoy's rate limit actions do.
pub(crate) enum Selected {
    /// `Distinct`: the header's first value (the `request_headers` action).
    Value(String),
    /// `Exact`: the header equals the selector's value (`header_value_match`).
    Matched,
}

/// `None` when the selector produces no entry: the header is absent, or not the value.
pub(crate) fn select(header: &HeaderSelector, request: &Headers) -> Option<Selected> {
    let name = header.name.to_ascii_lowercase();
    match header.kind {
        HeaderSelectorKind::Distinct => {
            headers::get_str(request, &name).map(|value| Selected::Value(value.to_owned()))
        }
        HeaderSelectorKind::Exact => {
            // Every value joined with ',', as Envoy's header matchers read a repeated header.
            let values: Vec<&str> = request
                .iter()
                .filter(|(n, _)| *n == name)
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .collect();
            let joined = (!values.is_empty()).then(|| values.join(","));
            (joined.as_deref() == header.value.as_deref()).then_some(Selected::Matched)
        }
    }
}

/// What the limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No rule applies, or every descriptor is within its limit.
    Pass,
    /// A descriptor is over its limit: 429.
    OverLimit,
    /// The store did not answer in time or at all; `failClosed` decides.
    Failed,
}

/// The compiled limit of one config snapshot, with its connections to Redis.
pub(crate) struct GlobalRateLimit {
    config: GlobalRateLimitConfig,
    redis: Redis,
}

impl GlobalRateLimit {
    /// Connections are made by the requests that need them.
    pub(crate) fn new(config: &GlobalRateLimitConfig) -> Self {
        Self {
            config: config.clone(),
            redis: Redis::new(&config.redis),
        }
    }

    pub(crate) fn fail_closed(&self) -> bool {
        self.config.fail_closed
    }

    /// Count the request on `route` of `listener` (the domain) against every rule it matches.
    pub(crate) async fn check(&self, listener: &str, route: &str, request: &Headers) -> Verdict {
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
