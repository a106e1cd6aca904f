//! The request body through the filters: buffered while they ask, released as they continue.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, Incoming};
use hyper::{HeaderMap, StatusCode};
use modelgate_runtime::{ChainStream, Flow, LocalReply};

use crate::body::BodySender;
use crate::headers;

/// Why the request body stopped.
pub(super) enum BodyError {
    Reply(LocalReply),
    Client(hyper::Error),
}

/// The request body after the buffering phase.
pub(super) enum RequestBody {
    /// All of it, small enough to keep for a retry.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Larger than the buffer limit and released by the filters: it streams, without retries.
    Streaming { released: Bytes, pump: RequestPump },
}

/// Feeds request body frames through the chain, releasing what the filters let through.
pub(super) struct RequestPump {
    pub(super) body: Incoming,
    pub(super) pending: Vec<u8>,
    pub(super) finished: bool,
}

/// Data the filters released, and whether (and with which trailers) the body ended.
pub(super) struct Released {
    pub(super) data: Bytes,
    pub(super) end: bool,
    pub(super) trailers: Option<HeaderMap>,
}

impl RequestPump {
    pub(super) async fn step(
        &mut self,
        chain: &mut ChainStream,
        received: &mut u64,
    ) -> Result<Released, BodyError> {
        loop {
            if self.finished {
                return Ok(Released {
                    data: Bytes::new(),
                    end: true,
                    trailers: None,
                });
            }
            let frame = match self.body.frame().await {
                None => None,
                Some(Ok(frame)) => Some(frame),
                Some(Err(e)) => return Err(BodyError::Client(e)),
            };
            let Some(frame) = frame else {
                self.finished = true;
                let data = self.run(chain, true).await?.unwrap_or_default();
                return Ok(Released {
                    data,
                    end: true,
                    trailers: None,
                });
            };
            match frame.into_data() {
                Ok(data) => {
                    *received += data.len() as u64;
                    self.pending.extend_from_slice(&data);
                    let end = self.body.is_end_stream();
                    self.finished = end;
                    if let Some(data) = self.run(chain, end).await? {
                        return Ok(Released {
                            data,
                            end,
                            trailers: None,
                        });
                    }
                }
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        continue;
                    };
                    let mut list = headers::response_headers(StatusCode::OK, &trailers);
                    list.remove(0);
                    if let Flow::LocalReply(reply) = chain.request_trailers(&mut list).await {
                        return Err(BodyError::Reply(reply));
                    }
                    self.finished = true;
                    let data = Bytes::from(std::mem::take(&mut self.pending));
                    return Ok(Released {
                        data,
                        end: true,
                        trailers: Some(headers::into_header_map(list)),
                    });
                }
            }
        }
    }

    /// One `request_body` call over the pending bytes: `Some` when the filters released them.
    pub(super) async fn run(
        &mut self,
        chain: &mut ChainStream,
        end: bool,
    ) -> Result<Option<Bytes>, BodyError> {
        match chain.request_body(&mut self.pending, end).await {
            Flow::Continue => Ok(Some(std::mem::take(&mut self.pending).into())),
            // At the end of the stream there is nothing more to wait for.
            Flow::StopAndBuffer if end => Ok(Some(std::mem::take(&mut self.pending).into())),
            Flow::StopAndBuffer => Ok(None),
            Flow::LocalReply(reply) => Err(BodyError::Reply(reply)),
        }
    }

    /// Sends the rest of the body upstream as the filters release it.
    pub(super) async fn stream_rest(
        mut self,
        chain: &mut ChainStream,
        received: &mut u64,
        tx: BodySender,
    ) -> Result<(), BodyError> {
        loop {
            let released = self.step(chain, received).await?;
            if !released.data.is_empty() && tx.send(Ok(Frame::data(released.data))).await.is_err() {
                // The upstream stopped reading (it answered early or broke): stop quietly.
                return Ok(());
            }
            if let Some(trailers) = released.trailers {
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            }
            if released.end {
                return Ok(());
            }
        }
    }
}
