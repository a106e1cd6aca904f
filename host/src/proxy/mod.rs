//! One request through the gateway, in Envoy's order:
//! request headers -> filters -> route -> request body -> filters -> cluster (with retries)
//! -> response headers and body -> filters (reverse order) -> client, then the access log.
//!
//! Answers the gateway makes itself (no route, 413, 503, 504) pass through the filters'
//! response callbacks like Envoy's local replies; a filter's own local reply is sent as is.

mod request_body;
mod response;
mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response, StatusCode};
use modelgate_runtime::{ChainStream, Flow, Headers, StreamInfo};

use crate::access_log::AccessEntry;
use crate::body::{GatewayBody, ReplayBody, json_error};
use crate::conn_info::ConnInfo;
use crate::global_ratelimit::Verdict;
use crate::headers;
use crate::route::Action;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::tracing::{self, Finished, RequestTrace};

use request_body::{BodyError, RequestBody, RequestPump};
use upstream::{ForwardError, Target};

/// Serves one request; never fails (errors become responses).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    if lacks_h2_path(&request) {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            &json_error("missing :path pseudo-header"),
        ));
    }
    if request.version() < hyper::Version::HTTP_2
        && let Some(why) = headers::unsupported_transfer_coding(request.headers())
    {
        // Envoy's codec refuses these before any filter or route sees the request, closing
        // the connection: the bytes after the head cannot be framed with confidence.
        let mut reply = plain(StatusCode::NOT_IMPLEMENTED, &json_error(&why));
        reply.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return Ok(reply);
    }
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
    shared.metrics.request_started(&conn.listener);
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
    // `method` serves the HEAD check too; `path` only the line.
    let mut log = AccessEntry {
        start: Some(start_time),
        method: request.method().clone(),
        protocol,
        ..AccessEntry::default()
    };
    if snapshot.config.access_log.enabled {
        // Without the query string, which may carry a token (Envoy's REQ_WITHOUT_QUERY).
        log.path = request.uri().path().to_owned();
    }
    let exchange = Exchange {
        shared,
        snapshot,
        conn,
        chain,
        log,
        started: Instant::now(),
        grpc: false,
        trace: None,
    };
    Ok(exchange.run(request).await)
}

/// An HTTP/2 request other than CONNECT must carry `:path` (RFC 9113 8.3.1); hyper passes
/// one without it, and serving it as `/` would route a request nobody sent. `Uri::path` and
/// `path_and_query` report an absent path as `/`; only the URI's parts tell it apart.
fn lacks_h2_path(request: &Request<Incoming>) -> bool {
    request.version() == hyper::Version::HTTP_2
        && request.method() != hyper::Method::CONNECT
        && request.uri().clone().into_parts().path_and_query.is_none()
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
    conn: Arc<ConnInfo>,
    chain: ChainStream,
    /// Also holds the request id the gateway answers with and sends upstream.
    log: AccessEntry,
    started: Instant,
    /// A gRPC request: its local replies are gRPC trailers-only answers, as Envoy sends them.
    grpc: bool,
    /// The request's spans, when the config traces (`tracing`).
    trace: Option<RequestTrace>,
}

impl Exchange {
    async fn run(mut self, request: Request<Incoming>) -> Response<GatewayBody> {
        let (parts, body) = request.into_parts();
        let (mut request_headers, request_id) = headers::request_headers(
            &parts,
            self.conn.source.ip(),
            self.conn.tls,
            &self.snapshot.config.client_traffic,
        );
        // hyper's header values share the connection's read buffer: kept for the exchange,
        // they pin it and hyper reads ahead into a second one (4-6 MiB over 1,000 connections).
        drop(parts);
        self.log.request_id = request_id;
        self.grpc = headers::is_grpc(&request_headers);
        if let Some(tracer) = &self.snapshot.tracer {
            // Envoy's connection manager starts the span before the filters run, on the
            // headers with its request id (`ConnectionManagerImpl::ActiveStream::traceRequest`).
            let start = self.log.start.unwrap_or_else(SystemTime::now);
            self.trace = tracer.start(&request_headers, start);
        }
        // Envoy picks the route before the filters run and re-picks it when they clear the cache.
        let mut route = self
            .snapshot
            .routes
            .position(self.conn.listener_index, &request_headers);
        let limit = self.snapshot.config.request_timeout.0;
        let phase = self.request_phase(&mut request_headers, body, &mut route);
        match tokio::time::timeout(limit, phase).await {
            Ok(Ok(body)) => self.dispatch(route, request_headers, body).await,
            Ok(Err(error)) => Box::pin(self.body_error(error)).await,
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
        let held = match self.chain.request_headers(request_headers, end).await {
            Flow::LocalReply(reply) => return Err(BodyError::Reply(reply)),
            // A filter holds the headers until its body callbacks let them go.
            Flow::StopAndBuffer => true,
            Flow::Continue => false,
        };
        if !held && self.chain.take_route_cache_cleared() {
            *route = self
                .snapshot
                .routes
                .position(self.conn.listener_index, request_headers);
        }
        let body = if end {
            RequestBody::Complete {
                data: Bytes::new(),
                trailers: None,
            }
        } else {
            self.read_body(body).await?
        };
        if let Some(released) = self.chain.take_released_headers() {
            *request_headers = released;
        }
        if self.chain.take_route_cache_cleared() {
            *route = self
                .snapshot
                .routes
                .position(self.conn.listener_index, request_headers);
        }
        Ok(body)
    }

    /// The client or a filter held the request past `requestTimeout` (Envoy's 408). The
    /// filters are mid-callback, so the answer does not pass them again.
    fn request_timed_out(mut self) -> Response<GatewayBody> {
        self.log.detail = Some("request_timeout");
        let response_headers = json_error_headers(StatusCode::REQUEST_TIMEOUT);
        self.finish_response(response_headers, json_error("request timeout").into(), None)
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
    /// The paths rarely taken (gateway replies, streaming bodies, body errors) are boxed:
    /// inline, their state would size every request's future, which hyper allocates per
    /// connection (7.7 KiB before).
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
            return Box::pin(self.gateway_reply(StatusCode::NOT_FOUND, &message, "no_route")).await;
        };
        self.log.route = Arc::clone(&route.name);
        // Redirects and direct answers are the router's, after the filters and before the
        // rate limit filter, which skips routes without a cluster.
        let backends = match &route.action {
            Action::Forward(backends) => backends,
            Action::Redirect(redirect) => {
                let location = vec![(
                    "location".to_owned(),
                    redirect.location(&request_headers).into_bytes(),
                )];
                let reply = self.direct_response(route, redirect.status, location, Bytes::new());
                return Box::pin(reply).await;
            }
            Action::DirectResponse(status, body) => {
                let reply = self.direct_response(route, *status, Vec::new(), body.clone());
                return Box::pin(reply).await;
            }
        };
        // Envoy's local rate limit filter runs after the Wasm filters, on the route they chose;
        // Envoy Gateway gives it to forwarding routes only (local_ratelimit.go, patchRoute).
        if let Some(limit) = &route.local_rate_limit
            && !limit.allow(&request_headers, std::time::Instant::now())
        {
            return Box::pin(self.local_rate_limited()).await;
        }
        let Some(cluster_name) = backends.pick() else {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            let message = format!("route {} has no backend with a weight above 0", route.name);
            return Box::pin(self.gateway_reply(status, &message, "direct_response")).await;
        };
        self.log.cluster = Arc::clone(cluster_name);
        let Some(cluster) = snapshot.clusters.get(&**cluster_name).cloned() else {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            return Box::pin(self.gateway_reply(status, "no healthy upstream", "no_cluster")).await;
        };
        if let Some(limit) = &snapshot.global_rate_limit {
            // Envoy's rate limit filter runs after the Wasm filters, on the route they chose.
            let verdict = limit
                .check(&self.conn.listener, &route.name, &request_headers)
                .await;
            if verdict == Verdict::OverLimit {
                return Box::pin(self.rate_limited()).await;
            }
            if verdict == Verdict::Failed && limit.fail_closed() {
                let status = StatusCode::INTERNAL_SERVER_ERROR;
                let reply =
                    self.gateway_reply(status, "rate limit service error", "rate_limit_error");
                return Box::pin(reply).await;
            }
        }
        headers::apply_mutations(&mut request_headers, &route.request_headers);
        // Envoy's router rewrites after the route's header mutations
        // (`RouteEntryImplBase::finalizeRequestHeaders`), so no filter sees the rewritten URL.
        if let Some(rewrite) = &route.rewrite {
            rewrite.apply(&mut request_headers);
        }
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
                match Box::pin(self.forward_streaming(&target, released, pump)).await {
                    Ok(upstream) => upstream,
                    Err(e) => return Box::pin(self.body_error(e)).await,
                }
            }
        };
        let error = match upstream {
            Ok(upstream) => return self.respond(route, cluster_name, upstream).await,
            Err(error) => error,
        };
        // Envoy's local reply bodies for each (`source/common/router/router.cc`).
        let (status, message) = match error {
            ForwardError::NoHealthy => (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            ForwardError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            ForwardError::BadRequestHeaders
            | ForwardError::Overflow
            | ForwardError::ConnectFailure
            | ForwardError::Reset
            | ForwardError::ServerError => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            ),
        };
        Box::pin(self.gateway_reply(status, message, error.detail())).await
    }

    async fn body_error(self, error: BodyError) -> Response<GatewayBody> {
        match error {
            BodyError::Reply(reply) => self.filter_reply(reply),
            BodyError::Client(e) => {
                log::debug!("request {}: client body error: {e}", self.log.request_id);
                self.gateway_reply(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read",
                    "client_body_error",
                )
                .await
            }
        }
    }

    /// Metrics, the access-log line and the filters' `on_log`/`on_done`.
    fn complete(self, status: u16, bytes_sent: u64) {
        let Exchange {
            shared,
            snapshot,
            conn,
            chain,
            mut log,
            started,
            grpc: _,
            trace,
        } = self;
        log.status = status;
        log.bytes_sent = bytes_sent;
        log.duration = started.elapsed();
        shared
            .metrics
            .count_request(&conn.listener, &log.cluster, status);
        shared.metrics.request_finished(&conn.listener);
        let access = &snapshot.config.access_log;
        let traced = trace.is_some() && snapshot.tracer.is_some();
        if !access.enabled && !traced {
            chain.finish();
            return;
        }
        // Filter state is read before `finish` consumes the stream.
        let state = chain.filter_state();
        chain.finish();
        if let (Some(trace), Some(tracer)) = (trace, &snapshot.tracer) {
            tracer.finish(
                &trace,
                &Finished {
                    status,
                    response_flags: tracing::response_flags(log.detail),
                    cluster: &log.cluster,
                    protocol: log.protocol,
                    peer: conn.source.ip(),
                    bytes_received: log.bytes_received,
                    bytes_sent,
                    filter_state: &state,
                },
            );
        }
        if access.enabled {
            log.write(&conn, &access.filter_state, &state);
        }
    }
}

/// The response headers of a gateway-made JSON error (`{"error": "..."}`, `KServe`'s shape).
fn json_error_headers(status: StatusCode) -> Headers {
    vec![
        (":status".to_owned(), status.as_str().as_bytes().to_vec()),
        ("content-type".to_owned(), b"application/json".to_vec()),
    ]
}
