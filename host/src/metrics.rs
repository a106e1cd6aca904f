//! The gateway's own metrics and the Prometheus text exposition of them together with every
//! metric the filters define.
//!
//! The gateway's series carry the names and labels Envoy's `/stats/prometheus` gives their
//! counterparts (`envoy_http_downstream_rq_xx`, `envoy_cluster_upstream_rq_total`, …; labels
//! from Envoy's default tag extractors, envoy `source/common/config/well_known_names.cc`), so a
//! dashboard or alert works against both. The few with no Envoy counterpart keep a
//! `modelgate_` name (per-endpoint health, VM rebuilds, config reloads). Filter metrics are
//! named as Envoy names them (`stats_tags.rs`).
//!
//! The text is written here, not by a Prometheus crate, because neither maintained one renders
//! what Envoy writes and the tests assert (checked against their encoders' source):
//! `prometheus-client` (`prometheus/client_rust`, `src/encoding/text.rs`) writes `OpenMetrics`:
//! a `_total` suffix on every counter (`conformance_requests{} 4` would become
//! `conformance_requests_total 4`, `envoy_cluster_upstream_rq_total` would end `_total_total`),
//! a `# HELP` line always, `_sum` and `_count` before the buckets, and `# EOF`;
//! `prometheus` (`tikv/rust-prometheus`, `src/encoder/text.rs`) writes a series without labels
//! with no `{}`, where Envoy's `PrometheusStatsFormatter` writes `name{} value`
//! (`envoy_wasm_<plugin>_vm_reload_success{} 0`, every filter metric without tags). Either would
//! also hold a second copy of the values the runtime and the gateway already count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use modelgate_runtime::{ENVOY_HISTOGRAM_BUCKETS, MetricSnapshot, MetricValue, PluginStats};

use crate::cluster::Clusters;
use crate::stats_tags::{TagExtractors, Tags};

/// The tracer's counters: Envoy's `tracing.opentelemetry.*` stats, and the spans the
/// gateway's bounded export queue dropped (`tracing::export`).
fn render_tracing(out: &mut String) {
    let stats = &crate::tracing::STATS;
    for (name, help, value) in [
        (
            "envoy_tracing_opentelemetry_spans_sent",
            "Spans handed to an OTLP export.",
            &stats.spans_sent,
        ),
        (
            "envoy_tracing_opentelemetry_timer_flushed",
            "Span flushes by the flush interval.",
            &stats.timer_flushed,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let name = "modelgate_tracing_spans_dropped_total";
    header(
        out,
        name,
        "counter",
        "Spans not exported: the queue to the exporter was full, or the export failed.",
    );
    for (reason, value) in [
        ("queue_full", &stats.dropped_queue_full),
        ("export_failed", &stats.dropped_export_failed),
    ] {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{reason}\"}} {}",
            value.load(Ordering::Relaxed)
        );
    }
}

/// Envoy's label for the HTTP connection manager's stat prefix; the gateway's is the listener
/// name (under Envoy Gateway it is `http-<port>` or `https-<port>`).
const HCM_PREFIX: &str = "envoy_http_conn_manager_prefix";
const CLUSTER_NAME: &str = "envoy_cluster_name";

#[derive(Default)]
pub(crate) struct HostMetrics {
    /// Requests answered, by listener and status (`envoy_http_downstream_rq_*`).
    downstream: RwLock<StatusCounts>,
    /// Requests routed to a cluster, by cluster and status (`envoy_cluster_upstream_rq_*`).
    upstream: RwLock<StatusCounts>,
    upstream_latency: Mutex<BTreeMap<String, Histogram>>,
    active_connections: Mutex<BTreeMap<String, i64>>,
    active_requests: RwLock<BTreeMap<String, AtomicI64>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// Counters by name (listener or cluster) and status. Nested maps let a request find its
/// counter by `&str` without building an owned key: once a series exists, counting is a
/// shared lock and one atomic add, with no allocation.
type StatusCounts = BTreeMap<String, BTreeMap<u16, AtomicU64>>;

#[derive(Default, Clone)]
struct Histogram {
    /// Per-bucket (not cumulative) counts over Envoy's default bounds; the last slot is `+Inf`.
    counts: [u64; ENVOY_HISTOGRAM_BUCKETS.len() + 1],
    /// Sum of the samples, in milliseconds.
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

fn count_status(counts: &RwLock<StatusCounts>, name: &str, status: u16) {
    let counted = read(counts)
        .get(name)
        .and_then(|statuses| statuses.get(&status))
        .map(|counter| counter.fetch_add(1, Ordering::Relaxed))
        .is_some();
    if !counted {
        // First request of this series: the only path that allocates.
        slot(&mut write(counts), name)
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl HostMetrics {
    /// One answered request: counted for its listener, and for its cluster when it was routed
    /// to one (`cluster` is empty when the gateway or a filter answered without an upstream).
    pub(crate) fn count_request(&self, listener: &str, cluster: &str, status: u16) {
        count_status(&self.downstream, listener, status);
        if !cluster.is_empty() {
            count_status(&self.upstream, cluster, status);
        }
    }

    pub(crate) fn observe_upstream(&self, cluster: &str, elapsed: Duration) {
        let millis = elapsed.as_secs_f64() * 1000.0;
        let mut histograms = lock(&self.upstream_latency);
        let h = slot(&mut histograms, cluster);
        let slot = ENVOY_HISTOGRAM_BUCKETS
            .iter()
            .position(|b| millis <= *b)
            .unwrap_or(ENVOY_HISTOGRAM_BUCKETS.len());
        h.counts[slot] += 1;
        h.sum += millis;
        h.count += 1;
    }

    pub(crate) fn connection_opened(&self, listener: &str) {
        *slot(&mut lock(&self.active_connections), listener) += 1;
    }

    pub(crate) fn connection_closed(&self, listener: &str) {
        *slot(&mut lock(&self.active_connections), listener) -= 1;
    }

    pub(crate) fn request_started(&self, listener: &str) {
        self.add_active(listener, 1);
    }

    pub(crate) fn request_finished(&self, listener: &str) {
        self.add_active(listener, -1);
    }

    fn add_active(&self, listener: &str, delta: i64) {
        let added = read(&self.active_requests)
            .get(listener)
            .map(|gauge| gauge.fetch_add(delta, Ordering::Relaxed))
            .is_some();
        if !added {
            slot(&mut write(&self.active_requests), listener).fetch_add(delta, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_reload(&self, ok: bool) {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Everything in Prometheus text format 0.0.4.
    pub(crate) fn render(
        &self,
        clusters: &Clusters,
        plugin_stats: &[(String, PluginStats)],
        filter_metrics: &[MetricSnapshot],
        tags: &TagExtractors,
    ) -> String {
        let mut out = String::new();
        render_status_counts(
            &mut out,
            &read(&self.downstream),
            "envoy_http_downstream_rq",
            HCM_PREFIX,
        );
        render_status_counts(
            &mut out,
            &read(&self.upstream),
            "envoy_cluster_upstream_rq",
            CLUSTER_NAME,
        );
        header(
            &mut out,
            "envoy_cluster_upstream_rq_time",
            "histogram",
            "Milliseconds from sending a request upstream to its response headers.",
        );
        for (cluster, h) in lock(&self.upstream_latency).iter() {
            let mut running = 0;
            let cumulative: Vec<(String, u64)> = h
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    running += c;
                    let le = ENVOY_HISTOGRAM_BUCKETS
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
                    (le, running)
                })
                .collect();
            write_histogram(
                &mut out,
                "envoy_cluster_upstream_rq_time",
                &[(CLUSTER_NAME, cluster)],
                &cumulative,
                h.sum,
                h.count,
            );
        }
        header(
            &mut out,
            "envoy_http_downstream_cx_active",
            "gauge",
            "Client connections open, by listener.",
        );
        for (listener, v) in lock(&self.active_connections).iter() {
            let _ = writeln!(
                out,
                "envoy_http_downstream_cx_active{} {v}",
                labels(&[(HCM_PREFIX, listener)])
            );
        }
        header(
            &mut out,
            "envoy_http_downstream_rq_active",
            "gauge",
            "Requests in flight, by listener.",
        );
        for (listener, v) in read(&self.active_requests).iter() {
            let _ = writeln!(
                out,
                "envoy_http_downstream_rq_active{} {}",
                labels(&[(HCM_PREFIX, listener)]),
                v.load(Ordering::Relaxed)
            );
        }
        render_clusters(&mut out, clusters);
        render_plugin_stats(&mut out, plugin_stats);
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
        render_tracing(&mut out);
        render_filter_metrics(&mut out, filter_metrics, tags);
        out
    }
}

/// Envoy's per-status request counters for one scope (`http.<prefix>.downstream_rq_*` or
/// `cluster.<name>.upstream_rq_*`): `<base>_total`, `<base>_xx` by response code class, and,
/// for clusters, `<base>` by response code (`upstream_rq_<code>`).
fn render_status_counts(out: &mut String, counts: &StatusCounts, base: &str, scope_label: &str) {
    let totals: Vec<(&String, u64)> = counts
        .iter()
        .map(|(name, statuses)| {
            (
                name,
                statuses.values().map(|v| v.load(Ordering::Relaxed)).sum(),
            )
        })
        .collect();
    header(
        out,
        &format!("{base}_total"),
        "counter",
        "Requests, in total.",
    );
    for (name, total) in &totals {
        let _ = writeln!(
            out,
            "{base}_total{} {total}",
            labels(&[(scope_label, name)])
        );
    }
    header(
        out,
        &format!("{base}_xx"),
        "counter",
        "Requests by response code class.",
    );
    for (name, statuses) in counts {
        let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
        for (status, v) in statuses {
            *classes.entry(status / 100).or_default() += v.load(Ordering::Relaxed);
        }
        for (class, v) in classes {
            let class = class.to_string();
            let l = labels(&[("envoy_response_code_class", &class), (scope_label, name)]);
            let _ = writeln!(out, "{base}_xx{l} {v}");
        }
    }
    if scope_label == CLUSTER_NAME {
        header(out, base, "counter", "Requests by response code.");
        for (name, statuses) in counts {
            for (status, v) in statuses {
                let code = status.to_string();
                let l = labels(&[("envoy_response_code", &code), (scope_label, name)]);
                let _ = writeln!(out, "{base}{l} {}", v.load(Ordering::Relaxed));
            }
        }
    }
}

fn render_clusters(out: &mut String, clusters: &Clusters) {
    let mut names: Vec<&String> = clusters.keys().collect();
    names.sort();
    header(
        out,
        "envoy_cluster_membership_total",
        "gauge",
        "Endpoints of the cluster.",
    );
    for name in &names {
        let total = clusters[*name].endpoints.len();
        let _ = writeln!(
            out,
            "envoy_cluster_membership_total{} {total}",
            labels(&[(CLUSTER_NAME, name)])
        );
    }
    header(
        out,
        "envoy_cluster_membership_healthy",
        "gauge",
        "Endpoints taking traffic (not ejected).",
    );
    for name in &names {
        let healthy = clusters[*name]
            .endpoints
            .iter()
            .filter(|e| !e.is_ejected())
            .count();
        let _ = writeln!(
            out,
            "envoy_cluster_membership_healthy{} {healthy}",
            labels(&[(CLUSTER_NAME, name)])
        );
    }
    header(
        out,
        "envoy_cluster_upstream_rq_retry",
        "counter",
        "Requests sent again to another endpoint.",
    );
    for name in &names {
        let _ = writeln!(
            out,
            "envoy_cluster_upstream_rq_retry{} {}",
            labels(&[(CLUSTER_NAME, name)]),
            clusters[*name].retries()
        );
    }
    // Envoy exports no per-endpoint series to Prometheus (only its /clusters admin page).
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
}

/// Filter metrics as Envoy's `/stats/prometheus` writes them: the tag-extracted name without
/// the `wasmcustom` namespace, a `# TYPE` line and no `# HELP`, `{}` when there are no labels,
/// and series grouped by name and sorted by labels.
fn render_filter_metrics(out: &mut String, metrics: &[MetricSnapshot], tags: &TagExtractors) {
    let mut by_series: BTreeMap<String, Vec<(Tags, &MetricValue)>> = BTreeMap::new();
    for metric in metrics {
        if let Some((name, labels)) = tags.wasm_series(&metric.name) {
            by_series
                .entry(name)
                .or_default()
                .push((labels, &metric.value));
        }
    }
    for (name, mut entries) in by_series {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let kind = match entries[0].1 {
            MetricValue::Counter(_) => "counter",
            MetricValue::Gauge(_) => "gauge",
            MetricValue::Histogram { .. } => "histogram",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (pairs, value) in entries {
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let l = format!("{{{}}}", label_list(&borrowed));
            match value {
                MetricValue::Counter(v) => {
                    let _ = writeln!(out, "{name}{l} {v}");
                }
                MetricValue::Gauge(v) => {
                    let _ = writeln!(out, "{name}{l} {v}");
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

/// Each plugin's VM failures (the host's own counter: Envoy has none, a failure shows there only
/// as `wasm_fail_stream` response details) and Envoy's `wasm.<plugin name>.vm_reload_*` stats
/// as Envoy's `/stats/prometheus` writes them: `envoy_` and the stat name with every character
/// outside `[a-zA-Z0-9_]` made `_`, a `# TYPE` line, `{}` for no labels
/// (`PrometheusStatsFormatter`).
fn render_plugin_stats(out: &mut String, plugin_stats: &[(String, PluginStats)]) {
    header(
        out,
        "modelgate_wasm_vm_failures_total",
        "counter",
        "Wasm VMs that failed at run time (a trap, the callback deadline, the memory limit).",
    );
    for (plugin, stats) in plugin_stats {
        let _ = writeln!(
            out,
            "modelgate_wasm_vm_failures_total{} {}",
            labels(&[("plugin", plugin)]),
            stats.vm_failures
        );
    }
    for (plugin, stats) in plugin_stats {
        let prefix = format!("envoy_wasm_{}", crate::stats_tags::sanitize(plugin));
        for (stat, value) in [
            ("vm_reload_backoff", stats.vm_reload_backoff),
            ("vm_reload_success", stats.vm_reload_success),
            ("vm_reload_failure", stats.vm_reload_failure),
        ] {
            let _ = writeln!(
                out,
                "# TYPE {prefix}_{stat} counter\n{prefix}_{stat}{{}} {value}"
            );
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
    format!("{{{}}}", label_list(pairs))
}

fn label_list(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    inner.join(",")
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
    use crate::stats_tags::TagSpecifier;

    #[test]
    fn requests_are_counted_per_listener_and_per_cluster_as_envoy_names_them() {
        let m = HostMetrics::default();
        for (listener, cluster, status) in [
            ("b", "c", 200),
            ("a", "c", 503),
            ("a", "c", 200),
            ("a", "", 404),
            ("a", "c", 201),
        ] {
            m.count_request(listener, cluster, status);
        }
        let text = m.render(&Clusters::new(), &[], &[], &TagExtractors::default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("envoy_http_downstream_rq")
                    || l.starts_with("envoy_cluster_upstream_rq")
            })
            .collect();
        assert_eq!(
            lines,
            [
                "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"a\"} 4",
                "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"b\"} 1",
                "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"a\"} 2",
                "envoy_http_downstream_rq_xx{envoy_response_code_class=\"4\",envoy_http_conn_manager_prefix=\"a\"} 1",
                "envoy_http_downstream_rq_xx{envoy_response_code_class=\"5\",envoy_http_conn_manager_prefix=\"a\"} 1",
                "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"b\"} 1",
                "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"c\"} 4",
                "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"c\"} 3",
                "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"c\"} 1",
                "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"c\"} 2",
                "envoy_cluster_upstream_rq{envoy_response_code=\"201\",envoy_cluster_name=\"c\"} 1",
                "envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"c\"} 1",
            ]
        );
    }

    #[test]
    fn renders_host_and_filter_metrics() {
        let m = HostMetrics::default();
        m.count_request("main", "c", 200);
        m.observe_upstream("c", Duration::from_millis(3));
        m.request_started("main");
        let filter = [
            MetricSnapshot {
                name: "hits.model.a\"b".into(),
                value: MetricValue::Counter(7),
            },
            MetricSnapshot {
                name: "plain".into(),
                value: MetricValue::Counter(2),
            },
            MetricSnapshot {
                name: "lat".into(),
                value: MetricValue::Histogram {
                    buckets: vec![(1.0, 2), (10.0, 3)],
                    sum: 12.0,
                    count: 4,
                },
            },
            // Envoy does not export a name that starts with a digit.
            MetricSnapshot {
                name: "1st".into(),
                value: MetricValue::Counter(1),
            },
        ];
        let tags = TagExtractors::compile(
            &[TagSpecifier {
                tag_name: "model".into(),
                regex: r"^wasmcustom\.hits(\.model\.(.+))$".into(),
            }],
            "t",
        )
        .unwrap();
        let stats = PluginStats {
            vm_failures: 3,
            vm_reload_success: 2,
            ..PluginStats::default()
        };
        let plugins = [("envoyextensionpolicy/ns/mg/wasm/0".to_owned(), stats)];
        let text = m.render(&Clusters::new(), &plugins, &filter, &tags);
        for line in [
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"1\"} 0\n",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"5\"} 1\n",
            "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"c\"} 1\n",
            "envoy_http_downstream_rq_active{envoy_http_conn_manager_prefix=\"main\"} 1\n",
            "modelgate_wasm_vm_failures_total{plugin=\"envoyextensionpolicy/ns/mg/wasm/0\"} 3\n",
            "envoy_wasm_envoyextensionpolicy_ns_mg_wasm_0_vm_reload_success{} 2\n",
            "# TYPE hits counter\nhits{model=\"a\\\"b\"} 7\n",
            "# TYPE plain counter\nplain{} 2\n",
            "# TYPE lat histogram\nlat_bucket{le=\"1\"} 2\nlat_bucket{le=\"10\"} 3\nlat_bucket{le=\"+Inf\"} 4\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("wasmcustom"), "{text}");
        assert!(!text.contains("1st"), "{text}");
        assert!(
            !text.contains("# HELP hits"),
            "Envoy writes no HELP: {text}"
        );
    }
}
