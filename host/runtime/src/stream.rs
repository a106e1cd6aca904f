//! HTTP streams through an ordered chain of plugins, as Envoy's filter manager runs them:
//! request callbacks in chain order, response callbacks in reverse, local replies passed
//! through the response callbacks, pauses held until `proxy_continue_stream`.
//!
//! A Pause from request headers is read as proxy-wasm-cpp-host reads it
//! (`ContextBase::convertVmCallResultToFilterHeadersStatus`, src/context.cc): by default
//! `StopIteration` becomes `StopAllIterationAndWatermark`, so the filter gets no body until it
//! calls `proxy_continue_stream` (proxy-wasm-cpp-host issue #143). With the plugin's
//! `allow_on_headers_stop_iteration` (Envoy 1.35+, proxy-wasm-cpp-host PR #434, issue #417) it
//! stays `StopIteration`: the headers are held back from the filters after it and from the
//! upstream, while the body still reaches the filter, which may change the headers until it
//! continues from a body (or trailers) callback.

use std::mem;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::context::{StreamCtx, StreamInfo, StreamMeta};
use crate::local_reply::LocalReply;
use crate::vm::cell::VmCell;
use crate::vm::{ROOT_CONTEXT_ID, StreamCallback};
use crate::{FailurePolicy, Headers, Plugin, header_map};

/// `FilterHeadersStatus::StopIteration`, the Pause of the Proxy-Wasm SDKs.
const STOP_ITERATION: u32 = 1;

/// Envoy's default per-stream buffer limit.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// Ordered plugins applied to every stream. Cheap to clone.
#[derive(Clone)]
pub struct FilterChain {
    inner: Arc<ChainInner>,
}

struct ChainInner {
    plugins: Vec<Plugin>,
    buffer_limit: usize,
}

/// What the gateway does next after a phase.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// Body phases: keep buffering, call again with more data (cumulative). Request headers:
    /// a filter holds them and wants the body (see [`ChainStream::request_headers`]).
    StopAndBuffer,
    /// Send this instead of going upstream (or instead of the upstream response); the chain's
    /// response callbacks have already run over it.
    LocalReply(LocalReply),
}

impl FilterChain {
    pub fn new(plugins: Vec<Plugin>) -> FilterChain {
        FilterChain {
            inner: Arc::new(ChainInner {
                plugins,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
            }),
        }
    }

    /// Bytes a filter may buffer per body before the stream gets 413 (request) or 500
    /// (response); [`DEFAULT_BUFFER_LIMIT`] otherwise.
    #[must_use]
    pub fn with_buffer_limit(self, bytes: usize) -> FilterChain {
        FilterChain {
            inner: Arc::new(ChainInner {
                plugins: self.inner.plugins.clone(),
                buffer_limit: bytes,
            }),
        }
    }

    pub fn stream(&self, info: StreamInfo) -> ChainStream {
        let slots = self
            .inner
            .plugins
            .iter()
            .map(|plugin| Slot {
                cell: plugin.inner.pick_vm(),
                fail_open: plugin.inner.shared.spec.failure_policy == FailurePolicy::FailOpen,
                allow_headers_stop: plugin.inner.shared.spec.allow_on_headers_stop_iteration,
                context: None,
                notify: Arc::new(Notify::new()),
                skipped: false,
            })
            .collect();
        ChainStream {
            chain: Arc::clone(&self.inner),
            meta: Arc::new(StreamMeta {
                info,
                upstream: Mutex::new(None),
            }),
            slots,
            route_cache_cleared: false,
            filter_state: Vec::new(),
            request_buffering_at: None,
            response_buffering_at: None,
            held_headers: None,
            released_headers: None,
            finished: false,
        }
    }
}

/// One filter of one stream: the VM it is pinned to and its context there.
struct Slot {
    cell: Arc<VmCell>,
    fail_open: bool,
    /// The plugin's `allow_on_headers_stop_iteration`.
    allow_headers_stop: bool,
    /// VM generation and context id, once the context exists.
    context: Option<(u64, u32)>,
    notify: Arc<Notify>,
    /// A fail-open filter whose VM failed is skipped for the rest of the stream.
    skipped: bool,
}

/// The data a callback works on, lent to the VM for the callback (and any pause).
enum Payload<'a> {
    Headers(&'a mut Headers),
    Body(&'a mut Vec<u8>),
}

impl Payload<'_> {
    fn size(&self) -> usize {
        match self {
            Payload::Headers(h) => h.len(),
            Payload::Body(b) => b.len(),
        }
    }
}

/// Outcome of one filter's callback.
enum Step {
    Continue,
    Buffer,
    /// Request headers only: `StopIteration` under `allow_on_headers_stop_iteration`; a copy
    /// of the headers as the filter left them.
    HoldHeaders(Headers),
    Reply(LocalReply),
    /// The VM failed and the filter is fail-closed.
    Failed,
}

enum Begin {
    Done(Step),
    Wait,
}

/// One HTTP request through the chain. Send. Request callbacks run in chain order, response
/// callbacks in reverse order, as Envoy's decoder/encoder filters do.
pub struct ChainStream {
    chain: Arc<ChainInner>,
    meta: Arc<StreamMeta>,
    slots: Vec<Slot>,
    route_cache_cleared: bool,
    filter_state: Vec<(String, Vec<u8>)>,
    /// The filter that asked to buffer the body; the next (cumulative) call resumes there.
    request_buffering_at: Option<usize>,
    response_buffering_at: Option<usize>,
    /// The filter holding the request headers (see the module doc), with a copy of them as
    /// they were when it stopped, for a fail-open filter whose VM fails meanwhile.
    held_headers: Option<(usize, Headers)>,
    /// The request headers once the holding filter let them go, for the gateway to forward.
    released_headers: Option<Headers>,
    finished: bool,
}

impl ChainStream {
    /// Resolves when every filter continued (after any pause), or with the local reply a
    /// filter sent. `headers` is updated in place with the filters' edits.
    ///
    /// [`Flow::StopAndBuffer`] when a filter whose plugin allows it stopped header iteration
    /// before the end of the stream (see the module doc): the headers now belong to the chain
    /// (`headers` is left empty); feed the body through [`ChainStream::request_body`] and take
    /// them back, with the filters' edits, from [`ChainStream::take_released_headers`] once
    /// the body calls released data or ended the stream.
    pub async fn request_headers(&mut self, headers: &mut Headers, end_of_stream: bool) -> Flow {
        self.request_headers_from(0, headers, end_of_stream).await
    }

    /// The request headers after a filter held them: `Some` once, after the body (or
    /// trailers) phase let them go.
    pub fn take_released_headers(&mut self) -> Option<Headers> {
        self.released_headers.take()
    }

    async fn request_headers_from(
        &mut self,
        first: usize,
        headers: &mut Headers,
        end_of_stream: bool,
    ) -> Flow {
        for i in first..self.slots.len() {
            let step = self
                .step(
                    i,
                    StreamCallback::RequestHeaders,
                    Payload::Headers(headers),
                    end_of_stream,
                )
                .await;
            if let Step::HoldHeaders(copy) = step {
                // The map stays lent to the filter's context, live for its body callbacks.
                self.held_headers = Some((i, copy));
                return Flow::StopAndBuffer;
            }
            if let Some(flow) = self.request_flow(i, step).await {
                return flow;
            }
        }
        Flow::Continue
    }

    /// The holding filter `i` continued from a body or trailers callback: Envoy resumes the
    /// header iteration at the next filter (`FilterManager::commonContinue`), so the filters
    /// after it see the headers as it left them, then the data. `None` to go on with the
    /// data; a later filter may hold the headers in turn.
    async fn release_headers(&mut self, i: usize) -> Option<Flow> {
        let (_, copy) = self.held_headers.take()?;
        let mut headers = self.take_back_held(i).unwrap_or(copy);
        match self.request_headers_from(i + 1, &mut headers, false).await {
            Flow::Continue => {
                self.released_headers = Some(headers);
                None
            }
            Flow::StopAndBuffer => None,
            reply @ Flow::LocalReply(_) => Some(reply),
        }
    }

    /// The held map out of filter `i`'s context; `None` if its VM failed meanwhile.
    fn take_back_held(&mut self, i: usize) -> Option<Headers> {
        let (generation, id) = self.slots[i].context?;
        let cell = Arc::clone(&self.slots[i].cell);
        let mut slot = cell.lock();
        if generation != slot.generation {
            return None;
        }
        let ctx = slot.vm.as_mut()?.store.data_mut().streams.get_mut(&id)?;
        let map = ctx.request_headers.take()?;
        ctx.request_seen = Some(map.clone());
        Some(map)
    }

    /// `body` is the cumulative buffered body; while [`Flow::StopAndBuffer`] the gateway keeps
    /// appending and calls again. Filters before the buffering one saw the body when they
    /// continued and are not called again for it. A body a filter buffers past the limit gets
    /// 413, at the end of the stream too (`response_body`: 500), as Envoy answers.
    pub async fn request_body(&mut self, body: &mut Vec<u8>, end_of_stream: bool) -> Flow {
        let resumed = self.request_buffering_at.take();
        let start = resumed.unwrap_or(0);
        if resumed.is_some() && body.len() > self.chain.buffer_limit {
            // Envoy never hands a filter more than the limit: the stream ends here.
            return self.request_too_large(start).await;
        }
        for i in start..self.slots.len() {
            let step = self.step(
                i,
                StreamCallback::RequestBody,
                Payload::Body(body),
                end_of_stream,
            );
            match step.await {
                Step::Buffer if body.len() > self.chain.buffer_limit => {
                    return self.request_too_large(i).await;
                }
                Step::Buffer => {
                    self.request_buffering_at = Some(i);
                    return Flow::StopAndBuffer;
                }
                Step::Continue if self.holds_headers(i) => {
                    if let Some(flow) = self.release_headers(i).await {
                        return flow;
                    }
                }
                step => {
                    if let Some(flow) = self.request_flow(i, step).await {
                        return flow;
                    }
                }
            }
        }
        Flow::Continue
    }

    /// Trailers end the request: a filter holding the headers lets them go when it continues
    /// here.
    pub async fn request_trailers(&mut self, trailers: &mut Headers) -> Flow {
        for i in 0..self.slots.len() {
            let step = self
                .step(
                    i,
                    StreamCallback::RequestTrailers,
                    Payload::Headers(trailers),
                    true,
                )
                .await;
            if matches!(step, Step::Continue) && self.holds_headers(i) {
                if let Some(flow) = self.release_headers(i).await {
                    return flow;
                }
                continue;
            }
            if let Some(flow) = self.request_flow(i, step).await {
                return flow;
            }
        }
        Flow::Continue
    }

    fn holds_headers(&self, i: usize) -> bool {
        self.held_headers.as_ref().is_some_and(|(at, _)| *at == i)
    }

    pub async fn response_headers(&mut self, headers: &mut Headers, end_of_stream: bool) -> Flow {
        for i in (0..self.slots.len()).rev() {
            let step = self
                .step(
                    i,
                    StreamCallback::ResponseHeaders,
                    Payload::Headers(headers),
                    end_of_stream,
                )
                .await;
            if let Some(flow) = self.response_flow(i, step).await {
                return flow;
            }
        }
        Flow::Continue
    }

    pub async fn response_body(&mut self, body: &mut Vec<u8>, end_of_stream: bool) -> Flow {
        let start = self.response_buffering_at.take();
        let first = start.unwrap_or(self.slots.len().saturating_sub(1));
        for i in (0..self.slots.len()).rev().filter(|&i| i <= first) {
            if start == Some(i) && body.len() > self.chain.buffer_limit {
                return self.response_too_large(i).await;
            }
            let step = self.step(
                i,
                StreamCallback::ResponseBody,
                Payload::Body(body),
                end_of_stream,
            );
            match step.await {
                Step::Buffer if body.len() > self.chain.buffer_limit => {
                    return self.response_too_large(i).await;
                }
                Step::Buffer => {
                    self.response_buffering_at = Some(i);
                    return Flow::StopAndBuffer;
                }
                step => {
                    if let Some(flow) = self.response_flow(i, step).await {
                        return flow;
                    }
                }
            }
        }
        Flow::Continue
    }

    pub async fn response_trailers(&mut self, trailers: &mut Headers) -> Flow {
        for i in (0..self.slots.len()).rev() {
            let step = self
                .step(
                    i,
                    StreamCallback::ResponseTrailers,
                    Payload::Headers(trailers),
                    true,
                )
                .await;
            if let Some(flow) = self.response_flow(i, step).await {
                return flow;
            }
        }
        Flow::Continue
    }

    /// True (and reset) if a filter changed request headers or called `clear_route_cache`
    /// since the last call: the gateway re-matches the route, as Envoy does.
    pub fn take_route_cache_cleared(&mut self) -> bool {
        mem::take(&mut self.route_cache_cleared)
    }

    /// The upstream picked for this stream (for `upstream.address`, `xds.cluster_name`).
    pub fn set_upstream(&mut self, cluster: &str, endpoint: SocketAddr) {
        let mut upstream = self
            .meta
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *upstream = Some((cluster.to_owned(), endpoint));
    }

    /// Values filters stored with `proxy_set_property`, as Envoy's filter state
    /// (`wasm.<path>` keys, path segments joined by '.').
    pub fn filter_state(&self) -> Vec<(String, Vec<u8>)> {
        self.filter_state.clone()
    }

    /// Runs `on_log`, `on_done`, `on_delete` in every filter. Drop calls it if not called.
    pub fn finish(mut self) {
        self.end_contexts();
    }

    /// What a request-side step means for the chain; `None` to go on to the next filter.
    async fn request_flow(&mut self, i: usize, step: Step) -> Option<Flow> {
        match step {
            Step::Continue | Step::Buffer | Step::HoldHeaders(_) => None,
            Step::Reply(reply) => Some(Flow::LocalReply(self.reply_through(i + 1, reply).await)),
            Step::Failed => Some(Flow::LocalReply(self.reply_through(i, unavailable()).await)),
        }
    }

    /// Response side: a local reply replaces the upstream response and passes through the
    /// filters the response has not reached yet.
    async fn response_flow(&mut self, i: usize, step: Step) -> Option<Flow> {
        match step {
            Step::Continue | Step::Buffer | Step::HoldHeaders(_) => None,
            Step::Reply(reply) => Some(Flow::LocalReply(self.reply_through(i, reply).await)),
            Step::Failed => Some(Flow::LocalReply(self.reply_through(i, unavailable()).await)),
        }
    }

    async fn request_too_large(&mut self, i: usize) -> Flow {
        let mut reply = LocalReply::new(413, Headers::new(), b"Payload Too Large".to_vec());
        // Envoy's StreamInfo::ResponseCodeDetails::RequestPayloadTooLarge.
        reply.details = "request_payload_too_large";
        Flow::LocalReply(self.reply_through(i + 1, reply).await)
    }

    async fn response_too_large(&mut self, i: usize) -> Flow {
        let mut reply = LocalReply::new(500, Headers::new(), b"Internal Server Error".to_vec());
        reply.details = "response_payload_too_large";
        Flow::LocalReply(self.reply_through(i, reply).await)
    }

    /// Run a local reply through the response callbacks of filters `0..upto` (in reverse), as
    /// Envoy sends local replies through the encoder filters.
    async fn reply_through(&mut self, upto: usize, reply: LocalReply) -> LocalReply {
        let mut headers = reply.headers;
        headers.insert(0, (":status".into(), reply.status.to_string().into_bytes()));
        let mut body = reply.body;
        let mut details = reply.details;
        let mut grpc_status = reply.grpc_status;
        for i in (0..upto).rev() {
            if self.slots[i].context.is_none() {
                continue;
            }
            let step = self.step(
                i,
                StreamCallback::ResponseHeaders,
                Payload::Headers(&mut headers),
                body.is_empty(),
            );
            let mut step = step.await;
            if matches!(step, Step::Continue) && !body.is_empty() {
                step = self
                    .step(
                        i,
                        StreamCallback::ResponseBody,
                        Payload::Body(&mut body),
                        true,
                    )
                    .await;
            }
            match step {
                Step::Continue | Step::Buffer | Step::HoldHeaders(_) => {}
                // Envoy sends one local reply per stream; a second one is ignored.
                Step::Reply(_) => log::warn!(
                    "wasm plugin {}: local reply while sending a local reply, ignored",
                    self.slots[i].cell.name()
                ),
                Step::Failed => {
                    let failed = unavailable();
                    headers = vec![(":status".into(), b"503".to_vec())];
                    headers.extend(failed.headers);
                    body.clear();
                    details = failed.details;
                    grpc_status = failed.grpc_status;
                }
            }
        }
        let status = header_map::get(&headers, ":status")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .unwrap_or(reply.status);
        header_map::remove(&mut headers, ":status");
        if let Some(len) = headers.iter_mut().find(|(k, _)| k == "content-length") {
            len.1 = body.len().to_string().into_bytes();
        }
        LocalReply {
            status,
            headers,
            body,
            details,
            grpc_status,
        }
    }

    /// Run filter `i`'s callback over `payload`, waiting through a pause until the filter
    /// continues, replies, or its VM fails.
    async fn step(
        &mut self,
        i: usize,
        cb: StreamCallback,
        mut payload: Payload<'_>,
        end_of_stream: bool,
    ) -> Step {
        match self.begin(i, cb, &mut payload, end_of_stream) {
            Begin::Done(step) => step,
            Begin::Wait => loop {
                let notify = Arc::clone(&self.slots[i].notify);
                notify.notified().await;
                if let Some(step) = self.poll_paused(i, cb, &mut payload) {
                    return step;
                }
            },
        }
    }

    fn begin(
        &mut self,
        i: usize,
        cb: StreamCallback,
        payload: &mut Payload<'_>,
        end_of_stream: bool,
    ) -> Begin {
        if self.slots[i].skipped {
            return Begin::Done(Step::Continue);
        }
        let cell = Arc::clone(&self.slots[i].cell);
        let mut slot = cell.lock();
        let id = match self.slots[i].context {
            Some((generation, id)) if generation == slot.generation && slot.vm.is_some() => id,
            Some(key) => {
                slot.orphans.remove(&key);
                return Begin::Done(self.failed(i));
            }
            None => {
                // A stream is where Envoy looks at a failed VM: `FAIL_RELOAD` may replace it
                // here (`PluginConfig::createContext`).
                if !cell.reload_if_due(&mut slot) {
                    return Begin::Done(self.failed(i));
                }
                let generation = slot.generation;
                let Some(vm) = slot.vm.as_mut() else {
                    return Begin::Done(self.failed(i));
                };
                let state = vm.store.data_mut();
                let id = state.next_context_id();
                let ctx = StreamCtx::new(Arc::clone(&self.meta), Arc::clone(&self.slots[i].notify));
                state.streams.insert(id, ctx);
                self.slots[i].context = Some((generation, id));
                if let Err(err) = vm.create_context(id, ROOT_CONTEXT_ID) {
                    cell.fail(&mut slot, &err);
                    slot.orphans.remove(&(generation, id));
                    return Begin::Done(self.failed(i));
                }
                id
            }
        };
        let Some(vm) = slot.vm.as_mut() else {
            return Begin::Done(self.failed(i));
        };
        let size = payload.size();
        if let Some(ctx) = vm.store.data_mut().streams.get_mut(&id) {
            lend(ctx, cb, payload);
            ctx.continue_request = false;
            ctx.continue_response = false;
        }
        let result = vm.stream_callback(id, cb, size, end_of_stream);
        let code = match result {
            Ok(code) => code,
            Err(err) => {
                let generation = slot.generation;
                cell.fail(&mut slot, &err);
                if let Some(mut ctx) = slot.orphans.remove(&(generation, id)) {
                    take_back(&mut ctx, cb, payload);
                }
                return Begin::Done(self.failed(i));
            }
        };
        let Some(ctx) = slot
            .vm
            .as_mut()
            .and_then(|vm| vm.store.data_mut().streams.get_mut(&id))
        else {
            return Begin::Done(self.failed(i));
        };
        self.harvest(ctx);
        if let Some(step) = settled(ctx, cb, payload) {
            return Begin::Done(step);
        }
        let paused = match cb {
            // 0 Continue; 2 ContinueAndEndStream (deprecated) also continues.
            StreamCallback::RequestHeaders | StreamCallback::ResponseHeaders => {
                code != 0 && code != 2
            }
            _ => code != 0,
        };
        if code == STOP_ITERATION
            && !end_of_stream
            && matches!(cb, StreamCallback::RequestHeaders)
            && self.slots[i].allow_headers_stop
        {
            let copy = ctx.request_headers.clone().unwrap_or_default();
            return Begin::Done(Step::HoldHeaders(copy));
        }
        let is_body = matches!(
            cb,
            StreamCallback::RequestBody | StreamCallback::ResponseBody
        );
        // Envoy moves what a StopIterationAndBuffer filter holds into a buffer whose high
        // watermark is the limit; past it the stream is answered with 413/500 whether or not
        // the data ended the stream. Only a body within the limit waits at its end.
        let buffers =
            is_body && (!end_of_stream || lent_body_len(ctx, cb) > self.chain.buffer_limit);
        if !paused || buffers {
            take_back(ctx, cb, payload);
            // An over-limit body ends the stream: no copy is kept for it.
            if paused && payload.size() <= self.chain.buffer_limit {
                keep_buffered(ctx, cb, payload);
            }
            return Begin::Done(if paused { Step::Buffer } else { Step::Continue });
        }
        Begin::Wait
    }

    /// After a wake-up: has the paused filter continued, replied, or lost its VM?
    fn poll_paused(
        &mut self,
        i: usize,
        cb: StreamCallback,
        payload: &mut Payload<'_>,
    ) -> Option<Step> {
        let cell = Arc::clone(&self.slots[i].cell);
        let mut slot = cell.lock();
        let (generation, id) = self.slots[i].context?;
        if generation != slot.generation {
            if let Some(mut ctx) = slot.orphans.remove(&(generation, id)) {
                take_back(&mut ctx, cb, payload);
            }
            return Some(self.failed(i));
        }
        let ctx = slot.vm.as_mut()?.store.data_mut().streams.get_mut(&id)?;
        self.harvest(ctx);
        settled(ctx, cb, payload)
    }

    /// Collect what the filter left for the chain after any guest call.
    fn harvest(&mut self, ctx: &mut StreamCtx) {
        if mem::take(&mut ctx.route_cache_cleared) {
            self.route_cache_cleared = true;
        }
        if mem::take(&mut ctx.filter_state_changed) {
            for (key, value) in &ctx.filter_state {
                match self.filter_state.iter_mut().find(|(k, _)| k == key) {
                    Some(entry) => entry.1.clone_from(value),
                    None => self.filter_state.push((key.clone(), value.clone())),
                }
            }
        }
    }

    /// Filter `i`'s VM failed: skip it when fail-open, else fail the stream.
    fn failed(&mut self, i: usize) -> Step {
        let slot = &mut self.slots[i];
        slot.context = None;
        if slot.fail_open {
            log::warn!(
                "wasm plugin {}: failed, skipping it (fail-open)",
                slot.cell.name()
            );
            slot.skipped = true;
            Step::Continue
        } else {
            Step::Failed
        }
    }

    fn end_contexts(&mut self) {
        if mem::replace(&mut self.finished, true) {
            return;
        }
        for i in 0..self.slots.len() {
            let Some((generation, id)) = self.slots[i].context.take() else {
                continue;
            };
            let cell = Arc::clone(&self.slots[i].cell);
            let mut slot = cell.lock();
            if generation != slot.generation {
                slot.orphans.remove(&(generation, id));
                continue;
            }
            let Some(vm) = slot.vm.as_mut() else { continue };
            if let Some(ctx) = vm.store.data_mut().streams.get_mut(&id) {
                // on_log sees the maps as they left their phases, read-only.
                if ctx.request_seen.is_none() {
                    ctx.request_seen = ctx.request_headers.take();
                }
                if ctx.response_seen.is_none() {
                    ctx.response_seen = ctx.response_headers.take();
                }
                ctx.log_phase = true;
            }
            let result = vm.end_context(id);
            if let Some(mut ctx) = vm.store.data_mut().streams.remove(&id) {
                self.harvest(&mut ctx);
            }
            if let Err(err) = result {
                cell.fail(&mut slot, &err);
                slot.orphans.remove(&(generation, id));
            }
        }
    }
}

impl Drop for ChainStream {
    fn drop(&mut self) {
        self.end_contexts();
    }
}

/// The reply a fail-closed filter's failure gives: Envoy's `Context::failStream` sends
/// `sendLocalReply(503, "", nullptr, Unavailable, "wasm_fail_stream")`
/// (source/extensions/common/wasm/context.cc), an empty body with `content-length: 0`.
fn unavailable() -> LocalReply {
    LocalReply {
        status: 503,
        headers: vec![("content-length".into(), b"0".to_vec())],
        body: Vec::new(),
        details: "wasm_fail_stream",
        // Grpc::Status::WellKnownGrpcStatus::Unavailable.
        grpc_status: Some(14),
    }
}

/// Has the filter settled its pause: a local reply, a closed stream, or a continue?
fn settled(ctx: &mut StreamCtx, cb: StreamCallback, payload: &mut Payload<'_>) -> Option<Step> {
    if let Some(reply) = ctx.local_reply.take() {
        take_back(ctx, cb, payload);
        return Some(Step::Reply(reply));
    }
    if ctx.closed {
        // The API has no stream reset: a closed stream ends with 503 and no body.
        take_back(ctx, cb, payload);
        let mut reply = unavailable();
        reply.details = "filter_reply";
        return Some(Step::Reply(reply));
    }
    let request_side = matches!(
        cb,
        StreamCallback::RequestHeaders
            | StreamCallback::RequestBody
            | StreamCallback::RequestTrailers
    );
    let continued = if request_side {
        ctx.continue_request
    } else {
        ctx.continue_response
    };
    if continued {
        take_back(ctx, cb, payload);
        return Some(Step::Continue);
    }
    None
}

/// While a filter buffers, the body stays readable between body calls (from trailers and
/// async callbacks), as Envoy's decoding/encoding buffer does. It is a copy: edits made
/// outside a body callback do not reach the stream.
fn keep_buffered(ctx: &mut StreamCtx, cb: StreamCallback, payload: &Payload<'_>) {
    match (cb, payload) {
        (StreamCallback::RequestBody, Payload::Body(b)) => ctx.request_body = Some((*b).clone()),
        (StreamCallback::ResponseBody, Payload::Body(b)) => ctx.response_body = Some((*b).clone()),
        _ => {}
    }
}

/// Size of the body lent for a body callback, as the filter left it.
fn lent_body_len(ctx: &StreamCtx, cb: StreamCallback) -> usize {
    let body = match cb {
        StreamCallback::RequestBody => ctx.request_body.as_ref(),
        StreamCallback::ResponseBody => ctx.response_body.as_ref(),
        _ => None,
    };
    body.map_or(0, Vec::len)
}

/// Move the payload into the context for the callback.
fn lend(ctx: &mut StreamCtx, cb: StreamCallback, payload: &mut Payload<'_>) {
    match (cb, payload) {
        (StreamCallback::RequestHeaders, Payload::Headers(h)) => {
            ctx.request_headers = Some(mem::take(*h));
        }
        (StreamCallback::RequestTrailers, Payload::Headers(h)) => {
            ctx.request_trailers = Some(mem::take(*h));
        }
        (StreamCallback::ResponseHeaders, Payload::Headers(h)) => {
            ctx.response_headers = Some(mem::take(*h));
        }
        (StreamCallback::ResponseTrailers, Payload::Headers(h)) => {
            ctx.response_trailers = Some(mem::take(*h));
        }
        (StreamCallback::RequestBody, Payload::Body(b)) => ctx.request_body = Some(mem::take(*b)),
        (StreamCallback::ResponseBody, Payload::Body(b)) => ctx.response_body = Some(mem::take(*b)),
        _ => {}
    }
}

/// Move the payload back out: its phase is over, so the map is no longer reachable.
fn take_back(ctx: &mut StreamCtx, cb: StreamCallback, payload: &mut Payload<'_>) {
    match (cb, payload) {
        (StreamCallback::RequestHeaders, Payload::Headers(h)) => {
            if let Some(map) = ctx.request_headers.take() {
                ctx.request_seen = Some(map.clone());
                **h = map;
            }
        }
        (StreamCallback::ResponseHeaders, Payload::Headers(h)) => {
            if let Some(map) = ctx.response_headers.take() {
                ctx.response_seen = Some(map.clone());
                **h = map;
            }
        }
        (StreamCallback::RequestTrailers, Payload::Headers(h)) => {
            ctx.request_body = None;
            if let Some(map) = ctx.request_trailers.take() {
                **h = map;
            }
        }
        (StreamCallback::ResponseTrailers, Payload::Headers(h)) => {
            ctx.response_body = None;
            if let Some(map) = ctx.response_trailers.take() {
                **h = map;
            }
        }
        (StreamCallback::RequestBody, Payload::Body(b)) => {
            if let Some(body) = ctx.request_body.take() {
                **b = body;
            }
        }
        (StreamCallback::ResponseBody, Payload::Body(b)) => {
            if let Some(body) = ctx.response_body.take() {
                **b = body;
            }
        }
        _ => {}
    }
}
