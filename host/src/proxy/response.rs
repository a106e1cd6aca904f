//! The response through the filters (reverse order) to the client: upstream answers, the
//! gateway's own answers and filters' local replies; streaming once the head is out.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, Incoming};
use hyper::{HeaderMap, Response, StatusCode};
use modelgate_runtime::{Flow, Headers, LocalReply};
use tokio::time::timeout_at;

use super::upstream::Upstream;
use super::{Exchange, json_error_headers};
use crate::body::{BodySender, ChannelBody, GatewayBody, ReplayBody, json_error};
use crate::cluster::InFlight;
use crate::headers;
use crate::route::Route;

impl Exchange {
    /// Runs the upstream response through the filters and starts sending it.
    pub(super) async fn respond(
        mut self,
        route: &Route,
        cluster: &str,
        upstream: Upstream,
    ) -> Response<GatewayBody> {
        let Upstream {
            response,
            in_flight,
            deadline,
        } = upstream;
        if let Some(elapsed) = self.log.upstream {
            self.shared.metrics.observe_upstream(cluster, elapsed);
        }
        self.chain
            .set_upstream(cluster, in_flight.endpoint().address);
        let (parts, body) = response.into_parts();
        let mut response_headers = headers::response_headers(parts.status, &parts.headers);
        headers::apply_mutations(&mut response_headers, &route.response_headers);
        self.send_response(response_headers, body, deadline, in_flight)
            .await
    }

    /// A response the gateway makes itself, passed through the filters' response callbacks.
    pub(super) async fn gateway_reply(
        mut self,
        status: StatusCode,
        message: &str,
        detail: &'static str,
    ) -> Response<GatewayBody> {
        self.log.detail = Some(detail);
        let response_headers = json_error_headers(status);
        if self.grpc {
            let body = json_error(message);
            let grpc = headers::grpc_local_reply(response_headers, &body, None);
            return self.send_local_through_chain(grpc, Vec::new()).await;
        }
        self.send_local_through_chain(response_headers, json_error(message))
            .await
    }

    /// A route's own answer, a redirect or a direct response, as Envoy's router sends it
    /// (`router.cc`, the direct response): the status, the given headers (a redirect's
    /// `location`), `content-type: text/plain` when there is a body (the local reply's
    /// default), then the route's response headers; through the filters' response callbacks
    /// like any local reply.
    pub(super) async fn direct_response(
        mut self,
        route: &Route,
        status: StatusCode,
        extra: Headers,
        body: Bytes,
    ) -> Response<GatewayBody> {
        self.log.detail = Some("direct_response");
        let mut response_headers = Vec::with_capacity(extra.len() + 2);
        response_headers.push((":status".to_owned(), status.as_str().as_bytes().to_vec()));
        response_headers.extend(extra);
        if !body.is_empty() {
            response_headers.push(("content-type".to_owned(), b"text/plain".to_vec()));
        }
        headers::apply_mutations(&mut response_headers, &route.response_headers);
        if self.grpc {
            let grpc = headers::grpc_local_reply(response_headers, &body, None);
            return self.send_local_through_chain(grpc, Vec::new()).await;
        }
        self.send_local_through_chain(response_headers, body.to_vec())
            .await
    }

    /// Envoy's rate limit filter's answer over the limit: 429, `x-envoy-ratelimited: true`, no
    /// body (`source/extensions/filters/http/ratelimit/ratelimit.cc`), through the filters.
    pub(super) async fn rate_limited(self) -> Response<GatewayBody> {
        self.over_limit(b"", "request_rate_limited").await
    }

    /// Envoy's local rate limit filter's answer: 429 `local_rate_limited` (text), with
    /// `x-envoy-ratelimited: true` (`source/extensions/filters/http/local_ratelimit/local_ratelimit.cc`).
    pub(super) async fn local_rate_limited(self) -> Response<GatewayBody> {
        self.over_limit(b"local_rate_limited", "local_rate_limited")
            .await
    }

    async fn over_limit(mut self, body: &[u8], detail: &'static str) -> Response<GatewayBody> {
        self.log.detail = Some(detail);
        let mut response_headers = vec![
            (":status".to_owned(), b"429".to_vec()),
            ("x-envoy-ratelimited".to_owned(), b"true".to_vec()),
        ];
        if self.grpc {
            // A gRPC caller gets status 14 (UNAVAILABLE), Envoy's mapping of a 429.
            response_headers = headers::grpc_local_reply(response_headers, body, None);
            return self
                .send_local_through_chain(response_headers, Vec::new())
                .await;
        }
        if !body.is_empty() {
            response_headers.push(("content-type".to_owned(), b"text/plain".to_vec()));
        }
        self.send_local_through_chain(response_headers, body.to_vec())
            .await
    }

    /// A filter's local reply: the runtime already ran the response callbacks over it.
    pub(super) fn filter_reply(mut self, reply: LocalReply) -> Response<GatewayBody> {
        if self.log.detail.is_none() || reply.details == "wasm_fail_stream" {
            self.log.detail = Some(reply.details);
        }
        let mut response_headers =
            vec![(":status".to_owned(), reply.status.to_string().into_bytes())];
        response_headers.extend(reply.headers);
        if self.grpc {
            let grpc = headers::grpc_local_reply(response_headers, &reply.body, reply.grpc_status);
            return self.finish_response(grpc, Bytes::new(), None);
        }
        self.finish_response(response_headers, reply.body.into(), None)
    }

    /// Upstream response headers then body through the chain; the client gets the headers
    /// once the filters released the first body bytes (or the whole body ended).
    async fn send_response(
        mut self,
        mut response_headers: Headers,
        mut body: Incoming,
        deadline: tokio::time::Instant,
        in_flight: InFlight,
    ) -> Response<GatewayBody> {
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
                        trailers = Some(headers::into_header_map(list));
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
            drop(in_flight);
            return self.finish_response(response_headers, first, trailers);
        }
        let (tx, channel) = ChannelBody::new();
        let response = Self::response_head(response_headers, GatewayBody::new(channel));
        let status = response.status().as_u16();
        tokio::spawn(self.stream_response(status, first, body, deadline, in_flight, tx));
        response
    }

    /// A gateway answer after the upstream was reached: the chain has seen the upstream's
    /// response headers, so Envoy would reset; before any byte went out the client gets an
    /// error response instead, without passing the filters again.
    pub(super) fn upstream_failed_before_headers(
        mut self,
        status: StatusCode,
        message: &str,
        detail: &'static str,
    ) -> Response<GatewayBody> {
        self.log.detail = Some(detail);
        let response_headers = json_error_headers(status);
        if self.grpc {
            let grpc = headers::grpc_local_reply(response_headers, &json_error(message), None);
            return self.finish_response(grpc, Bytes::new(), None);
        }
        self.finish_response(response_headers, json_error(message).into(), None)
    }

    pub(super) async fn send_local_through_chain(
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
        self.finish_response(response_headers, body.into(), None)
    }

    /// The client response head: status from `:status` and the headers. No `x-request-id`:
    /// Envoy adds it only with `always_set_request_id_in_response`, which Envoy Gateway does
    /// not set (`conn_manager_utility.cc`, `mutateResponseHeaders`).
    pub(super) fn response_head(
        response_headers: Headers,
        body: GatewayBody,
    ) -> Response<GatewayBody> {
        let mut response = Response::new(body);
        *response.status_mut() = headers::status_of(&response_headers);
        *response.headers_mut() = headers::into_header_map(response_headers);
        response
    }

    /// Sends a response whose whole body is known. A `content-length` that no longer matches
    /// (a filter changed the body) is corrected; HEAD, 204 and 304 answers keep theirs.
    pub(super) fn finish_response(
        self,
        response_headers: Headers,
        body: Bytes,
        trailers: Option<HeaderMap>,
    ) -> Response<GatewayBody> {
        let size = body.len() as u64;
        let mut response =
            Self::response_head(response_headers, ReplayBody::new(body, trailers).boxed());
        let status = response.status();
        let bodiless = self.log.method == hyper::Method::HEAD
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
    pub(super) async fn stream_response(
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
                        (flow, true, Some(headers::into_header_map(list)))
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
}
