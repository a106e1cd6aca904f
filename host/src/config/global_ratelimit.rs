//! `globalRateLimit` in the gateway's config: the shapes of a `BackendTrafficPolicy`'s global
//! rate limit (Envoy Gateway's `spec.rateLimit.global`) and the checks serde cannot do. What
//! counts requests against them is [`crate::global_ratelimit`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::ConfigDuration;

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
    pub(crate) fn seconds(self) -> u64 {
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
        errors.extend(check_rules(&self.rules, "globalRateLimit"));
        errors
    }
}

/// The checks of a rule list serde cannot do (the global and the local limit share them),
/// each naming its field under `at`.
pub(crate) fn check_rules(rules: &[RuleConfig], at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        if rule.limit.requests == 0 {
            errors.push(format!(
                "{at}.rules[{r}].limit.requests: must be greater than 0"
            ));
        }
        for (s, selector) in rule.client_selectors.iter().enumerate() {
            for (h, header) in selector.headers.iter().enumerate() {
                let at = format!("{at}.rules[{r}].clientSelectors[{s}].headers[{h}]");
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
