//! Pure policy decisions for modelgate: model routing, JWT authentication and per-model
//! authorization, rate limiting, and KServe V1/V2 request validation.
//!
//! This crate does no I/O and reads no clock: the Proxy-Wasm adapter (`filter/`) passes the
//! request, the current time and the host's shared data in, and turns the returned
//! [`HeadersDecision`]/[`BodyDecision`] back into host calls.
//!
//! ```text
//! Policies::from_json_with_env(config, env)       once, in on_configure (all compiling here)
//! policies.on_request_headers(&view, now, store)   -> Continue | NeedBody | Reply
//! policies.on_request_body(&pending, body, now, store) -> Continue | Reply
//! ```
//!
//! Modules, in request order: `config` (the document as written) and `compile` (into the
//! engine, errors with field paths); `engine` (the pipeline); `routing` (path -> model and
//! endpoint) and `models` (names, aliases); `jwt`, `jwks`, `remote_jwks` and `token_cache`
//! (authentication);
//! `authz` (scopes and claims); `ratelimit` over `store` (GCRA in shared data);
//! `kserve_headers` (the headers that decide how KServe reads a body), `kserve_v1`, `kserve_v2`
//! and `body_model` (bodies), `grpc` (KServe's gRPC inference service: methods, and the model a
//! message names), `strict_json` (every string decoded, as KServe's parsers do); `reply` and `decision` (what comes out).
//! The configuration reference is `docs/config.md`.

// The policy runs inside the filter's VM, where a panic is a trap and, under Envoy's default
// failure policy, an outage (docs/failure-policy.md): the panic family is denied as in the filter.
// Unit tests may unwrap: a failing test should stop loudly.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod authz;
mod body_model;
mod compile;
mod config;
mod decision;
mod engine;
mod error;
mod grpc;
mod jwks;
mod jwt;
mod kserve_art;
mod kserve_headers;
mod kserve_v1;
mod kserve_v2;
mod models;
mod openai;
mod ratelimit;
mod remote_jwks;
mod reply;
mod request;
mod routing;
mod store;
mod strict_json;
mod token_budget;
mod token_cache;

use std::sync::Arc;
use std::time::SystemTime;

pub use config::{CloudEvents, ElementType, FailureMode, LogLevel};
pub use decision::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, NeedBody, Outcome, PendingRequest, Reply,
    Verdict,
};
pub use error::ConfigError;
pub use openai::response::{ResponseMeter, Usage};
pub use openai::{ANONYMOUS, AUTHENTICATED, OTHER, OpenAiExchange, Settled};
pub use remote_jwks::{JwksFetchError, JwksUpdate};
pub use request::{HeaderSource, KnownClient, RequestView};
pub use store::{MemoryStore, SharedStore, StoreError};

/// The request that fetches a remote JWKS: a GET to a named cluster of the proxy.
#[derive(Debug, Clone, Copy)]
pub struct JwksFetch<'a> {
    /// The proxy's cluster.
    pub cluster: &'a str,
    /// `:method`, `:path`, `:authority` (what `http_call` requires) and `accept`.
    pub headers: [(&'static str, &'a str); 4],
    /// How long to wait for the answer.
    pub timeout: std::time::Duration,
}

/// The compiled policy set: built once from the configuration, then consulted per request.
///
/// Per-request methods take `&self`; the only interior state is the bounded cache of
/// verified tokens.
#[derive(Debug)]
pub struct Policies {
    inner: engine::Engine,
}

impl Policies {
    /// Parse and compile the configuration document with no environment: a key with
    /// `kFromEnv` is an error. Errors name the field path.
    pub fn from_json(config: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_env(config, &|_| None)
    }

    /// Parse and compile the configuration document, looking up the variables that `kFromEnv`
    /// names with `env` (the adapter passes the VM's environment; this crate reads none).
    /// Errors name the field path and never carry a variable's value.
    pub fn from_json_with_env(
        config: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw = config::parse(config)?;
        Ok(Self {
            inner: compile::compile(raw, env)?,
        })
    }

    /// The configured log level.
    pub fn log_level(&self) -> LogLevel {
        self.inner.log_level
    }

    /// The configured failure mode for internal faults.
    pub fn failure_mode(&self) -> FailureMode {
        self.inner.failure_mode
    }

    /// The routing header the policy sets (lower-case).
    pub fn routing_header(&self) -> &str {
        &self.inner.routing_header
    }

    /// The canonical names of every configured model, sorted.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.inner.models.names()
    }

    /// The request that fetches the remote JWKS (`jwt.remoteJwks`), if the keys come from one.
    pub fn jwks_fetch(&self) -> Option<JwksFetch<'_>> {
        let settings = &self.inner.jwt.as_ref()?.remote()?.settings;
        Some(JwksFetch {
            cluster: &settings.cluster,
            headers: [
                (":method", "GET"),
                (":path", &settings.path),
                (":authority", &settings.authority),
                ("accept", "application/jwk-set+json, application/json"),
            ],
            timeout: settings.timeout,
        })
    }

    /// Whether a fetch of the remote JWKS should start at `now` (never without one). `true`
    /// marks it started: the adapter then makes the call and reports back with
    /// [`Policies::jwks_fetched`] or [`Policies::jwks_fetch_failed`].
    pub fn jwks_fetch_due(&self, now: SystemTime) -> bool {
        self.remote_keys()
            .is_some_and(|remote| remote.start_fetch_if_due(engine::since_epoch(now)))
    }

    /// The JWKS fetch answered `status` with `body`. Good keys replace those in force; on any
    /// error the last good keys stay (and are retried after `minRefreshIntervalSeconds`).
    pub fn jwks_fetched(&self, status: u16, body: &[u8]) -> Result<JwksUpdate, JwksFetchError> {
        let Some(jwt) = &self.inner.jwt else {
            return Err(JwksFetchError::NotJwks {
                reason: "no remote JWKS is configured".to_owned(),
            });
        };
        let Some(remote) = jwt.remote() else {
            return Err(JwksFetchError::NotJwks {
                reason: "no remote JWKS is configured".to_owned(),
            });
        };
        jwt.jwks_fetched(remote, status, body)
    }

    /// The JWKS fetch failed without a response (the call could not start, the connection
    /// failed, the timeout passed); the last good keys stay.
    pub fn jwks_fetch_failed(&self) {
        if let Some(remote) = self.remote_keys() {
            remote.fetch_failed();
        }
    }

    fn remote_keys(&self) -> Option<&remote_jwks::RemoteKeys> {
        self.inner.jwt.as_ref()?.remote()
    }

    /// Decide on a request from its headers.
    ///
    /// `now` is the host's current time; `store` is the host's shared data.
    pub fn on_request_headers(
        &self,
        request: &RequestView<'_>,
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> HeadersDecision {
        self.inner.on_request_headers(request, now, store)
    }

    /// Decide on a request whose headers returned [`HeadersDecision::NeedBody`], once the
    /// complete body is buffered.
    pub fn on_request_body(
        &self,
        pending: &PendingRequest,
        body: &[u8],
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> BodyDecision {
        self.inner.on_request_body(&pending.0, body, now, store)
    }

    /// The meter that follows the response of an admitted OpenAI request (its status and
    /// `content-type`), to find its usage and, when the gateway asked for usage the client did
    /// not, to remove the usage-only chunk.
    pub fn response_meter(
        &self,
        exchange: &OpenAiExchange,
        status: u16,
        content_type: Option<&str>,
    ) -> ResponseMeter {
        engine::Engine::response_meter(exchange, status, content_type)
    }

    /// Settle an OpenAI request's token reservation with what it used: the meter's usage,
    /// or (`meter` absent: no response came; or no usage seen) the charge docs/config.md
    /// gives. Returns the tokens charged, for metrics. Call it once, when the stream ends.
    pub fn settle(
        &self,
        exchange: &OpenAiExchange,
        meter: Option<&ResponseMeter>,
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> Settled {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.inner.settle(exchange, meter, now, store)
    }

    /// The `caller_class` label values the metrics need up front: the configured ones, then
    /// `other`, `authenticated` and `anonymous`.
    pub fn caller_classes(&self) -> Vec<Arc<str>> {
        self.inner.caller_classes()
    }

    /// The canonical names of the models that serve OpenAI, sorted.
    pub fn openai_model_names(&self) -> impl Iterator<Item = &str> {
        self.inner
            .models
            .iter()
            .filter(|m| m.openai.is_some())
            .map(|m| &*m.name)
    }

    /// The 413 reply for a body larger than [`PendingRequest::max_body_bytes`]: the adapter
    /// sends it as soon as the buffered size passes the limit, without reading the body.
    pub fn reject_oversized_body(&self, pending: &PendingRequest) -> Reply {
        let mut reply = engine::openai_steps::payload_too_large(&pending.0);
        reply.verdict.subject.clone_from(&pending.0.subject);
        reply
    }

    /// The reply for an internal fault (a host call that failed, a trap caught in the adapter):
    /// `Some(503)` under `failureMode: deny`, `None` (forward the request) under `allow`.
    pub fn internal_fault_reply(&self, model: Option<&str>) -> Option<Reply> {
        match self.inner.failure_mode {
            FailureMode::Deny => Some(reply::internal_fault(self.inner.models.canonical(model))),
            FailureMode::Allow => None,
        }
    }
}
