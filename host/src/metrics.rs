//! The gateway's own metrics and the Prometheus text exposition of them together with every
//! metric the filters define.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use modelgate_runtime::{MetricSnapshot, MetricValue};

use crate::cluster::Clusters;

/// Upper bounds (seconds) of the upstream latency histogram.
const LATENCY_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct HostMetrics {
    requests: RwLock<RequestCounts>,
    upstream_latency: Mutex<BTreeMap<String, Histogram>>,
    active_connections: Mutex<BTreeMap<String, i64>>,
    active_requests: AtomicI64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// Request counters by listener, route, cluster and status. Nested maps let a request find
/// its counter by `&str` without building an owned key: once a series exists, counting is a
/// shared lock and one atomic add, with no allocation (before, three `String`s and an
/// exclusive lock per request). Iteration order is that of the (listener, route, cluster,
/// status) tuple, so the exposition is unchanged.
type RequestCounts = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<u16, AtomicU64>>>>;

#[derive(Default, Clone)]
struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    counts: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

// Plain counters: a panic elsewhere cannot leave them inconsistent, so poison is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The value of `key` in a map keyed by `String`, inserted (allocating the key) only when
/// absent, so the common case looks up by `&str` and allocates nothing.
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl HostMetrics {
    pub fn count_request(&self, listener: &str, route: &str, cluster: &str, status: u16) {
        let counted = read(&self.requests)
            .get(listener)
            .and_then(|routes| routes.get(route))
            .and_then(|clusters| clusters.get(cluster))
            .and_then(|statuses| statuses.get(&status))
            .map(|counter| counter.fetch_add(1, Ordering::Relaxed))
            .is_some();
        if !counted {
            // First request of this series: the only path that allocates.
            let mut requests = write(&self.requests);
            let statuses = slot(slot(slot(&mut requests, listener), route), cluster);
            statuses
                .entry(status)
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn observe_upstream(&self, cluster: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut histograms = lock(&self.upstream_latency);
        let h = slot(&mut histograms, cluster);
        let slot = LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        h.counts[slot] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    pub fn connection_opened(&self, listener: &str) {
        *slot(&mut lock(&self.active_connections), listener) += 1;
    }

    pub fn connection_closed(&self, listener: &str) {
        *slot(&mut lock(&self.active_connections), listener) -= 1;
    }

    pub fn request_started(&self) {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.active_requests.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn count_reload(&self, ok: bool) {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Everything in Prometheus text format 0.0.4.
    pub fn render(
        &self,
        clusters: &Clusters,
        vm_restarts: u64,
        filter_metrics: &[MetricSnapshot],
        tags: &[String],
    ) -> String {
        let mut out = String::new();
        self.render_requests(&mut out);
        header(
            &mut out,
            "modelgate_upstream_request_duration_seconds",
            "histogram",
            "Time from sending a request upstream to its response headers.",
        );
        for (cluster, h) in lock(&self.upstream_latency).iter() {
            let mut running = 0;
            let cumulative: Vec<(String, u64)> = h
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    running += c;
                    let le = LATENCY_BOUNDS
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
                    (le, running)
                })
                .collect();
            write_histogram(
                &mut out,
                "modelgate_upstream_request_duration_seconds",
                &[("cluster", cluster)],
                &cumulative,
                h.sum,
                h.count,
            );
        }
        header(
            &mut out,
            "modelgate_active_connections",
            "gauge",
            "Client connections open, by listener.",
        );
        for (listener, v) in lock(&self.active_connections).iter() {
            let _ = writeln!(
                out,
                "modelgate_active_connections{} {v}",
                labels(&[("listener", listener)])
            );
        }
        header(
            &mut out,
            "modelgate_active_requests",
            "gauge",
            "Requests in flight.",
        );
        let _ = writeln!(
            out,
            "modelgate_active_requests {}",
            self.active_requests.load(Ordering::Relaxed)
        );
        render_clusters(&mut out, clusters);
        header(
            &mut out,
            "modelgate_vm_restarts_total",
            "counter",
            "Wasm VMs rebuilt after a trap, deadline or memory blow-up.",
        );
        let _ = writeln!(out, "modelgate_vm_restarts_total {vm_restarts}");
        header(
            &mut out,
            "modelgate_config_reloads_total",
            "counter",
            "Config reloads, by result.",
        );
        let _ = writeln!(
            out,
            "modelgate_config_reloads_total{{result=\"success\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "modelgate_config_reloads_total{{result=\"failure\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        render_filter_metrics(&mut out, filter_metrics, tags);
        out
    }
    /// `modelgate_requests_total`, one series per (listener, route, cluster, status).
    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "modelgate_requests_total",
            "counter",
            "Requests answered, by listener, route, cluster and status.",
        );
        for (listener, routes) in read(&self.requests).iter() {
            for (route, clusters) in routes {
                for (cluster, statuses) in clusters {
                    for (status, v) in statuses {
                        let labels = labels(&[
                            ("listener", listener),
                            ("route", route),
                            ("cluster", cluster),
                            ("status", &status.to_string()),
                        ]);
                        let v = v.load(Ordering::Relaxed);
                        let _ = writeln!(out, "modelgate_requests_total{labels} {v}");
                    }
                }
            }
        }
    }
}

fn render_clusters(out: &mut String, clusters: &Clusters) {
    let mut names: Vec<&String> = clusters.keys().collect();
    names.sort();
    header(
        out,
        "modelgate_upstream_endpoint_healthy",
        "gauge",
        "1 while an endpoint takes traffic, 0 while ejected.",
    );
    for name in &names {
        for e in &clusters[*name].endpoints {
            let l = labels(&[("cluster", name), ("endpoint", &e.address.to_string())]);
            let _ = writeln!(
                out,
                "modelgate_upstream_endpoint_healthy{l} {}",
                u8::from(!e.is_ejected())
            );
        }
    }
    header(
        out,
        "modelgate_upstream_ejections_total",
        "counter",
        "Endpoint ejections by passive health checking.",
    );
    for name in &names {
        for e in &clusters[*name].endpoints {
            let l = labels(&[("cluster", name), ("endpoint", &e.address.to_string())]);
            let _ = writeln!(
                out,
                "modelgate_upstream_ejections_total{l} {}",
                e.ejections()
            );
        }
    }
    header(
        out,
        "modelgate_upstream_retries_total",
        "counter",
        "Requests sent again to another endpoint.",
    );
    for name in &names {
        let _ = writeln!(
            out,
            "modelgate_upstream_retries_total{} {}",
            labels(&[("cluster", name)]),
            clusters[*name].retries()
        );
    }
}

/// Envoy exports filter metrics as `wasmcustom.<name>`; Prometheus names allow only
/// `[a-zA-Z0-9_]`, so everything else becomes `_` (as Envoy's Prometheus output does).
fn sanitize(name: &str) -> String {
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

/// Label pairs of one series.
type Labels = Vec<(String, String)>;

/// A filter metric's series name and labels: each `.<tag>.<value>` segment pair whose tag is
/// configured is taken out of the name and becomes a label (Envoy's tag extraction).
fn series(name: &str, tags: &[String]) -> (String, Labels) {
    let parts: Vec<&str> = name.split('.').collect();
    let mut kept = Vec::with_capacity(parts.len());
    let mut labels = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        // The first segment is always part of the name, so a name is never emptied.
        if i > 0 && i + 1 < parts.len() && tags.iter().any(|t| t == parts[i]) {
            labels.push((sanitize(parts[i]), parts[i + 1].to_owned()));
            i += 2;
        } else {
            kept.push(parts[i]);
            i += 1;
        }
    }
    (format!("wasmcustom_{}", sanitize(&kept.join("."))), labels)
}

fn render_filter_metrics(out: &mut String, metrics: &[MetricSnapshot], tags: &[String]) {
    let mut by_series: BTreeMap<String, Vec<(Labels, &MetricValue)>> = BTreeMap::new();
    for metric in metrics {
        let (name, labels) = series(&metric.name, tags);
        by_series
            .entry(name)
            .or_default()
            .push((labels, &metric.value));
    }
    for (name, mut entries) in by_series {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let kind = match entries[0].1 {
            MetricValue::Counter(_) => "counter",
            MetricValue::Gauge(_) => "gauge",
            MetricValue::Histogram { .. } => "histogram",
        };
        header(out, &name, kind, "Defined by a Proxy-Wasm filter.");
        for (pairs, value) in entries {
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match value {
                MetricValue::Counter(v) => {
                    let _ = writeln!(out, "{name}{} {v}", labels(&borrowed));
                }
                MetricValue::Gauge(v) => {
                    let _ = writeln!(out, "{name}{} {v}", labels(&borrowed));
                }
                MetricValue::Histogram {
                    buckets,
                    sum,
                    count,
                } => {
                    // The runtime's buckets are already cumulative; `+Inf` is the total count.
                    let mut cumulative: Vec<(String, u64)> =
                        buckets.iter().map(|(b, c)| (b.to_string(), *c)).collect();
                    cumulative.push(("+Inf".to_owned(), *count));
                    write_histogram(out, &name, &borrowed, &cumulative, *sum, *count);
                }
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes `_bucket` lines from cumulative `(le, count)` pairs (the last being `+Inf`), then
/// `_sum` and `_count`.
fn write_histogram(
    out: &mut String,
    name: &str,
    base: &[(&str, &str)],
    cumulative: &[(String, u64)],
    sum: f64,
    count: u64,
) {
    for (le, c) in cumulative {
        let mut l = base.to_vec();
        l.push(("le", le));
        let _ = writeln!(out, "{name}_bucket{} {c}", labels(&l));
    }
    let _ = writeln!(out, "{name}_sum{} {sum}", labels(base));
    let _ = writeln!(out, "{name}_count{} {count}", labels(base));
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_metric_names_are_sanitised_or_split_into_labels() {
        let tags = ["model".to_owned(), "outcome".to_owned()];
        assert_eq!(
            series("modelgate.requests-total", &[]),
            ("wasmcustom_modelgate_requests_total".into(), vec![])
        );
        assert_eq!(
            series("modelgate.requests.model.iris.outcome.allowed", &tags),
            (
                "wasmcustom_modelgate_requests".into(),
                vec![
                    ("model".into(), "iris".into()),
                    ("outcome".into(), "allowed".into())
                ]
            )
        );
        // Without tags configured the name is only sanitised.
        assert_eq!(
            series("modelgate.requests.model.iris.outcome.allowed", &[]),
            (
                "wasmcustom_modelgate_requests_model_iris_outcome_allowed".into(),
                vec![]
            )
        );
        // A tag as the last segment has no value: it stays in the name.
        assert_eq!(
            series("a.model", &tags),
            ("wasmcustom_a_model".into(), vec![])
        );
    }

    #[test]
    fn request_series_are_counted_apart_and_listed_in_key_order() {
        let m = HostMetrics::default();
        for (listener, route, status) in [
            ("b", "r", 200),
            ("a", "r", 503),
            ("a", "r", 200),
            ("a", "", 404),
            ("a", "r", 200),
        ] {
            m.count_request(listener, route, "c", status);
        }
        let text = m.render(&Clusters::new(), 0, &[], &[]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("modelgate_requests_total{"))
            .collect();
        assert_eq!(
            lines,
            [
                "modelgate_requests_total{listener=\"a\",route=\"\",cluster=\"c\",status=\"404\"} 1",
                "modelgate_requests_total{listener=\"a\",route=\"r\",cluster=\"c\",status=\"200\"} 2",
                "modelgate_requests_total{listener=\"a\",route=\"r\",cluster=\"c\",status=\"503\"} 1",
                "modelgate_requests_total{listener=\"b\",route=\"r\",cluster=\"c\",status=\"200\"} 1",
            ]
        );
    }

    #[test]
    fn renders_host_and_filter_metrics() {
        let m = HostMetrics::default();
        m.count_request("main", "r", "c", 200);
        m.count_request("main", "r", "c", 200);
        m.observe_upstream("c", Duration::from_millis(3));
        let filter = [
            MetricSnapshot {
                name: "hits.model.a\"b".into(),
                value: MetricValue::Counter(7),
            },
            MetricSnapshot {
                name: "lat".into(),
                value: MetricValue::Histogram {
                    buckets: vec![(1.0, 2), (10.0, 3)],
                    sum: 12.0,
                    count: 4,
                },
            },
        ];
        let text = m.render(&Clusters::new(), 3, &filter, &["model".to_owned()]);
        assert!(text.contains("modelgate_requests_total{listener=\"main\",route=\"r\",cluster=\"c\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("modelgate_upstream_request_duration_seconds_bucket{cluster=\"c\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(
            text.contains(
                "modelgate_upstream_request_duration_seconds_bucket{cluster=\"c\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("modelgate_vm_restarts_total 3\n"), "{text}");
        assert!(
            text.contains("wasmcustom_hits{model=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "wasmcustom_lat_bucket{le=\"10\"} 3\nwasmcustom_lat_bucket{le=\"+Inf\"} 4\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE wasmcustom_lat histogram\n"), "{text}");
    }
}
