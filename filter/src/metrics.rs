//! The metrics the filter defines through the ABI, and the names they get.
//!
//! Proxy-Wasm metrics have no labels, so the labels are encoded in the name, Envoy style:
//!
//! - `modelgate.requests.model.<model>.outcome.<outcome>`: a counter per configured model and
//!   outcome, plus model `_none` for requests that name no known model (the model listing, an
//!   unknown model). Unknown names never become metrics: a client could otherwise create one
//!   metric per made-up model name.
//! - `modelgate.shadow_rate_limited.model.<model>`: a counter per configured model of the
//!   requests over quota that shadow mode let through (counted as `allowed` above).
//! - `modelgate.request.duration_ms`: a histogram of the time from the request headers to the
//!   end of the stream, in milliseconds (the unit Envoy's default histogram buckets assume).
//!
//! Envoy prefixes both with `wasmcustom.`; `filter/README.md` gives the `stats_tags` regexes that
//! turn the encoded names back into `model` and `outcome` tags.
//! Every counter is defined up front in `on_configure`, so a dashboard sees zeros rather than
//! missing series, and a request only looks up an id.

use modelgate_policies::Outcome;
use proxy_wasm::types::{MetricType, Status};

/// Model label for requests that name no configured model.
pub(crate) const NO_MODEL: &str = "_none";

/// Name of the request duration histogram.
pub(crate) const DURATION_METRIC: &str = "modelgate.request.duration_ms";

/// The name of the request counter for `model` and `outcome`.
pub(crate) fn requests_metric_name(model: &str, outcome: Outcome) -> String {
    format!(
        "modelgate.requests.model.{}.outcome.{}",
        label(model),
        outcome.as_str()
    )
}

/// The name of the shadow-mode counter for `model`.
pub(crate) fn shadow_metric_name(model: &str) -> String {
    format!("modelgate.shadow_rate_limited.model.{}", label(model))
}

/// A model name as a name segment: `.` separates segments, so it (and anything Envoy's tag
/// regexes or Prometheus could trip on) becomes `_`.
pub(crate) fn label(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The metric ids of one VM.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Configured model names, sorted, so a lookup is a binary search.
    models: Vec<Box<str>>,
    /// Counter ids, `Outcome::ALL.len()` per model in `models` order, then the `_none` row.
    requests: Vec<u32>,
    /// Shadow-mode counter ids, one per model in `models` order.
    shadow: Vec<u32>,
    duration: u32,
}

impl Metrics {
    /// Define every metric through `define` (`proxy_wasm::hostcalls::define_metric` in the
    /// filter): a counter per model (and `_none`) and outcome, a shadow-mode counter per
    /// model, and the duration histogram.
    pub(crate) fn define<'a>(
        models: impl IntoIterator<Item = &'a str>,
        mut define: impl FnMut(MetricType, &str) -> Result<u32, Status>,
    ) -> Result<Self, Status> {
        let mut models: Vec<Box<str>> = models.into_iter().map(Box::from).collect();
        models.sort_unstable();
        models.dedup();
        let mut requests = Vec::with_capacity((models.len() + 1) * Outcome::ALL.len());
        for model in models.iter().map(AsRef::as_ref).chain([NO_MODEL]) {
            for outcome in Outcome::ALL {
                requests.push(define(
                    MetricType::Counter,
                    &requests_metric_name(model, outcome),
                )?);
            }
        }
        let shadow = models
            .iter()
            .map(|model| define(MetricType::Counter, &shadow_metric_name(model)))
            .collect::<Result<_, _>>()?;
        let duration = define(MetricType::Histogram, DURATION_METRIC)?;
        Ok(Self {
            models,
            requests,
            shadow,
            duration,
        })
    }

    /// The counter for a request that ended with `outcome` for `model` (`None`: no known model).
    pub(crate) fn requests(&self, model: Option<&str>, outcome: Outcome) -> Option<u32> {
        // A model the configuration does not list is counted as `_none`.
        let row = model
            .and_then(|model| self.row(model))
            .unwrap_or(self.models.len());
        let column = Outcome::ALL.iter().position(|o| *o == outcome)?;
        self.requests
            .get(row * Outcome::ALL.len() + column)
            .copied()
    }

    /// The shadow-mode counter of a configured `model`.
    pub(crate) fn shadow_rate_limited(&self, model: &str) -> Option<u32> {
        self.shadow.get(self.row(model)?).copied()
    }

    fn row(&self, model: &str) -> Option<usize> {
        self.models
            .binary_search_by(|known| known.as_ref().cmp(model))
            .ok()
    }

    /// The duration histogram.
    pub(crate) fn duration(&self) -> u32 {
        self.duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defines metrics into a list, the id being the index, as a host would number them.
    fn define_all(models: &[&str]) -> (Metrics, Vec<(MetricType, String)>) {
        let mut defined = Vec::new();
        let metrics = Metrics::define(models.iter().copied(), |kind, name| {
            defined.push((kind, name.to_owned()));
            Ok(u32::try_from(defined.len() - 1).unwrap_or(u32::MAX))
        })
        .unwrap();
        (metrics, defined)
    }

    fn name_of(defined: &[(MetricType, String)], id: Option<u32>) -> &str {
        let id = usize::try_from(id.unwrap()).unwrap();
        &defined[id].1
    }

    #[test]
    fn names_encode_model_and_outcome() {
        assert_eq!(
            requests_metric_name("sklearn-iris", Outcome::RateLimited),
            "modelgate.requests.model.sklearn-iris.outcome.rate_limited"
        );
    }

    #[test]
    fn dots_and_odd_characters_in_model_names_cannot_add_name_segments() {
        assert_eq!(
            requests_metric_name("a.b/c d", Outcome::Allowed),
            "modelgate.requests.model.a_b_c_d.outcome.allowed"
        );
    }

    #[test]
    fn defines_counters_per_model_and_outcome_plus_none_shadow_counters_and_one_histogram() {
        let (_, defined) = define_all(&["wine", "iris"]);
        let counters = defined
            .iter()
            .filter(|(kind, _)| *kind == MetricType::Counter)
            .count();
        assert_eq!(counters, 3 * Outcome::ALL.len() + 2);
        let histograms: Vec<&str> = defined
            .iter()
            .filter(|(kind, _)| *kind == MetricType::Histogram)
            .map(|(_, name)| name.as_str())
            .collect();
        assert_eq!(histograms, [DURATION_METRIC]);
        assert!(
            defined
                .iter()
                .any(|(_, name)| name == "modelgate.requests.model._none.outcome.unknown_model")
        );
    }

    #[test]
    fn looks_up_the_counter_of_each_model_and_outcome() {
        let (metrics, defined) = define_all(&["wine", "iris"]);
        for model in ["iris", "wine"] {
            for outcome in Outcome::ALL {
                assert_eq!(
                    name_of(&defined, metrics.requests(Some(model), outcome)),
                    requests_metric_name(model, outcome)
                );
            }
        }
        assert_eq!(
            name_of(&defined, metrics.requests(None, Outcome::Allowed)),
            "modelgate.requests.model._none.outcome.allowed"
        );
    }

    #[test]
    fn each_configured_model_has_a_shadow_mode_counter() {
        let (metrics, defined) = define_all(&["wine", "iris"]);
        assert_eq!(
            name_of(&defined, metrics.shadow_rate_limited("iris")),
            "modelgate.shadow_rate_limited.model.iris"
        );
        assert_eq!(
            name_of(&defined, metrics.shadow_rate_limited("wine")),
            "modelgate.shadow_rate_limited.model.wine"
        );
        assert_eq!(metrics.shadow_rate_limited("made-up"), None);
    }

    #[test]
    fn unconfigured_model_names_share_the_none_counter() {
        let (metrics, _) = define_all(&["iris"]);
        assert_eq!(
            metrics.requests(Some("made-up"), Outcome::UnknownModel),
            metrics.requests(None, Outcome::UnknownModel)
        );
    }

    #[test]
    fn a_failing_definition_fails_the_whole_set() {
        let result = Metrics::define(["iris"], |_, _| Err(Status::InternalFailure));
        assert!(result.is_err());
    }
}
