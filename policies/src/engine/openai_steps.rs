//! The `Engine`'s steps on KServe's OpenAI-compatible paths ([`crate::openai`] reads the paths,
//! bodies and `usage`): authenticate at header time; once the body names the model, authorize,
//! request quota, validate, reserve the token budget; settle it from the response. Denials use
//! OpenAI's error shape.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::decision::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, NeedBody, Outcome, Pending,
    PendingRequest, Reply, Stage, Verdict,
};
use crate::jwt::Identity;
use crate::models::{Model, ModelId, ModelOpenAi};
use crate::openai::request::{Kind, Parsed};
use crate::openai::response::ResponseMeter;
use crate::openai::{ANONYMOUS, AUTHENTICATED, OTHER, request};
use crate::openai::{
    Caller, OpenAiExchange, Route, Settled, charge, completion_bound, estimate_prompt,
    request_headers, reset_text, token_headers, with_usage_requested,
};
use crate::reply;
use crate::request::RequestView;
use crate::store::SharedStore;
use crate::token_budget::{Reserve, Standing, TokenBudget};

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
