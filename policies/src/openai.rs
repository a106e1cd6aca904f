//! KServe's OpenAI-compatible endpoints (`kserve/protocol/rest/openai/endpoints.py`,
//! `register_openai_endpoints`): the paths under the configured prefix, the model from the
//! body, OpenAI's error shape, token budgets reserved at admission and settled from the
//! response's `usage`.
//!
//! The pipeline is the one of other model paths (authenticate at header time; then, once the
//! body names the model: authorize, request quota, validate, token budget), written here as
//! the `Engine`'s OpenAI steps; `request` reads bodies, `response` reads `usage` back.

pub(crate) mod request;
pub(crate) mod response;

use std::sync::Arc;

use crate::jwt::Identity;
use crate::models::{ModelId, ModelOpenAi};
use crate::ratelimit::QuotaStanding;
use crate::routing::{strip_query, valid_name};
use crate::token_budget::{Standing, ceil_secs};

use request::{Kind, Parsed};
use response::{ResponseMeter, Usage};

/// The compiled `openai` section.
#[derive(Debug)]
pub(crate) struct OpenAiRoutes {
    /// `""` or `/segment...`, no trailing `/`.
    pub(crate) prefix: String,
    pub(crate) hold_headers: bool,
    pub(crate) caller_class: Option<CallerClass>,
}

/// The `caller_class` metric label's source.
#[derive(Debug)]
pub(crate) struct CallerClass {
    pub(crate) claim: String,
    pub(crate) values: Vec<Arc<str>>,
}

/// Who sent an OpenAI request, from its header phase.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) identity: Option<Arc<Identity>>,
    /// The rate-limit key (`rateLimit.key`).
    pub(crate) limit_key: String,
    /// The `caller_class` metric label.
    pub(crate) class: Arc<str>,
}

/// What an OpenAI path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Body(Kind),
    List,
    Model(&'a str),
}

/// Tokens a chat message costs beyond its text (the chat template's role markers).
const TOKENS_PER_MESSAGE: u64 = 4;

/// Caller class of a request without a verified token.
pub const ANONYMOUS: &str = "anonymous";
/// Caller class of a verified token when no `callerClass` is configured.
pub const AUTHENTICATED: &str = "authenticated";
/// Caller class of a verified token whose claim is not among `callerClass.values`.
pub const OTHER: &str = "other";

impl OpenAiRoutes {
    /// The OpenAI route a path (query string included or not) names, if any.
    pub(crate) fn classify<'a>(&self, path: &'a str) -> Option<Route<'a>> {
        let rest = strip_query(path).strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix("/v1/")?;
        Some(match rest {
            "chat/completions" => Route::Body(Kind::Chat),
            "completions" => Route::Body(Kind::Completions),
            "embeddings" => Route::Body(Kind::Embeddings),
            "rerank" => Route::Body(Kind::Rerank),
            // With an empty prefix these are KServe's V1 routes (registered first).
            _ if self.prefix.is_empty() => return None,
            "models" => Route::List,
            _ => Route::Model(rest.strip_prefix("models/").filter(|m| valid_name(m))?),
        })
    }

    /// The `caller_class` label for `identity`.
    pub(crate) fn caller_class(&self, identity: Option<&Identity>) -> Arc<str> {
        let Some(identity) = identity else {
            return Arc::from(ANONYMOUS);
        };
        let Some(class) = &self.caller_class else {
            return Arc::from(AUTHENTICATED);
        };
        identity
            .claim_text(&class.claim)
            .and_then(|value| class.values.iter().find(|v| ***v == *value).cloned())
            .unwrap_or_else(|| Arc::from(OTHER))
    }
}

/// One admitted OpenAI request, from its body decision to its settlement: what the adapter
/// applies to the request and response, and what settling needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenAiExchange {
    pub(crate) model_id: ModelId,
    /// The canonical model name.
    pub model: Arc<str>,
    /// The `caller_class` metric label.
    pub caller_class: Arc<str>,
    pub(crate) key: String,
    pub(crate) reserved: u64,
    pub(crate) prompt_estimate: u64,
    pub(crate) completion_bound: u64,
    /// The request asked for a stream.
    pub stream: bool,
    /// The gateway asked for usage the client did not: remove the usage-only chunk.
    pub(crate) strip_usage_chunk: bool,
    /// The request body to send instead of the client's (usage asked for), when rewritten.
    pub body: Option<Vec<u8>>,
    /// Response headers to add: OpenAI's `x-ratelimit-*-tokens` and `x-ratelimit-*-requests`
    /// as of admission.
    pub response_headers: Vec<(&'static str, String)>,
}

/// The tokens a settled exchange was charged, for the GenAI metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
}

/// What an exchange is charged (docs/config.md, "Settlement", "Aborted streams").
pub(crate) fn charge(exchange: &OpenAiExchange, meter: Option<&ResponseMeter>) -> Settled {
    let Some(meter) = meter else {
        // No response came: the prompt was sent, nothing generated.
        return Settled {
            input: exchange.prompt_estimate,
            output: 0,
        };
    };
    if let Some(Usage {
        prompt_tokens,
        completion_tokens,
    }) = meter.usage()
    {
        return Settled {
            input: prompt_tokens,
            output: completion_tokens,
        };
    }
    if meter.is_stream() {
        Settled {
            input: exchange.prompt_estimate,
            output: meter.content_events(),
        }
    } else if meter.is_error() {
        // The server refused the request: nothing was generated.
        Settled {
            input: 0,
            output: 0,
        }
    } else {
        Settled {
            input: exchange.prompt_estimate,
            output: exchange.completion_bound,
        }
    }
}

/// The tokens a request may generate: its `max_tokens` (else the model's default) for each of
/// its `n` choices; embeddings and rerank generate none.
pub(crate) fn completion_bound(kind: Kind, parsed: &Parsed, settings: &ModelOpenAi) -> u64 {
    match kind {
        Kind::Chat | Kind::Completions => parsed
            .max_tokens
            .unwrap_or(settings.default_max_tokens)
            .saturating_mul(parsed.n),
        Kind::Embeddings | Kind::Rerank => 0,
    }
}

/// The prompt's token estimate: text bytes over `bytesPerToken` (rounded up), plus token ids
/// and a few tokens per chat message; a rerank body counts whole.
pub(crate) fn estimate_prompt(
    kind: Kind,
    parsed: &Parsed,
    settings: &ModelOpenAi,
    body_len: usize,
) -> u64 {
    let text = if kind == Kind::Rerank {
        u64::try_from(body_len).unwrap_or(u64::MAX)
    } else {
        parsed.text_bytes
    };
    text.div_ceil(settings.bytes_per_token.max(1))
        .saturating_add(parsed.token_ids)
        .saturating_add(parsed.messages.saturating_mul(TOKENS_PER_MESSAGE))
}

/// The body with `"stream_options":{...,"include_usage":true}` appended as its last member:
/// Python's `json.loads` keeps the last of duplicate keys, so it overrides a client's
/// `stream_options`, whose other members it carries over. Every other byte is the client's.
pub(crate) fn with_usage_requested(body: &[u8]) -> Vec<u8> {
    let options = options_with_usage(body);
    let end = body.iter().rposition(|b| *b == b'}').unwrap_or(body.len());
    let mut out = Vec::with_capacity(body.len() + options.len() + 20);
    out.extend_from_slice(&body[..end]);
    // The object is non-empty (it holds `model`), so a comma separates the new member.
    out.extend_from_slice(b",\"stream_options\":");
    out.extend_from_slice(options.as_bytes());
    out.extend_from_slice(&body[end..]);
    out
}

/// The client's `stream_options` with `include_usage: true`, as JSON text.
pub(crate) fn options_with_usage(body: &[u8]) -> String {
    let mut options = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("stream_options").map(serde_json::Value::take))
        .and_then(|v| match v {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default();
    options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    serde_json::Value::Object(options).to_string()
}

/// OpenAI's `x-ratelimit-*-tokens` for a window.
pub(crate) fn token_headers(standing: &Standing) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit-tokens", standing.limit.to_string()),
        (
            "x-ratelimit-remaining-tokens",
            standing.remaining.to_string(),
        ),
        ("x-ratelimit-reset-tokens", reset_text(standing.reset_nanos)),
    ]
}

/// OpenAI's `x-ratelimit-*-requests` for a request quota after an admitted request.
pub(crate) fn request_headers(standing: &QuotaStanding) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit-requests", standing.limit.to_string()),
        (
            "x-ratelimit-remaining-requests",
            standing.remaining.to_string(),
        ),
        (
            "x-ratelimit-reset-requests",
            reset_text(standing.reset_secs.saturating_mul(1_000_000_000)),
        ),
    ]
}

/// A duration as OpenAI writes its resets: `20ms`, `2s`, `1m30s`, `1h0m0s`.
pub(crate) fn reset_text(nanos: u64) -> String {
    if nanos < 1_000_000_000 {
        return format!("{}ms", nanos.div_ceil(1_000_000));
    }
    let secs = ceil_secs(nanos);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests;
