//! Metrics filters define: one registry per runtime, keyed by name, like Envoy's stats scope
//! (every VM that defines a name shares the same metric).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Envoy's default histogram bucket bounds (`Stats::HistogramSettingsImpl::defaultBuckets`).
pub const ENVOY_HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricKind {
    pub(crate) fn from_abi(value: u32) -> Option<MetricKind> {
        match value {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

pub(crate) struct Metric {
    name: String,
    pub(crate) kind: MetricKind,
    counter: AtomicU64,
    gauge: AtomicI64,
    histogram: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; ENVOY_HISTOGRAM_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metric {
    pub(crate) fn add(&self, value: u64) {
        self.counter.fetch_add(value, Ordering::Relaxed);
    }

    pub(crate) fn gauge_add(&self, delta: i64) {
        self.gauge.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn gauge_set(&self, value: i64) {
        self.gauge.store(value, Ordering::Relaxed);
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "histogram samples are approximate by nature"
    )]
    pub(crate) fn record(&self, value: u64) {
        let mut h = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let v = value as f64;
        if let Some(i) = ENVOY_HISTOGRAM_BUCKETS.iter().position(|&bound| v <= bound) {
            h.counts[i] += 1;
        }
        h.sum += v;
        h.count += 1;
    }

    pub(crate) fn counter_value(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    pub(crate) fn gauge_value(&self) -> i64 {
        self.gauge.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> MetricSnapshot {
        let value = match self.kind {
            MetricKind::Counter => MetricValue::Counter(self.counter_value()),
            MetricKind::Gauge => MetricValue::Gauge(self.gauge_value()),
            MetricKind::Histogram => {
                let h = self
                    .histogram
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // Cumulative counts per upper bound, as Prometheus `le` buckets are.
                let mut running = 0;
                let buckets = ENVOY_HISTOGRAM_BUCKETS
                    .iter()
                    .zip(h.counts)
                    .map(|(&bound, n)| {
                        running += n;
                        (bound, running)
                    })
                    .collect();
                MetricValue::Histogram {
                    buckets,
                    sum: h.sum,
                    count: h.count,
                }
            }
        };
        MetricSnapshot {
            name: self.name.clone(),
            value,
        }
    }
}

#[derive(Default)]
pub(crate) struct MetricRegistry {
    metrics: Mutex<Vec<Arc<Metric>>>,
    by_name: Mutex<HashMap<(String, u8), Arc<Metric>>>,
}

impl MetricRegistry {
    /// The metric called `name` of `kind`, created on first definition.
    pub(crate) fn define(&self, kind: MetricKind, name: &str) -> Arc<Metric> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (name.to_owned(), kind as u8);
        if let Some(metric) = by_name.get(&key) {
            return Arc::clone(metric);
        }
        let metric = Arc::new(Metric {
            name: name.to_owned(),
            kind,
            counter: AtomicU64::new(0),
            gauge: AtomicI64::new(0),
            histogram: Mutex::new(Histogram::default()),
        });
        by_name.insert(key, Arc::clone(&metric));
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&metric));
        metric
    }

    pub(crate) fn snapshot(&self) -> Vec<MetricSnapshot> {
        let metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        metrics.iter().map(|m| m.snapshot()).collect()
    }
}

/// One metric a filter defined, named as the filter gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSnapshot {
    pub name: String,
    pub value: MetricValue,
}

/// A metric's current value. Histogram buckets are cumulative `(upper bound, count)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}
