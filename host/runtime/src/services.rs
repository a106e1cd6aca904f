//! What the gateway provides to the runtime: named clusters for `proxy_http_call`, and
//! streaming requests to them for `proxy_grpc_call`/`proxy_grpc_stream`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

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

    /// Start a streaming request to `cluster`, as Envoy's `Http::AsyncClient::start` does for
    /// its async gRPC client: the future sends `headers`, then each body frame read from
    /// `body` (a frame with `true` ends the request), and reports what comes back on `events`
    /// until the exchange ends. A failure the gateway's router answers itself (no connection,
    /// `timeout` elapsed before the response) comes as the local reply Envoy's router sends,
    /// a trailers-only answer for a gRPC request; a failure after the response headers comes
    /// as [`StreamEvent::Reset`]. Dropping the future resets the stream. `None`: no such
    /// cluster (the default, for hosts without clusters).
    fn open_stream(
        &self,
        cluster: &str,
        headers: Headers,
        timeout: Option<Duration>,
        body: mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
        events: mpsc::UnboundedSender<StreamEvent>,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let _ = (cluster, headers, timeout, body, events);
        None
    }
}

/// What a streaming request's upstream sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Response headers (with `:status`); `end_stream` for a headers-only answer.
    Headers {
        headers: Headers,
        end_stream: bool,
    },
    Data {
        data: Vec<u8>,
        end_stream: bool,
    },
    /// Response trailers, which end the stream.
    Trailers(Headers),
    /// The stream was reset after its response began, or failed without one.
    Reset,
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
