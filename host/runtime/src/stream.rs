//! HTTP streams through an ordered chain of plugins, with Envoy's decoder/encoder ordering.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::{Headers, Plugin};

/// Ordered plugins applied to every stream. Cheap to clone.
#[derive(Clone)]
pub struct FilterChain {
    plugins: std::sync::Arc<[Plugin]>,
}

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

/// What the gateway does next after a phase.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// Body phases only: keep buffering, call again with more data (cumulative).
    StopAndBuffer,
    /// Send this instead of going upstream (or instead of the upstream response); the chain's
    /// response callbacks have already run over it.
    LocalReply(LocalReply),
}

/// A response produced by the runtime or a filter rather than the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl FilterChain {
    pub fn new(plugins: Vec<Plugin>) -> FilterChain {
        FilterChain {
            plugins: plugins.into(),
        }
    }

    pub fn stream(&self, info: StreamInfo) -> ChainStream {
        ChainStream {
            chain: self.clone(),
            info,
            route_cache_cleared: false,
        }
    }
}

/// One HTTP request through the chain.
pub struct ChainStream {
    chain: FilterChain,
    info: StreamInfo,
    route_cache_cleared: bool,
}

impl ChainStream {
    pub async fn request_headers(&mut self, _headers: &mut Headers, _end_of_stream: bool) -> Flow {
        self.pass()
    }
    pub async fn request_body(&mut self, _body: &mut Vec<u8>, _end_of_stream: bool) -> Flow {
        self.pass()
    }
    pub async fn request_trailers(&mut self, _trailers: &mut Headers) -> Flow {
        self.pass()
    }
    pub async fn response_headers(&mut self, _headers: &mut Headers, _end_of_stream: bool) -> Flow {
        self.pass()
    }
    pub async fn response_body(&mut self, _body: &mut Vec<u8>, _end_of_stream: bool) -> Flow {
        self.pass()
    }
    pub async fn response_trailers(&mut self, _trailers: &mut Headers) -> Flow {
        self.pass()
    }
    pub fn take_route_cache_cleared(&mut self) -> bool {
        std::mem::take(&mut self.route_cache_cleared)
    }
    pub fn set_upstream(&mut self, _cluster: &str, _endpoint: SocketAddr) {
        let _ = &self.info;
    }
    pub fn filter_state(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    pub fn finish(self) {}

    /// Until plugins run (they cannot be loaded yet), an empty chain passes everything.
    fn pass(&self) -> Flow {
        debug_assert!(self.chain.plugins.is_empty());
        Flow::Continue
    }
}
