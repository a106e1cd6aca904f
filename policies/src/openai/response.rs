//! Reading `usage` out of an OpenAI response as it streams through, without holding it up.
//!
//! - JSON (`application/json`): a copy of the body is kept (up to [`MAX_JSON_BYTES`]) and its
//!   top-level `usage` read at the end; the bytes pass unchanged.
//! - SSE (`text/event-stream`, what KServe's `StreamingResponse` sends for `stream: true`):
//!   events end at a blank line (`\n\n` or `\r\n\r\n`), and chunks may split them at any
//!   byte. Each `data:` payload is a JSON chunk (or `[DONE]`): a chunk with a `usage` object
//!   gives the usage, one with a non-empty `choices` counts as a content event (the charge of
//!   a stream that ends without usage).
//!   When the gateway added `stream_options.include_usage` to the request, the usage-only
//!   chunk the server then sends (`"choices": []` with `usage`) is removed, and only then are
//!   bytes held back: the end of a chunk that is not a whole event waits for the rest, so the
//!   client receives every other byte exactly as the server sent it.

use serde_json::Value;

/// The largest JSON body kept to read its `usage`; a larger one settles as having none.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// The largest SSE event looked at; a longer one is passed on unread.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The token counts of a response's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens` (0 when absent, as for embeddings).
    pub completion_tokens: u64,
}

/// What is read of a JSON body or an SSE chunk: its `usage` and how many `choices` it has.
/// Parsed as a `Value`, with the one instantiation of `serde_json`'s parser that the request
/// reader uses (each `from_slice::<T>` adds its own copy of the parser to the module).
struct Envelope {
    usage: Option<Usage>,
    choices: usize,
}

impl Envelope {
    fn read(json: &[u8]) -> Option<Self> {
        let value = serde_json::from_slice::<Value>(json).ok()?;
        let usage = value.get("usage").and_then(|usage| {
            Some(Usage {
                prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
                completion_tokens: usage
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            })
        });
        let choices = value
            .get("choices")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Some(Self { usage, choices })
    }
}

#[derive(Debug)]
enum Mode {
    Json { copy: Vec<u8>, over: bool },
    Sse { pending: Vec<u8>, unread: bool },
}

/// Follows one response body and finds its usage (see the module docs).
#[derive(Debug)]
pub struct ResponseMeter {
    mode: Mode,
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    content_events: u64,
    /// The response status was 400 or more.
    error: bool,
}

impl ResponseMeter {
    /// A meter for a response whose `content-type` is `content_type`; `strip_usage_chunk`
    /// when the gateway asked for the usage the client did not.
    pub(crate) fn new(status: u16, content_type: Option<&str>, strip_usage_chunk: bool) -> Self {
        let sse = content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        });
        let mode = if sse {
            Mode::Sse {
                pending: Vec::new(),
                unread: false,
            }
        } else {
            Mode::Json {
                copy: Vec::new(),
                over: false,
            }
        };
        Self {
            mode,
            strip_usage_chunk: strip_usage_chunk && sse && status < 400,
            usage: None,
            content_events: 0,
            error: status >= 400,
        }
    }

    /// True for an SSE response whose usage-only chunk is removed: the response's
    /// `content-length` (if any) no longer holds.
    pub fn rewrites_body(&self) -> bool {
        self.strip_usage_chunk
    }

    /// Follow the next `chunk` of the body (`end` on the last). Returns the bytes to send in
    /// its place when they differ from `chunk`.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        match &mut self.mode {
            Mode::Json { copy, over } => {
                if !*over {
                    if copy.len() + chunk.len() > MAX_JSON_BYTES {
                        *over = true;
                        *copy = Vec::new();
                    } else {
                        copy.extend_from_slice(chunk);
                    }
                }
                if end && !*over {
                    let copy = std::mem::take(copy);
                    self.usage = read_usage(&copy);
                }
                None
            }
            Mode::Sse { .. } => self.feed_sse(chunk, end),
        }
    }

    fn feed_sse(&mut self, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        let Mode::Sse { pending, unread } = &mut self.mode else {
            return None;
        };
        if *unread {
            return None;
        }
        let mut pending = std::mem::take(pending);
        pending.extend_from_slice(chunk);
        let strip = self.strip_usage_chunk;
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = event_len(&pending[start..]) {
            let event = &pending[start..start + len];
            let usage_only = self.read_event(event);
            if strip && !usage_only {
                out.extend_from_slice(event);
            }
            start += len;
        }
        let mut rest = pending.split_off(start);
        // An event this long is not one of the server's chunks: pass the rest on unread.
        let too_long = rest.len() > MAX_EVENT_BYTES;
        if end || too_long {
            if strip {
                out.extend_from_slice(&rest);
            }
            rest.clear();
        }
        if let Mode::Sse { pending, unread } = &mut self.mode {
            *pending = rest;
            *unread = too_long;
        }
        (strip && out.as_slice() != chunk).then_some(out)
    }

    /// Read one whole event; true when it is a usage-only chunk.
    fn read_event(&mut self, event: &[u8]) -> bool {
        let data = event_data(event);
        if data.is_empty() || data == b"[DONE]" {
            return false;
        }
        let Some(envelope) = Envelope::read(&data) else {
            return false;
        };
        if envelope.choices > 0 {
            self.content_events += 1;
        }
        match envelope.usage {
            Some(usage) => {
                self.usage = Some(usage);
                envelope.choices == 0
            }
            None => false,
        }
    }

    /// The usage the response reported, once seen.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Events with generated content seen so far (SSE).
    pub fn content_events(&self) -> u64 {
        self.content_events
    }

    /// True when the response status was an error (400 or more).
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// True for an SSE response.
    pub fn is_stream(&self) -> bool {
        matches!(self.mode, Mode::Sse { .. })
    }
}

/// The top-level `usage` of a JSON body.
fn read_usage(body: &[u8]) -> Option<Usage> {
    Envelope::read(body)?.usage
}

/// The length of the first whole event in `bytes` (its blank line included), if there is one.
fn event_len(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if bytes[i + 1] == b'\r' && bytes.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data:` lines of an event joined by `\n` (the SSE spec's reading: one optional space
/// after the colon is removed).
fn event_data(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
        }
    }
    data
}

#[cfg(test)]
mod tests;
