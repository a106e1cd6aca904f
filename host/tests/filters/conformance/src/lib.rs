//! A Proxy-Wasm filter for the host's conformance tests. The request header `x-case` picks
//! what it does; it reports what the host answered in headers, local-reply bodies, shared
//! data or filter state, so the tests assert on outcomes. Plugin configuration words:
//! `reject` (on_configure fails), `tick=<ms>` (tick period), `name=<tag>` (tag for chain order).

mod raw;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const REQUEST_BODY: u32 = 0;
const HTTP_CALL_BODY: u32 = 4;
const VM_CONFIG: u32 = 6;
const PLUGIN_CONFIG: u32 = 7;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    vm_index: u32,
    tag: String,
    queue: Option<u32>,
    counter: u32,
    gauge: u32,
    histogram: u32,
    configured_ns: u64,
    ticks: u32,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Increment a shared counter with compare-and-swap, retrying on conflicts.
fn cas_increment(ctx: &dyn Context, key: &str) -> u32 {
    loop {
        let (value, cas) = ctx.get_shared_data(key);
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let cas = cas.or(Some(0));
        if ctx
            .set_shared_data(key, Some((n + 1).to_string().as_bytes()), cas)
            .is_ok()
        {
            return n;
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let vm_config = self.get_vm_configuration().unwrap_or_default();
        if vm_config.len() != vm_configuration_size || vm_config == b"reject-start" {
            return false;
        }
        self.vm_index = cas_increment(self, "vm-counter");
        if self.vm_index == 0 {
            self.queue = Some(self.register_shared_queue("q"));
        }
        let _ =
            std::io::stdout().write_all(format!("stdout from vm {}\n", self.vm_index).as_bytes());
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        if config.len() != plugin_configuration_size {
            return false;
        }
        let config = String::from_utf8(config).unwrap_or_default();
        for word in config.split_whitespace() {
            if word == "reject" {
                return false;
            }
            if let Some(ms) = word.strip_prefix("tick=") {
                self.configured_ns = now_ns();
                self.set_tick_period(Duration::from_millis(ms.parse().unwrap_or(0)));
            }
            if let Some(tag) = word.strip_prefix("name=") {
                self.tag = tag.to_string();
            }
        }
        self.counter =
            hostcalls::define_metric(MetricType::Counter, "conformance_requests").unwrap_or(0);
        self.gauge = hostcalls::define_metric(MetricType::Gauge, "conformance_gauge").unwrap_or(0);
        self.histogram =
            hostcalls::define_metric(MetricType::Histogram, "conformance_latency").unwrap_or(0);
        log::info!("configured vm {}", self.vm_index);
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        if self.ticks == 1 {
            let delay_ms = (now_ns() - self.configured_ns) / 1_000_000;
            let _ = self.set_shared_data(
                "first-tick-delay-ms",
                Some(delay_ms.to_string().as_bytes()),
                None,
            );
        }
        let _ = self.set_shared_data("ticks", Some(self.ticks.to_string().as_bytes()), None);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut got = Vec::new();
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            got.push(String::from_utf8(item).unwrap_or_default());
        }
        // One wake-up per enqueue: a later one may find the queue already drained.
        if got.is_empty() {
            return;
        }
        let (previous, _) = self.get_shared_data("queue-got");
        let previous = previous.map(|p| String::from_utf8_lossy(&p).into_owned());
        let report = match previous {
            Some(p) => format!("{p},{}", got.join(",")),
            None => format!("vm{}:{}", self.vm_index, got.join(",")),
        };
        let _ = self.set_shared_data("queue-got", Some(report.as_bytes()), None);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            vm_index: self.vm_index,
            tag: self.tag.clone(),
            queue: self.queue,
            metrics: (self.counter, self.gauge, self.histogram),
            case: String::new(),
            body_sizes: Vec::new(),
            transcript: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    vm_index: u32,
    tag: String,
    queue: Option<u32>,
    metrics: (u32, u32, u32),
    case: String,
    body_sizes: Vec<usize>,
    /// What the gRPC cases saw, one line per step; the local reply's body.
    transcript: Vec<String>,
}

impl Stream {
    fn set(&self, name: &str, value: impl ToString) {
        self.add_http_request_header(name, &value.to_string());
    }

    fn prop_string(&self, path: &[&str]) -> String {
        self.get_property(path.to_vec())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| "<none>".into())
    }

    fn prop_int(&self, path: &[&str]) -> String {
        self.get_property(path.to_vec())
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(|b| i64::from_le_bytes(b).to_string())
            .unwrap_or_else(|| "<none>".into())
    }

    fn header(&self, name: &str) -> String {
        self.get_http_request_header(name).unwrap_or_default()
    }

    /// `x-grpc-service-hex` (a serialized `GrpcService`) or `x-grpc-service` (a cluster name).
    fn grpc_service(&self) -> Vec<u8> {
        match self.get_http_request_header("x-grpc-service-hex") {
            Some(hex) => unhex(&hex),
            None => self.header("x-grpc-service").into_bytes(),
        }
    }

    /// The gRPC cases: a unary call (`grpc-call`) or a stream (`grpc-stream`, and
    /// `grpc-stream-close`, which ends its request with `proxy_grpc_close`) to the service
    /// and method the headers name, with the request message `x-grpc-request-hex`.
    fn grpc_case(&mut self) -> Action {
        // The SDK takes the service as text; a serialized GrpcService naming a cluster in
        // ASCII is valid UTF-8 and passes byte for byte.
        let Ok(service) = String::from_utf8(self.grpc_service()) else {
            self.transcript.push("dispatch=service-not-utf8".into());
            self.reply_transcript();
            return Action::Pause;
        };
        let service = service.as_str();
        let service_name = match self.header("x-grpc-service-name") {
            name if name.is_empty() => "inference.GRPCInferenceService".to_owned(),
            name => name,
        };
        let method = self.header("x-grpc-method");
        let request = unhex(&self.header("x-grpc-request-hex"));
        let metadata: Vec<(&str, &[u8])> = vec![("x-callout", b"conformance")];
        let opened = if self.case == "grpc-call" {
            let timeout_ms = self.header("x-grpc-timeout-ms").parse().unwrap_or(5000);
            self.dispatch_grpc_call(
                service,
                &service_name,
                &method,
                metadata,
                Some(&request),
                Duration::from_millis(timeout_ms),
            )
        } else {
            self.open_grpc_stream(service, &service_name, &method, metadata)
        };
        match opened {
            Ok(token) => {
                self.transcript.push(format!("dispatch=ok token={token}"));
                if self.case != "grpc-call" {
                    let close = self.case == "grpc-stream-close";
                    self.send_grpc_stream_message(token, Some(&request), !close);
                    if close {
                        self.close_grpc_stream(token);
                    }
                }
                Action::Pause
            }
            Err(status) => {
                self.transcript.push(format!("dispatch={status:?}"));
                self.reply_transcript();
                Action::Pause
            }
        }
    }

    fn reply_transcript(&self) {
        let body = self.transcript.join("\n");
        self.send_http_response(200, vec![], Some(body.as_bytes()));
    }

    fn status_message(&self) -> String {
        self.get_grpc_status().1.unwrap_or_default()
    }

    fn headers_case(&self) {
        // Multiple values: the first one is returned.
        self.set(
            "x-first",
            self.get_http_request_header("x-multi").unwrap_or_default(),
        );
        self.add_http_request_header("x-multi", "b");
        self.set_http_request_header("x-replaced", Some("new"));
        self.set_http_request_header("x-removed", None);
        self.set_http_request_header(":path", Some("/rewritten"));
        self.set(
            "x-seen-method",
            self.get_http_request_header(":method").unwrap_or_default(),
        );
        self.set(
            "x-seen-authority",
            self.get_http_request_header(":authority")
                .unwrap_or_default(),
        );
        self.set(
            "x-missing-status",
            raw::header_value(REQUEST_HEADERS, "x-nope").0,
        );
        self.set(
            "x-response-map-status",
            raw::header_value(RESPONSE_HEADERS, "x").0,
        );
        self.set("x-bad-map-status", raw::header_value(42, "x").0);
        self.set("x-map-size", raw::header_map_size(REQUEST_HEADERS).1);
        self.set("x-pairs", self.get_http_request_headers().len());
        self.set("x-context-id", self.id);
    }

    fn pairs_case(&self) {
        let mut pairs = self.get_http_request_headers();
        pairs.retain(|(k, _)| k != "x-drop");
        pairs.push(("x-set-by-pairs".into(), "1".into()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.set_http_request_headers(refs);
    }

    fn statuses_case(&self) {
        self.set(
            "x-plugin-config-status",
            raw::buffer(PLUGIN_CONFIG, 0, usize::MAX).0,
        );
        self.set(
            "x-vm-config",
            String::from_utf8_lossy(&raw::buffer(VM_CONFIG, 0, usize::MAX).1),
        );
        self.set(
            "x-call-body-status",
            raw::buffer(HTTP_CALL_BODY, 0, usize::MAX).0,
        );
        let (status, null) = raw::buffer_is_null(REQUEST_BODY, 0, usize::MAX);
        self.set("x-body-outside-phase", format!("{status}:{null}"));
        self.set(
            "x-set-body-outside-phase",
            raw::set_buffer(REQUEST_BODY, 0, 0, b"x"),
        );
        self.set("x-bad-buffer-type", raw::buffer(99, 0, 1).0);
        self.set("x-grpc-status", raw::grpc_call_status());
        self.set("x-effective-bad", raw::set_effective_context_status(9999));
        // Header maps follow the effective context: compute on root, report on this stream.
        let to_root = raw::set_effective_context_status(1);
        let on_root = raw::header_value(REQUEST_HEADERS, ":path").0;
        let back = raw::set_effective_context_status(self.id);
        self.set("x-effective-root", format!("{to_root}:{on_root}:{back}"));
        self.set("x-done-status", raw::done_status());
        self.set("x-log-bad-level", raw::log_status(9, "x"));
        self.set("x-foreign-unknown", raw::foreign_status("no_such_function"));
        self.set("x-dequeue-unknown", raw::dequeue_status(9999));
        self.set("x-enqueue-unknown", raw::enqueue_status(9999, b"x"));
        if let Some(q) = self.queue {
            self.set("x-dequeue-empty", raw::dequeue_status(q));
        }
        self.set("x-metric-bad-type", raw::define_metric_status(3, "bad"));
        self.set("x-metric-unknown", raw::increment_metric_status(4000, 1));
        self.set("x-legacy", raw::legacy_and_grpc());
        self.set(
            "x-log-level",
            hostcalls::get_log_level().map(|l| l as u32).unwrap_or(99),
        );
        self.set(
            "x-now-ns",
            self.get_current_time()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
    }

    fn metrics_case(&self) {
        let (counter, gauge, histogram) = self.metrics;
        let _ = hostcalls::increment_metric(counter, 2);
        let _ = hostcalls::record_metric(counter, 3);
        let _ = hostcalls::increment_metric(gauge, 5);
        let _ = hostcalls::increment_metric(gauge, -2);
        self.set("x-gauge-after-increments", raw::get_metric_status(gauge).1);
        let _ = hostcalls::record_metric(gauge, 7);
        let _ = hostcalls::record_metric(histogram, 3);
        let _ = hostcalls::record_metric(histogram, 700);
        self.set("x-counter", raw::get_metric_status(counter).1);
        self.set("x-gauge", raw::get_metric_status(gauge).1);
        self.set("x-counter-id-type", counter & 3);
        self.set("x-gauge-id-type", gauge & 3);
        self.set("x-histogram-id-type", histogram & 3);
        self.set("x-histogram-get", raw::get_metric_status(histogram).0);
        self.set(
            "x-counter-negative",
            raw::increment_metric_status(counter, -1),
        );
        self.set(
            "x-histogram-increment",
            raw::increment_metric_status(histogram, 1),
        );
    }

    fn properties_case(&self) {
        for name in [
            "path", "url_path", "host", "scheme", "method", "id", "protocol",
        ] {
            self.set(
                &format!("x-p-request-{name}"),
                self.prop_string(&["request", name]),
            );
        }
        self.set("x-p-request-time", self.prop_int(&["request", "time"]));
        let headers = self
            .get_property(vec!["request", "headers"])
            .unwrap_or_default();
        let count = headers
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        // The property is the live map in the pairs format: same count as the map itself.
        self.set(
            "x-p-request-headers-match",
            count as usize == self.get_http_request_headers().len(),
        );
        self.set(
            "x-p-source-address",
            self.prop_string(&["source", "address"]),
        );
        self.set("x-p-source-port", self.prop_int(&["source", "port"]));
        self.set(
            "x-p-destination-address",
            self.prop_string(&["destination", "address"]),
        );
        self.set(
            "x-p-destination-port",
            self.prop_int(&["destination", "port"]),
        );
        self.set("x-p-connection-id", self.prop_int(&["connection", "id"]));
        let mtls = self
            .get_property(vec!["connection", "mtls"])
            .unwrap_or_default();
        self.set("x-p-connection-mtls", format!("{mtls:?}"));
        self.set("x-p-plugin-name", self.prop_string(&["plugin_name"]));
        self.set("x-p-plugin-root-id", self.prop_string(&["plugin_root_id"]));
        self.set("x-p-plugin-vm-id", self.prop_string(&["plugin_vm_id"]));
        self.set("x-p-dotted-status", raw::property(b"request.path").0);
        self.set("x-p-unknown-status", raw::property(b"no\0such").0);
        self.set_property(vec!["my", "key"], Some(b"stored"));
        self.set("x-p-filter-state", self.prop_string(&["my", "key"]));
    }

    fn wasi_case(&self) {
        self.set(
            "x-env",
            std::env::var("MG_TEST_ENV").unwrap_or_else(|_| "<unset>".into()),
        );
        self.set("x-env-count", std::env::vars().count());
        self.set(
            "x-now-s",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        let start = std::time::Instant::now();
        self.set("x-monotonic-ok", start.elapsed() < Duration::from_secs(1));
        let (status, bytes) = raw::random(32);
        self.set("x-random-status", status);
        self.set(
            "x-random",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        );
        self.set("x-random-too-big", raw::random(65 * 1024).0);
        // One write per line: stderr is unbuffered, and each fd_write is one log line.
        let _ = std::io::stdout().write_all(format!("stdout from stream {}\n", self.id).as_bytes());
        let _ = std::io::stderr().write_all(format!("stderr from stream {}\n", self.id).as_bytes());
    }

    fn shared_case(&self, key: &str) {
        let (value, cas) = self.get_shared_data(key);
        match (value, cas) {
            (Some(value), Some(cas)) => {
                self.set("x-value", String::from_utf8_lossy(&value));
                self.set("x-cas", cas);
            }
            _ => self.set("x-value", "<none>"),
        }
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let body = self
            .get_grpc_call_response_body(0, response_size)
            .unwrap_or_default();
        self.transcript.push(format!(
            "response token={token} status={status_code} body={} message={}",
            hex(&body),
            self.status_message()
        ));
        self.reply_transcript();
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, num_elements: u32) {
        let value = |name| {
            self.get_grpc_stream_initial_metadata_value(name)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        };
        let line = format!(
            "initial token={token} n={num_elements} status={} content-type={}",
            value(":status"),
            value("content-type")
        );
        self.transcript.push(line);
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        let body = self
            .get_grpc_stream_message(0, message_size)
            .unwrap_or_default();
        self.transcript
            .push(format!("message token={token} body={}", hex(&body)));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, num_elements: u32) {
        let status = self
            .get_grpc_stream_trailing_metadata_value("grpc-status")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        self.transcript.push(format!(
            "trailing token={token} n={num_elements} grpc-status={status}"
        ));
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        self.transcript.push(format!(
            "close token={token} status={status_code} message={}",
            self.status_message()
        ));
        self.reply_transcript();
    }

    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if num_headers == 0 {
            self.set("x-call-failed", "1");
        } else {
            let status = self
                .get_http_call_response_header(":status")
                .unwrap_or_default();
            self.set("x-call-status", status);
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            self.set("x-call-body", String::from_utf8_lossy(&body));
            self.set(
                "x-call-body-status-buffer",
                raw::buffer_status(HTTP_CALL_BODY).1,
            );
        }
        if self.case == "http-call-reply" {
            self.send_http_response(401, vec![("x-after-call", "1")], Some(b"from call"));
            return;
        }
        self.resume_http_request();
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.case = self.get_http_request_header("x-case").unwrap_or_default();
        if !self.tag.is_empty() {
            let order = self.get_http_request_header("x-order").unwrap_or_default();
            self.set_http_request_header("x-order", Some(&format!("{order}{}", self.tag)));
        }
        let _ = hostcalls::increment_metric(self.metrics.0, 1);
        match self.case.as_str() {
            "headers" => self.headers_case(),
            "pairs" => self.pairs_case(),
            "statuses" => self.statuses_case(),
            "metrics" => self.metrics_case(),
            "properties" => self.properties_case(),
            "wasi" => self.wasi_case(),
            "log" => {
                log::warn!("warning from stream {}", self.id);
                let _ = proxy_wasm::hostcalls::log(
                    proxy_wasm::types::LogLevel::Critical,
                    &format!("critical from stream {}", self.id),
                );
            }
            "local-reply" => {
                self.send_http_response(403, vec![("x-reply", "1")], Some(b"denied"));
                return Action::Pause;
            }
            "local-reply-typed" => {
                self.send_http_response(
                    429,
                    vec![("content-type", "application/json")],
                    Some(b"{}"),
                );
                return Action::Continue;
            }
            "http-call" | "http-call-reply" | "http-call-fail" => {
                let cluster = if self.case == "http-call-fail" {
                    "failing"
                } else {
                    "upstream"
                };
                let result = self.dispatch_http_call(
                    cluster,
                    vec![
                        (":method", "GET"),
                        (":path", "/ping"),
                        (":authority", "upstream"),
                    ],
                    Some(b"ping"),
                    vec![],
                    Duration::from_secs(1),
                );
                return match result {
                    Ok(_) => Action::Pause,
                    Err(status) => {
                        self.set("x-dispatch-error", format!("{status:?}"));
                        Action::Continue
                    }
                };
            }
            "http-call-bad" => {
                let ok = [(":method", "GET"), (":path", "/"), (":authority", "a")];
                self.set("x-unknown-cluster", raw::http_call_status("nowhere", &ok));
                self.set(
                    "x-missing-authority",
                    raw::http_call_status("upstream", &ok[..2]),
                );
                self.set(
                    "x-missing-method",
                    raw::http_call_status("upstream", &ok[1..]),
                );
            }
            "grpc-call" | "grpc-stream" | "grpc-stream-close" => return self.grpc_case(),
            "whoami" => self.set("x-vm", self.vm_index),
            "shared-get" => {
                self.shared_case(&self.get_http_request_header("x-key").unwrap_or_default())
            }
            "shared-set" => {
                let key = self.get_http_request_header("x-key").unwrap_or_default();
                let value = self.get_http_request_header("x-value").unwrap_or_default();
                let cas = self
                    .get_http_request_header("x-cas")
                    .and_then(|c| c.parse().ok());
                let status = match self.set_shared_data(&key, Some(value.as_bytes()), cas) {
                    Ok(()) => 0,
                    Err(status) => status as u32,
                };
                self.set("x-set-status", status);
                self.set("x-vm", self.vm_index);
            }
            "enqueue" => {
                let vm_id = self.prop_string(&["plugin_vm_id"]);
                match self.resolve_shared_queue(&vm_id, "q") {
                    Some(q) => {
                        let value = self.get_http_request_header("x-value").unwrap_or_default();
                        self.set("x-enqueue", raw::enqueue_status(q, value.as_bytes()));
                    }
                    None => self.set("x-enqueue", "unresolved"),
                }
            }
            "foreign" => {
                let status = raw::foreign_status("clear_route_cache");
                self.set_property(
                    vec!["foreign", "status"],
                    Some(status.to_string().as_bytes()),
                );
            }
            "close" => {
                raw::close_stream_status(0);
                return Action::Pause;
            }
            // Reads the body before letting the headers go, as a filter routing by a body
            // field does: it needs `allow_on_headers_stop_iteration` (see on_http_request_body).
            "hold-headers-for-body" => return Action::Pause,
            "pause-then-continue-inline" => {
                self.resume_http_request();
                return Action::Pause;
            }
            "trap" => panic!("trap requested"),
            "trap-if-tag" => {
                if self.get_http_request_header("x-trap-tag").as_deref() == Some(self.tag.as_str())
                {
                    panic!("trap requested for {}", self.tag);
                }
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_sizes.push(body_size);
        let sizes: Vec<String> = self.body_sizes.iter().map(ToString::to_string).collect();
        self.set_property(vec!["body", "sizes"], Some(sizes.join(",").as_bytes()));
        match self.case.as_str() {
            "body-buffer-forever" | "body-then-trailers" => return Action::Pause,
            "hold-headers-for-body"
            | "body-rewrite"
            | "body-append"
            | "body-prepend"
            | "body-bad-start"
                if !end_of_stream =>
            {
                return Action::Pause;
            }
            "body-rewrite" => {
                let body = self
                    .get_http_request_body(0, usize::MAX)
                    .unwrap_or_default();
                let upper = String::from_utf8_lossy(&body).to_uppercase();
                self.set_http_request_body(0, body_size, upper.as_bytes());
            }
            "hold-headers-for-body" => {
                // The held headers are still live: the edit reaches the later filters, the
                // route and the upstream.
                let body = self
                    .get_http_request_body(0, usize::MAX)
                    .unwrap_or_default();
                let status = raw::add_header(
                    REQUEST_HEADERS,
                    "x-from-body",
                    &String::from_utf8_lossy(&body),
                );
                self.set_property(vec!["held", "status"], Some(status.to_string().as_bytes()));
            }
            "body-append" => self.set_http_request_body(body_size, 0, b"+tail"),
            "body-prepend" => self.set_http_request_body(0, 0, b"head+"),
            "body-bad-start" => {
                let status = raw::set_buffer(REQUEST_BODY, 1, 0, b"x");
                let (_, partial) = raw::buffer(REQUEST_BODY, 2, 3);
                let (_, beyond) = raw::buffer(REQUEST_BODY, 1000, 5);
                let report = format!(
                    "{status}:{}:{}",
                    String::from_utf8_lossy(&partial),
                    beyond.len()
                );
                self.set_property(vec!["body", "report"], Some(report.as_bytes()));
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.add_http_request_trailer("x-trailer-added", "1");
        if self.case == "body-then-trailers" {
            // The body buffered so far is readable when the trailers end the stream.
            let body = self
                .get_http_request_body(0, usize::MAX)
                .unwrap_or_default();
            self.set_property(vec!["trailers", "body"], Some(&body));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        self.add_http_response_header("x-seen-status", &status);
        if !self.tag.is_empty() {
            let order = self.get_http_response_header("x-order").unwrap_or_default();
            self.set_http_response_header("x-order", Some(&format!("{order}{}", self.tag)));
        }
        match self.case.as_str() {
            "headers" => {
                self.add_http_response_header(
                    "x-p-response-code",
                    &self.prop_int(&["response", "code"]),
                );
                self.set_http_response_header(":status", Some("201"));
                self.add_http_response_header(
                    "x-late-request-status",
                    &raw::add_header(REQUEST_HEADERS, "x", "y").to_string(),
                );
            }
            "properties" => {
                self.add_http_response_header(
                    "x-p-response-code",
                    &self.prop_int(&["response", "code"]),
                );
                self.add_http_response_header(
                    "x-p-request-path-later",
                    &self.prop_string(&["request", "path"]),
                );
                self.add_http_response_header(
                    "x-p-upstream-address",
                    &self.prop_string(&["upstream", "address"]),
                );
                self.add_http_response_header(
                    "x-p-cluster",
                    &self.prop_string(&["xds", "cluster_name"]),
                );
            }
            "resp-local-reply" => {
                self.send_http_response(502, vec![], Some(b"bad upstream"));
                return Action::Pause;
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.case.as_str() {
            "resp-body" if !end_of_stream => Action::Pause,
            "resp-body" => {
                self.set_http_response_body(body_size, 0, b"!");
                self.set_http_response_body(0, 0, b"<");
                Action::Continue
            }
            "resp-body-buffer-forever" => Action::Pause,
            "local-reply" => {
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                self.set_http_response_body(
                    0,
                    body_size,
                    format!("[{}]", String::from_utf8_lossy(&body)).as_bytes(),
                );
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.add_http_response_trailer("x-response-trailer-added", "1");
        Action::Continue
    }

    fn on_log(&mut self) {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let add = raw::add_header(REQUEST_HEADERS, "x-in-log", "1");
        let report = format!("{}:{path}:{add}", self.id);
        let _ = self.set_shared_data("last-log", Some(report.as_bytes()), None);
        cas_increment(self, "logs");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower- or upper-case hex to bytes; a stray character ends the input.
fn unhex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .map_while(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
