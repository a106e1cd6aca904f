//! Host-side state of one stream context inside a VM: the maps and buffers of the phase in
//! progress, and what the filter asked the host to do once its callback returns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use std::time::SystemTime;

use crate::Headers;
use crate::local_reply::LocalReply;

/// Connection facts a stream exposes as properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub connection_id: u64,
    pub tls: bool,
    /// `"HTTP/1.1"` or `"HTTP/2"`.
    pub protocol: &'static str,
    pub start_time: SystemTime,
}

/// Facts about a stream shared by all its plugin contexts (properties read them).
pub(crate) struct StreamMeta {
    pub(crate) info: StreamInfo,
    pub(crate) upstream: Mutex<Option<(String, SocketAddr)>>,
}

/// One HTTP stream context of one VM.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags the ABI sets and the chain reads"
)]
pub(crate) struct StreamCtx {
    pub(crate) meta: Arc<StreamMeta>,
    /// Wakes the `ChainStream` waiting on this context after `continue_stream` or a local reply.
    pub(crate) notify: Arc<Notify>,
    /// A map is `Some` only while its phase runs or is paused: outside it the ABI answers
    /// `BAD_ARGUMENT`, as Envoy does once a phase has continued.
    pub(crate) request_headers: Option<Headers>,
    pub(crate) request_trailers: Option<Headers>,
    pub(crate) response_headers: Option<Headers>,
    pub(crate) response_trailers: Option<Headers>,
    pub(crate) request_body: Option<Vec<u8>>,
    pub(crate) response_body: Option<Vec<u8>>,
    /// The maps as they left their phase: for properties and the read-only maps of `on_log`.
    pub(crate) request_seen: Option<Headers>,
    pub(crate) response_seen: Option<Headers>,
    pub(crate) log_phase: bool,
    pub(crate) continue_request: bool,
    pub(crate) continue_response: bool,
    pub(crate) local_reply: Option<LocalReply>,
    pub(crate) closed: bool,
    pub(crate) route_cache_cleared: bool,
    /// Values set with `proxy_set_property` (keys `wasm.<segments joined by '.'>`).
    pub(crate) filter_state: Vec<(String, Vec<u8>)>,
    /// Entries of `filter_state` changed since the chain last collected them.
    pub(crate) filter_state_changed: bool,
}

impl StreamCtx {
    pub(crate) fn new(meta: Arc<StreamMeta>, notify: Arc<Notify>) -> StreamCtx {
        StreamCtx {
            meta,
            notify,
            request_headers: None,
            request_trailers: None,
            response_headers: None,
            response_trailers: None,
            request_body: None,
            response_body: None,
            request_seen: None,
            response_seen: None,
            log_phase: false,
            continue_request: false,
            continue_response: false,
            local_reply: None,
            closed: false,
            route_cache_cleared: false,
            filter_state: Vec::new(),
            filter_state_changed: false,
        }
    }

    /// The request headers as the filter sees them now (live map, else the final snapshot).
    pub(crate) fn request_view(&self) -> Option<&Headers> {
        self.request_headers.as_ref().or(self.request_seen.as_ref())
    }

    pub(crate) fn response_view(&self) -> Option<&Headers> {
        self.response_headers
            .as_ref()
            .or(self.response_seen.as_ref())
    }
}
