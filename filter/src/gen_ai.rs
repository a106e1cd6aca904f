//! The OpenTelemetry GenAI metrics (semantic conventions `gen_ai.*`) for the models that serve
//! OpenAI, as Proxy-Wasm histograms with their attributes in the name (see `metrics`):
//!
//! - `gen_ai.client.token.usage.model.<m>.caller_class.<c>.token_type.<input|output>`: tokens
//!   per request as settled (`gen_ai.client.token.usage`);
//! - `gen_ai.server.request.duration_ms.model.<m>`: request headers to the end of the stream
//!   (`gen_ai.server.request.duration`, in ms: Envoy's histograms hold integers and its
//!   default buckets are set for milliseconds);
//! - `gen_ai.server.time_to_first_token_ms.model.<m>`: request headers to the first response
//!   body bytes of a stream (`gen_ai.server.time_to_first_token`).
//!
//! All are defined in `on_configure`, for every OpenAI model and caller class, so a request
//! only looks up ids and no client input can create a metric.

use std::sync::Arc;

use proxy_wasm::types::{MetricType, Status};

use crate::metrics::label;

/// The name of a token usage histogram.
pub(crate) fn token_usage_name(model: &str, class: &str, output: bool) -> String {
    let kind = if output { "output" } else { "input" };
    format!(
        "gen_ai.client.token.usage.model.{}.caller_class.{}.token_type.{kind}",
        label(model),
        label(class)
    )
}

/// The name of a model's request duration histogram.
pub(crate) fn duration_name(model: &str) -> String {
    format!("gen_ai.server.request.duration_ms.model.{}", label(model))
}

/// The name of a model's time-to-first-token histogram.
pub(crate) fn first_token_name(model: &str) -> String {
    format!(
        "gen_ai.server.time_to_first_token_ms.model.{}",
        label(model)
    )
}

/// The ids of one model's GenAI histograms.
#[derive(Debug)]
struct ModelMetrics {
    name: Box<str>,
    /// `[input, output]` per caller class, in `classes` order.
    usage: Vec<[u32; 2]>,
    duration: u32,
    first_token: u32,
}

/// The GenAI histogram ids of one VM.
#[derive(Debug, Default)]
pub(crate) struct GenAiMetrics {
    /// Sorted by name.
    models: Vec<ModelMetrics>,
    classes: Vec<Arc<str>>,
}

impl GenAiMetrics {
    /// Define every histogram through `define` for `models` (the OpenAI ones) and `classes`.
    pub(crate) fn define<'a>(
        models: impl IntoIterator<Item = &'a str>,
        classes: Vec<Arc<str>>,
        mut define: impl FnMut(MetricType, &str) -> Result<u32, Status>,
    ) -> Result<Self, Status> {
        let mut names: Vec<&str> = models.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut models = Vec::with_capacity(names.len());
        for model in names {
            let mut usage = Vec::with_capacity(classes.len());
            for class in &classes {
                usage.push([
                    define(
                        MetricType::Histogram,
                        &token_usage_name(model, class, false),
                    )?,
                    define(MetricType::Histogram, &token_usage_name(model, class, true))?,
                ]);
            }
            models.push(ModelMetrics {
                name: model.into(),
                usage,
                duration: define(MetricType::Histogram, &duration_name(model))?,
                first_token: define(MetricType::Histogram, &first_token_name(model))?,
            });
        }
        Ok(Self { models, classes })
    }

    fn model(&self, model: &str) -> Option<&ModelMetrics> {
        let i = self
            .models
            .binary_search_by(|m| (*m.name).cmp(model))
            .ok()?;
        self.models.get(i)
    }

    /// The `[input, output]` token usage histograms of `model` and `class`.
    pub(crate) fn token_usage(&self, model: &str, class: &str) -> Option<[u32; 2]> {
        let column = self.classes.iter().position(|c| **c == *class)?;
        self.model(model)?.usage.get(column).copied()
    }

    /// The request duration histogram of `model`.
    pub(crate) fn duration(&self, model: &str) -> Option<u32> {
        self.model(model).map(|m| m.duration)
    }

    /// The time-to-first-token histogram of `model`.
    pub(crate) fn first_token(&self, model: &str) -> Option<u32> {
        self.model(model).map(|m| m.first_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define_all(models: &[&str], classes: &[&str]) -> (GenAiMetrics, Vec<(MetricType, String)>) {
        let mut defined = Vec::new();
        let metrics = GenAiMetrics::define(
            models.iter().copied(),
            classes.iter().map(|c| Arc::from(*c)).collect(),
            |kind, name| {
                defined.push((kind, name.to_owned()));
                Ok(u32::try_from(defined.len() - 1).unwrap_or(u32::MAX))
            },
        )
        .unwrap();
        (metrics, defined)
    }

    #[test]
    fn every_model_gets_usage_per_class_and_type_and_two_latency_histograms() {
        let (_, defined) = define_all(&["b", "a"], &["free", "anonymous"]);
        assert_eq!(defined.len(), 2 * (2 * 2 + 2));
        assert!(
            defined
                .iter()
                .all(|(kind, _)| *kind == MetricType::Histogram)
        );
        assert!(
            defined.iter().any(|(_, n)| n
                == "gen_ai.client.token.usage.model.a.caller_class.free.token_type.output")
        );
    }

    #[test]
    fn lookups_find_the_histogram_of_that_model_class_and_type() {
        let (metrics, defined) = define_all(&["m.1", "n"], &["free", "pro"]);
        let name = |id: u32| defined[id as usize].1.as_str();
        let [input, output] = metrics.token_usage("n", "pro").unwrap();
        assert_eq!(
            name(input),
            "gen_ai.client.token.usage.model.n.caller_class.pro.token_type.input"
        );
        assert_eq!(
            name(output),
            "gen_ai.client.token.usage.model.n.caller_class.pro.token_type.output"
        );
        assert_eq!(
            name(metrics.duration("m.1").unwrap()),
            "gen_ai.server.request.duration_ms.model.m_1"
        );
        assert_eq!(
            name(metrics.first_token("n").unwrap()),
            "gen_ai.server.time_to_first_token_ms.model.n"
        );
        assert_eq!(metrics.token_usage("n", "gold"), None);
        assert_eq!(metrics.duration("made-up"), None);
    }
}
