//! The two body types the gateway sends: a buffered body that can be replayed on a retry, and
//! a channel-fed body for data that streams through while the filters still look at it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the gateway sends and every request it forwards.
pub type GatewayBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A complete body held in memory, with optional trailers; clones are cheap (refcounted).
#[derive(Clone, Debug, Default)]
pub struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl ReplayBody {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> ReplayBody {
        ReplayBody {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }

    pub fn boxed(self) -> GatewayBody {
        GatewayBody::new(self)
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A body fed frame by frame through a channel; an `Err` item aborts the stream (the peer
/// sees a reset), which is how a late failure is reported once headers are gone.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

pub type BodySender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

impl ChannelBody {
    pub fn new() -> (BodySender, ChannelBody) {
        // A few frames of slack keep producer and consumer from waking each other per frame.
        let (tx, rx) = mpsc::channel(4);
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// The response body for a small JSON error in `KServe`'s `{"error": "..."}` shape.
pub fn json_error(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message })
        .to_string()
        .into_bytes()
}
