//! `HttpFilter`: one HTTP stream, from its request headers to its log callback.
//!
//! Callback contracts (what each one does and what it returns to the host):
//!
//! - `on_http_request_headers`: builds a [`RequestView`] over the request headers, read in one
//!   host call (the client address only if a policy asks for it), asks the policies with the host's current time,
//!   and applies the decision: header edits (then `clear_route_cache` when the route may
//!   change) and `Continue`; or a local reply and `Pause`; or, when the body is needed, the
//!   header edits that come with `NeedBody` and `Continue` with buffering armed (see
//!   [`crate::body`]); `Pause` instead when `NeedBody::hold_headers` (OpenAI requests under
//!   Envoy's `allow_on_headers_stop_iteration`), so the body decision's header edits and
//!   rewritten body still apply.
//! - `on_http_request_body`: `Pause` (buffer) until the body is complete or over its limit, then
//!   decide on it: `Continue`, or a local reply (400, 413).
//! - `on_http_request_trailers`: a body that ends in trailers is decided there.
//! - `on_http_response_headers` (OpenAI requests): adds the `x-ratelimit-*` headers and
//!   starts the response meter (removing `content-length` when it rewrites the body).
//! - `on_http_response_body` (OpenAI requests): records the time to first token of a stream,
//!   feeds each chunk to the meter and replaces the chunk when the meter removed a usage chunk
//!   the gateway asked for.
//! - `on_log`: settles an OpenAI request's tokens (a stream cut short included) and records
//!   the GenAI metrics; counts the request by model and outcome and records its duration.
//!
//! The model, outcome and verified subject are also stored as filter state
//! (`proxy_set_property` on `modelgate.model`, `modelgate.outcome`, `modelgate.subject`;
//! Envoy's `%FILTER_STATE(wasm.modelgate.model)%`) so access logs and span tags can use them.

use std::mem;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{debug, error, warn};
use modelgate_policies::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, OpenAiExchange, Outcome, PendingRequest,
    Reply, RequestView, ResponseMeter, Verdict,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType, Status};

use crate::body::{BodyStep, body_step};
use crate::configured::Configured;
use crate::store::{HostSharedData, RequestHeaders, response_header};

/// Filter state keys for the access log (one path segment each, so Envoy and the `modelgate`
/// host both name them `wasm.modelgate.model` / `wasm.modelgate.outcome`).
const MODEL_PROPERTY: &str = "modelgate.model";
const OUTCOME_PROPERTY: &str = "modelgate.outcome";
/// The verified token's subject (`wasm.modelgate.subject`), for access logs and span tags.
const SUBJECT_PROPERTY: &str = "modelgate.subject";

/// The answer when the plugin was never configured: without a policy nothing may pass.
const NOT_CONFIGURED_BODY: &str = r#"{"error":"modelgate filter is not configured"}"#;

/// Where a stream is in its request.
enum Phase {
    /// Waiting for the request headers.
    Headers,
    /// The policies asked for the body: buffering it.
    Buffering {
        pending: PendingRequest,
        /// Bytes buffered so far (the host reports the cumulative size).
        buffered: usize,
        /// The request headers were held (`NeedBody::hold_headers`): the body decision's
        /// header edits and body still apply.
        held: bool,
    },
    /// Decided (forwarded or answered): later callbacks pass through.
    Decided,
}

/// The per-stream context.
pub(crate) struct HttpFilter {
    configured: Option<Rc<Configured>>,
    phase: Phase,
    /// When the request headers arrived, for the duration histogram.
    started: Option<SystemTime>,
    /// Model (canonical, when known) and outcome once decided, for metrics.
    verdict: Option<(Option<Arc<str>>, Outcome)>,
    /// Over quota, but let through by shadow mode.
    shadow_rate_limited: bool,
    /// An admitted OpenAI request, settled in `on_log`.
    openai: Option<Box<OpenAiExchange>>,
    /// Its response, followed for `usage` once its headers came.
    meter: Option<ResponseMeter>,
    /// The first response body bytes were seen (time to first token recorded).
    first_bytes: bool,
}

impl HttpFilter {
    pub(crate) fn new(configured: Option<Rc<Configured>>) -> Self {
        Self {
            configured,
            phase: Phase::Headers,
            started: None,
            verdict: None,
            shadow_rate_limited: false,
            openai: None,
            meter: None,
            first_bytes: false,
        }
    }

    /// Forward the request after applying the header edits of `decision` (`current`: the
    /// request headers as the filter read them, while no edit has been applied yet).
    fn forward(&mut self, mut decision: Continue, current: Option<&RequestHeaders>) -> Action {
        apply_edits(&decision.headers, decision.route_changed, current);
        self.openai = decision.openai.take();
        self.settle_verdict(decision.verdict);
        Action::Continue
    }

    /// Answer the request with a local reply instead of forwarding it.
    fn respond(&mut self, reply: Reply) -> Action {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Err(status) = hostcalls::send_http_response(
            u32::from(reply.status),
            headers,
            Some(reply.body.as_bytes()),
        ) {
            // Nothing else can be sent now; the host ends the stream its own way.
            error!(
                "modelgate: cannot send the {} reply: {status:?}",
                reply.status
            );
        }
        self.settle_verdict(reply.verdict);
        // The host stops the stream after a local reply, whatever this returns.
        Action::Pause
    }

    /// An internal fault on a request for `model`: under `failureMode: deny` answer 503, under
    /// `allow` forward.
    fn fault(&mut self, model: Option<Arc<str>>, what: &str) -> Action {
        error!("modelgate: internal fault: {what}");
        let Some(configured) = self.configured.clone() else {
            return self.respond_not_configured();
        };
        if let Some(reply) = configured.policies.internal_fault_reply(model.as_deref()) {
            self.respond(reply)
        } else {
            self.settle(model, Outcome::InternalError);
            Action::Continue
        }
    }

    fn respond_not_configured(&mut self) -> Action {
        error!("modelgate: request before a successful on_configure; answering 503");
        if let Err(status) = hostcalls::send_http_response(
            503,
            vec![("content-type", "application/json")],
            Some(NOT_CONFIGURED_BODY.as_bytes()),
        ) {
            error!("modelgate: cannot send the 503 reply: {status:?}");
        }
        self.phase = Phase::Decided;
        Action::Pause
    }

    fn settle_verdict(&mut self, verdict: Verdict) {
        self.shadow_rate_limited |= verdict.shadow_rate_limited;
        if let Some(subject) = &verdict.subject {
            set_filter_state(SUBJECT_PROPERTY, subject.as_bytes());
        }
        self.settle(verdict.model, verdict.outcome);
    }

    /// Remember how the request ended and publish it as filter state.
    fn settle(&mut self, model: Option<Arc<str>>, outcome: Outcome) {
        self.phase = Phase::Decided;
        if let Some(model) = &model {
            set_filter_state(MODEL_PROPERTY, model.as_bytes());
        }
        set_filter_state(OUTCOME_PROPERTY, outcome.as_str().as_bytes());
        self.verdict = Some((model, outcome));
    }

    /// Decide on the complete body of a request whose headers asked for it.
    ///
    /// `headers_editable` is true only while the request headers are still held (a request
    /// that ended with its headers); afterwards Envoy no longer lets a filter change them.
    fn decide_body(
        &mut self,
        configured: &Configured,
        pending: &PendingRequest,
        body: &[u8],
        headers_editable: bool,
    ) -> Action {
        // A body that is only validated needs no time: the host's clock is not read for it
        // (one host call fewer per request), and the headers' arrival stands in.
        let now = if pending.reads_clock() {
            current_time()
        } else {
            self.started.unwrap_or(SystemTime::UNIX_EPOCH)
        };
        match configured
            .policies
            .on_request_body(pending, body, now, &HostSharedData)
        {
            BodyDecision::Continue(mut decision) => {
                if let Some(rewritten) = decision.openai.as_mut().and_then(|o| o.body.take()) {
                    // Only decided while the headers are held, so `content-length` follows.
                    if let Err(status) = hostcalls::set_buffer(
                        BufferType::HttpRequestBody,
                        0,
                        body.len(),
                        &rewritten,
                    ) {
                        warn!("modelgate: cannot replace the request body: {status:?}");
                    }
                }
                if headers_editable {
                    return self.forward(decision, None);
                }
                if !decision.headers.is_empty() {
                    // Envoy forwarded the request headers before the body arrived and no
                    // longer lets a filter change them (see `crate::body`).
                    warn!("modelgate: header edits decided on the body cannot be applied");
                }
                self.openai = decision.openai.take();
                self.settle_verdict(decision.verdict);
                Action::Continue
            }
            BodyDecision::Reply(reply) => self.respond(reply),
        }
    }

    /// Read the `buffered` bytes of request body the host holds and decide on them. The
    /// pending request leaves the phase here (every path below decides the request), so it is
    /// moved rather than cloned.
    fn read_and_decide_body(&mut self, configured: &Configured, buffered: usize) -> Action {
        let Phase::Buffering { pending, held, .. } = mem::replace(&mut self.phase, Phase::Decided)
        else {
            return Action::Continue;
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, buffered) {
            Ok(Some(body)) => body,
            Ok(None) if buffered == 0 => Vec::new(),
            Ok(None) => {
                let model = pending.model().cloned();
                return self.fault(model, "the buffered request body is not available");
            }
            Err(status) => {
                let model = pending.model().cloned();
                return self.fault(model, &format!("cannot read the request body: {status:?}"));
            }
        };
        self.decide_body(configured, &pending, &body, held)
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(configured) = self.configured.clone() else {
            return self.respond_not_configured();
        };
        let now = current_time();
        self.started = Some(now);
        let headers = RequestHeaders::read();
        let view = RequestView {
            method: &headers.text(":method"),
            path: &headers.text(":path"),
            headers: &headers,
        };
        match configured
            .policies
            .on_request_headers(&view, now, &HostSharedData)
        {
            HeadersDecision::Continue(decision) => self.forward(decision, Some(&headers)),
            HeadersDecision::Reply(reply) => self.respond(reply),
            HeadersDecision::NeedBody(need) => {
                // Now or never: once this phase continues, the route and the upstream
                // request headers are fixed (see `NeedBody::headers`).
                apply_edits(&need.headers, need.route_changed, Some(&headers));
                if end_of_stream {
                    // No body will come: decide on the empty one while headers can still change.
                    self.decide_body(&configured, &need.pending, &[], true)
                } else {
                    self.phase = Phase::Buffering {
                        pending: need.pending,
                        buffered: 0,
                        held: need.hold_headers,
                    };
                    // Held only where the host keeps delivering the body to a filter that
                    // stopped its headers (Envoy's `allow_on_headers_stop_iteration`; without
                    // it the pause becomes StopAllIterationAndWatermark and no body comes).
                    if need.hold_headers {
                        Action::Pause
                    } else {
                        Action::Continue
                    }
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Phase::Buffering {
            pending, buffered, ..
        } = &mut self.phase
        else {
            return Action::Continue;
        };
        *buffered = body_size;
        let Some(configured) = self.configured.clone() else {
            return self.respond_not_configured();
        };
        match body_step(pending.max_body_bytes(), body_size, end_of_stream) {
            BodyStep::Wait => Action::Pause,
            BodyStep::TooLarge => {
                let reply = configured.policies.reject_oversized_body(pending);
                self.respond(reply)
            }
            BodyStep::Decide => self.read_and_decide_body(&configured, body_size),
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Phase::Buffering { buffered, .. } = self.phase else {
            return Action::Continue;
        };
        let Some(configured) = self.configured.clone() else {
            return self.respond_not_configured();
        };
        self.read_and_decide_body(&configured, buffered)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(configured), Some(exchange)) = (&self.configured, &self.openai) else {
            return Action::Continue;
        };
        let status = response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let content_type = response_header("content-type");
        let meter = configured
            .policies
            .response_meter(exchange, status, content_type.as_deref());
        for (name, value) in &exchange.response_headers {
            if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value)
            {
                debug!("modelgate: cannot add response header {name}: {status:?}");
            }
        }
        if meter.rewrites_body()
            && let Err(status) =
                hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None)
        {
            warn!("modelgate: cannot remove the response content-length: {status:?}");
        }
        self.meter = Some(meter);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(meter) = &mut self.meter else {
            return Action::Continue;
        };
        if body_size > 0 && !self.first_bytes {
            self.first_bytes = true;
            if let (Some(configured), Some(exchange), Some(started)) =
                (&self.configured, &self.openai, self.started)
                && exchange.stream
                && let Some(id) = configured.gen_ai.first_token(&exchange.model)
                && let Err(status) =
                    hostcalls::record_metric(id, duration_ms(started, current_time()))
            {
                debug!("modelgate: cannot record the time to first token: {status:?}");
            }
        }
        let chunk = match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(status) => {
                debug!("modelgate: cannot read the response body: {status:?}");
                return Action::Continue;
            }
        };
        if let Some(replacement) = meter.feed(&chunk, end_of_stream)
            && let Err(status) =
                hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &replacement)
        {
            warn!("modelgate: cannot replace the response body: {status:?}");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(configured) = &self.configured else {
            return;
        };
        if let Some(exchange) = &self.openai {
            settle_openai(configured, exchange, self.meter.as_ref(), self.started);
        }
        let metrics = &configured.metrics;
        if let Some((model, outcome)) = &self.verdict
            && let Some(id) = metrics.requests(model.as_deref(), *outcome)
            && let Err(status) = hostcalls::increment_metric(id, 1)
        {
            debug!("modelgate: cannot count the request: {status:?}");
        }
        if self.shadow_rate_limited
            && let Some((Some(model), _)) = &self.verdict
            && let Some(id) = metrics.shadow_rate_limited(model)
            && let Err(status) = hostcalls::increment_metric(id, 1)
        {
            debug!("modelgate: cannot count the shadow-mode hit: {status:?}");
        }
        if let Some(started) = self.started {
            let elapsed = duration_ms(started, current_time());
            if let Err(status) = hostcalls::record_metric(metrics.duration(), elapsed) {
                debug!("modelgate: cannot record the request duration: {status:?}");
            }
        }
    }
}

/// Settle an OpenAI request's tokens and record its GenAI metrics.
fn settle_openai(
    configured: &Configured,
    exchange: &OpenAiExchange,
    meter: Option<&ResponseMeter>,
    started: Option<SystemTime>,
) {
    let now = current_time();
    let settled = configured
        .policies
        .settle(exchange, meter, now, &HostSharedData);
    let gen_ai = &configured.gen_ai;
    if let Some([input, output]) = gen_ai.token_usage(&exchange.model, &exchange.caller_class) {
        for (id, tokens) in [(input, settled.input), (output, settled.output)] {
            if let Err(status) = hostcalls::record_metric(id, tokens) {
                debug!("modelgate: cannot record token usage: {status:?}");
            }
        }
    }
    if let (Some(id), Some(started)) = (gen_ai.duration(&exchange.model), started)
        && let Err(status) = hostcalls::record_metric(id, duration_ms(started, now))
    {
        debug!("modelgate: cannot record the GenAI request duration: {status:?}");
    }
}

/// Remove, then set, request headers; recompute the route when the routing header changed.
///
/// A header the request already holds once with the very value to set is left alone (when
/// `current`, the headers before any edit, is known): replacing it would change nothing, as
/// Envoy replaces a value in place, and costs a host call; a client's `content-type:
/// application/json` on a V1 predict is the common case.
fn apply_edits(edits: &HeaderEdits, route_changed: bool, current: Option<&RequestHeaders>) {
    for name in &edits.remove {
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
            warn!("modelgate: cannot remove request header {name}: {status:?}");
        }
    }
    for (name, value) in &edits.set {
        let unchanged = current.is_some_and(|headers| headers.holds_only(name, value))
            && !edits
                .remove
                .iter()
                .any(|removed| removed.eq_ignore_ascii_case(name));
        if unchanged {
            continue;
        }
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        {
            warn!("modelgate: cannot set request header {name}: {status:?}");
        }
    }
    if route_changed {
        clear_route_cache();
    }
}

/// Ask the host to pick the route again now that the routing header changed.
///
/// Envoy 1.33 and later provide the foreign function `clear_route_cache`; older ones answer
/// `NOT_FOUND`, but they clear the route cache whenever a filter changes request headers anyway,
/// so its absence is not a fault.
fn clear_route_cache() {
    match hostcalls::call_foreign_function("clear_route_cache", None) {
        Ok(_) | Err(Status::NotFound) => {}
        Err(status) => debug!("modelgate: clear_route_cache failed: {status:?}"),
    }
}

fn set_filter_state(key: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_property(vec![key], Some(value)) {
        debug!("modelgate: cannot set filter state {key}: {status:?}");
    }
}

/// The host's clock. Time only ever comes from the host: the policies never read a clock.
pub(crate) fn current_time() -> SystemTime {
    hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whole milliseconds from `start` to `end`; a clock that stepped back counts as zero.
fn duration_ms(start: SystemTime, end: SystemTime) -> u64 {
    let elapsed = end.duration_since(start).unwrap_or(Duration::ZERO);
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_milliseconds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(duration_ms(start, start + Duration::from_micros(2_999)), 2);
        assert_eq!(duration_ms(start, start + Duration::from_secs(3)), 3_000);
    }

    #[test]
    fn a_clock_that_stepped_back_gives_zero_not_a_huge_duration() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(duration_ms(start, start - Duration::from_secs(1)), 0);
    }
}
