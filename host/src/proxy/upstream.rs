//! Sending the filtered request to an endpoint of the route's cluster, with retries on another
//! endpoint as the route allows, and passive health bookkeeping.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::Response;
use hyper::body::{Frame, Incoming};
use modelgate_runtime::Headers;
use tokio::time::timeout_at;

use super::Exchange;
use super::request_body::{BodyError, RequestPump};
use crate::body::{ChannelBody, GatewayBody, ReplayBody};
use crate::cluster::{Cluster, InFlight, Refused, UpstreamClient};
use crate::config::RetryOn;
use crate::headers;
use crate::route::Route;
use crate::tracing::{self, RequestTrace};

/// The upstream answer and what it took to get it.
pub(super) struct Upstream {
    pub(super) response: Response<Incoming>,
    pub(super) in_flight: InFlight,
    pub(super) deadline: tokio::time::Instant,
}

/// Why no upstream answer came, by kind, as Envoy's response code details tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ForwardError {
    /// No endpoint of the cluster may be tried (all ejected, or none left to retry on).
    NoHealthy,
    /// The route's deadline passed before an answer, or while waiting for a connection.
    Timeout,
    /// The filtered request headers do not make an HTTP request.
    BadRequestHeaders,
    /// The cluster's circuit breaker has as many requests waiting as it allows.
    Overflow,
    /// No connection could be made to the endpoint.
    ConnectFailure,
    /// The connection broke before the response headers.
    Reset,
    /// The endpoint answered 5xx and the route retries on it (never on the last attempt).
    ServerError,
}

impl ForwardError {
    /// Envoy's response code detail for it (`StreamInfo::ResponseCodeDetails`), which the
    /// access log writes and the response flags are read from.
    pub(super) fn detail(self) -> &'static str {
        match self {
            ForwardError::NoHealthy => "no_healthy_upstream",
            ForwardError::Timeout => "upstream_timeout",
            ForwardError::BadRequestHeaders => "bad_request_headers",
            ForwardError::Overflow => "upstream_overflow",
            ForwardError::ConnectFailure => "upstream_connect_failure",
            ForwardError::Reset => "upstream_reset",
            ForwardError::ServerError => "upstream_5xx",
        }
    }
}

impl Exchange {
    /// Sends a buffered request, retrying on another endpoint as the route allows.
    pub(super) async fn forward(
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
            if self.snapshot.config.access_log.enabled {
                self.log.endpoint = in_flight.endpoint().address.to_string();
            }
            let sent_at = Instant::now();
            let last_attempt = attempt + 1 == attempts;
            let traced;
            let attempt_target = match &mut self.trace {
                Some(trace) => {
                    traced = target.traced(trace, in_flight.endpoint().address);
                    target.with_request(&traced)
                }
                None => target.with_request(target.request),
            };
            let result = attempt_target
                .send(body.clone().boxed(), in_flight, last_attempt)
                .await;
            self.log.upstream = Some(sent_at.elapsed());
            if let Some(trace) = &mut self.trace {
                end_attempt(trace, &result);
            }
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
    pub(super) async fn forward_streaming(
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
        let Self {
            chain,
            log,
            snapshot,
            trace,
            ..
        } = self;
        if snapshot.config.access_log.enabled {
            log.endpoint = in_flight.endpoint().address.to_string();
        }
        let traced;
        let target = match trace {
            Some(trace) => {
                traced = target.traced(trace, in_flight.endpoint().address);
                target.with_request(&traced)
            }
            None => target.with_request(target.request),
        };
        let sent_at = Instant::now();
        // The route deadline bounds the feeding too: an upstream that answered without
        // reading the rest would otherwise hold this request forever.
        let feeding = timeout_at(
            target.deadline,
            pump.stream_rest(chain, &mut log.bytes_received, tx),
        );
        let (fed, sent) = tokio::join!(
            feeding,
            target.send(GatewayBody::new(body), in_flight, true)
        );
        log.upstream = Some(sent_at.elapsed());
        if let Some(trace) = trace {
            end_attempt(trace, &sent);
        }
        fed.unwrap_or(Ok(()))?;
        Ok(sent.map_err(|(e, _)| e))
    }
}

/// Records how an upstream attempt ended on its CLIENT span: an answer keeps the span open
/// until the request ends; a failure ends it now.
fn end_attempt(trace: &mut RequestTrace, result: &Result<Upstream, (ForwardError, bool)>) {
    match result {
        Ok(upstream) => trace.end_attempt(Some(upstream.response.status().as_u16()), None, false),
        Err((error, _)) => {
            trace.end_attempt(
                None,
                Some(tracing::response_flags(Some(error.detail()))),
                true,
            );
        }
    }
}

/// Where one request goes: the matched route, its cluster, the filtered headers, the deadline.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) route: &'a Route,
    pub(super) cluster: &'a Arc<Cluster>,
    pub(super) request: &'a Headers,
    pub(super) deadline: tokio::time::Instant,
}

impl<'a> Target<'a> {
    /// The same target with other request headers (an attempt's, with its trace context).
    fn with_request<'b>(&self, request: &'b Headers) -> Target<'b>
    where
        'a: 'b,
    {
        Target { request, ..*self }
    }

    /// The request headers of a traced attempt on `address`: its CLIENT span opened and its
    /// context in `traceparent`/`tracestate`.
    fn traced(&self, trace: &mut RequestTrace, address: std::net::SocketAddr) -> Headers {
        let mut headers = self.request.clone();
        let http2 = matches!(self.cluster.client(), UpstreamClient::Http2(_));
        trace.start_attempt(&mut headers, address, http2);
        headers
    }

    /// One try on one endpoint. The error says whether the route allows a retry; on the last
    /// attempt a 5xx answer is the answer.
    pub(super) async fn send(
        &self,
        body: GatewayBody,
        mut in_flight: InFlight,
        last_attempt: bool,
    ) -> Result<Upstream, (ForwardError, bool)> {
        let (cluster, index) = (self.cluster, in_flight.index());
        let address = in_flight.endpoint().address;
        let upstream_request = headers::to_upstream_request(self.request, address, body)
            .map_err(|_| (ForwardError::BadRequestHeaders, false))?;
        let retry_on = |on: RetryOn| self.route.retry.on.contains(&on);
        match in_flight.admit(self.deadline).await {
            Ok(()) => {}
            // Envoy does not retry an overflow: every endpoint shares the cluster's breaker.
            Err(Refused::Overflow) => {
                return Err((ForwardError::Overflow, false));
            }
            Err(Refused::Timeout) => return Err((ForwardError::Timeout, false)),
        }
        match timeout_at(
            self.deadline,
            cluster.client().request(address, upstream_request),
        )
        .await
        {
            Err(_) => Err((ForwardError::Timeout, false)),
            Ok(Err(e)) if e.is_connect() => {
                log::debug!("cluster {}: connect to {address} failed: {e}", cluster.name);
                cluster.record_failure(index);
                let retry = retry_on(RetryOn::ConnectFailure);
                Err((ForwardError::ConnectFailure, retry))
            }
            Ok(Err(e)) => {
                log::debug!("cluster {}: request to {address} failed: {e}", cluster.name);
                cluster.record_failure(index);
                Err((ForwardError::Reset, retry_on(RetryOn::Reset)))
            }
            Ok(Ok(response)) => {
                if response.status().is_server_error() {
                    cluster.record_failure(index);
                    if retry_on(RetryOn::ServerError) && !last_attempt {
                        return Err((ForwardError::ServerError, true));
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
