//! What a policy check decides: values the Proxy-Wasm adapter turns into host calls.
//!
//! A deny is a value ([`Reply`]), never an error: the adapter sends it as a local response.
//! Every decision carries a [`Verdict`] (model and [`Outcome`]) so the adapter can count
//! requests by model and outcome without knowing why.

use std::sync::Arc;

use crate::config::Protocol;
use crate::jwt::Identity;
use crate::models::ModelId;
use crate::openai::request::Kind;
use crate::openai::{Caller, OpenAiExchange};
use crate::routing::Endpoint;

/// The outcome of one request, as counted in metrics (`as_str` is the label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded upstream (or answered at the edge, as the model listing is).
    Allowed,
    /// Missing or invalid token: 401.
    Unauthenticated,
    /// Valid token without the scope or claim the model requires: 403.
    Forbidden,
    /// Over the model's quota: 429.
    RateLimited,
    /// Malformed or oversized body, a content type the model server would misread, or a path
    /// that cannot name a model: 400, 413 or 415.
    Invalid,
    /// The path or body names a model the configuration does not know: 404.
    UnknownModel,
    /// An internal fault (such as shared data that cannot be updated) under `failureMode`.
    InternalError,
}

impl Outcome {
    /// Every outcome, for adapters that define one metric per outcome up front.
    pub const ALL: [Outcome; 7] = [
        Outcome::Allowed,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::RateLimited,
        Outcome::Invalid,
        Outcome::UnknownModel,
        Outcome::InternalError,
    ];

    /// The metric label value, in snake case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::RateLimited => "rate_limited",
            Outcome::Invalid => "invalid",
            Outcome::UnknownModel => "unknown_model",
            Outcome::InternalError => "internal_error",
        }
    }
}

/// Which model a request was for (when known) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    /// The canonical model name (aliases resolved); `None` when no model was named or it is unknown.
    pub model: Option<Arc<str>>,
    /// The outcome to count.
    pub outcome: Outcome,
    /// True when the request was over its quota but shadow mode let it through.
    pub shadow_rate_limited: bool,
    /// The verified token's `sub` claim, when the request carried one: the adapter publishes
    /// it as filter state so that traces and access logs can name the caller, denials
    /// included (a header would hold whatever the client sent on a request that is refused).
    pub subject: Option<Arc<str>>,
}

impl Verdict {
    pub(crate) fn new(model: Option<Arc<str>>, outcome: Outcome) -> Self {
        Self {
            model,
            outcome,
            shadow_rate_limited: false,
            subject: None,
        }
    }
}

/// Request header changes to apply before forwarding: first every `remove`, then every `set`
/// (a set replaces all existing values of that header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderEdits {
    /// Headers to remove (lower-case names).
    pub remove: Vec<Arc<str>>,
    /// Headers to set, replacing any existing value (lower-case names).
    pub set: Vec<(Arc<str>, String)>,
}

impl HeaderEdits {
    /// True when there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// Drop removals of headers that are also set: a set replaces every value already, so the
    /// removal would only cost the adapter one more host call.
    pub(crate) fn without_redundant_removals(mut self) -> Self {
        let set = &self.set;
        self.remove
            .retain(|name| !set.iter().any(|(s, _)| s == name));
        self
    }
}

/// Forward the request upstream after applying `headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Continue {
    /// Request header changes.
    pub headers: HeaderEdits,
    /// True when the routing header changed, so the adapter should ask the host to
    /// recompute the route (foreign function `clear_route_cache`, tolerated when absent).
    pub route_changed: bool,
    /// Model and outcome, for metrics.
    pub verdict: Verdict,
    /// An admitted OpenAI request: the body to send instead, response headers to add, and
    /// what its settlement needs ([`crate::Policies::settle`]).
    pub openai: Option<Box<OpenAiExchange>>,
}

/// Answer the request at the edge with this local response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names), `content-type` included.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
    /// Model and outcome, for metrics.
    pub verdict: Verdict,
}

/// The body is needed before deciding: buffer it (at most `max_bytes`, else 413 through
/// [`crate::Policies::reject_oversized_body`]) and call [`crate::Policies::on_request_body`]
/// with `pending` once it is complete.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NeedBody {
    /// The largest body the policy accepts.
    pub max_bytes: usize,
    /// Request header changes to apply now, before the body is buffered: Envoy sends the
    /// request headers on (and picks the route) when the header phase continues, so edits
    /// made once the body is in would reach neither the router nor the upstream.
    pub headers: HeaderEdits,
    /// True when `headers` changed the routing header: recompute the route now.
    pub route_changed: bool,
    /// Hold the request headers until the body is decided (Envoy's
    /// `allow_on_headers_stop_iteration`, `openai.holdHeadersForBody`): the body decision's
    /// header edits and body then still apply.
    pub hold_headers: bool,
    /// What the header phase found; hand it back with the body.
    pub pending: PendingRequest,
}

/// The state carried from the header phase to the body phase of one request.
///
/// Opaque: the adapter stores it in its stream context and hands it back.
#[derive(Debug, Clone)]
pub struct PendingRequest(pub(crate) Pending);

impl PendingRequest {
    /// The largest body the policy accepts for this request.
    pub fn max_body_bytes(&self) -> usize {
        self.0.max_bytes
    }

    /// The model, when the header phase already knew it (body-model routing does not).
    pub fn model(&self) -> Option<&Arc<str>> {
        self.0.model_name()
    }

    /// True when deciding on the body reads the time it is given (authorization and quotas
    /// decided on the body's model, token budgets); false when the body is only validated,
    /// so an adapter may skip reading the host's clock for it.
    pub fn reads_clock(&self) -> bool {
        self.0.reads_clock()
    }
}

/// The decision after the request headers.
#[derive(Debug, Clone)]
pub enum HeadersDecision {
    /// Forward the request (do not buffer the body).
    Continue(Continue),
    /// Buffer the body, then call `on_request_body`.
    NeedBody(NeedBody),
    /// Send this local response.
    Reply(Reply),
}

/// The decision after the complete request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecision {
    /// Forward the request after applying the header edits.
    Continue(Continue),
    /// Send this local response.
    Reply(Reply),
}

impl HeadersDecision {
    /// Stamp the authenticated subject on the verdict (or, for `NeedBody`, on what the body
    /// decision will carry).
    pub(crate) fn with_subject(mut self, subject: Option<Arc<str>>) -> Self {
        match &mut self {
            HeadersDecision::Continue(c) => c.verdict.subject = subject,
            HeadersDecision::Reply(r) => r.verdict.subject = subject,
            HeadersDecision::NeedBody(n) => n.pending.0.subject = subject,
        }
        self
    }
}

impl BodyDecision {
    pub(crate) fn with_subject(mut self, subject: Option<Arc<str>>) -> Self {
        match &mut self {
            BodyDecision::Continue(c) => c.verdict.subject = subject,
            BodyDecision::Reply(r) => r.verdict.subject = subject,
        }
        self
    }
}

/// State carried from the header phase to the body phase.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) max_bytes: usize,
    /// The authenticated subject, stamped on the body decision's verdict.
    pub(crate) subject: Option<Arc<str>>,
    pub(crate) stage: Stage,
}

#[derive(Debug, Clone)]
pub(crate) enum Stage {
    /// The model is known and every header-time check passed: validate, then forward.
    Validate {
        model: ModelId,
        name: Arc<str>,
        protocol: Protocol,
        /// A V1 `:explain` (checked by the model's explain format).
        explain: bool,
        binary_header: Option<String>,
        forward: Continue,
    },
    /// The model comes from the body: authorize and rate limit once it is known.
    BodyModel {
        identity: Option<Arc<Identity>>,
        limit_key: String,
    },
    /// An OpenAI request (`openai`): its body names the model.
    OpenAi { kind: Kind, caller: Caller },
    /// A gRPC call whose message names the model, for the REST `endpoint` it stands for.
    Grpc {
        endpoint: Endpoint,
        identity: Option<Arc<Identity>>,
        limit_key: String,
    },
}

impl Pending {
    pub(crate) fn model_name(&self) -> Option<&Arc<str>> {
        match &self.stage {
            Stage::Validate { name, .. } => Some(name),
            Stage::BodyModel { .. } | Stage::OpenAi { .. } | Stage::Grpc { .. } => None,
        }
    }

    /// True unless the body is only validated: the other stages rate limit or budget tokens
    /// at the time they are given.
    pub(crate) fn reads_clock(&self) -> bool {
        !matches!(self.stage, Stage::Validate { .. })
    }

    /// True for a request on an OpenAI path (its replies use OpenAI's error shape).
    pub(crate) fn is_openai(&self) -> bool {
        matches!(self.stage, Stage::OpenAi { .. })
    }
}
