//! A response produced by the runtime or a filter rather than the upstream, built as Envoy's
//! `sendLocalReply` builds it.

use crate::Headers;
use crate::header_map;

/// A response produced by the runtime or a filter rather than the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u16,
    /// Without `:status`.
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Envoy's response code details for it (`%RESPONSE_CODE_DETAILS%` in an access log).
    pub details: &'static str,
    /// The gRPC status a gRPC client gets for it; `None` maps the HTTP status as Envoy's
    /// `Grpc::Utility::httpToGrpcStatus` does.
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    /// Build the reply Envoy's `sendLocalReply` would send: the filter's headers, then
    /// `content-length`, and `content-type: text/plain` for a non-empty body without one.
    pub(crate) fn new(status: u16, mut headers: Headers, body: Vec<u8>) -> LocalReply {
        header_map::remove(&mut headers, ":status");
        header_map::replace(
            &mut headers,
            "content-length".into(),
            body.len().to_string().into_bytes(),
        );
        if !body.is_empty() && header_map::get(&headers, "content-type").is_none() {
            headers.push(("content-type".into(), b"text/plain".to_vec()));
        }
        LocalReply {
            status,
            headers,
            body,
            details: "filter_reply",
            grpc_status: None,
        }
    }
}
