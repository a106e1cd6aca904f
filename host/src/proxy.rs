//! One request through the gateway, in Envoy's order:
//! request headers -> filters -> route -> request body -> filters -> cluster (with retries)
//! -> response headers and body -> filters (reverse order) -> client, then the access log.
//!
//! Answers the gateway makes itself (no route, 413, 503, 504) pass through the filters'
//! response callbacks like Envoy's local replies; a filter's own local reply is sent as is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use modelgate_runtime::{ChainStream, Flow, Headers, LocalReply, StreamInfo};
use tokio::time::timeout_at;

use crate::access_log::AccessEntry;
use crate::body::{BodySender, ChannelBody, GatewayBody, ReplayBody, json_error};
use crate::cluster::{Cluster, InFlight};
use crate::config::RetryOn;
use crate::gateway::Shared;
use crate::headers::{self, REQUEST_ID};
use crate::route::Route;
use crate::snapshot::Snapshot;

/// The connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: String,
    pub listener_index: usize,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub connection_id: u64,
    pub tls: bool,
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let Some(snapshot) = shared.snapshot() else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &json_error("gateway is not configured yet"),
        ));
    };
    let health = snapshot
        .config
        .listeners
        .get(conn.listener_index)
        .and_then(|l| l.health_path.as_deref());
    if health.is_some_and(|h| h == request.uri().path()) {
        return Ok(plain(StatusCode::OK, br#"{"status":"ok"}"#));
    }
    shared.metrics.request_started();
    let protocol = if request.version() == hyper::Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    };
    let start_time = SystemTime::now();
    let chain = snapshot.chain.stream(StreamInfo {
        source: conn.source,
        destination: conn.destination,
        connection_id: conn.connection_id,
        tls: conn.tls,
        protocol,
        start_time,
    });
    let log = AccessEntry {
        start: Some(start_time),
        listener: conn.listener.clone(),
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string),
        protocol,
        client: conn.source.to_string(),
        ..AccessEntry::default()
    };
    let exchange = Exchange {
        shared,
        snapshot,
        chain,
        log,
        started: Instant::now(),
        request_id: String::new(),
    };
    Ok(exchange.run(request, &conn).await)
}

fn plain(status: StatusCode, body: &[u8]) -> Response<GatewayBody> {
    let mut response = Response::new(ReplayBody::new(Bytes::copy_from_slice(body), None).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The state of one request until its access-log line is written.
struct Exchange {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    chain: ChainStream,
    log: AccessEntry,
    started: Instant,
    request_id: String,
}

/// Why the request body stopped.
enum BodyError {
    Reply(LocalReply),
    Client(hyper::Error),
}

/// The request body after the buffering phase.
enum RequestBody {
    /// All of it, small enough to keep for a retry.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Larger than the buffer limit and released by the filters: it streams, without retries.
    Streaming { released: Bytes, pump: RequestPump },
}

/// Feeds request body frames through the chain, releasing what the filters let through.
struct RequestPump {
    body: Incoming,
    pending: Vec<u8>,
    finished: bool,
}

/// Data the filters released, and whether (and with which trailers) the body ended.
struct Released {
    data: Bytes,
    end: bool,
    trailers: Option<HeaderMap>,
}

impl RequestPump {
    async fn step(
        &mut self,
        chain: &mut ChainStream,
        received: &mut u64,
    ) -> Result<Released, BodyError> {
        loop {
            if self.finished {
                return Ok(Released {
                    data: Bytes::new(),
                    end: true,
                    trailers: None,
                });
            }
            let frame = match self.body.frame().await {
                None => None,
                Some(Ok(frame)) => Some(frame),
                Some(Err(e)) => return Err(BodyError::Client(e)),
            };
            let Some(frame) = frame else {
                self.finished = true;
                let data = self.run(chain, true).await?.unwrap_or_default();
                return Ok(Released {
                    data,
                    end: true,
                    trailers: None,
                });
            };
            match frame.into_data() {
                Ok(data) => {
                    *received += data.len() as u64;
                    self.pending.extend_from_slice(&data);
                    let end = self.body.is_end_stream();
                    self.finished = end;
                    if let Some(data) = self.run(chain, end).await? {
                        return Ok(Released {
                            data,
                            end,
                            trailers: None,
                        });
                    }
                }
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        continue;
                    };
                    let mut list = headers::response_headers(StatusCode::OK, &trailers);
                    list.remove(0);
                    if let Flow::LocalReply(reply) = chain.request_trailers(&mut list).await {
                        return Err(BodyError::Reply(reply));
                    }
                    self.finished = true;
                    let data = Bytes::from(std::mem::take(&mut self.pending));
                    return Ok(Released {
                        data,
                        end: true,
                        trailers: Some(headers::to_header_map(&list)),
                    });
                }
            }
        }
    }

    /// One `request_body` call over the pending bytes: `Some` when the filters released them.
    async fn run(
        &mut self,
        chain: &mut ChainStream,
        end: bool,
    ) -> Result<Option<Bytes>, BodyError> {
        match chain.request_body(&mut self.pending, end).await {
            Flow::Continue => Ok(Some(std::mem::take(&mut self.pending).into())),
            // At the end of the stream there is nothing more to wait for.
            Flow::StopAndBuffer if end => Ok(Some(std::mem::take(&mut self.pending).into())),
            Flow::StopAndBuffer => Ok(None),
            Flow::LocalReply(reply) => Err(BodyError::Reply(reply)),
        }
    }

    /// Sends the rest of the body upstream as the filters release it.
    async fn stream_rest(
        mut self,
        chain: &mut ChainStream,
        received: &mut u64,
        tx: BodySender,
    ) -> Result<(), BodyError> {
        loop {
            let released = self.step(chain, received).await?;
            if !released.data.is_empty() && tx.send(Ok(Frame::data(released.data))).await.is_err() {
                // The upstream stopped reading (it answered early or broke): stop quietly.
                return Ok(());
            }
            if let Some(trailers) = released.trailers {
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            }
            if released.end {
                return Ok(());
            }
        }
    }
}

/// The upstream answer and what it took to get it.
struct Upstream {
    response: Response<Incoming>,
    in_flight: InFlight,
    deadline: tokio::time::Instant,
}

/// Why no upstream answer came.
enum ForwardError {
    NoHealthy,
    Failed(&'static str),
    Timeout,
}

impl Exchange {
    async fn run(mut self, request: Request<Incoming>, conn: &ConnInfo) -> Response<GatewayBody> {
        let (parts, body) = request.into_parts();
        let (mut request_headers, request_id) =
            headers::request_headers(&parts, conn.source.ip(), conn.tls);
        self.request_id.clone_from(&request_id);
        self.log.request_id = request_id;
        // Envoy picks the route before the filters run and re-picks it when they clear the cache.
        let mut route = self.snapshot.routes.position(&request_headers);
        let limit = self.snapshot.config.request_timeout.0;
        let phase = self.request_phase(&mut request_headers, body, &mut route);
        match tokio::time::timeout(limit, phase).await {
            Ok(Ok(body)) => self.dispatch(route, request_headers, body).await,
            Ok(Err(error)) => self.body_error(error).await,
            Err(_) => self.request_timed_out(),
        }
    }

    /// Request headers and body through the filters, re-matching the route when they ask.
    async fn request_phase(
        &mut self,
        request_headers: &mut Headers,
        body: Incoming,
        route: &mut Option<usize>,
    ) -> Result<RequestBody, BodyError> {
        let end = body.is_end_stream();
        if let Flow::LocalReply(reply) = self.chain.request_headers(request_headers, end).await {
            return Err(BodyError::Reply(reply));
        }
        if self.chain.take_route_cache_cleared() {
            *route = self.snapshot.routes.position(request_headers);
        }
        let body = if end {
            RequestBody::Complete {
                data: Bytes::new(),
                trailers: None,
            }
        } else {
            self.read_body(body).await?
        };
        if self.chain.take_route_cache_cleared() {
            *route = self.snapshot.routes.position(request_headers);
        }
        Ok(body)
    }

    /// The client or a filter held the request past `requestTimeout` (Envoy's 408). The
    /// filters are mid-callback, so the answer does not pass them again.
    fn request_timed_out(mut self) -> Response<GatewayBody> {
        self.log.detail = Some("request_timeout");
        let response_headers = vec![
            (":status".to_owned(), b"408".to_vec()),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        let body = Bytes::from(json_error("request timeout"));
        let size = body.len() as u64;
        self.finish_response(&response_headers, ReplayBody::new(body, None).boxed(), size)
    }

    /// Buffers the request body through the filters until it ends or outgrows the limit.
    async fn read_body(&mut self, body: Incoming) -> Result<RequestBody, BodyError> {
        let limit = self.snapshot.config.buffer_limit.as_usize();
        let mut pump = RequestPump {
            body,
            pending: Vec::new(),
            finished: false,
        };
        let mut released = Vec::new();
        loop {
            let r = pump
                .step(&mut self.chain, &mut self.log.bytes_received)
                .await?;
            released.extend_from_slice(&r.data);
            if r.end {
                return Ok(RequestBody::Complete {
                    data: released.into(),
                    trailers: r.trailers,
                });
            }
            if released.len() > limit {
                return Ok(RequestBody::Streaming {
                    released: released.into(),
                    pump,
                });
            }
        }
    }

    /// Routes the filtered request and sends it upstream.
    async fn dispatch(
        mut self,
        route: Option<usize>,
        mut request_headers: Headers,
        body: RequestBody,
    ) -> Response<GatewayBody> {
        let snapshot = Arc::clone(&self.snapshot);
        let Some(route) = route.and_then(|i| snapshot.routes.get(i)) else {
            let path = headers::get_str(&request_headers, ":path").unwrap_or("/");
            let path = path.split_once('?').map_or(path, |(p, _)| p).to_owned();
            let message = format!("no route for {path}");
            return self
                .gateway_reply(StatusCode::NOT_FOUND, &message, "no_route")
                .await;
        };
        self.log.route.clone_from(&route.name);
        self.log.cluster.clone_from(&route.cluster);
        let Some(cluster) = snapshot.clusters.get(&route.cluster).cloned() else {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            return self
                .gateway_reply(status, "no healthy upstream", "no_cluster")
                .await;
        };
        headers::apply_mutations(&mut request_headers, &route.request_headers);
        headers::set(&mut request_headers, REQUEST_ID, self.request_id.as_bytes());
        let target = Target {
            route,
            cluster: &cluster,
            request: &request_headers,
            deadline: tokio::time::Instant::now() + route.timeout,
        };
        let upstream = match body {
            RequestBody::Complete { data, trailers } => {
                self.forward(&target, ReplayBody::new(data, trailers)).await
            }
            RequestBody::Streaming { released, pump } => {
                match self.forward_streaming(&target, released, pump).await {
                    Ok(upstream) => upstream,
                    Err(e) => return self.body_error(e).await,
                }
            }
        };
        let (status, message, detail) = match upstream {
            Ok(upstream) => return self.respond(route, upstream).await,
            Err(ForwardError::NoHealthy) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
                "no_healthy_upstream",
            ),
            Err(ForwardError::Failed(detail)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
                detail,
            ),
            Err(ForwardError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout",
                "upstream_timeout",
            ),
        };
        self.gateway_reply(status, message, detail).await
    }

    async fn body_error(self, error: BodyError) -> Response<GatewayBody> {
        match error {
            BodyError::Reply(reply) => self.filter_reply(reply),
            BodyError::Client(e) => {
                log::debug!("request {}: client body error: {e}", self.request_id);
                self.gateway_reply(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read",
                    "client_body_error",
                )
                .await
            }
        }
    }

    /// Sends a buffered request, retrying on another endpoint as the route allows.
    async fn forward(
        &mut self,
        target: &Target<'_>,
        body: ReplayBody,
    ) -> Result<Upstream, ForwardError> {
        let attempts = 1 + target.route.retry.num_retries as usize;
        let mut tried = Vec::new();
        let mut last = ForwardError::NoHealthy;
        for attempt in 0..attempts {
            // Once every endpoint was tried, a retry may go back to one of them.
            if tried.len() == target.cluster.endpoints.len() {
                tried.clear();
            }
            let Some(in_flight) = target.cluster.pick(&tried) else {
                break;
            };
            tried.push(in_flight.index());
            if attempt > 0 {
                target.cluster.count_retry();
            }
            self.log.endpoint = in_flight.endpoint().address.to_string();
            let sent_at = Instant::now();
            let last_attempt = attempt + 1 == attempts;
            let result = target
                .send(body.clone().boxed(), in_flight, last_attempt)
                .await;
            self.log.upstream = Some(sent_at.elapsed());
            match result {
                Ok(upstream) => return Ok(upstream),
                Err((error, retry)) => {
                    last = error;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Streams a large request: the filters keep seeing the rest of the body while it goes
    /// upstream, so there is no retry (the body is gone).
    async fn forward_streaming(
        &mut self,
        target: &Target<'_>,
        released: Bytes,
        pump: RequestPump,
    ) -> Result<Result<Upstream, ForwardError>, BodyError> {
        let Some(in_flight) = target.cluster.pick(&[]) else {
            return Ok(Err(ForwardError::NoHealthy));
        };
        let (tx, body) = ChannelBody::new();
        let _ = tx.send(Ok(Frame::data(released))).await;
        let Self { chain, log, .. } = self;
        log.endpoint = in_flight.endpoint().address.to_string();
        let sent_at = Instant::now();
        let (fed, sent) = tokio::join!(
            pump.stream_rest(chain, &mut log.bytes_received, tx),
            target.send(GatewayBody::new(body), in_flight, true)
        );
        log.upstream = Some(sent_at.elapsed());
        fed?;
        Ok(sent.map_err(|(e, _)| e))
    }

    /// Runs the upstream response through the filters and starts sending it.
    async fn respond(mut self, route: &Route, upstream: Upstream) -> Response<GatewayBody> {
        let Upstream {
            response,
            in_flight,
            deadline,
        } = upstream;
        if let Some(elapsed) = self.log.upstream {
            self.shared
                .metrics
                .observe_upstream(&route.cluster, elapsed);
        }
        self.chain
            .set_upstream(&route.cluster, in_flight.endpoint().address);
        let (parts, body) = response.into_parts();
        let mut response_headers = headers::response_headers(parts.status, &parts.headers);
        headers::apply_mutations(&mut response_headers, &route.response_headers);
        self.send_response(
            response_headers,
            ResponseSource::Upstream {
                body,
                deadline,
                in_flight,
            },
        )
        .await
    }

    /// A response the gateway makes itself, passed through the filters' response callbacks.
    async fn gateway_reply(
        self,
        status: StatusCode,
        message: &str,
        detail: &'static str,
    ) -> Response<GatewayBody> {
        let mut exchange = self;
        exchange.log.detail = Some(detail);
        let response_headers = vec![
            (":status".to_owned(), status.as_str().as_bytes().to_vec()),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        exchange
            .send_response(response_headers, ResponseSource::Local(json_error(message)))
            .await
    }

    /// A filter's local reply: the runtime already ran the response callbacks over it.
    fn filter_reply(mut self, reply: LocalReply) -> Response<GatewayBody> {
        if self.log.detail.is_none() {
            self.log.detail = Some("filter_reply");
        }
        let mut response_headers =
            vec![(":status".to_owned(), reply.status.to_string().into_bytes())];
        response_headers.extend(reply.headers);
        let body = Bytes::from(reply.body);
        self.finish_response(
            &response_headers,
            ReplayBody::new(body.clone(), None).boxed(),
            body.len() as u64,
        )
    }

    /// Response headers then body through the chain; the client gets the headers once the
    /// filters released the first body bytes (or the whole body ended).
    async fn send_response(
        mut self,
        mut response_headers: Headers,
        source: ResponseSource,
    ) -> Response<GatewayBody> {
        let (mut body, deadline, in_flight) = match source {
            ResponseSource::Local(data) => {
                return self.send_local_through_chain(response_headers, data).await;
            }
            ResponseSource::Upstream {
                body,
                deadline,
                in_flight,
            } => (body, deadline, in_flight),
        };
        let end = body.is_end_stream();
        if let Flow::LocalReply(reply) = self
            .chain
            .response_headers(&mut response_headers, end)
            .await
        {
            return self.filter_reply(reply);
        }
        let mut pending = Vec::new();
        let mut trailers = None;
        let mut done = end;
        let mut first = Bytes::new();
        while !done {
            let frame = match timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    return self.upstream_failed_before_headers(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream request timeout",
                        "upstream_timeout",
                    );
                }
                Ok(Some(Err(_))) => {
                    return self.upstream_failed_before_headers(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream reset while sending the body",
                        "upstream_reset",
                    );
                }
                Ok(None) => None,
                Ok(Some(Ok(frame))) => Some(frame),
            };
            let (flow, end) = match frame {
                None => (self.chain.response_body(&mut pending, true).await, true),
                Some(frame) => match frame.into_data() {
                    Ok(data) => {
                        pending.extend_from_slice(&data);
                        let end = body.is_end_stream();
                        (self.chain.response_body(&mut pending, end).await, end)
                    }
                    Err(frame) => {
                        let Ok(map) = frame.into_trailers() else {
                            continue;
                        };
                        let mut list = headers::response_headers(StatusCode::OK, &map);
                        list.remove(0);
                        let flow = self.chain.response_trailers(&mut list).await;
                        trailers = Some(headers::to_header_map(&list));
                        (flow, true)
                    }
                },
            };
            match flow {
                Flow::Continue => {
                    first = std::mem::take(&mut pending).into();
                    done = end;
                    break;
                }
                Flow::StopAndBuffer if end => {
                    first = std::mem::take(&mut pending).into();
                    done = true;
                }
                Flow::StopAndBuffer => {}
                Flow::LocalReply(reply) => return self.filter_reply(reply),
            }
        }
        if done {
            let size = first.len() as u64;
            drop(in_flight);
            return self.finish_response(
                &response_headers,
                ReplayBody::new(first, trailers).boxed(),
                size,
            );
        }
        let (tx, channel) = ChannelBody::new();
        let response = self.response_head(&response_headers, GatewayBody::new(channel));
        let status = response.status().as_u16();
        tokio::spawn(self.stream_response(status, first, body, deadline, in_flight, tx));
        response
    }

    /// A gateway answer after the upstream was reached: the chain has seen the upstream's
    /// response headers, so Envoy would reset; before any byte went out the client gets an
    /// error response instead, without passing the filters again.
    fn upstream_failed_before_headers(
        mut self,
        status: StatusCode,
        message: &str,
        detail: &'static str,
    ) -> Response<GatewayBody> {
        self.log.detail = Some(detail);
        let response_headers = vec![
            (":status".to_owned(), status.as_str().as_bytes().to_vec()),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        let body = Bytes::from(json_error(message));
        let size = body.len() as u64;
        self.finish_response(&response_headers, ReplayBody::new(body, None).boxed(), size)
    }

    async fn send_local_through_chain(
        mut self,
        mut response_headers: Headers,
        data: Vec<u8>,
    ) -> Response<GatewayBody> {
        if let Flow::LocalReply(reply) = self
            .chain
            .response_headers(&mut response_headers, false)
            .await
        {
            return self.filter_reply(reply);
        }
        let mut body = data;
        if let Flow::LocalReply(reply) = self.chain.response_body(&mut body, true).await {
            return self.filter_reply(reply);
        }
        let body = Bytes::from(body);
        let size = body.len() as u64;
        self.finish_response(&response_headers, ReplayBody::new(body, None).boxed(), size)
    }

    /// The client response head: status from `:status`, headers, `x-request-id`.
    fn response_head(
        &self,
        response_headers: &Headers,
        body: GatewayBody,
    ) -> Response<GatewayBody> {
        let mut response = Response::new(body);
        *response.status_mut() = headers::status_of(response_headers);
        let mut map = headers::to_header_map(response_headers);
        if !map.contains_key(REQUEST_ID)
            && let Ok(id) = hyper::header::HeaderValue::from_str(&self.request_id)
        {
            map.insert(REQUEST_ID, id);
        }
        *response.headers_mut() = map;
        response
    }

    /// Sends a response whose whole body is known. A `content-length` that no longer matches
    /// (a filter changed the body) is corrected; HEAD, 204 and 304 answers keep theirs.
    fn finish_response(
        self,
        response_headers: &Headers,
        body: GatewayBody,
        size: u64,
    ) -> Response<GatewayBody> {
        let mut response = self.response_head(response_headers, body);
        let status = response.status();
        let bodiless = self.log.method == "HEAD"
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if !bodiless
            && response
                .headers()
                .contains_key(hyper::header::CONTENT_LENGTH)
        {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_LENGTH, size.into());
        }
        self.complete(status.as_u16(), size);
        response
    }

    /// Streams the rest of an upstream body through the filters after the head went out.
    /// A late failure (timeout, reset, a filter's late local reply, buffer overflow) can only
    /// abort the stream, as in Envoy.
    async fn stream_response(
        mut self,
        status: u16,
        first: Bytes,
        mut body: Incoming,
        deadline: tokio::time::Instant,
        in_flight: InFlight,
        tx: BodySender,
    ) {
        let mut sent = first.len() as u64;
        if tx.send(Ok(Frame::data(first))).await.is_err() {
            self.log.detail = Some("client_closed");
            return self.complete(status, sent);
        }
        let mut pending = Vec::new();
        let failure = loop {
            let frame = match timeout_at(deadline, body.frame()).await {
                Err(_) => break Some("upstream_timeout_in_body"),
                Ok(Some(Err(_))) => break Some("upstream_reset_in_body"),
                Ok(None) => None,
                Ok(Some(Ok(frame))) => Some(frame),
            };
            let (flow, end, trailers) = match frame {
                None => (
                    self.chain.response_body(&mut pending, true).await,
                    true,
                    None,
                ),
                Some(frame) => match frame.into_data() {
                    Ok(data) => {
                        pending.extend_from_slice(&data);
                        let end = body.is_end_stream();
                        (self.chain.response_body(&mut pending, end).await, end, None)
                    }
                    Err(frame) => {
                        let Ok(map) = frame.into_trailers() else {
                            continue;
                        };
                        let mut list = headers::response_headers(StatusCode::OK, &map);
                        list.remove(0);
                        let flow = self.chain.response_trailers(&mut list).await;
                        (flow, true, Some(headers::to_header_map(&list)))
                    }
                },
            };
            let release = match flow {
                Flow::Continue => true,
                Flow::StopAndBuffer if end => true,
                Flow::StopAndBuffer => false,
                // Too late for another answer: the head is gone (this is also how the
                // runtime's 500 for a response buffered past the limit ends).
                Flow::LocalReply(_) => break Some("local_reply_after_headers"),
            };
            if release {
                let data = Bytes::from(std::mem::take(&mut pending));
                sent += data.len() as u64;
                if !data.is_empty() && tx.send(Ok(Frame::data(data))).await.is_err() {
                    break Some("client_closed");
                }
                if let Some(trailers) = trailers {
                    let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                }
                if end {
                    break None;
                }
            }
        };
        drop(in_flight);
        if let Some(detail) = failure {
            self.log.detail = Some(detail);
            let _ = tx.send(Err(detail.into())).await;
        }
        self.complete(status, sent);
    }

    /// Metrics, the access-log line and the filters' `on_log`/`on_done`.
    fn complete(self, status: u16, bytes_sent: u64) {
        let Exchange {
            shared,
            snapshot,
            chain,
            mut log,
            started,
            ..
        } = self;
        log.status = status;
        log.bytes_sent = bytes_sent;
        log.duration = started.elapsed();
        shared
            .metrics
            .count_request(&log.listener, &log.route, &log.cluster, status);
        shared.metrics.request_finished();
        let access = &snapshot.config.access_log;
        if access.enabled {
            // Filter state is read before `finish` consumes the stream.
            let state = chain.filter_state();
            chain.finish();
            log.write(&access.filter_state, &state);
        } else {
            chain.finish();
        }
    }
}

/// Where one request goes: the matched route, its cluster, the filtered headers, the deadline.
struct Target<'a> {
    route: &'a Route,
    cluster: &'a Arc<Cluster>,
    request: &'a Headers,
    deadline: tokio::time::Instant,
}

impl Target<'_> {
    /// One try on one endpoint. The error says whether the route allows a retry; on the last
    /// attempt a 5xx answer is the answer.
    async fn send(
        &self,
        body: GatewayBody,
        in_flight: InFlight,
        last_attempt: bool,
    ) -> Result<Upstream, (ForwardError, bool)> {
        let (cluster, index) = (self.cluster, in_flight.index());
        let address = in_flight.endpoint().address;
        let upstream_request = headers::to_upstream_request(self.request, address, body)
            .map_err(|_| (ForwardError::Failed("bad_request_headers"), false))?;
        let retry_on = |on: RetryOn| self.route.retry.on.contains(&on);
        match timeout_at(self.deadline, cluster.client.request(upstream_request)).await {
            Err(_) => Err((ForwardError::Timeout, false)),
            Ok(Err(e)) if e.is_connect() => {
                log::debug!("cluster {}: connect to {address} failed: {e}", cluster.name);
                cluster.record_failure(index);
                let retry = retry_on(RetryOn::ConnectFailure);
                Err((ForwardError::Failed("upstream_connect_failure"), retry))
            }
            Ok(Err(e)) => {
                log::debug!("cluster {}: request to {address} failed: {e}", cluster.name);
                cluster.record_failure(index);
                Err((
                    ForwardError::Failed("upstream_reset"),
                    retry_on(RetryOn::Reset),
                ))
            }
            Ok(Ok(response)) => {
                if response.status().is_server_error() {
                    cluster.record_failure(index);
                    if retry_on(RetryOn::ServerError) && !last_attempt {
                        return Err((ForwardError::Failed("upstream_5xx"), true));
                    }
                } else {
                    cluster.record_success(index);
                }
                Ok(Upstream {
                    response,
                    in_flight,
                    deadline: self.deadline,
                })
            }
        }
    }
}

/// Where a response body comes from.
enum ResponseSource {
    Local(Vec<u8>),
    Upstream {
        body: Incoming,
        deadline: tokio::time::Instant,
        in_flight: InFlight,
    },
}
