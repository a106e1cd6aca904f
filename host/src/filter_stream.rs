//! A streaming request a filter opened to a cluster (`proxy_grpc_call`,
//! `proxy_grpc_stream`), as Envoy's `Http::AsyncStreamImpl` runs one through its router
//! (`source/common/http/async_client_impl.cc`): the body streams as the filter sends it, the
//! response comes back event by event, and a failure the router answers itself is its local
//! reply, trailers-only for a gRPC request (`Utility::sendLocalReply` with
//! `is_grpc_request_`): 503 "no healthy upstream" or "upstream connect error or
//! disconnect/reset before headers", 504 "upstream request timeout". A timeout or a failure
//! once the response began resets the stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame};
use modelgate_runtime::{Headers, StreamEvent};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::body::{ChannelBody, GatewayBody};
use crate::cluster::Cluster;
use crate::headers;

/// Run one exchange to its end, reporting on `events`; `body` carries the request body.
pub(crate) async fn exchange(
    cluster: Arc<Cluster>,
    request: Headers,
    timeout: Option<Duration>,
    body: UnboundedReceiver<(Vec<u8>, bool)>,
    events: UnboundedSender<StreamEvent>,
) {
    let grpc = headers::is_grpc(&request);
    let mut responded = false;
    let run = respond(&cluster, &request, body, &events, &mut responded);
    let outcome = match timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.ok(),
        None => Some(run.await),
    };
    match outcome {
        Some(Ok(())) => {}
        Some(Err(reason)) => local_reply(503, reason, grpc, &events),
        None if responded => {
            let _ = events.send(StreamEvent::Reset);
        }
        None => local_reply(504, "upstream request timeout", grpc, &events),
    }
}

/// Send the request and relay the response; `Err` (with the router's reply text) when no
/// response began.
async fn respond(
    cluster: &Arc<Cluster>,
    request: &Headers,
    mut body: UnboundedReceiver<(Vec<u8>, bool)>,
    events: &UnboundedSender<StreamEvent>,
    responded: &mut bool,
) -> Result<(), &'static str> {
    const RESET: &str = "upstream connect error or disconnect/reset before headers";
    let in_flight = cluster.pick(&[]).ok_or("no healthy upstream")?;
    let address = in_flight.endpoint().address;
    let (tx, channel) = ChannelBody::new();
    let upstream = headers::to_upstream_request(request, address, GatewayBody::new(channel))
        .map_err(|e| {
            log::warn!("filter stream to cluster {}: {e}", cluster.name);
            RESET
        })?;
    // The body pump ends with the request (a frame marked last) or when the filter's side
    // goes away; either way dropping `tx` ends the request body.
    tokio::spawn(async move {
        while let Some((data, end)) = body.recv().await {
            if tx.send(Ok(Frame::data(Bytes::from(data)))).await.is_err() || end {
                return;
            }
        }
    });
    let response = cluster
        .client()
        .request(address, upstream)
        .await
        .map_err(|e| {
            log::debug!("filter stream to cluster {} failed: {e}", cluster.name);
            RESET
        })?;
    *responded = true;
    let (parts, mut incoming) = response.into_parts();
    let end_stream = incoming.is_end_stream();
    let _ = events.send(StreamEvent::Headers {
        headers: headers::response_headers(parts.status, &parts.headers),
        end_stream,
    });
    if end_stream {
        return Ok(());
    }
    loop {
        let event = match incoming.frame().await {
            None => StreamEvent::Data {
                data: Vec::new(),
                end_stream: true,
            },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => StreamEvent::Data {
                    data: data.to_vec(),
                    end_stream: false,
                },
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        let mut list = headers::response_headers(parts.status, &trailers);
                        list.remove(0); // trailers carry no :status
                        StreamEvent::Trailers(list)
                    }
                    Err(_) => continue,
                },
            },
            Some(Err(e)) => {
                log::debug!("filter stream to cluster {} reset: {e}", cluster.name);
                StreamEvent::Reset
            }
        };
        let last = !matches!(
            event,
            StreamEvent::Data {
                end_stream: false,
                ..
            }
        );
        let _ = events.send(event);
        if last {
            return Ok(());
        }
    }
}

/// The router's local reply: trailers-only for gRPC, else the text with `text/plain`.
fn local_reply(status: u16, text: &str, grpc: bool, events: &UnboundedSender<StreamEvent>) {
    let status_header = (":status".to_owned(), status.to_string().into_bytes());
    if grpc {
        let headers = headers::grpc_local_reply(vec![status_header], text.as_bytes(), None);
        let _ = events.send(StreamEvent::Headers {
            headers,
            end_stream: true,
        });
        return;
    }
    let headers = vec![
        status_header,
        ("content-length".into(), text.len().to_string().into_bytes()),
        ("content-type".into(), b"text/plain".to_vec()),
    ];
    let _ = events.send(StreamEvent::Headers {
        headers,
        end_stream: false,
    });
    let _ = events.send(StreamEvent::Data {
        data: text.as_bytes().to_vec(),
        end_stream: true,
    });
}
