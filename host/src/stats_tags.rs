//! Envoy's stats tag extraction (`stats_config.stats_tags`) and the Prometheus names Envoy's
//! `/stats/prometheus` gives the metrics a Proxy-Wasm filter defines, so a query written
//! against this gateway's `/metrics` works unchanged against Envoy.
//!
//! - Envoy stores a filter's metric `NAME` as `wasmcustom.NAME` (the custom stat namespace,
//!   `CustomStatNamespace` in envoy `source/extensions/common/wasm/stats_handler.h`).
//! - Each tag extractor is a regex over that full name: its first capture group is cut from
//!   the name and its second (or, with only one, the first) is the tag's value
//!   (`TagExtractorStdRegexImpl::extractTag`, envoy `source/common/stats/tag_extractor_impl.cc`).
//! - `/stats/prometheus` strips the registered custom namespace from the tag-extracted name
//!   and adds no `envoy_` prefix; every character outside `[a-zA-Z0-9_]` becomes `_`, and a
//!   name that is then empty or starts with a digit is not exported
//!   (`PrometheusStatsFormatter::metricName`, envoy `source/server/admin/prometheus_stats.cc`).
//!
//! The rules come from the admin config (`statsTags`) or straight from the `EnvoyProxy`
//! manifest deploy/ applies (`statsTagsFromEnvoyProxy`), whose bootstrap JSON patches append
//! to `/stats_config/stats_tags`: the gateway then names metrics as the cluster's Envoy does.

use std::path::Path;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Envoy's custom stat namespace for metrics a Wasm filter defines.
pub(crate) const WASM_NAMESPACE: &str = "wasmcustom";

/// One `stats_config.stats_tags[]` entry (`envoy.config.metrics.v3.TagSpecifier` with `regex`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TagSpecifier {
    /// The tag (Prometheus label) name. Envoy's bootstrap spells it `tag_name`; the gateway's
    /// config accepts `tagName` as well.
    #[serde(alias = "tagName")]
    pub tag_name: String,
    pub regex: String,
}

/// Compiled tag extractors, in configuration order.
#[derive(Debug, Default)]
pub(crate) struct TagExtractors {
    extractors: Vec<(String, Regex)>,
}

/// Label pairs of one series, in extraction order.
pub(crate) type Tags = Vec<(String, String)>;

impl TagExtractors {
    /// Compiles `specs`; errors name `at[i].regex`.
    pub(crate) fn compile(specs: &[TagSpecifier], at: &str) -> Result<TagExtractors, String> {
        let extractors = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                crate::pattern::compile_regex(&spec.regex)
                    .map(|regex| (spec.tag_name.clone(), regex))
                    .map_err(|e| format!("{at}[{i}].regex: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TagExtractors { extractors })
    }

    /// Envoy's tag extraction over a full stat name: every extractor whose regex matches and
    /// has a capture group yields a tag, and the first group's span is removed from the name.
    pub(crate) fn extract(&self, name: &str) -> (String, Tags) {
        let mut tags = Vec::new();
        let mut removed: Vec<(usize, usize)> = Vec::new();
        for (tag_name, regex) in &self.extractors {
            let Some(caps) = regex.captures(name) else {
                continue;
            };
            let Some(remove) = caps.get(1) else { continue };
            let value = caps.get(2).unwrap_or(remove);
            tags.push((tag_name.clone(), value.as_str().to_owned()));
            removed.push((remove.start(), remove.end()));
        }
        if removed.is_empty() {
            return (name.to_owned(), tags);
        }
        // Envoy removes the union of the spans (an IntervalSet), so overlaps cut once.
        let kept: String = name
            .char_indices()
            .filter(|(i, _)| !removed.iter().any(|(s, e)| (*s..*e).contains(i)))
            .map(|(_, c)| c)
            .collect();
        (kept, tags)
    }

    /// The Prometheus series name and labels Envoy's `/stats/prometheus` gives the metric a
    /// Wasm filter defined as `name`; `None` when Envoy would not export it.
    pub(crate) fn wasm_series(&self, name: &str) -> Option<(String, Tags)> {
        let (extracted, tags) = self.extract(&format!("{WASM_NAMESPACE}.{name}"));
        let stripped = extracted.strip_prefix(WASM_NAMESPACE)?.strip_prefix('.')?;
        let metric = sanitize(stripped);
        if metric.is_empty() || metric.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let tags = tags.into_iter().map(|(k, v)| (sanitize(&k), v)).collect();
        Some((metric, tags))
    }
}

/// Prometheus names allow only `[a-zA-Z0-9_]`; Envoy turns everything else into `_`.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The tag rules an `EnvoyProxy` manifest adds to Envoy's bootstrap: each
/// `spec.bootstrap.jsonPatches[]` entry `{op: add, path: /stats_config/stats_tags/-, value}`.
/// Patches to other paths are ignored (they do not touch tag extraction); a `stats_tags` patch
/// of another shape is an error naming its index.
pub(crate) fn from_envoy_proxy(path: &Path) -> Result<Vec<TagSpecifier>, String> {
    let proxy = &crate::envoy_proxy::read(path)?;
    from_envoy_proxy_document(proxy)
}

/// [`from_envoy_proxy`] over an `EnvoyProxy` object already read (`modelgate --manifests`).
pub(crate) fn from_envoy_proxy_document(
    proxy: &serde_json::Value,
) -> Result<Vec<TagSpecifier>, String> {
    let patches = proxy["spec"]["bootstrap"]["jsonPatches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut specs = Vec::new();
    for (i, patch) in patches.iter().enumerate() {
        let target = patch["path"].as_str().unwrap_or_default();
        if !target.starts_with("/stats_config/stats_tags") {
            continue;
        }
        let at = format!("spec.bootstrap.jsonPatches[{i}]");
        if patch["op"] != "add" || target != "/stats_config/stats_tags/-" {
            return Err(format!(
                "{at}: only `op: add` to /stats_config/stats_tags/- is understood"
            ));
        }
        let spec =
            TagSpecifier::deserialize(&patch["value"]).map_err(|e| format!("{at}.value: {e}"))?;
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tag_name: &str, regex: &str) -> TagSpecifier {
        TagSpecifier {
            tag_name: tag_name.into(),
            regex: regex.into(),
        }
    }

    fn modelgate_tags() -> TagExtractors {
        TagExtractors::compile(
            &[
                spec("model", r"^wasmcustom\.modelgate\.\w+(\.model\.([^.]+))"),
                spec(
                    "outcome",
                    r"^wasmcustom\.modelgate\.requests(?:\.model\.[^.]+)?(\.outcome\.([^.]+))$",
                ),
            ],
            "statsTags",
        )
        .unwrap()
    }

    #[test]
    fn wasm_metrics_lose_the_namespace_and_get_no_envoy_prefix() {
        let none = TagExtractors::default();
        assert_eq!(
            none.wasm_series("modelgate.requests-total"),
            Some(("modelgate_requests_total".into(), vec![]))
        );
        assert_eq!(
            none.wasm_series("modelgate.requests.model.iris.outcome.allowed"),
            Some((
                "modelgate_requests_model_iris_outcome_allowed".into(),
                vec![]
            ))
        );
        // Envoy drops a name that would start with a digit, or is empty.
        assert_eq!(none.wasm_series("9lives"), None);
        assert_eq!(none.wasm_series(""), None);
    }

    #[test]
    fn tag_extraction_cuts_the_first_group_and_labels_with_the_second() {
        let tags = modelgate_tags();
        assert_eq!(
            tags.wasm_series("modelgate.requests.model.sklearn-iris.outcome.rate_limited"),
            Some((
                "modelgate_requests".into(),
                vec![
                    ("model".into(), "sklearn-iris".into()),
                    ("outcome".into(), "rate_limited".into())
                ]
            ))
        );
        assert_eq!(
            tags.wasm_series("modelgate.shadow_rate_limited.model.iris"),
            Some((
                "modelgate_shadow_rate_limited".into(),
                vec![("model".into(), "iris".into())]
            ))
        );
        assert_eq!(
            tags.wasm_series("modelgate.request.duration_ms"),
            Some(("modelgate_request_duration_ms".into(), vec![]))
        );
        // With one group only, the removed part is also the value.
        let one = TagExtractors::compile(&[spec("x", r"(\.v\d)$")], "t").unwrap();
        assert_eq!(
            one.extract("a.b.v2"),
            ("a.b".into(), vec![("x".into(), ".v2".into())])
        );
    }

    #[test]
    fn gen_ai_metrics_get_their_opentelemetry_names_under_the_documented_rules() {
        // The rules docs/config.md gives for the filter's GenAI histograms (section `openai`).
        let tags = TagExtractors::compile(
            &[
                spec(
                    "gen_ai_request_model",
                    r"^wasmcustom\.gen_ai\.[a-z_.]+?(\.model\.([^.]+))",
                ),
                spec(
                    "caller_class",
                    r"^wasmcustom\.gen_ai\.client\.token\.usage(?:\.model\.[^.]+)?(\.caller_class\.([^.]+))",
                ),
                spec(
                    "gen_ai_token_type",
                    r"^wasmcustom\.gen_ai\.client\.token\.usage.*(\.token_type\.([^.]+))$",
                ),
            ],
            "statsTags",
        )
        .unwrap();
        assert_eq!(
            tags.wasm_series(
                "gen_ai.client.token.usage.model.markov-1.caller_class.pro.token_type.output"
            ),
            Some((
                "gen_ai_client_token_usage".into(),
                vec![
                    ("gen_ai_request_model".into(), "markov-1".into()),
                    ("caller_class".into(), "pro".into()),
                    ("gen_ai_token_type".into(), "output".into())
                ]
            ))
        );
        assert_eq!(
            tags.wasm_series("gen_ai.server.time_to_first_token_ms.model.markov-1"),
            Some((
                "gen_ai_server_time_to_first_token_ms".into(),
                vec![("gen_ai_request_model".into(), "markov-1".into())]
            ))
        );
        assert_eq!(
            tags.wasm_series("gen_ai.server.request.duration_ms.model.m"),
            Some((
                "gen_ai_server_request_duration_ms".into(),
                vec![("gen_ai_request_model".into(), "m".into())]
            ))
        );
    }

    #[test]
    fn bad_regexes_name_their_place() {
        let err = TagExtractors::compile(&[spec("m", "(")], "admin.statsTags").unwrap_err();
        assert!(
            err.starts_with("admin.statsTags[0].regex: invalid regex"),
            "{err}"
        );
    }

    #[test]
    fn reads_the_rules_an_envoy_proxy_patches_into_the_bootstrap() {
        let dir = std::env::temp_dir().join(format!("stats-tags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("envoyproxy.yaml");
        std::fs::write(
            &file,
            "kind: EnvoyProxy\nspec:\n  bootstrap:\n    type: JSONPatch\n    jsonPatches:\n      \
             - {op: add, path: /stats_config/stats_tags/-, value: {tag_name: m, regex: 'a(.b)'}}\n      \
             - {op: replace, path: /admin/address, value: {}}\n",
        )
        .unwrap();
        assert_eq!(from_envoy_proxy(&file).unwrap(), vec![spec("m", "a(.b)")]);
        std::fs::write(
            &file,
            "kind: EnvoyProxy\nspec:\n  bootstrap:\n    jsonPatches:\n      \
             - {op: replace, path: /stats_config/stats_tags, value: []}\n",
        )
        .unwrap();
        let err = from_envoy_proxy(&file).unwrap_err();
        assert!(
            err.starts_with("spec.bootstrap.jsonPatches[0]: only"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
