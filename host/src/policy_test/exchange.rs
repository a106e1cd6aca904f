//! One request through the filter chain as the gateway runs it, with a stub upstream that
//! echoes what it received, all in this process.
//!
//! The request headers are made by the gateway's own `headers::request_headers`, so the
//! filter sees what `modelgate serve` would give it (pseudo-headers first, `x-forwarded-for`,
//! `x-forwarded-proto`, `x-request-id`); the body arrives in chunks as it does from a socket,
//! and a filter buffering past the limit gets the runtime's 413, as Envoy answers.
//! What is left out: the route table and clusters (a policy test asserts the routing header
//! the filter sets, not where a route table would send it), retries and timeouts.

use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use modelgate_runtime::{FilterChain, Flow, Headers, LocalReply, StreamInfo};

use crate::config::ClientTrafficConfig;
use crate::headers;

/// Body bytes per `proxy_on_request_body` call: the size of a socket read in Envoy (its
/// default per-read buffer is 16 KiB), so a limit is crossed where it would be in production.
pub(super) const BODY_CHUNK: usize = 16 * 1024;

/// A request as the client sends it.
#[derive(Debug, Clone)]
pub(super) struct ClientRequest {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) client: IpAddr,
}

/// What the stub upstream answers; `body: None` echoes the request it received as JSON.
#[derive(Debug, Clone)]
pub(super) struct StubResponse {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<Vec<u8>>,
}

/// A request the upstream received.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Received {
    /// Pseudo-headers first, as the filters left them.
    pub(super) headers: Headers,
    pub(super) body: Vec<u8>,
}

/// How the exchange ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    pub(super) status: u16,
    /// Without `:status`.
    pub(super) headers: Headers,
    pub(super) body: Vec<u8>,
    /// `None` when a filter (or the runtime) answered instead of the upstream.
    pub(super) upstream: Option<Received>,
}

/// The request could not be expressed in HTTP (a bad method, path or header name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct InvalidRequest(String);

/// Sends `request` through `chain` at `start_time`.
pub(super) async fn send(
    chain: &FilterChain,
    request: &ClientRequest,
    stub: &StubResponse,
    start_time: SystemTime,
    connection_id: u64,
) -> Result<Outcome, InvalidRequest> {
    let parts = http_parts(request)?;
    // Envoy Gateway's defaults, as a Gateway without a ClientTrafficPolicy has them.
    let (mut request_headers, _request_id) = headers::request_headers(
        &parts,
        request.client,
        false,
        &ClientTrafficConfig::default(),
    );
    let mut stream = chain.stream(StreamInfo {
        source: SocketAddr::new(request.client, 40_000),
        destination: SocketAddr::from(([127, 0, 0, 1], 8_000)),
        connection_id,
        tls: false,
        protocol: "HTTP/1.1",
        start_time,
    });
    let no_body = request.body.is_empty();
    if let Flow::LocalReply(reply) = stream.request_headers(&mut request_headers, no_body).await {
        stream.finish();
        return Ok(replied(reply));
    }
    let mut pending = Vec::new();
    let mut released = Vec::new();
    let chunks = request.body.chunks(BODY_CHUNK);
    let count = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        let end = i + 1 == count;
        pending.extend_from_slice(chunk);
        match stream.request_body(&mut pending, end).await {
            Flow::Continue => released.append(&mut pending),
            // At the end of the stream there is nothing more to wait for (as the gateway does).
            Flow::StopAndBuffer if end => released.append(&mut pending),
            Flow::StopAndBuffer => {}
            Flow::LocalReply(reply) => {
                stream.finish();
                return Ok(replied(reply));
            }
        }
    }
    // A filter that held the headers (allowOnHeadersStopIteration) let them go with the body.
    if let Some(released) = stream.take_released_headers() {
        request_headers = released;
    }
    let received = Received {
        headers: request_headers,
        body: released,
    };
    let mut response_headers: Headers = vec![(":status".into(), stub.status.to_string().into())];
    response_headers.extend(
        stub.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes())),
    );
    let mut body = if let Some(body) = &stub.body {
        body.clone()
    } else {
        if !response_headers.iter().any(|(k, _)| k == "content-type") {
            response_headers.push(("content-type".into(), b"application/json".to_vec()));
        }
        echo(&received)
    };
    let outcome = match stream
        .response_headers(&mut response_headers, body.is_empty())
        .await
    {
        Flow::LocalReply(reply) => replied(reply),
        _ => {
            if let Flow::LocalReply(reply) = stream.response_body(&mut body, true).await {
                replied(reply)
            } else {
                let status = headers::status_of(&response_headers).as_u16();
                response_headers.retain(|(k, _)| k != ":status");
                Outcome {
                    status,
                    headers: response_headers,
                    body: mem::take(&mut body),
                    upstream: None,
                }
            }
        }
    };
    stream.finish();
    Ok(Outcome {
        upstream: Some(received),
        ..outcome
    })
}

fn replied(reply: LocalReply) -> Outcome {
    Outcome {
        status: reply.status,
        headers: reply.headers,
        body: reply.body,
        upstream: None,
    }
}

/// The request line and headers as hyper would have parsed them from the wire.
fn http_parts(request: &ClientRequest) -> Result<hyper::http::request::Parts, InvalidRequest> {
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(request.path.as_str());
    for (name, value) in &request.headers {
        // A parser drops the whitespace around a field value (RFC 9110 section 5.5).
        builder = builder.header(name.as_str(), value.trim_matches([' ', '\t']));
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .map_err(|e| InvalidRequest(format!("not a valid HTTP request: {e}")))
}

/// The stub upstream's default answer: what it received, as JSON.
fn echo(received: &Received) -> Vec<u8> {
    let header = |name: &str| {
        headers::get_str(&received.headers, name)
            .unwrap_or_default()
            .to_owned()
    };
    let headers: serde_json::Map<String, serde_json::Value> = received
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    serde_json::json!({
        "method": header(":method"),
        "path": header(":path"),
        "headers": headers,
        "body": String::from_utf8_lossy(&received.body),
    })
    .to_string()
    .into_bytes()
}
