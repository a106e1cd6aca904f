//! The request pipeline: route -> authenticate -> authorize -> rate limit -> (body) validate.
//!
//! Authentication runs at header time for every request, so an unauthenticated body is never
//! buffered. When the model is only known from the body (`routing.bodyModel`), authorization
//! and rate limiting run in the body phase, once the model is known; so do they for gRPC
//! calls to KServe's inference service, whose message names the model (`grpc_model`).

mod grpc_model;
pub(crate) mod openai_steps;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authz::Requirements;
use crate::config::{
    ExplainFormat, FailureMode, LogLevel, LookalikeHeaders, Protocol, UnknownModel,
};
use crate::decision::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, NeedBody, Outcome, Pending,
    PendingRequest, Reply, Stage, Verdict,
};
use crate::jwt::{AuthError, Identity, Verifier};
use crate::models::{Model, ModelId, Models};
use crate::openai::OpenAiRoutes;
use crate::ratelimit::{Check, QuotaStanding};
use crate::request::RequestView;
use crate::routing::{self, Endpoint, Target};
use crate::store::SharedStore;
use crate::{body_model, grpc, kserve_art, kserve_headers, kserve_v1, kserve_v2, reply};

/// The compiled policy set.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) log_level: LogLevel,
    pub(crate) failure_mode: FailureMode,
    pub(crate) routing_header: Arc<str>,
    /// The headers this policy sets, for finding client-sent look-alikes of them.
    pub(crate) protected_headers: Vec<ProtectedHeader>,
    pub(crate) lookalike_headers: LookalikeHeaders,
    pub(crate) unknown_model: UnknownModel,
    pub(crate) list_models: bool,
    pub(crate) body_model: Option<BodyModel>,
    pub(crate) models: Models,
    pub(crate) jwt: Option<Verifier>,
    pub(crate) limit_key: LimitKey,
    pub(crate) shadow: bool,
    pub(crate) key_header: Option<Arc<str>>,
    pub(crate) max_body_bytes: usize,
    /// KServe's OpenAI endpoints, when configured.
    pub(crate) openai: Option<OpenAiRoutes>,
}

/// A header the policy sets (or removes) on every forwarded request.
#[derive(Debug)]
pub(crate) struct ProtectedHeader {
    /// As configured (lower-case).
    pub(crate) name: Arc<str>,
    /// [`fold`]ed: what a look-alike reads as.
    pub(crate) folded: Box<str>,
}

impl ProtectedHeader {
    pub(crate) fn new(name: Arc<str>) -> Self {
        let folded = name.bytes().map(|b| char::from(fold(b))).collect();
        Self { name, folded }
    }

    /// True for a different spelling of this header that a backend may read as it.
    fn imitated_by(&self, other: &str) -> bool {
        other.len() == self.folded.len()
            && *other != *self.name
            && other
                .bytes()
                .zip(self.folded.bytes())
                .all(|(a, b)| fold(a) == b)
    }
}

/// ASCII case folded and `_` read as `-`, as CGI-style backends (WSGI, PHP, nginx's
/// `underscores_in_headers`) map header names onto one another.
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Routing by a field of a JSON body, on these exact paths.
#[derive(Debug)]
pub(crate) struct BodyModel {
    pub(crate) field: String,
    pub(crate) paths: Vec<String>,
}

/// What identifies a caller for rate limiting.
#[derive(Debug, Clone)]
pub(crate) enum LimitKey {
    Claim(String),
    Header(String),
    ClientAddress,
}

/// Seconds and the full duration since the Unix epoch (0 for times before it).
pub(crate) fn since_epoch(now: SystemTime) -> Duration {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

impl Engine {
    pub(crate) fn on_request_headers(
        &self,
        request: &RequestView<'_>,
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> HeadersDecision {
        let now = since_epoch(now);
        let target = routing::classify(request.path);
        let lookalikes = match self.lookalikes(request) {
            Ok(lookalikes) => lookalikes,
            Err(reply) => return HeadersDecision::Reply(self.shaped_for(request.path, reply)),
        };
        let identity = match self.authenticate(request, now.as_secs()) {
            Ok(identity) => identity,
            Err(reply) => return HeadersDecision::Reply(self.shaped_for(request.path, reply)),
        };
        let subject = identity
            .as_deref()
            .and_then(|i| i.claim_text("sub"))
            .map(Arc::from);
        self.decide_headers(request, target, identity, lookalikes, now, store)
            .with_subject(subject)
    }

    /// The header decision for an authenticated (or anonymous) request; `lookalikes` are the
    /// client's look-alikes of the policy's headers, removed from whatever is forwarded.
    fn decide_headers(
        &self,
        request: &RequestView<'_>,
        target: Target<'_>,
        identity: Option<Arc<Identity>>,
        lookalikes: Vec<Arc<str>>,
        now: Duration,
        store: &dyn SharedStore,
    ) -> HeadersDecision {
        let mut edits = self.base_edits(identity.as_deref());
        // A look-alike never equals a header the edits set, so removing it is never redundant.
        edits.remove.extend(lookalikes);

        match target {
            Target::Invalid(reason) => {
                log::debug!("invalid path {:?}: {reason}", request.path);
                HeadersDecision::Reply(reply::invalid(
                    &format!("invalid request path: {reason}"),
                    None,
                ))
            }
            Target::List(protocol) if self.list_models && request.method == "GET" => {
                let names = self
                    .models
                    .iter()
                    .filter(|m| self.lists(m, protocol, identity.as_deref()))
                    .map(|m| &*m.name);
                HeadersDecision::Reply(reply::model_list(names))
            }
            Target::Model {
                name,
                protocol,
                endpoint,
            } => {
                let id = match self.models.lookup(name) {
                    // A repository action loads or unloads the model whatever it serves.
                    Some(id)
                        if endpoint == Endpoint::Repository
                            || self.models.get(id).speaks(protocol) =>
                    {
                        id
                    }
                    _ => return self.unknown(name, self.drop_client_route(request, edits)),
                };
                let requirements = match self.requirements(id, endpoint) {
                    Ok(requirements) => requirements,
                    Err(reply) => return HeadersDecision::Reply(reply),
                };
                let key = self.limit_key(request, identity.as_deref());
                let admitted = self.admit(id, requirements, identity.as_deref(), &key, now, store);
                let shadow_limited = match admitted {
                    Ok(shadow_limited) => shadow_limited,
                    Err(reply) => return HeadersDecision::Reply(reply),
                };
                self.set_key_header(&mut edits, key);
                let forward = self.forward(id, edits, shadow_limited);
                let needs_body = request.method == "POST"
                    && matches!(
                        (protocol, endpoint),
                        (Protocol::V1, Endpoint::Predict | Endpoint::Explain)
                            | (Protocol::V2, Endpoint::Infer)
                    );
                if !needs_body {
                    return HeadersDecision::Continue(forward);
                }
                let explain = endpoint == Endpoint::Explain;
                self.validate_body_first(id, protocol, explain, request, forward)
            }
            Target::Other | Target::List(_) => {
                if let Some(decision) =
                    self.openai_headers(request, identity.as_ref(), &edits, now, store)
                {
                    return decision;
                }
                let mut edits = self.drop_client_route(request, edits);
                if let Some(grpc::Method::Model(endpoint)) = grpc::method(request.path) {
                    return self.grpc_needs_body(request, endpoint, identity, edits);
                }
                let path = routing::strip_query(request.path);
                let by_body = self
                    .body_model
                    .as_ref()
                    .is_some_and(|b| request.method == "POST" && b.paths.iter().any(|p| p == path));
                if by_body {
                    // Every edit that does not depend on the model applies now; the route was
                    // chosen by path (Envoy fixes it when the header phase continues), and the
                    // body's model decides authorization and quota.
                    let limit_key = self.limit_key(request, identity.as_deref());
                    self.set_key_header(&mut edits, limit_key.clone());
                    return HeadersDecision::NeedBody(NeedBody {
                        max_bytes: self.max_body_bytes,
                        route_changed: edits.remove.contains(&self.routing_header),
                        headers: edits.without_redundant_removals(),
                        hold_headers: false,
                        pending: PendingRequest(Pending {
                            max_bytes: self.max_body_bytes,
                            subject: None,
                            stage: Stage::BodyModel {
                                identity,
                                limit_key,
                            },
                        }),
                    });
                }
                HeadersDecision::Continue(Continue {
                    route_changed: edits.remove.contains(&self.routing_header),
                    headers: edits.without_redundant_removals(),
                    verdict: Verdict::new(None, Outcome::Allowed),
                    openai: None,
                })
            }
        }
    }

    pub(crate) fn on_request_body(
        &self,
        pending: &Pending,
        body: &[u8],
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> BodyDecision {
        self.decide_body(pending, body, now, store)
            .with_subject(pending.subject.clone())
    }

    fn decide_body(
        &self,
        pending: &Pending,
        body: &[u8],
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> BodyDecision {
        if body.len() > pending.max_bytes {
            return BodyDecision::Reply(openai_steps::payload_too_large(pending));
        }
        match &pending.stage {
            Stage::Validate {
                model,
                name,
                protocol,
                explain,
                binary_header,
                forward,
            } => {
                let model = self.models.get(*model);
                let result = match protocol {
                    Protocol::V1 if *explain && model.explain == ExplainFormat::Art => {
                        kserve_art::validate(body, &model.v1_rules)
                    }
                    Protocol::V1 => kserve_v1::validate(body, &model.v1_rules),
                    Protocol::V2 => {
                        kserve_v2::validate(body, binary_header.as_deref(), &model.v2_rules)
                    }
                };
                match result {
                    Ok(()) => BodyDecision::Continue(forward.clone()),
                    Err(message) => {
                        log::debug!("invalid body for model {name}: {message}");
                        BodyDecision::Reply(reply::invalid(&message, Some(Arc::clone(name))))
                    }
                }
            }
            Stage::Grpc {
                endpoint,
                identity,
                limit_key,
            } => self.grpc_body(*endpoint, identity.as_deref(), limit_key, body, now, store),
            Stage::BodyModel {
                identity,
                limit_key,
            } => {
                let Some(field) = self.body_model.as_ref().map(|b| b.field.as_str()) else {
                    return BodyDecision::Reply(reply::internal_fault(None));
                };
                let name = match body_model::find(body, field) {
                    Ok(name) => name,
                    Err(message) => return BodyDecision::Reply(reply::invalid(&message, None)),
                };
                let Some(id) = self.models.lookup(&name) else {
                    return match self.unknown(&name, HeaderEdits::default()) {
                        HeadersDecision::Continue(c) => BodyDecision::Continue(c),
                        HeadersDecision::Reply(r) => BodyDecision::Reply(r),
                        HeadersDecision::NeedBody(_) => {
                            BodyDecision::Reply(reply::internal_fault(None))
                        }
                    };
                };
                let now = since_epoch(now);
                let requirements = &self.models.get(id).requirements;
                match self.admit(id, requirements, identity.as_deref(), limit_key, now, store) {
                    Ok(shadow_limited) => {
                        let name = Arc::clone(&self.models.get(id).name);
                        let mut verdict = Verdict::new(Some(name), Outcome::Allowed);
                        verdict.shadow_rate_limited = shadow_limited;
                        BodyDecision::Continue(Continue {
                            headers: HeaderEdits::default(),
                            route_changed: false,
                            verdict,
                            openai: None,
                        })
                    }
                    Err(reply) => BodyDecision::Reply(reply),
                }
            }
            Stage::OpenAi { kind, caller } => {
                self.openai_body(*kind, caller, body, since_epoch(now), store)
            }
        }
    }

    /// A refusal made before the path is looked at, in OpenAI's error shape on OpenAI paths.
    fn shaped_for(&self, path: &str, reply: Reply) -> Reply {
        match &self.openai {
            Some(openai) if openai.classify(path).is_some() => {
                openai_steps::openai_reply(reply, None)
            }
            _ => reply,
        }
    }

    /// True when the `protocol` listing shows `model` to this caller. With an empty OpenAI
    /// prefix, `GET /v1/models` is KServe's V1 listing, which lists every model of the server,
    /// the OpenAI ones included.
    fn lists(&self, model: &Model, protocol: Protocol, identity: Option<&Identity>) -> bool {
        let openai_as_v1 = protocol == Protocol::V1
            && model.openai.is_some()
            && self.openai.as_ref().is_some_and(|o| o.prefix.is_empty());
        (model.speaks(protocol) || openai_as_v1) && model.requirements.check(identity).is_ok()
    }

    /// Ask for the body of a request whose model is known from its path, once its headers say
    /// the model server will read that body as the JSON the validators check
    /// ([`kserve_headers`]); otherwise refuse it before buffering anything.
    ///
    /// The header edits apply now, and the body decision only carries the verdict (see
    /// `NeedBody::headers`: edits made once the body is in would reach no one).
    fn validate_body_first(
        &self,
        id: ModelId,
        protocol: Protocol,
        explain: bool,
        request: &RequestView<'_>,
        forward: Continue,
    ) -> HeadersDecision {
        let name = &self.models.get(id).name;
        let framing = match protocol {
            Protocol::V1 => kserve_headers::v1(request.headers),
            Protocol::V2 => kserve_headers::v2(request.headers),
        };
        let framing = match framing {
            Ok(framing) => framing,
            Err(refusal) => {
                log::debug!("refused headers for model {name}: {}", refusal.message);
                return HeadersDecision::Reply(reply::refused_framing(
                    refusal.status,
                    &refusal.message,
                    Arc::clone(name),
                ));
            }
        };
        let Continue {
            mut headers,
            route_changed,
            verdict,
            openai: _,
        } = forward;
        if let Some((header, value)) = framing.set {
            headers.set.push((Arc::from(header), value));
        }
        HeadersDecision::NeedBody(NeedBody {
            max_bytes: self.max_body_bytes,
            headers,
            route_changed,
            hold_headers: false,
            pending: PendingRequest(Pending {
                max_bytes: self.max_body_bytes,
                subject: None,
                stage: Stage::Validate {
                    model: id,
                    name: Arc::clone(name),
                    protocol,
                    explain,
                    binary_header: framing.binary_header,
                    forward: Continue {
                        headers: HeaderEdits::default(),
                        route_changed: false,
                        verdict,
                        openai: None,
                    },
                },
            }),
        })
    }

    /// Authenticate when JWT is configured; `Ok(None)` when it is not.
    fn authenticate(
        &self,
        request: &RequestView<'_>,
        now_secs: u64,
    ) -> Result<Option<Arc<Identity>>, Reply> {
        let Some(jwt) = &self.jwt else {
            return Ok(None);
        };
        match jwt.authenticate(request, now_secs) {
            Ok(identity) => Ok(Some(identity)),
            Err(AuthError::Missing) => Err(reply::unauthenticated(&jwt.realm, None)),
            Err(AuthError::Invalid(why)) => {
                log::debug!("rejected token: {why}");
                Err(reply::unauthenticated(&jwt.realm, Some(why)))
            }
            Err(AuthError::KeysUnavailable) => {
                log::debug!("no signing keys yet: the remote JWKS has not been fetched");
                Err(reply::keys_unavailable())
            }
        }
    }

    /// Header edits every forwarded request gets: client-sent copies of the headers this
    /// policy owns are removed (a client must not pick its own claims or limit key), and the
    /// verified claims are forwarded. The routing header is left to the branches that do not
    /// set it themselves ([`Engine::drop_client_route`]).
    fn base_edits(&self, identity: Option<&Identity>) -> HeaderEdits {
        let mut edits = HeaderEdits::default();
        if let Some(jwt) = &self.jwt {
            edits
                .remove
                .extend(jwt.forward.iter().map(|(_, h)| Arc::clone(h)));
            if let Some(authorization) = &jwt.strip_authorization {
                edits.remove.push(Arc::clone(authorization));
            }
        }
        if let Some(h) = &self.key_header {
            edits.remove.push(Arc::clone(h));
        }
        if let Some(identity) = identity {
            edits.set.extend(identity.forwarded.iter().cloned());
        }
        edits
    }

    /// Client-sent headers that read as one this policy sets without being spelled the same
    /// (see [`LookalikeHeaders`]), lower-cased: to remove, or the 400 under `reject`.
    fn lookalikes(&self, request: &RequestView<'_>) -> Result<Vec<Arc<str>>, Reply> {
        let mut found: Vec<Arc<str>> = Vec::new();
        for name in request.headers.header_names() {
            let Some(imitated) = self.protected_headers.iter().find(|p| p.imitated_by(&name))
            else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            // An upper-case spelling of the header itself is that header, which the edits
            // already remove or replace; Envoy hands filters lower-case names anyway.
            if name == *imitated.name || found.iter().any(|n| **n == *name) {
                continue;
            }
            if self.lookalike_headers == LookalikeHeaders::Reject {
                log::debug!("request header {name} imitates {}", imitated.name);
                return Err(reply::lookalike_header(&name, &imitated.name));
            }
            found.push(Arc::from(name));
        }
        Ok(found)
    }

    /// What the caller must hold for `endpoint` of model `id`: loading or unloading needs the
    /// model's own permission (`adminScopes`), not the one to use it, since an unload takes
    /// the model off the server for everyone; without `adminScopes` it is refused.
    fn requirements(&self, id: ModelId, endpoint: Endpoint) -> Result<&Requirements, Reply> {
        let model = self.models.get(id);
        if endpoint != Endpoint::Repository {
            return Ok(&model.requirements);
        }
        model.admin.as_ref().ok_or_else(|| {
            log::debug!("repository action refused for model {}", model.name);
            reply::repository_refused(Arc::clone(&model.name))
        })
    }

    /// Remove a routing header the client sent, on the way to a forward that does not set it
    /// (a client must not pick its own route). A request for a known model skips this: its
    /// forward sets the header, which replaces any client value, so asking the host whether
    /// the client sent one would cost a header lookup on every request for nothing.
    pub(crate) fn drop_client_route(
        &self,
        request: &RequestView<'_>,
        mut edits: HeaderEdits,
    ) -> HeaderEdits {
        if request.headers.header(&self.routing_header).is_some() {
            // First, as before the other removals: the adapter applies them in order.
            edits.remove.insert(0, Arc::clone(&self.routing_header));
        }
        edits
    }

    pub(crate) fn unknown(&self, name: &str, edits: HeaderEdits) -> HeadersDecision {
        match self.unknown_model {
            UnknownModel::Reject => HeadersDecision::Reply(reply::unknown_model(name)),
            UnknownModel::PassThrough => HeadersDecision::Continue(Continue {
                route_changed: edits.remove.contains(&self.routing_header),
                headers: edits.without_redundant_removals(),
                verdict: Verdict::new(None, Outcome::UnknownModel),
                openai: None,
            }),
        }
    }

    /// Set the limit-key header (for Envoy Gateway's global rate limit) when configured.
    pub(crate) fn set_key_header(&self, edits: &mut HeaderEdits, key: String) {
        if let Some(h) = &self.key_header {
            edits.set.push((Arc::clone(h), key));
        }
    }

    /// Authorize a caller against `requirements` (the model's, or its repository permission)
    /// and rate limit it for the model.
    /// `Ok(true)` means over quota but let through by shadow mode.
    pub(crate) fn admit(
        &self,
        id: ModelId,
        requirements: &Requirements,
        identity: Option<&Identity>,
        key: &str,
        now: Duration,
        store: &dyn SharedStore,
    ) -> Result<bool, Reply> {
        self.admit_with_standing(id, requirements, identity, key, now, store)
            .map(|(shadow_limited, _)| shadow_limited)
    }

    /// [`Engine::admit`], with the request quota's standing after this request when it was
    /// within the quota (for OpenAI's `x-ratelimit-*-requests` on the response).
    pub(crate) fn admit_with_standing(
        &self,
        id: ModelId,
        requirements: &Requirements,
        identity: Option<&Identity>,
        key: &str,
        now: Duration,
        store: &dyn SharedStore,
    ) -> Result<(bool, Option<QuotaStanding>), Reply> {
        let model = self.models.get(id);
        if let Err(denied) = requirements.check(identity) {
            let realm = self.jwt.as_ref().map_or("modelgate", |j| j.realm.as_str());
            log::debug!("forbidden for model {}: {}", model.name, denied.0);
            return Err(reply::forbidden(
                realm,
                &denied.0,
                requirements.scopes(),
                Arc::clone(&model.name),
            ));
        }
        let Some(quota) = &model.quota else {
            return Ok((false, None));
        };
        match quota.check(key, now, store) {
            Check::Allowed {
                limit,
                remaining,
                reset_secs,
            } => Ok((
                false,
                Some(QuotaStanding {
                    limit,
                    remaining,
                    reset_secs,
                }),
            )),
            Check::Limited {
                limit,
                retry_after_secs,
                reset_secs,
            } => {
                if self.shadow {
                    log::warn!("shadow mode: model {} over quota for key {key}", model.name);
                    return Ok((true, None));
                }
                Err(reply::rate_limited(
                    Arc::clone(&model.name),
                    limit,
                    retry_after_secs,
                    reset_secs,
                ))
            }
            Check::Crowded {
                limit,
                retry_after_secs,
            } => {
                if self.shadow {
                    log::warn!(
                        "shadow mode: model {} has no room for key {key}",
                        model.name
                    );
                    return Ok((true, None));
                }
                log::debug!("no rate-limit slot for key {key} of model {}", model.name);
                Err(reply::rate_limit_crowded(
                    Arc::clone(&model.name),
                    limit,
                    retry_after_secs,
                ))
            }
            Check::StoreFailed(error) => {
                log::warn!(
                    "rate limit state for model {} not updated: {error}",
                    model.name
                );
                match self.failure_mode {
                    FailureMode::Deny => Err(reply::internal_fault(Some(Arc::clone(&model.name)))),
                    FailureMode::Allow => Ok((false, None)),
                }
            }
        }
    }

    pub(crate) fn forward(
        &self,
        id: ModelId,
        mut edits: HeaderEdits,
        shadow_limited: bool,
    ) -> Continue {
        let name = Arc::clone(&self.models.get(id).name);
        edits
            .set
            .push((Arc::clone(&self.routing_header), name.to_string()));
        let mut verdict = Verdict::new(Some(name), Outcome::Allowed);
        verdict.shadow_rate_limited = shadow_limited;
        Continue {
            headers: edits.without_redundant_removals(),
            route_changed: true,
            verdict,
            openai: None,
        }
    }

    /// The caller's rate-limit key: the configured claim or header, falling back to the
    /// client address (and to `unknown` when even that is missing).
    pub(crate) fn limit_key(
        &self,
        request: &RequestView<'_>,
        identity: Option<&Identity>,
    ) -> String {
        let found = match &self.limit_key {
            LimitKey::Claim(claim) => identity.and_then(|i| i.claim_text(claim)),
            LimitKey::Header(h) => request.headers.header(h).map(std::borrow::Cow::into_owned),
            LimitKey::ClientAddress => None,
        };
        found
            .or_else(|| {
                let addr = request.headers.client_address()?;
                Some(client_ip(&addr).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The address without its port: `1.2.3.4:5678` -> `1.2.3.4`, `[::1]:80` -> `::1`.
fn client_ip(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
    }
}
