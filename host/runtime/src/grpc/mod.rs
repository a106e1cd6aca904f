//! gRPC for `proxy_grpc_call` and `proxy_grpc_stream`, as Envoy's async gRPC client does it
//! (`source/common/grpc/async_client_impl.cc`, `common.cc`, `codec.cc`) over a streaming
//! request of the gateway ([`crate::HostServices::open_stream`]): the request headers, the
//! 5-byte message framing, and how what comes back turns into the filter's callbacks and
//! gRPC status codes. The ABI side (tokens, delivery into the VM) is `abi/grpc.rs`.

pub(crate) mod callouts;
pub(crate) mod service;

use std::time::Duration;

use crate::{Headers, StreamEvent, header_map};

/// gRPC status codes Envoy's client reports on its own (`envoy/grpc/status.h`).
pub(crate) const CANCELED: u32 = 1;
pub(crate) const UNKNOWN: u32 = 2;
pub(crate) const INTERNAL: u32 = 13;
pub(crate) const UNAVAILABLE: u32 = 14;

/// A unary call (`proxy_grpc_call`) or a stream (`proxy_grpc_stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Call,
    Stream,
}

/// A callback the filter receives, on its root context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Callback {
    InitialMetadata(Headers),
    Message(Vec<u8>),
    TrailingMetadata(Headers),
    Close { status: u32, message: String },
}

/// The request headers of a call: `Common::prepareHeaders` (`:method`, `:path`,
/// `:authority`, `te`, `grpc-timeout`, `content-type`), the service's `initial_metadata`
/// (`AsyncStreamImpl::initialize`), the filter's metadata (`Context::onGrpcCreateInitialMetadata`
/// copies it in), then what the HTTP async client and its router add: `x-envoy-internal`
/// and, with a timeout, `x-envoy-expected-rq-timeout-ms`. Envoy's wasm context turns
/// `x-forwarded-for` off for these calls (`setSendXff(false)`).
///
/// A unary call always has a timeout, even 0: `grpcCall` passes the ABI's milliseconds to
/// `RequestOptions::setTimeout`, so `grpc-timeout: 0m` goes out while the router treats 0 as
/// no limit. Streams have none.
pub(crate) fn request_headers(
    authority: &str,
    service: &str,
    method: &str,
    timeout: Option<Duration>,
    service_metadata: &[(String, Vec<u8>)],
    metadata: Headers,
) -> Headers {
    let mut headers: Headers = vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), format!("/{service}/{method}").into_bytes()),
        (":authority".into(), authority.as_bytes().to_vec()),
        ("te".into(), b"trailers".to_vec()),
    ];
    if let Some(timeout) = timeout {
        headers.push(("grpc-timeout".into(), grpc_timeout(timeout).into_bytes()));
    }
    headers.push(("content-type".into(), b"application/grpc".to_vec()));
    headers.extend(service_metadata.iter().cloned());
    headers.extend(metadata);
    header_map::replace(&mut headers, "x-envoy-internal".into(), b"true".to_vec());
    if let Some(ms) = timeout.map(|t| t.as_millis()).filter(|ms| *ms > 0) {
        header_map::replace(
            &mut headers,
            "x-envoy-expected-rq-timeout-ms".into(),
            ms.to_string().into_bytes(),
        );
    }
    headers
}

/// `Common::toGrpcTimeout`: at most 8 digits, in the smallest unit of `m`, `S`, `M`, `H`.
fn grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let mut time = timeout.as_millis();
    let mut units = ['m', 'S', 'M', 'H'].into_iter().peekable();
    let mut unit = units.next().unwrap_or('m');
    if time > MAX {
        time /= 1000;
        unit = units.next().unwrap_or('S');
    }
    while time > MAX {
        match units.next() {
            Some(next) => {
                time /= 60;
                unit = next;
            }
            None => time = MAX,
        }
    }
    format!("{time}{unit}")
}

/// A message as it goes on the wire: flags 0 (uncompressed), the length, the message
/// (`Common::prependGrpcFrameHeader`).
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits response data into messages across data frames (`Grpc::Decoder`).
#[derive(Default)]
struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// The complete messages so far; `Err` for a frame Envoy's client refuses: flags other
    /// than the compressed bit (`Decoder::decode`), or a compressed, non-empty message
    /// (`AsyncStreamImpl::onData`; the client decompresses nothing).
    fn decode(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, ()> {
        self.pending.extend_from_slice(data);
        let mut messages = Vec::new();
        while let Some(header) = self.pending.get(..5) {
            let flags = header[0];
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if flags & !1 != 0 || (flags != 0 && len > 0) {
                return Err(());
            }
            if self.pending.len() < 5 + len {
                break;
            }
            messages.push(self.pending[5..5 + len].to_vec());
            self.pending.drain(..5 + len);
        }
        Ok(messages)
    }
}

/// What the filter's callbacks see of one call or stream, as Envoy's `AsyncStreamImpl`
/// (and, for a unary call, `AsyncRequestImpl` over it) reads the response.
pub(crate) struct Reader {
    kind: Kind,
    decoder: Decoder,
    /// A unary call's last message, delivered only once the call closed with OK.
    response: Option<Vec<u8>>,
    done: bool,
}

impl Reader {
    pub(crate) fn new(kind: Kind) -> Reader {
        Reader {
            kind,
            decoder: Decoder::default(),
            response: None,
            done: false,
        }
    }

    /// Whether the call is over (its close was reported).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The callbacks one event of the HTTP stream gives (none once the call is over).
    pub(crate) fn on_event(&mut self, event: StreamEvent) -> Vec<Callback> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        match event {
            StreamEvent::Headers {
                headers,
                end_stream,
            } => Self::on_headers(headers, end_stream, &mut out),
            StreamEvent::Data { data, end_stream } => self.on_data(&data, end_stream, &mut out),
            StreamEvent::Trailers(trailers) => Self::on_trailers(trailers, &mut out),
            // `AsyncStreamImpl::onReset`.
            StreamEvent::Reset => Self::stream_error(INTERNAL, &mut out),
        }
        self.finish(out)
    }

    /// `AsyncStreamImpl::onHeaders`: a non-200 answer is Canceled (as Google's client reads
    /// it) unless it is trailers-only with a `grpc-status`.
    fn on_headers(headers: Headers, end_stream: bool, out: &mut Vec<Callback>) {
        let http_status = header_map::get(&headers, ":status").and_then(|s| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
        });
        let has_grpc_status = header_map::get(&headers, "grpc-status").is_some();
        let initial = if end_stream {
            Vec::new()
        } else {
            headers.clone()
        };
        out.push(Callback::InitialMetadata(initial));
        if http_status != Some(200) {
            if end_stream && has_grpc_status {
                Self::on_trailers(headers, out);
            } else {
                Self::stream_error(CANCELED, out);
            }
            return;
        }
        if end_stream {
            Self::on_trailers(headers, out);
        }
    }

    /// `AsyncStreamImpl::onData`: each message in turn; data that ends the stream without
    /// trailers is Unknown.
    fn on_data(&mut self, data: &[u8], end_stream: bool, out: &mut Vec<Callback>) {
        let Ok(messages) = self.decoder.decode(data) else {
            Self::stream_error(INTERNAL, out);
            return;
        };
        out.extend(messages.into_iter().map(Callback::Message));
        if end_stream {
            Self::stream_error(UNKNOWN, out);
        }
    }

    /// `AsyncStreamImpl::onTrailers`: no `grpc-status` is Unknown; `grpc-message` is
    /// percent-decoded (`Common::getGrpcMessage`).
    fn on_trailers(trailers: Headers, out: &mut Vec<Callback>) {
        let status = grpc_status(&trailers).unwrap_or(UNKNOWN);
        let message = header_map::get(&trailers, "grpc-message")
            .map(percent_decode)
            .unwrap_or_default();
        out.push(Callback::TrailingMetadata(trailers));
        out.push(Callback::Close { status, message });
    }

    /// `AsyncStreamImpl::streamError`: empty trailing metadata, then the close.
    fn stream_error(status: u32, out: &mut Vec<Callback>) {
        out.push(Callback::TrailingMetadata(Vec::new()));
        out.push(Callback::Close {
            status,
            message: String::new(),
        });
    }

    /// For a unary call, `AsyncRequestImpl`: metadata is dropped, the last message kept, and
    /// the close becomes that message (OK), Internal (OK without a message) or the failure.
    fn finish(&mut self, out: Vec<Callback>) -> Vec<Callback> {
        if out.iter().any(|c| matches!(c, Callback::Close { .. })) {
            self.done = true;
        }
        if self.kind == Kind::Stream {
            return out;
        }
        let mut result = Vec::new();
        for callback in out {
            match callback {
                Callback::Message(message) => self.response = Some(message),
                Callback::Close { status: 0, .. } => match self.response.take() {
                    Some(message) => result.push(Callback::Message(message)),
                    None => result.push(Callback::Close {
                        status: INTERNAL,
                        message: String::new(),
                    }),
                },
                close @ Callback::Close { .. } => result.push(close),
                Callback::InitialMetadata(_) | Callback::TrailingMetadata(_) => {}
            }
        }
        result
    }
}

/// `Common::getGrpcStatus`: the `grpc-status` value as a number; one that is not a number
/// is Unknown here (Envoy reads it as its `InvalidCode`, which no filter can name).
fn grpc_status(headers: &Headers) -> Option<u32> {
    let value = header_map::get(headers, "grpc-status")?;
    Some(
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(UNKNOWN),
    )
}

/// `Http::Utility::PercentEncoding::decode`: `%XX` becomes the byte; anything else stays.
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = value
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (value[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
