//! Envoy Gateway's rate limits of a `BackendTrafficPolicy` (`spec.rateLimit`,
//! `api/v1alpha1/ratelimit_types.go`) as the host's: `local` as the covered routes'
//! `localRateLimit` (Envoy's local rate limit filter, `internal/xds/translator/local_ratelimit.go`),
//! `global` as the top-level `globalRateLimit` (the rate limit service, counted in Redis;
//! `internal/xds/translator/ratelimit.go`).
//!
//! The Redis is not in the manifests: Envoy Gateway's own config names it
//! (`rateLimit.backend.redis.url`, a Helm value), so `--ratelimit-redis HOST:PORT` gives it.
//! A rule the host cannot count exactly as the cluster does is left out with a warning rather
//! than counted more broadly: a selector on methods, paths, query parameters or source
//! addresses, a `RegularExpression` or inverted header match, a cost, a shared bucket, shadow
//! mode, or a unit past a day.

use serde_json::{Value, json};

use super::fields::Node;
use super::{Translator, target_refs};

/// Header selector types the host matches (`HeaderSelectorKind` in the host config).
const HEADER_TYPES: [&str; 2] = ["Exact", "Distinct"];
/// Units the host's fixed window has (envoyproxy/ratelimit's `UnitToDivider` up to a day).
const UNITS: [&str; 4] = ["Second", "Minute", "Hour", "Day"];
/// Selector fields that narrow what a rule counts, besides headers.
const NARROWING_SELECTORS: [&str; 4] = ["methods", "path", "queryParams", "sourceCIDR"];
/// Rule fields that change how a rule counts.
const COUNTING_FIELDS: [&str; 3] = ["cost", "shared", "shadowMode"];

/// A policy's `rateLimit.local`, as the `localRateLimit` of the routes it covers (all its
/// rules left out: none).
pub(super) fn read_local(t: &Translator<'_>, index: usize, spec: &Node<'_>) -> Option<Value> {
    let rate_limit = spec.get("rateLimit")?;
    // Deprecated: it only says which of `global` and `local` is set.
    rate_limit.accept("type");
    let local = rate_limit.get("local")?;
    let rules: Vec<Value> = local
        .list("rules")
        .iter()
        .filter_map(|rule| read_rule(t, index, rule))
        .collect();
    (!rules.is_empty()).then(|| json!({"rules": rules}))
}

/// The `globalRateLimit` section the manifests ask for, if any.
pub(super) fn read_global(t: &Translator<'_>) -> Option<Value> {
    let mut section = None;
    for index in t.of_kind("BackendTrafficPolicy") {
        let Some(spec) = t.root(index).get("spec") else {
            continue;
        };
        let Some(rate_limit) = spec.get("rateLimit") else {
            continue;
        };
        // Deprecated: it only says which of `global` and `local` is set.
        rate_limit.accept("type");
        let Some(global) = rate_limit.get("global") else {
            continue;
        };
        if target_refs(&spec)
            .first()
            .is_none_or(|r| r.kind != "Gateway")
        {
            global.take();
            t.warn(
                index,
                global.path(),
                "the host applies the global limits of a policy that targets a Gateway only",
            );
            continue;
        }
        if section.is_some() {
            global.take();
            t.warn(
                index,
                global.path(),
                "the host applies one policy's global limits; an earlier one already applies",
            );
            continue;
        }
        let rules: Vec<Value> = global
            .list("rules")
            .iter()
            .filter_map(|rule| read_rule(t, index, rule))
            .collect();
        if rules.is_empty() {
            continue;
        }
        match &t.options.ratelimit_redis {
            Some(redis) => section = Some(json!({"redis": redis, "rules": rules})),
            None => t.missing(
                index,
                global.path(),
                "the Redis of Envoy Gateway's rate limit service (its config's \
                 rateLimit.backend.redis.url): give --ratelimit-redis HOST:PORT",
            ),
        }
    }
    section
}

/// One rule in the host's shape, or `None` (warned) when the host cannot count it as Envoy
/// Gateway does.
fn read_rule(t: &Translator<'_>, index: usize, rule: &Node<'_>) -> Option<Value> {
    let left_out = |node: &Node<'_>, why: String| {
        t.warn(index, node.path(), format!("{why}: the rule is left out"));
        rule.take();
    };
    for field in COUNTING_FIELDS {
        if let Some(node) = rule.get(field) {
            left_out(
                &node,
                format!("{field} (the host counts one request per rule and route)"),
            );
            return None;
        }
    }
    let mut selectors = Vec::new();
    for selector in rule.list("clientSelectors") {
        for field in NARROWING_SELECTORS {
            if let Some(node) = selector.get(field) {
                left_out(&node, "the host selects on headers only".to_owned());
                return None;
            }
        }
        let mut headers = Vec::new();
        for header in selector.list("headers") {
            let kind = header.str("type").unwrap_or_else(|| "Exact".to_owned());
            if !HEADER_TYPES.contains(&kind.as_str()) || header.bool("invert") == Some(true) {
                left_out(
                    &header,
                    format!(
                        "an inverted or {kind} header match (the host matches Exact and Distinct)"
                    ),
                );
                return None;
            }
            let mut out = json!({"type": kind, "name": header.str("name")});
            if let Some(value) = header.str("value") {
                out["value"] = json!(value);
            }
            headers.push(out);
        }
        selectors.push(json!({"headers": headers}));
    }
    let limit = rule.get("limit")?;
    let unit = limit.str("unit").unwrap_or_default();
    if !UNITS.contains(&unit.as_str()) {
        left_out(
            &limit,
            format!("unit {unit:?} (the host's windows go up to a Day)"),
        );
        return None;
    }
    Some(json!({
        "clientSelectors": selectors,
        "limit": {"requests": limit.u64("requests"), "unit": unit},
    }))
}

#[cfg(test)]
mod tests;
