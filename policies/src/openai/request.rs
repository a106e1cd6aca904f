//! OpenAI request bodies as KServe 0.21 reads them: it validates them with vLLM 0.24's pydantic
//! models (`ChatCompletionRequest` in `vllm/entrypoints/openai/chat_completion/protocol.py`,
//! `CompletionRequest` in `.../completion/protocol.py`, the embedding requests in
//! `vllm/entrypoints/pooling/embed/protocol.py`), in pydantic's lax mode: `"5"`, `5.0` and
//! `true` are integers, `"yes"` and `1` are booleans.
//!
//! The checks are the ones pydantic or vLLM's validators would fail after the server received
//! the request, plus what the gateway needs (`model`, a string; the model's `maxTokens`).
//! The body is read whole into a `serde_json::Value`, which decodes every string (a lone
//! surrogate escape is refused, as for V1) and keeps the last of duplicate keys, as Python's
//! `json.loads` (FastAPI's body parser) does.

use serde_json::{Map, Value};

mod parts;

/// Which OpenAI endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Completions,
    Embeddings,
    Rerank,
}

/// What a valid body tells the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) model: String,
    /// Bytes of text the model reads (message contents, prompts, inputs).
    pub(crate) text_bytes: u64,
    /// Token ids sent as such (one token each) plus chat messages (a few tokens each for the
    /// chat template), counted apart from text.
    pub(crate) token_ids: u64,
    pub(crate) messages: u64,
    /// `max_completion_tokens`, else `max_tokens` (vLLM's `to_sampling_params`); for
    /// completions vLLM's default of 16 when absent or null.
    pub(crate) max_tokens: Option<u64>,
    pub(crate) n: u64,
    pub(crate) stream: bool,
    /// `stream_options.include_usage`, as the server will read it.
    pub(crate) include_usage: bool,
}

/// A 400: the message and the field it is about (`param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) param: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        message: format!("{param}: {}", message.into()),
        param: Some(param.to_owned()),
    }
}

/// vLLM's default `max_tokens` for completions (`CompletionRequest.max_tokens = 16`, and
/// `normalize_null_max_tokens` turns `null` into it).
const COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

/// Parse and check a body for `kind`.
pub(crate) fn parse(kind: Kind, body: &[u8]) -> Result<Parsed, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Invalid {
        message: format!("body: invalid JSON: {e}"),
        param: None,
    })?;
    let Value::Object(body) = value else {
        return Err(Invalid {
            message: "body: expected a JSON object".to_owned(),
            param: None,
        });
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(invalid("model", "must not be empty")),
        None | Some(Value::Null) => return Err(invalid("model", "required")),
        Some(_) => return Err(invalid("model", "must be a string")),
    };
    let mut parsed = Parsed {
        model,
        text_bytes: 0,
        token_ids: 0,
        messages: 0,
        max_tokens: None,
        n: 1,
        stream: false,
        include_usage: false,
    };
    match kind {
        Kind::Chat => {
            let messages = body
                .get("messages")
                .ok_or_else(|| invalid("messages", "required"))?;
            messages_text(messages, "messages", &mut parsed)?;
        }
        Kind::Completions => prompt_text(&body, &mut parsed)?,
        Kind::Embeddings => match (body.get("input"), body.get("messages")) {
            (Some(input @ Value::Array(items)), _) if items.iter().any(Value::is_object) => {
                messages_text(input, "input", &mut parsed)?;
            }
            (Some(input), _) => inputs_text(input, "input", &mut parsed)?,
            (None, Some(messages)) => messages_text(messages, "messages", &mut parsed)?,
            (None, None) => return Err(invalid("input", "required")),
        },
        // Only `model` is read; the reservation counts the whole body (see `openai.rs`).
        Kind::Rerank => return Ok(parsed),
    }
    if matches!(kind, Kind::Chat | Kind::Completions) {
        generation(kind, &body, &mut parsed)?;
    }
    Ok(parsed)
}

/// `max_tokens`, `max_completion_tokens`, `n`, `stream`, `stream_options`.
fn generation(kind: Kind, body: &Map<String, Value>, parsed: &mut Parsed) -> Result<(), Invalid> {
    // vLLM's SamplingParams refuses fewer than 1 token; completions may ask for 0 with `echo`.
    let least = match kind {
        Kind::Completions => 0,
        _ => 1,
    };
    let max_tokens = lax_count(body, "max_tokens", least)?;
    let max_completion = if kind == Kind::Chat {
        lax_count(body, "max_completion_tokens", least)?
    } else {
        None
    };
    parsed.max_tokens = max_completion.or(max_tokens);
    if kind == Kind::Completions && parsed.max_tokens.is_none() {
        parsed.max_tokens = Some(COMPLETIONS_DEFAULT_MAX_TOKENS);
    }
    // `n` is `int | None = 1` for chat, a plain `int = 1` for completions.
    match body.get("n") {
        Some(Value::Null) if kind == Kind::Completions => {
            return Err(invalid("n", "must be an integer"));
        }
        _ => parsed.n = lax_count(body, "n", 1)?.unwrap_or(1),
    }
    parsed.stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(v) => lax_bool(v).ok_or_else(|| invalid("stream", "must be a boolean"))?,
    };
    match body.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(options)) => {
            for (name, value) in options {
                let truthy = match value {
                    Value::Null => false,
                    v => lax_bool(v).ok_or_else(|| {
                        invalid(&format!("stream_options.{name}"), "must be a boolean")
                    })?,
                };
                if name == "include_usage" {
                    parsed.include_usage = truthy;
                }
            }
            // vLLM's `validate_stream_options`: `data.get("stream_options") and not
            // data.get("stream")`, so an empty object passes.
            if !options.is_empty() && !parsed.stream {
                return Err(invalid(
                    "stream_options",
                    "Stream options can only be defined when `stream=True`.",
                ));
            }
        }
        Some(_) => return Err(invalid("stream_options", "must be an object")),
    }
    Ok(())
}

/// An integer field read as pydantic's lax mode reads one, at least `least`; `None` when
/// absent or null.
fn lax_count(body: &Map<String, Value>, field: &str, least: u64) -> Result<Option<u64>, Invalid> {
    let value = match body.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = lax_int(value).ok_or_else(|| invalid(field, "must be an integer"))?;
    if n < i128::from(least) {
        return Err(invalid(field, format!("must be at least {least}, got {n}")));
    }
    Ok(Some(u64::try_from(n).unwrap_or(u64::MAX)))
}

/// pydantic's lax `int`: integers, whole floats, booleans, and strings of an integer
/// (surrounding whitespace allowed).
fn lax_int(value: &Value) -> Option<i128> {
    match value {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                let f = n.as_f64()?;
                // Whole and in range: the cast below is exact.
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a whole float within i64's range converts exactly"
                )]
                (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i128)
            }
        }
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    }
}

/// pydantic's lax `bool`: booleans, 0 and 1, and its words in any case.
fn lax_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Chat messages: a list of objects with a `role` string and a `content` that is a string, a
/// list of parts (`parts`), absent, or (for `assistant`) null.
fn messages_text(messages: &Value, at: &str, parsed: &mut Parsed) -> Result<(), Invalid> {
    let Value::Array(messages) = messages else {
        return Err(invalid(at, "must be a list of messages"));
    };
    for (i, message) in messages.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Value::Object(message) = message else {
            return Err(invalid(&here, "must be an object"));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) => role,
            None => return Err(invalid(&format!("{here}.role"), "required")),
            Some(_) => return Err(invalid(&format!("{here}.role"), "must be a string")),
        };
        parsed.messages += 1;
        match message.get("content") {
            None => {}
            Some(Value::Null) if role == "assistant" => {}
            Some(Value::String(text)) => parsed.text_bytes += len(text),
            Some(Value::Array(parts)) => {
                parts::check(role, parts, &format!("{here}.content"))?;
                for part in parts {
                    parsed.text_bytes += strings_bytes(part);
                }
            }
            Some(_) => {
                return Err(invalid(
                    &format!("{here}.content"),
                    "must be a string or a list of content parts",
                ));
            }
        }
    }
    Ok(())
}

/// A completions `prompt`: required and non-empty unless `prompt_embeds` is sent and non-empty
/// (vLLM's `validate_prompt_and_prompt_embeds`: its `embeds_is_empty` is `None` or an empty
/// list).
fn prompt_text(body: &Map<String, Value>, parsed: &mut Parsed) -> Result<(), Invalid> {
    let embeds = body
        .get("prompt_embeds")
        .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|items| !items.is_empty()));
    match body.get("prompt") {
        None | Some(Value::Null) if embeds => {
            parsed.text_bytes += body.get("prompt_embeds").map_or(0, strings_bytes);
            Ok(())
        }
        Some(Value::String(s)) if s.is_empty() && !embeds => Err(invalid(
            "prompt",
            "Either prompt or prompt_embeds must be provided and non-empty.",
        )),
        None | Some(Value::Null) => Err(invalid(
            "prompt",
            "Either prompt or prompt_embeds must be provided and non-empty.",
        )),
        Some(prompt) => inputs_text(prompt, "prompt", parsed),
    }
}

/// A string, a list of strings, a list of token ids (integers >= 0), or a list of such lists.
fn inputs_text(value: &Value, at: &str, parsed: &mut Parsed) -> Result<(), Invalid> {
    let shape =
        "must be a string, a list of strings, a list of token ids or a list of lists of token ids";
    match value {
        Value::String(s) => parsed.text_bytes += len(s),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            parsed.text_bytes += items.iter().map(strings_bytes).sum::<u64>();
        }
        Value::Array(items) if items.iter().all(Value::is_array) => {
            for (i, ids) in items.iter().enumerate() {
                token_ids(ids, &format!("{at}[{i}]"), parsed)?;
            }
        }
        Value::Array(_) => token_ids(value, at, parsed)?,
        _ => return Err(invalid(at, shape)),
    }
    Ok(())
}

fn token_ids(value: &Value, at: &str, parsed: &mut Parsed) -> Result<(), Invalid> {
    let Value::Array(ids) = value else {
        return Err(invalid(at, "must be a list of token ids"));
    };
    for (i, id) in ids.iter().enumerate() {
        if !matches!(lax_int(id), Some(n) if n >= 0) {
            return Err(invalid(
                &format!("{at}[{i}]"),
                "a token id must be an integer >= 0",
            ));
        }
    }
    parsed.token_ids += len_of(ids);
    Ok(())
}

/// Bytes of every string in a value (a content part's `text`, an image URL): more than the
/// model reads of some parts, which only makes the reservation larger.
fn strings_bytes(value: &Value) -> u64 {
    match value {
        Value::String(s) => len(s),
        Value::Array(items) => items.iter().map(strings_bytes).sum(),
        Value::Object(members) => members.values().map(strings_bytes).sum(),
        _ => 0,
    }
}

fn len(s: &str) -> u64 {
    u64::try_from(s.len()).unwrap_or(u64::MAX)
}

fn len_of<T>(items: &[T]) -> u64 {
    u64::try_from(items.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
