//! Sending finished spans to the collector, off the request path.
//!
//! Envoy Gateway configures Envoy's OpenTelemetry tracer with an `envoy_grpc` service for the
//! provider's backend (`buildHCMTracing`, `internal/xds/translator/tracing.go`; the
//! destination's protocol is forced to gRPC in `processTracing`, `internal/gatewayapi/
//! listener.go`), so spans leave as OTLP/gRPC `TraceService/Export` calls, which is what this
//! does, over HTTP/2 (h2c) with hyper.
//!
//! Envoy buffers spans per worker and flushes every `tracing.opentelemetry.flush_interval_ms`
//! (5 s) or once `tracing.opentelemetry.min_flush_spans` (5) are buffered (envoy
//! `source/extensions/tracers/opentelemetry/tracer.cc`). Here one exporter thread per config
//! version does the same for every worker; a request only `try_send`s its spans into a bounded
//! queue, so a slow or dead collector costs requests nothing: past the bound spans are dropped
//! and counted, and a failed export loses its batch (Envoy does not retry either).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;

use super::otlp::{self, SpanData};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// How long one export may take, connecting included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of the tracer, for `/metrics`: process-wide, so they survive reloads as Envoy's
/// stats do.
pub(crate) struct TracingStats {
    /// Spans handed to an export (Envoy's `tracing.opentelemetry.spans_sent`).
    pub spans_sent: AtomicU64,
    /// Flushes by the timer (Envoy's `tracing.opentelemetry.timer_flushed`).
    pub timer_flushed: AtomicU64,
    /// Spans dropped because the queue to the exporter was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans lost with an export the collector did not accept (or never answered).
    pub dropped_export_failed: AtomicU64,
}

pub(crate) static STATS: TracingStats = TracingStats {
    spans_sent: AtomicU64::new(0),
    timer_flushed: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_export_failed: AtomicU64::new(0),
};

/// Where and how the exporter sends.
pub(super) struct ExportSettings {
    pub collector: SocketAddr,
    /// The gRPC authority (Envoy Gateway uses the backend's Service name).
    pub authority: String,
    /// gRPC initial metadata (`provider.openTelemetry.headers`).
    pub metadata: Vec<(String, String)>,
    /// The resource's attributes (`service.name`, ...).
    pub resource: Vec<(String, String)>,
    pub flush_interval: Duration,
    pub min_flush_spans: usize,
    pub max_queued_spans: usize,
}

/// The request path's end of the queue; the exporter thread ends, after a last flush, when
/// every handle is dropped (the config version is gone).
#[derive(Clone)]
pub(super) struct Exporter {
    queue: mpsc::Sender<SpanData>,
}

impl Exporter {
    /// Starts the exporter thread.
    pub(super) fn start(settings: ExportSettings) -> Result<Exporter, String> {
        let (queue, spans) = mpsc::channel(settings.max_queued_spans.max(1));
        std::thread::Builder::new()
            .name("modelgate-otlp".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(run(settings, spans)),
                    Err(e) => log::error!("tracing: the exporter cannot start: {e}"),
                }
            })
            .map_err(|e| format!("cannot start the exporter thread: {e}"))?;
        Ok(Exporter { queue })
    }

    /// Queues a finished span, never waiting: a full queue drops it (counted).
    pub(super) fn send(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            STATS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(settings: ExportSettings, mut spans: mpsc::Receiver<SpanData>) {
    let mut client = GrpcClient {
        collector: settings.collector,
        connection: None,
    };
    let mut buffer = Vec::new();
    let mut timer = tokio::time::interval(settings.flush_interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        tokio::select! {
            span = spans.recv() => {
                let Some(span) = span else {
                    flush(&settings, &mut client, &mut buffer).await;
                    return;
                };
                buffer.push(span);
                if buffer.len() >= settings.min_flush_spans {
                    flush(&settings, &mut client, &mut buffer).await;
                }
            }
            _ = timer.tick() => {
                STATS.timer_flushed.fetch_add(1, Ordering::Relaxed);
                flush(&settings, &mut client, &mut buffer).await;
            }
        }
    }
}

async fn flush(settings: &ExportSettings, client: &mut GrpcClient, buffer: &mut Vec<SpanData>) {
    if buffer.is_empty() {
        return;
    }
    let count = buffer.len() as u64;
    let request = otlp::export_request(&settings.resource, buffer);
    buffer.clear();
    STATS.spans_sent.fetch_add(count, Ordering::Relaxed);
    let outcome = tokio::time::timeout(EXPORT_TIMEOUT, client.export(settings, request)).await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => "timed out".to_owned(),
    };
    client.connection = None;
    STATS
        .dropped_export_failed
        .fetch_add(count, Ordering::Relaxed);
    log::debug!(
        "tracing: export of {count} spans to {} failed: {failure}",
        settings.collector
    );
}

/// One HTTP/2 connection to the collector, opened when needed and again after a failure.
struct GrpcClient {
    collector: SocketAddr,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl GrpcClient {
    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.connection.as_ref().is_none_or(SendRequest::is_closed) {
            let tcp = tokio::net::TcpStream::connect(self.collector)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            let (send, connection) = builder
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.connection = Some(send);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| "no connection".into())
    }

    /// One unary `Export` call: a length-prefixed message, then `grpc-status` 0 in the
    /// trailers (or a trailers-only answer) for success.
    async fn export(&mut self, settings: &ExportSettings, message: Vec<u8>) -> Result<(), String> {
        let mut framed = BytesMut::with_capacity(message.len() + 5);
        framed.put_u8(0);
        framed.put_u32(u32::try_from(message.len()).map_err(|_| "export too large")?);
        framed.put_slice(&message);
        let uri: Uri = format!("http://{}{EXPORT_PATH}", settings.authority)
            .parse()
            .map_err(|e| format!("uri: {e}"))?;
        let mut request = Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in &settings.metadata {
            request = request.header(name.to_ascii_lowercase(), value);
        }
        let request = request
            .body(Full::new(framed.freeze()))
            .map_err(|e| format!("request: {e}"))?;
        let send = self.connect().await?;
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let header_status = response.headers().get("grpc-status").cloned();
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response: {e}"))?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(header_status);
        match grpc_status
            .as_ref()
            .map(hyper::header::HeaderValue::as_bytes)
        {
            Some(b"0") if status.is_success() => Ok(()),
            Some(code) => Err(format!("grpc-status {}", String::from_utf8_lossy(code))),
            None => Err(format!("HTTP {status} without grpc-status")),
        }
    }
}
