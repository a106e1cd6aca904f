//! A route's `localRateLimit` in the gateway's config: a `BackendTrafficPolicy`'s
//! `spec.rateLimit.local` (Envoy Gateway's shape, the global limit's rules), and the checks
//! serde cannot do. What counts requests against it is [`crate::local_ratelimit`].

use serde::{Deserialize, Serialize};

use super::global_ratelimit::{RuleConfig, check_rules};

/// `routes[].localRateLimit`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRateLimitConfig {
    /// A rule without `clientSelectors` is the route's default bucket (the last one, when
    /// several); the others apply to the requests their selectors pick.
    pub rules: Vec<RuleConfig>,
}

impl LocalRateLimitConfig {
    /// The checks serde cannot do, each naming its field under `at`.
    pub fn check(&self, at: &str) -> Vec<String> {
        let mut errors = check_rules(&self.rules, at);
        // Envoy's limiter refills every descriptor on multiples of the default bucket's
        // interval, so Envoy Gateway refuses a rule whose unit is not one
        // (internal/gatewayapi/backendtrafficpolicy.go, buildLocalRateLimit).
        if let Some(default) = self
            .rules
            .iter()
            .rev()
            .find(|r| r.client_selectors.iter().all(|s| s.headers.is_empty()))
        {
            let unit = default.limit.unit.seconds();
            for (r, rule) in self.rules.iter().enumerate() {
                if rule.limit.unit.seconds() % unit != 0 {
                    errors.push(format!(
                        "{at}.rules[{r}].limit.unit: must be a multiple of the default rule's unit ({:?})",
                        default.limit.unit
                    ));
                }
            }
        }
        errors
    }
}
