//! Local replies: status, headers and `{"error": "..."}` bodies (KServe's error shape).

use std::sync::Arc;

use crate::decision::Pending;
use crate::decision::{Outcome, Reply, Verdict};

const JSON: (&str, &str) = ("content-type", "application/json");

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn reply(status: u16, message: &str, model: Option<Arc<str>>, outcome: Outcome) -> Reply {
    Reply {
        status,
        headers: vec![(JSON.0, JSON.1.to_owned())],
        body: error_body(message),
        verdict: Verdict::new(model, outcome),
    }
}

/// 400: a body or path that fails validation.
pub(crate) fn invalid(message: &str, model: Option<Arc<str>>) -> Reply {
    reply(400, message, model, Outcome::Invalid)
}

/// 400 or 415: headers that would make the model server read the body differently from the
/// validator (`kserve_headers`).
pub(crate) fn refused_framing(status: u16, message: &str, model: Arc<str>) -> Reply {
    reply(status, message, Some(model), Outcome::Invalid)
}

/// 400: a client-sent header that imitates one the gateway sets (`lookalikeHeaders: reject`).
pub(crate) fn lookalike_header(name: &str, imitated: &str) -> Reply {
    let message = format!(
        "request header {name} is not allowed: it reads as {imitated}, which the gateway sets"
    );
    reply(400, &message, None, Outcome::Invalid)
}

/// 404 in KServe's exact shape.
pub(crate) fn unknown_model(name: &str) -> Reply {
    reply(
        404,
        &format!("Model with name {name} does not exist."),
        None,
        Outcome::UnknownModel,
    )
}

/// 401 with an RFC 6750 challenge; `description` is `None` when no token was sent.
pub(crate) fn unauthenticated(realm: &str, description: Option<&str>) -> Reply {
    let (challenge, message) = match description {
        None => (
            format!("Bearer realm=\"{realm}\""),
            "missing bearer token".to_owned(),
        ),
        Some(d) => (
            format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{d}\""),
            format!("invalid token: {d}"),
        ),
    };
    let mut r = reply(401, &message, None, Outcome::Unauthenticated);
    r.headers.push(("www-authenticate", challenge));
    r
}

/// 403 for KServe's model repository extension (`load`, `unload`) on a model whose
/// configuration has no `adminScopes`: no token can allow it, so there is no challenge.
pub(crate) fn repository_refused(model: Arc<str>) -> Reply {
    let message = format!(
        "forbidden: the model repository API (load, unload) is not enabled for model {model}"
    );
    reply(403, &message, Some(model), Outcome::Forbidden)
}

/// 503 while there is no key to verify a token with: the remote JWKS has not been fetched
/// yet (`untilFetched: deny`). The caller's token may be fine, so this is no 401; it counts as
/// unauthenticated, since the request was not authenticated.
pub(crate) fn keys_unavailable() -> Reply {
    reply(
        503,
        "token signing keys are not available yet: the identity provider's JWKS has not been fetched",
        None,
        Outcome::Unauthenticated,
    )
}

/// 403 with an RFC 6750 `insufficient_scope` challenge naming the model's scopes.
pub(crate) fn forbidden(realm: &str, reason: &str, scopes: &[String], model: Arc<str>) -> Reply {
    // Claim names come from the config; keep the quoted-string free of quotes and backslashes.
    let reason: String = reason
        .chars()
        .filter(|c| !matches!(c, '"' | '\\'))
        .collect();
    let mut challenge = format!(
        "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{reason}\""
    );
    if !scopes.is_empty() {
        challenge.push_str(", scope=\"");
        challenge.push_str(&scopes.join(" "));
        challenge.push('"');
    }
    let message = format!("forbidden: {reason} for model {model}");
    let mut r = reply(403, &message, Some(model), Outcome::Forbidden);
    r.headers.push(("www-authenticate", challenge));
    r
}

/// 429 for a caller that found no rate-limit slot (every slot it may use holds another
/// caller's live state): like [`rate_limited`], with the wait until a slot frees.
pub(crate) fn rate_limit_crowded(model: Arc<str>, limit: u32, retry_after: u64) -> Reply {
    let message = format!("rate limit exceeded for model {model}: too many active callers");
    let mut r = reply(429, &message, Some(model), Outcome::RateLimited);
    r.headers.extend([
        ("retry-after", retry_after.to_string()),
        ("ratelimit-limit", limit.to_string()),
        ("ratelimit-remaining", "0".to_owned()),
        ("ratelimit-reset", retry_after.to_string()),
    ]);
    r
}

/// 429 with `Retry-After` and the `RateLimit-*` headers.
pub(crate) fn rate_limited(model: Arc<str>, limit: u32, retry_after: u64, reset: u64) -> Reply {
    let message = format!("rate limit exceeded for model {model}");
    let mut r = reply(429, &message, Some(model), Outcome::RateLimited);
    r.headers.extend([
        ("retry-after", retry_after.to_string()),
        ("ratelimit-limit", limit.to_string()),
        ("ratelimit-remaining", "0".to_owned()),
        ("ratelimit-reset", reset.to_string()),
    ]);
    r
}

/// 413 for a body over the limit.
pub(crate) fn payload_too_large(pending: &Pending) -> Reply {
    reply(
        413,
        &format!("request body exceeds {} bytes", pending.max_bytes),
        pending.model_name().cloned(),
        Outcome::Invalid,
    )
}

/// 503 for an internal fault under `failureMode: deny`.
pub(crate) fn internal_fault(model: Option<Arc<str>>) -> Reply {
    reply(
        503,
        "internal error in the gateway policy",
        model,
        Outcome::InternalError,
    )
}

/// 200: the models a caller may use, in KServe's V1 listing shape (also used for V2).
pub(crate) fn model_list<'a>(names: impl Iterator<Item = &'a str>) -> Reply {
    let names: Vec<&str> = names.collect();
    Reply {
        status: 200,
        headers: vec![(JSON.0, JSON.1.to_owned())],
        body: serde_json::json!({ "models": names }).to_string(),
        verdict: Verdict::new(None, Outcome::Allowed),
    }
}

/// 429 for a token budget: `message` says which window, `Retry-After` when the reservation
/// fits (the `x-ratelimit-*-tokens` headers are added by the caller).
pub(crate) fn budget_exceeded(model: Arc<str>, message: &str, retry_after: u64) -> Reply {
    let mut r = reply(429, message, Some(model), Outcome::RateLimited);
    r.headers.push(("retry-after", retry_after.to_string()));
    r
}

/// 200: the OpenAI models a caller may use, in KServe's `ModelList` shape (`created` is
/// `created_secs`, Unix seconds).
pub(crate) fn openai_model_list<'a>(
    names: impl Iterator<Item = &'a str>,
    created_secs: u64,
) -> Reply {
    let data: Vec<serde_json::Value> = names
        .map(|id| {
            serde_json::json!({ "id": id, "object": "model", "created": created_secs, "owned_by": "" })
        })
        .collect();
    Reply {
        status: 200,
        headers: vec![(JSON.0, JSON.1.to_owned())],
        body: serde_json::json!({ "object": "list", "data": data }).to_string(),
        verdict: Verdict::new(None, Outcome::Allowed),
    }
}
