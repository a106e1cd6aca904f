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
use std::time::Duration;

use crate::decision::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, NeedBody, Outcome, PendingRequest, Reply,
    Verdict,
};
use crate::engine::{Engine, Pending, Stage};
use crate::jwt::Identity;
use crate::models::{Model, ModelId};
use crate::ratelimit::QuotaStanding;
use crate::reply;
use crate::request::RequestView;
use crate::routing::{strip_query, valid_name};
use crate::store::SharedStore;
use crate::token_budget::{Reserve, Standing, TokenBudget, ceil_secs};

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

/// A model's compiled OpenAI settings.
#[derive(Debug)]
pub(crate) struct ModelOpenAi {
    pub(crate) max_tokens: Option<u64>,
    pub(crate) default_max_tokens: u64,
    pub(crate) max_n: u64,
    pub(crate) bytes_per_token: u64,
    pub(crate) budget: Option<TokenBudget>,
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
    model_id: ModelId,
    /// The canonical model name.
    pub model: Arc<str>,
    /// The `caller_class` metric label.
    pub caller_class: Arc<str>,
    key: String,
    reserved: u64,
    prompt_estimate: u64,
    completion_bound: u64,
    /// The request asked for a stream.
    pub stream: bool,
    /// The gateway asked for usage the client did not: remove the usage-only chunk.
    strip_usage_chunk: bool,
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

impl Engine {
    /// The header decision on an OpenAI path; `None` for another path, or a method the filter
    /// does not handle there (the request is then forwarded as any other path).
    pub(crate) fn openai_headers(
        &self,
        request: &RequestView<'_>,
        identity: Option<&Arc<Identity>>,
        edits: &HeaderEdits,
        now: Duration,
        store: &dyn SharedStore,
    ) -> Option<HeadersDecision> {
        let openai = self.openai.as_ref()?;
        let route = openai.classify(request.path)?;
        let identity = identity.cloned();
        let mut edits = self.drop_client_route(request, edits.clone());
        let decision = match route {
            Route::Body(kind) if request.method == "POST" => {
                let limit_key = self.limit_key(request, identity.as_deref());
                self.set_key_header(&mut edits, limit_key.clone());
                let caller_class = openai.caller_class(identity.as_deref());
                HeadersDecision::NeedBody(NeedBody {
                    max_bytes: self.max_body_bytes,
                    route_changed: edits.remove.contains(&self.routing_header),
                    headers: edits.without_redundant_removals(),
                    hold_headers: openai.hold_headers,
                    pending: PendingRequest(Pending {
                        max_bytes: self.max_body_bytes,
                        subject: None,
                        stage: Stage::OpenAi {
                            kind,
                            caller: Caller {
                                identity,
                                limit_key,
                                class: caller_class,
                            },
                        },
                    }),
                })
            }
            Route::List if self.list_models && request.method == "GET" => {
                let names = self
                    .models
                    .iter()
                    .filter(|m| {
                        m.openai.is_some() && m.requirements.check(identity.as_deref()).is_ok()
                    })
                    .map(|m| &*m.name);
                HeadersDecision::Reply(reply::openai_model_list(names, now.as_secs()))
            }
            Route::Model(name) => {
                let Some(id) = self.openai_model(name) else {
                    return Some(to_openai(self.unknown(name, edits)));
                };
                let key = self.limit_key(request, identity.as_deref());
                let requirements = &self.models.get(id).requirements;
                match self.admit(id, requirements, identity.as_deref(), &key, now, store) {
                    Ok(shadow_limited) => {
                        self.set_key_header(&mut edits, key);
                        HeadersDecision::Continue(self.forward(id, edits, shadow_limited))
                    }
                    Err(reply) => HeadersDecision::Reply(reply),
                }
            }
            Route::Body(_) | Route::List => return None,
        };
        Some(to_openai(decision))
    }

    /// Every `caller_class` label value (see [`crate::Policies::caller_classes`]).
    pub(crate) fn caller_classes(&self) -> Vec<Arc<str>> {
        let configured = self
            .openai
            .as_ref()
            .and_then(|o| o.caller_class.as_ref())
            .map(|c| c.values.clone())
            .unwrap_or_default();
        let fixed = [OTHER, AUTHENTICATED, ANONYMOUS].map(Arc::from);
        configured.into_iter().chain(fixed).collect()
    }

    /// A configured model that serves OpenAI, by name or alias.
    fn openai_model(&self, name: &str) -> Option<ModelId> {
        self.models
            .lookup(name)
            .filter(|id| self.models.get(*id).openai.is_some())
    }

    /// The body decision of an OpenAI request.
    pub(crate) fn openai_body(
        &self,
        kind: Kind,
        caller: &Caller,
        body: &[u8],
        now: Duration,
        store: &dyn SharedStore,
    ) -> BodyDecision {
        let (identity, limit_key) = (caller.identity.as_deref(), caller.limit_key.as_str());
        let parsed = match request::parse(kind, body) {
            Ok(parsed) => parsed,
            Err(invalid) => {
                log::debug!("invalid OpenAI body: {}", invalid.message);
                return BodyDecision::Reply(openai_reply(
                    reply::invalid(&invalid.message, None),
                    invalid.param.as_deref(),
                ));
            }
        };
        let Some(id) = self.openai_model(&parsed.model) else {
            return match to_openai(self.unknown(&parsed.model, HeaderEdits::default())) {
                HeadersDecision::Continue(c) => BodyDecision::Continue(c),
                HeadersDecision::Reply(r) => BodyDecision::Reply(r),
                HeadersDecision::NeedBody(_) => BodyDecision::Reply(reply::internal_fault(None)),
            };
        };
        let model = self.models.get(id);
        let Some(settings) = &model.openai else {
            return BodyDecision::Reply(reply::internal_fault(None));
        };
        let (shadow_limited, requests) = match self.admit_with_standing(
            id,
            &model.requirements,
            identity,
            limit_key,
            now,
            store,
        ) {
            Ok(admitted) => admitted,
            Err(reply) => return BodyDecision::Reply(openai_reply(reply, None)),
        };
        let request_headers = requests.map(|q| request_headers(&q)).unwrap_or_default();
        if let Err(reply) = check_limits(model, settings, &parsed) {
            return BodyDecision::Reply(reply);
        }
        let prompt_estimate = estimate_prompt(kind, &parsed, settings, body.len());
        let completion_bound = completion_bound(kind, &parsed, settings);
        let cost = prompt_estimate.saturating_add(completion_bound);
        let now_nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let mut response_headers = Vec::new();
        let mut reserved = 0;
        let mut shadow_limited = shadow_limited;
        if let Some(budget) = &settings.budget {
            match self.reserve(model, budget, limit_key, cost, now_nanos, store) {
                Ok(Some(standing)) => {
                    reserved = cost;
                    response_headers = token_headers(&standing);
                }
                Ok(None) => shadow_limited = true,
                Err(mut reply) => {
                    // A token budget's 429 tells the request quota's standing too.
                    if reply.status == 429 {
                        reply.headers.extend(request_headers);
                    }
                    return BodyDecision::Reply(reply);
                }
            }
        }
        response_headers.extend(request_headers);
        let openai = self.openai.as_ref();
        let hold = openai.is_some_and(|o| o.hold_headers);
        let strip_usage_chunk = hold && parsed.stream && !parsed.include_usage;
        let rewritten = strip_usage_chunk.then(|| with_usage_requested(body));
        let mut forward = if hold {
            let mut edits = HeaderEdits::default();
            if let Some(body) = &rewritten {
                edits
                    .set
                    .push((Arc::from("content-length"), body.len().to_string()));
            }
            self.forward(id, edits, shadow_limited)
        } else {
            // Envoy has sent the headers on: the route was chosen by path.
            let mut verdict = Verdict::new(Some(Arc::clone(&model.name)), Outcome::Allowed);
            verdict.shadow_rate_limited = shadow_limited;
            Continue {
                headers: HeaderEdits::default(),
                route_changed: false,
                verdict,
                openai: None,
            }
        };
        forward.openai = Some(Box::new(OpenAiExchange {
            model_id: id,
            model: Arc::clone(&model.name),
            caller_class: Arc::clone(&caller.class),
            key: limit_key.to_owned(),
            reserved,
            prompt_estimate,
            completion_bound,
            stream: parsed.stream,
            strip_usage_chunk,
            body: rewritten,
            response_headers,
        }));
        BodyDecision::Continue(forward)
    }

    /// Reserve `cost` tokens: `Ok(Some)` reserved, `Ok(None)` over budget but let through by
    /// shadow mode (nothing reserved: settlement charges the usage), `Err` the reply.
    fn reserve(
        &self,
        model: &Model,
        budget: &TokenBudget,
        key: &str,
        cost: u64,
        now: u64,
        store: &dyn SharedStore,
    ) -> Result<Option<Standing>, Reply> {
        let name = Arc::clone(&model.name);
        let refusal = match budget.reserve(key, cost, now, store) {
            Reserve::Reserved(standing) => return Ok(Some(standing)),
            Reserve::NeverFits { per, limit } => {
                let message = format!(
                    "max_tokens: the request needs up to {cost} tokens, more than model {name}'s budget of {limit} per {}",
                    per.as_str()
                );
                return Err(openai_reply(
                    reply::invalid(&message, Some(name)),
                    Some("max_tokens"),
                ));
            }
            Reserve::StoreFailed(error) => {
                log::warn!("token budget of model {name} not updated: {error}");
                return match self.failure_mode {
                    crate::config::FailureMode::Deny => {
                        Err(openai_reply(reply::internal_fault(Some(name)), None))
                    }
                    crate::config::FailureMode::Allow => Ok(None),
                };
            }
            limited => limited,
        };
        if self.shadow {
            log::warn!("shadow mode: model {name} over its token budget for key {key}");
            return Ok(None);
        }
        let (message, retry_after, headers) = match refusal {
            Reserve::Limited {
                standing,
                retry_after_secs,
            } => (
                format!(
                    "token budget exceeded for model {name}: needs {cost} tokens, {} remaining of {} per {}",
                    standing.remaining,
                    standing.limit,
                    standing.per.as_str()
                ),
                retry_after_secs,
                token_headers(&standing),
            ),
            _ => (
                format!("token budget exceeded for model {name}: too many active callers"),
                match refusal {
                    Reserve::Crowded { retry_after_secs } => retry_after_secs,
                    _ => 1,
                },
                Vec::new(),
            ),
        };
        let mut reply = reply::budget_exceeded(name, &message, retry_after);
        reply.headers.extend(headers);
        Err(openai_reply(reply, None))
    }

    /// The response meter for an exchange whose response has status `status` and content type
    /// `content_type`.
    pub(crate) fn response_meter(
        exchange: &OpenAiExchange,
        status: u16,
        content_type: Option<&str>,
    ) -> ResponseMeter {
        ResponseMeter::new(status, content_type, exchange.strip_usage_chunk)
    }

    /// Replace the exchange's reservation with what it used (see docs/config.md, "Settlement").
    pub(crate) fn settle(
        &self,
        exchange: &OpenAiExchange,
        meter: Option<&ResponseMeter>,
        now: Duration,
        store: &dyn SharedStore,
    ) -> Settled {
        let settled = charge(exchange, meter);
        let model = self.models.get(exchange.model_id);
        if let Some(budget) = model.openai.as_ref().and_then(|o| o.budget.as_ref()) {
            let used = i128::from(settled.input) + i128::from(settled.output);
            let delta = used - i128::from(exchange.reserved);
            let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
            if let Err(error) = budget.adjust(&exchange.key, delta, now, store) {
                log::warn!(
                    "token budget of model {} not settled ({delta} tokens): {error}",
                    model.name
                );
            }
        }
        settled
    }
}

/// What an exchange is charged (docs/config.md, "Settlement", "Aborted streams").
fn charge(exchange: &OpenAiExchange, meter: Option<&ResponseMeter>) -> Settled {
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

/// `maxTokens` and `maxN`.
fn check_limits(model: &Model, settings: &ModelOpenAi, parsed: &Parsed) -> Result<(), Reply> {
    let name = Arc::clone(&model.name);
    if let (Some(asked), Some(most)) = (parsed.max_tokens, settings.max_tokens)
        && asked > most
    {
        let message = format!("max_tokens: {asked} is more than model {name} allows ({most})");
        return Err(openai_reply(
            reply::invalid(&message, Some(name)),
            Some("max_tokens"),
        ));
    }
    if parsed.n > settings.max_n {
        let message = format!(
            "n: {} is more than model {name} allows ({})",
            parsed.n, settings.max_n
        );
        return Err(openai_reply(
            reply::invalid(&message, Some(name)),
            Some("n"),
        ));
    }
    Ok(())
}

/// The tokens a request may generate: its `max_tokens` (else the model's default) for each of
/// its `n` choices; embeddings and rerank generate none.
fn completion_bound(kind: Kind, parsed: &Parsed, settings: &ModelOpenAi) -> u64 {
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
fn estimate_prompt(kind: Kind, parsed: &Parsed, settings: &ModelOpenAi, body_len: usize) -> u64 {
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
fn with_usage_requested(body: &[u8]) -> Vec<u8> {
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
fn options_with_usage(body: &[u8]) -> String {
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
fn token_headers(standing: &Standing) -> Vec<(&'static str, String)> {
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
fn request_headers(standing: &QuotaStanding) -> Vec<(&'static str, String)> {
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

/// A header decision's reply in OpenAI's error shape.
fn to_openai(decision: HeadersDecision) -> HeadersDecision {
    match decision {
        HeadersDecision::Reply(reply) => HeadersDecision::Reply(openai_reply(reply, None)),
        other => other,
    }
}

/// A reply in OpenAI's error shape (KServe's `create_error_response` values), its status,
/// headers and verdict kept; a request quota's `RateLimit-*` headers gain OpenAI's
/// `x-ratelimit-*-requests` beside them. A reply that is not an error (the model listing) is
/// returned as it is.
pub(crate) fn openai_reply(mut reply: Reply, param: Option<&str>) -> Reply {
    if reply.status < 400 {
        return reply;
    }
    // Read back with the reader `request` uses: one instantiation of serde_json's parser.
    let message = serde_json::from_slice::<serde_json::Value>(reply.body.as_bytes())
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let kind = match reply.status {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        413 => "RequestTooLargeError",
        429 => "RateLimitError",
        _ => "InternalServerError",
    };
    reply.body = serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": reply.status.to_string(),
        }
    })
    .to_string();
    let mut extra = Vec::new();
    for (name, value) in &reply.headers {
        let openai = match *name {
            "ratelimit-limit" => "x-ratelimit-limit-requests",
            "ratelimit-remaining" => "x-ratelimit-remaining-requests",
            "ratelimit-reset" => "x-ratelimit-reset-requests",
            _ => continue,
        };
        let value = if openai.ends_with("reset-requests") {
            value
                .parse::<u64>()
                .map_or_else(|_| value.clone(), |s| reset_text(s * 1_000_000_000))
        } else {
            value.clone()
        };
        extra.push((openai, value));
    }
    reply.headers.extend(extra);
    reply
}

/// The reply when the body exceeds the limit, in OpenAI's shape on OpenAI paths.
pub(crate) fn payload_too_large(pending: &Pending) -> Reply {
    let reply = reply::payload_too_large(pending);
    if pending.is_openai() {
        openai_reply(reply, None)
    } else {
        reply
    }
}

#[cfg(test)]
mod tests;
