//! Envoy Gateway's local rate limit (`BackendTrafficPolicy` `spec.rateLimit.local`), as its
//! Envoy runs it: token buckets per route, shared by every worker of the process (Envoy's
//! `envoy.filters.http.local_ratelimit`, after the Wasm filters, so its selectors see the
//! headers they set).
//!
//! - **Per route**, as Envoy Gateway configures it (`internal/xds/translator/local_ratelimit.go`,
//!   `patchRoute`): each route has its own limiter, even when the policy targets the Gateway.
//!   The rule without `clientSelectors` is the route's default bucket; without one the default
//!   is unlimited (`internal/gatewayapi/backendtrafficpolicy.go`: `MaxUint32` per second).
//! - **Descriptors** (`buildRouteLocalRateLimits`): a rule with selectors applies to a request
//!   only when every selector produces its entry, as Envoy's rate limit actions do: an `Exact`
//!   header equal to the value (`header_value_match`), a `Distinct` header present
//!   (`request_headers`); each distinct value gets a bucket of its own, at most
//!   [`MAX_DYNAMIC_DESCRIPTORS`] of them per rule, the least recently used dropped first.
//! - **Buckets** (envoy `source/extensions/filters/common/local_ratelimit/local_ratelimit_impl.cc`,
//!   `AtomicTokenBucket`): full at start, `requests` tokens, refilled continuously at `requests`
//!   per unit. The rules a request matches are consumed slowest-filling first and the first
//!   empty one refuses it; the default bucket only when no rule matched
//!   (`always_consume_default_token_bucket: false`).
//! - **The answer** (`source/extensions/filters/http/local_ratelimit/local_ratelimit.cc`): 429
//!   `local_rate_limited` with `x-envoy-ratelimited: true`.
//!
//! Buckets live with the compiled route table, so a reload starts them full again, as a new
//! route configuration does in Envoy.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use modelgate_runtime::Headers;

use crate::config::global_ratelimit::{HeaderSelector, LimitConfig};
pub(crate) use crate::config::local_ratelimit::LocalRateLimitConfig;
use crate::global_ratelimit::{Selected, select};

/// Envoy Gateway's `MaxDynamicDescriptors`: buckets one `Distinct` rule keeps, one per value.
pub(crate) const MAX_DYNAMIC_DESCRIPTORS: usize = 10_000;

/// One route's local rate limit.
#[derive(Debug)]
pub(crate) struct LocalRateLimit {
    default: Option<Mutex<TokenBucket>>,
    /// Slowest-filling first: a request a strict rule refuses takes no token from a loose one.
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    selectors: Vec<HeaderSelector>,
    limit: LimitConfig,
    buckets: Mutex<Buckets>,
}

/// A rule's buckets by the values of its `Distinct` selectors (a rule of `Exact` ones has one,
/// under no values), each with when it was last used.
#[derive(Debug, Default)]
struct Buckets {
    by_values: HashMap<Vec<String>, (TokenBucket, u64)>,
    uses: u64,
}

/// Envoy's `AtomicTokenBucket`: at most `max` tokens, `per_second` more each second.
#[derive(Debug)]
struct TokenBucket {
    max: f64,
    per_second: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date; none before the first request, so that
    /// compiling a config reads no clock.
    at: Option<Instant>,
}

impl LocalRateLimit {
    pub(crate) fn new(config: &LocalRateLimitConfig) -> Self {
        let mut default = None;
        let mut rules = Vec::new();
        for rule in &config.rules {
            let selectors: Vec<HeaderSelector> = rule
                .client_selectors
                .iter()
                .flat_map(|s| s.headers.iter().cloned())
                .collect();
            if selectors.is_empty() {
                // Envoy Gateway keeps the last rule without selectors as the default.
                default = Some(Mutex::new(TokenBucket::full(&rule.limit)));
            } else {
                rules.push(Rule {
                    selectors,
                    limit: rule.limit.clone(),
                    buckets: Mutex::default(),
                });
            }
        }
        rules.sort_by(|a, b| per_second(&a.limit).total_cmp(&per_second(&b.limit)));
        Self { default, rules }
    }

    /// Takes a token for `request` from each bucket it draws on; false when one is empty.
    pub(crate) fn allow(&self, request: &Headers, now: Instant) -> bool {
        let mut matched = false;
        for rule in &self.rules {
            let Some(values) = rule.values(request) else {
                continue;
            };
            matched = true;
            if !rule.take(values, now) {
                return false;
            }
        }
        if matched {
            return true;
        }
        self.default.as_ref().is_none_or(|bucket| {
            bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now)
        })
    }
}

impl Rule {
    /// The values of the rule's `Distinct` selectors, or `None` when a selector produces no
    /// entry (the rule does not apply).
    fn values(&self, request: &Headers) -> Option<Vec<String>> {
        let mut values = Vec::new();
        for selector in &self.selectors {
            match select(selector, request)? {
                Selected::Value(value) => values.push(value),
                Selected::Matched => {}
            }
        }
        Some(values)
    }

    fn take(&self, values: Vec<String>, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.uses += 1;
        let used = buckets.uses;
        if !buckets.by_values.contains_key(&values)
            && buckets.by_values.len() >= MAX_DYNAMIC_DESCRIPTORS
        {
            // Only a new value past the bound pays for this scan.
            if let Some(oldest) = buckets
                .by_values
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(values, _)| values.clone())
            {
                buckets.by_values.remove(&oldest);
            }
        }
        let (bucket, last) = buckets
            .by_values
            .entry(values)
            .or_insert_with(|| (TokenBucket::full(&self.limit), used));
        *last = used;
        bucket.take(now)
    }
}

impl TokenBucket {
    fn full(limit: &LimitConfig) -> Self {
        #[expect(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
        let max = limit.requests as f64;
        Self {
            max,
            per_second: per_second(limit),
            tokens: max,
            at: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.max);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn per_second(limit: &LimitConfig) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let requests = limit.requests as f64;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a unit is at most a day of seconds"
    )]
    let seconds = limit.unit.seconds() as f64;
    requests / seconds
}

#[cfg(test)]
mod tests;
