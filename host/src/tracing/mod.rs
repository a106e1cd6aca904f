//! Tracing as Envoy does it under Envoy Gateway's `EnvoyProxy.spec.telemetry.tracing` with the
//! OpenTelemetry provider (docs/tracing.md has the behaviour, the sources and the known
//! differences):
//!
//! - the sampling decision: an incoming `traceparent` decides (sampled or not) when Envoy can
//!   read it; a `traceparent` it cannot read turns tracing off for the request; without one a
//!   new trace is sampled at the configured percentage (envoy `source/extensions/tracers/
//!   opentelemetry/opentelemetry_tracer_impl.cc`, `Driver::startSpan`, and `tracer.cc`);
//! - a SERVER span `ingress` per request, and since Envoy Gateway sets `spawn_upstream_span`,
//!   a CLIENT span `router <cluster> egress` per upstream attempt, child of the server span,
//!   whose id goes upstream in `traceparent` with the incoming `tracestate`;
//! - the tags Envoy's HTTP tracer utilities set (envoy `source/common/tracing/
//!   http_tracer_impl.cc`, `finalizeDownstreamSpan`, `finalizeUpstreamSpan`, `setCommonTags`)
//!   and the configured ones, which may read filter state (`tags`);
//! - unsampled spans are not exported, but their context is still propagated.
//!
//! The host knows no models here: a tag names a filter-state key, whatever a filter stored.

pub(crate) mod config;
mod context;
mod export;
pub(crate) mod otlp;
mod tags;

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use modelgate_runtime::Headers;

pub(crate) use config::{ProxyTracing, TracingConfig};
use context::Extracted;
pub(crate) use export::STATS;
use export::{ExportSettings, Exporter};
use otlp::{SpanData, SpanKind};
use tags::{Tag, TagInput};

/// Envoy's `max_path_tag_length` default: `http.url` is cut to this many path bytes.
const MAX_PATH_TAG_LENGTH: usize = 256;

/// The compiled tracing config of one config version, with its exporter.
pub(crate) struct Tracer {
    /// Requests without a sampling decision of their own traced, per 10,000.
    sampling_per_10k: u64,
    tags: Vec<Tag>,
    node_id: String,
    exporter: Exporter,
}

impl Tracer {
    /// Compiles the `tracing:` section and starts its exporter. Errors name the field.
    pub(crate) fn new(config: &TracingConfig) -> Result<Tracer, String> {
        let spec = config.proxy_tracing()?;
        Tracer::from_spec(&spec, config)
    }

    fn from_spec(spec: &ProxyTracing, config: &TracingConfig) -> Result<Tracer, String> {
        let provider = &spec.provider;
        if provider.kind != "OpenTelemetry" {
            return Err(format!(
                "tracing.provider.type: {:?} is not emulated (only OpenTelemetry)",
                provider.kind
            ));
        }
        let collector = match config.collector {
            Some(address) => address,
            None => provider_address(provider).ok_or(
                "tracing.collector: required: the provider's backend is a Kubernetes Service; \
                 give the address its collector answers on (HOST:PORT)",
            )?,
        };
        let authority = provider
            .backend_refs
            .first()
            .map(|b| match &b.namespace {
                // Envoy Gateway's authority for a Service backend: `<name>.<namespace>.svc`.
                Some(ns) => format!("{}.{ns}.svc", b.name),
                None => b.name.clone(),
            })
            .or_else(|| provider.host.clone())
            .unwrap_or_else(|| collector.to_string());
        let env = |name: &str| std::env::var(name).ok();
        let tags = tags::compile(&spec.custom_tags, &spec.tags, &env, "tracing")?;
        let otel = provider.open_telemetry.clone().unwrap_or_default();
        // Envoy's resource: `service.name` from the config, then the static detector's
        // attributes (Envoy Gateway's `resourceAttributes`).
        let mut resource = vec![
            (
                "service.name".to_owned(),
                provider
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "modelgate".to_owned()),
            ),
            ("telemetry.sdk.name".to_owned(), "modelgate".to_owned()),
            ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
            (
                "telemetry.sdk.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        for (k, v) in otel.resource_attributes {
            resource.retain(|(key, _)| *key != k);
            resource.push((k, v));
        }
        let exporter = Exporter::start(ExportSettings {
            collector,
            authority,
            metadata: otel
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            resource,
            flush_interval: config.flush_interval.0,
            min_flush_spans: config.min_flush_spans.max(1),
            max_queued_spans: config.max_queued_spans,
        })
        .map_err(|e| format!("tracing: {e}"))?;
        Ok(Tracer {
            sampling_per_10k: per_10k(spec.sampling_percent()),
            tags,
            node_id: "modelgate".to_owned(),
            exporter,
        })
    }

    /// The trace of a request whose headers (as the gateway forwards them, request id set)
    /// are `headers`; `None` when Envoy would trace nothing (an unreadable `traceparent`).
    pub(crate) fn start(&self, headers: &Headers, start: SystemTime) -> Option<RequestTrace> {
        let mut ids = [0u8; 24];
        if getrandom::fill(&mut ids).is_err() {
            return None;
        }
        let (span_id, new_trace) = ids.split_at(8);
        let span_id: [u8; 8] = span_id.try_into().ok()?;
        let (trace_id, parent_id, sampled, tracestate) = match context::extract(headers) {
            Extracted::Invalid => return None,
            Extracted::Valid(ctx) => (
                ctx.trace_id,
                Some(ctx.parent_id),
                ctx.sampled,
                ctx.tracestate,
            ),
            Extracted::Absent => {
                let random = u64::from_le_bytes(new_trace[..8].try_into().ok()?);
                let sampled = random % 10_000 < self.sampling_per_10k;
                (new_trace.try_into().ok()?, None, sampled, String::new())
            }
        };
        Some(RequestTrace {
            trace_id,
            span_id,
            parent_id,
            sampled,
            tracestate,
            start,
            // Only a sampled span's tags are ever read.
            request: if sampled { headers.clone() } else { Vec::new() },
            attempts: Vec::new(),
        })
    }

    /// Ends the request's spans and queues the sampled ones for export.
    pub(crate) fn finish(&self, trace: &RequestTrace, done: &Finished<'_>) {
        if !trace.sampled {
            return;
        }
        let end = unix_nanos(SystemTime::now());
        let input = TagInput {
            request: &trace.request,
            filter_state: done.filter_state,
        };
        for (i, attempt) in trace.attempts.iter().enumerate() {
            self.exporter
                .send(self.client_span(trace, i, attempt, done, &input, end));
        }
        self.exporter
            .send(self.server_span(trace, done, &input, end));
    }

    fn server_span(
        &self,
        trace: &RequestTrace,
        done: &Finished<'_>,
        input: &TagInput<'_>,
        end: u64,
    ) -> SpanData {
        let header = |name: &str| {
            trace
                .request
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let mut attributes = vec![
            ("node_id".to_owned(), self.node_id.clone()),
            ("zone".to_owned(), String::new()),
        ];
        if let Some(id) = header("x-request-id") {
            attributes.push(("guid:x-request-id".to_owned(), id));
        }
        let path = header("x-envoy-original-path")
            .or_else(|| header(":path"))
            .unwrap_or_default();
        let path = truncate(&path, MAX_PATH_TAG_LENGTH);
        let url = format!(
            "{}://{}{path}",
            header("x-forwarded-proto").unwrap_or_default(),
            header(":authority").unwrap_or_default()
        );
        attributes.extend([
            ("http.url".to_owned(), url),
            (
                "http.method".to_owned(),
                header(":method").unwrap_or_default(),
            ),
            (
                "downstream_cluster".to_owned(),
                header("x-envoy-downstream-service-cluster").unwrap_or_else(|| "-".into()),
            ),
            (
                "user_agent".to_owned(),
                header("user-agent").unwrap_or_else(|| "-".into()),
            ),
            ("http.protocol".to_owned(), done.protocol.to_owned()),
            ("peer.address".to_owned(), done.peer.to_string()),
        ]);
        if let Some(id) = header("x-client-trace-id") {
            attributes.push(("guid:x-client-trace-id".to_owned(), id));
        }
        attributes.push(("request_size".to_owned(), done.bytes_received.to_string()));
        attributes.push(("response_size".to_owned(), done.bytes_sent.to_string()));
        self.common_tags(
            &mut attributes,
            done.status,
            done.response_flags,
            done.cluster,
            input,
        );
        SpanData {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_span_id: trace.parent_id,
            trace_state: trace.tracestate.clone(),
            name: "ingress".to_owned(),
            kind: SpanKind::Server,
            start_unix_nanos: unix_nanos(trace.start),
            end_unix_nanos: end,
            attributes,
            error: span_error(SpanKind::Server, done.status),
        }
    }

    fn client_span(
        &self,
        trace: &RequestTrace,
        index: usize,
        attempt: &Attempt,
        done: &Finished<'_>,
        input: &TagInput<'_>,
        end: u64,
    ) -> SpanData {
        let mut attributes = Vec::new();
        if index > 0 {
            attributes.push(("retry.count".to_owned(), index.to_string()));
        }
        attributes.extend([
            ("http.protocol".to_owned(), attempt.protocol.to_owned()),
            ("upstream_address".to_owned(), attempt.address.to_string()),
            ("peer.address".to_owned(), attempt.address.to_string()),
        ]);
        let status = attempt.status.unwrap_or(0);
        let flags = attempt.response_flags.unwrap_or("-");
        self.common_tags(&mut attributes, status, flags, done.cluster, input);
        SpanData {
            trace_id: trace.trace_id,
            span_id: attempt.span_id,
            parent_span_id: Some(trace.span_id),
            trace_state: trace.tracestate.clone(),
            name: format!("router {} egress", done.cluster),
            kind: SpanKind::Client,
            start_unix_nanos: unix_nanos(attempt.start),
            end_unix_nanos: attempt.end.map_or(end, unix_nanos),
            attributes,
            error: span_error(SpanKind::Client, status),
        }
    }

    /// `HttpTracerUtility::setCommonTags`: component, cluster, status, flags, error, then the
    /// configured tags.
    fn common_tags(
        &self,
        attributes: &mut Vec<(String, String)>,
        status: u16,
        response_flags: &str,
        cluster: &str,
        input: &TagInput<'_>,
    ) {
        attributes.push(("component".to_owned(), "proxy".to_owned()));
        if !cluster.is_empty() {
            attributes.push(("upstream_cluster".to_owned(), cluster.to_owned()));
            attributes.push(("upstream_cluster.name".to_owned(), cluster.to_owned()));
        }
        attributes.push(("http.status_code".to_owned(), status.to_string()));
        attributes.push(("response_flags".to_owned(), response_flags.to_owned()));
        if status == 0 || (500..600).contains(&status) {
            attributes.push(("error".to_owned(), "true".to_owned()));
        }
        for tag in &self.tags {
            if let Some(value) = tag.value(input) {
                // Keys stay unique (Envoy's `Span::setTag` overwrites).
                match attributes.iter_mut().find(|(k, _)| *k == tag.name) {
                    Some((_, v)) => *v = value,
                    None => attributes.push((tag.name.clone(), value)),
                }
            }
        }
    }
}

/// The span status Envoy's OpenTelemetry tracer derives from `http.status_code` (envoy PR
/// 33674, after OpenTelemetry's HTTP semantic conventions): an error for a 5xx or a code out
/// of range, and on a CLIENT span for a 4xx too.
fn span_error(kind: SpanKind, status: u16) -> bool {
    !(100..600).contains(&status) || status >= 500 || (kind == SpanKind::Client && status >= 400)
}

/// Envoy's runtime fraction for a percentage: per 10,000, two decimals kept.
fn per_10k(percent: f64) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the percentage is clamped to [0, 100]"
    )]
    let per_10k = (percent * 100.0).round() as u64;
    per_10k
}

/// The provider's deprecated `host`/`port`, when they are an address.
fn provider_address(provider: &config::TracingProvider) -> Option<SocketAddr> {
    let host: IpAddr = provider.host.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(host, provider.port?))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One request's trace, from its headers to its last byte.
pub(crate) struct RequestTrace {
    trace_id: [u8; 16],
    /// The server span.
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    sampled: bool,
    tracestate: String,
    start: SystemTime,
    /// The request's headers as the gateway received and completed them (sampled only).
    request: Headers,
    attempts: Vec<Attempt>,
}

/// One try upstream: a CLIENT span.
struct Attempt {
    span_id: [u8; 8],
    start: SystemTime,
    end: Option<SystemTime>,
    address: SocketAddr,
    protocol: &'static str,
    status: Option<u16>,
    response_flags: Option<&'static str>,
}

impl RequestTrace {
    /// Opens the CLIENT span of an upstream attempt and sets its context into the upstream
    /// request's headers (`traceparent` replaced, `tracestate` passed on).
    pub(crate) fn start_attempt(
        &mut self,
        headers: &mut Headers,
        address: SocketAddr,
        http2: bool,
    ) {
        let mut span_id = [0u8; 8];
        if getrandom::fill(&mut span_id).is_err() {
            return;
        }
        context::inject(
            headers,
            context::traceparent(&self.trace_id, span_id, self.sampled),
            &self.tracestate,
        );
        if self.sampled {
            self.attempts.push(Attempt {
                span_id,
                start: SystemTime::now(),
                end: None,
                address,
                protocol: if http2 { "HTTP/2" } else { "HTTP/1.1" },
                status: None,
                response_flags: None,
            });
        }
    }

    /// Closes the last attempt's span when it failed or was retried; an answered attempt
    /// ends with the request.
    pub(crate) fn end_attempt(
        &mut self,
        status: Option<u16>,
        response_flags: Option<&'static str>,
        ended: bool,
    ) {
        if let Some(attempt) = self.attempts.last_mut() {
            attempt.status = status;
            attempt.response_flags = response_flags;
            if ended {
                attempt.end = Some(SystemTime::now());
            }
        }
    }
}

/// What the server span reads when the request is done.
pub(crate) struct Finished<'a> {
    pub status: u16,
    pub response_flags: &'static str,
    pub cluster: &'a str,
    pub protocol: &'static str,
    pub peer: IpAddr,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub filter_state: &'a [(String, Vec<u8>)],
}

/// Envoy's short response flag for the way the gateway answered (`detail` of the access
/// log), `-` for none (`ResponseFlagUtils::toShortString`).
pub(crate) fn response_flags(detail: Option<&str>) -> &'static str {
    match detail {
        Some("no_route") => "NR",
        Some("no_cluster") => "NC",
        Some("no_healthy_upstream") => "UH",
        Some("upstream_connect_failure") => "UF",
        Some("upstream_reset" | "upstream_reset_in_body") => "UR",
        Some("upstream_overflow") => "UO",
        Some("upstream_timeout" | "upstream_timeout_in_body") => "UT",
        Some("request_rate_limited") => "RL",
        Some("rate_limit_error") => "RLSE",
        Some("client_closed") => "DC",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_status_follows_the_semantic_conventions() {
        assert!(!span_error(SpanKind::Server, 200));
        assert!(!span_error(SpanKind::Server, 404));
        assert!(span_error(SpanKind::Client, 404));
        assert!(span_error(SpanKind::Server, 503));
        assert!(span_error(SpanKind::Server, 0));
    }

    #[test]
    fn url_paths_are_cut_at_the_tag_length() {
        let long = "é".repeat(200);
        assert!(truncate(&long, 257).len() <= 257);
        assert_eq!(truncate("/short", 256), "/short");
    }
}
