//! What the gateway provides to the runtime: named clusters for `proxy_http_call`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Headers;

/// Services of the embedding gateway that filters reach through the ABI.
pub trait HostServices: Send + Sync + 'static {
    /// Whether `name` is a cluster an `http_call` may target (unknown ones answer `BAD_ARGUMENT`).
    fn has_cluster(&self, name: &str) -> bool;
    /// Perform an `http_call`; `None` means failure (connect error, reset, timeout).
    fn http_call(
        &self,
        cluster: &str,
        request: HttpCallRequest,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Option<HttpCallResponse>> + Send>>;
}

/// Services of a host without clusters: every `http_call` target is unknown. For embeddings
/// whose filters call out to nothing (benchmarks, examples, tests of such filters).
pub struct NoClusters;

impl HostServices for NoClusters {
    fn has_cluster(&self, _name: &str) -> bool {
        false
    }

    fn http_call(
        &self,
        _cluster: &str,
        _request: HttpCallRequest,
        _timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Option<HttpCallResponse>> + Send>> {
        Box::pin(async { None })
    }
}

/// A request a filter dispatched with `proxy_http_call`; headers include the pseudo-headers.
#[derive(Debug, Clone, Default)]
pub struct HttpCallRequest {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// The answer to an `http_call`; `headers` include `:status`.
#[derive(Debug, Clone, Default)]
pub struct HttpCallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}
