//! Fixtures, invariants and oracles shared by the fuzz targets.
//!
//! Every target drives `modelgate-policies` through its public API, the way the filter does, and
//! checks more than "no panic": whatever the input, a reply is one of the statuses the policies
//! document with a JSON body, and nothing a client sent can put a line break or NUL into a header
//! the filter would set (header injection). Beyond those invariants each target compares the
//! decision with an oracle: a reference reading of the rule ([`reference`]) or the claims and
//! keys it generated itself (fuzz/README.md lists them).

pub mod reference;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use modelgate_policies::{
    BodyDecision, HeaderEdits, HeadersDecision, KnownClient, MemoryStore, Policies, Reply,
    RequestView,
};

/// The HS256 secret of [`JWT_CONFIG`]'s key, so the JWT target can sign arbitrary claims and reach
/// the claim checks behind the signature.
pub const HS256_SECRET: &[u8] = b"modelgate-fuzz-secret-0123456789abcdef";

/// A fixed instant: the policies take time as an argument, so fuzzing is deterministic.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Models with every validation option and body-model routing, no authentication: requests
/// reach routing, the body-model lookup and the body validators.
const OPEN_CONFIG: &str = r#"{
  "version": 1,
  "routing": {"bodyModel": {"field": "model", "paths": ["/openai/v1/chat/completions"]}},
  "models": {
    "sklearn-iris": {
      "aliases": ["iris"],
      "protocols": ["v1", "v2"],
      "validation": {"featureCount": 4, "maxInstances": 64}
    },
    "sklearn-wine": {
      "protocols": ["v1", "v2"],
      "rateLimit": {"requestsPerSecond": 1000, "burst": 1000},
      "validation": {"elementType": "any"}
    },
    "tensor-model": {"protocols": ["v2"]}
  }
}"#;

/// The names [`OPEN_CONFIG`] routes, with the canonical model each resolves to.
pub const OPEN_MODELS: [(&str, &str); 4] = [
    ("sklearn-iris", "sklearn-iris"),
    ("iris", "sklearn-iris"),
    ("sklearn-wine", "sklearn-wine"),
    ("tensor-model", "tensor-model"),
];

/// [`OPEN_CONFIG`]'s V1 rules for sklearn-iris and sklearn-wine, as the reference reads them.
pub const IRIS_V1: reference::V1Model = reference::V1Model {
    feature_count: Some(4),
    max_instances: Some(64),
    element: reference::Element::Number,
};
pub const WINE_V1: reference::V1Model = reference::V1Model {
    feature_count: None,
    max_instances: None,
    element: reference::Element::Any,
};

/// The default `validation.maxBodyBytes` (docs/config.md), which [`OPEN_CONFIG`] keeps.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The canonical model [`OPEN_CONFIG`] routes `name` to, if any.
pub fn open_model(name: &str) -> Option<&'static str> {
    OPEN_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, canonical)| *canonical)
}

/// Quotas keyed by a client header, with the key forwarded in a header of its own: client
/// header values reach the limiter and the header edits.
const KEYED_CONFIG: &str = r#"{
  "version": 1,
  "rateLimit": {"key": {"header": "x-api-key"}, "keyHeader": "x-ratelimit-key"},
  "models": {
    "sklearn-iris": {"aliases": ["iris"], "rateLimit": {"requestsPerMinute": 2, "burst": 2}},
    "tensor-model": {"protocols": ["v2"], "rateLimit": {"requestsPerSecond": 5}}
  }
}"#;

fn jwt_config() -> String {
    let k = URL_SAFE_NO_PAD.encode(HS256_SECRET);
    format!(
        r#"{{
  "version": 1,
  "jwt": {{
    "issuer": "https://issuer.fuzz",
    "audiences": ["modelgate"],
    "jwks": {{"keys": [{{"kty": "oct", "kid": "fuzz", "alg": "HS256", "k": "{k}"}}]}},
    "forwardClaims": {{"sub": "x-user-id"}}
  }},
  "models": {{
    "sklearn-iris": {{"requiredScopes": ["predict"]}}
  }}
}}"#
    )
}

/// Policies without authentication.
pub fn open_policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| compile(OPEN_CONFIG))
}

/// Policies with quotas keyed by a client header.
pub fn keyed_policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| compile(KEYED_CONFIG))
}

/// Policies with HS256 JWT authentication.
pub fn jwt_policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| compile(&jwt_config()))
}

fn compile(config: &str) -> Policies {
    match Policies::from_json(config.as_bytes()) {
        Ok(policies) => policies,
        Err(error) => panic!("fuzz fixture config is invalid: {error}"),
    }
}

/// Run one request's header phase.
pub fn headers(
    policies: &Policies,
    store: &MemoryStore,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HeadersDecision {
    let headers = headers.to_vec();
    let source = KnownClient {
        headers: &headers,
        address: Some("127.0.0.1:40000"),
    };
    let view = RequestView {
        method,
        path,
        headers: &source,
    };
    let decision = policies.on_request_headers(&view, now(), store);
    check_headers_decision(&decision);
    decision
}

/// What became of a request with a body.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyOutcome {
    /// Forwarded, for this model (the verdict's canonical name).
    Forwarded(Option<String>),
    /// Refused with this status.
    Refused(u16),
    /// Decided at the header phase (no body asked for).
    NoBodyPhase,
}

/// Run a request that needs its body through both phases, checking every decision.
pub fn with_body(policies: &Policies, method: &str, path: &str, body: &[u8]) -> BodyOutcome {
    let store = MemoryStore::new();
    let content_type = [("content-type", "application/json")];
    match headers(policies, &store, method, path, &content_type) {
        HeadersDecision::NeedBody(need) => {
            if body.len() > need.pending.max_body_bytes() {
                let reply = policies.reject_oversized_body(&need.pending);
                check_reply(&reply);
                return BodyOutcome::Refused(reply.status);
            }
            match policies.on_request_body(&need.pending, body, now(), &store) {
                BodyDecision::Continue(forward) => {
                    check_edits(&forward.headers);
                    BodyOutcome::Forwarded(forward.verdict.model.as_deref().map(str::to_owned))
                }
                BodyDecision::Reply(reply) => {
                    check_reply(&reply);
                    assert!(
                        matches!(reply.status, 400 | 404 | 413 | 429),
                        "unexpected status {} for a body",
                        reply.status
                    );
                    BodyOutcome::Refused(reply.status)
                }
            }
        }
        HeadersDecision::Continue(_) | HeadersDecision::Reply(_) => BodyOutcome::NoBodyPhase,
    }
}

/// The oracle of the V1 and V2 targets: the filter forwards a body for `model` exactly when
/// the reference accepts it (and it is within the size limit), and refuses it with 400 or 413
/// otherwise.
///
/// `None` from the reference: a body in an area of the rule being changed, not compared.
pub fn assert_body_verdict(
    outcome: &BodyOutcome,
    model: &str,
    reference_accepts: Option<bool>,
    body: &[u8],
) {
    let Some(reference_accepts) = reference_accepts else {
        return;
    };
    let expected = if body.len() > MAX_BODY_BYTES {
        BodyOutcome::Refused(413)
    } else if reference_accepts {
        BodyOutcome::Forwarded(Some(model.to_owned()))
    } else {
        BodyOutcome::Refused(400)
    };
    assert_eq!(
        outcome,
        &expected,
        "the filter and the reference disagree on a body for {model}: {:?}",
        String::from_utf8_lossy(body)
    );
}

/// The invariants of a header-phase decision.
pub fn check_headers_decision(decision: &HeadersDecision) {
    match decision {
        HeadersDecision::Continue(forward) => check_edits(&forward.headers),
        HeadersDecision::Reply(reply) => check_reply(reply),
        HeadersDecision::NeedBody(_) => {}
    }
}

/// A local reply: a client or policy status (or 503 for a fault), a JSON body, and header values
/// a proxy can send.
pub fn check_reply(reply: &Reply) {
    assert!(
        (200..600).contains(&reply.status),
        "status {} is not an HTTP status",
        reply.status
    );
    if let Err(error) = serde_json::from_str::<serde_json::Value>(&reply.body) {
        panic!("reply body is not JSON ({error}): {:?}", reply.body);
    }
    for (name, value) in &reply.headers {
        check_header(name, value);
    }
}

/// Header edits: names are lower-case tokens and values hold no line break or NUL.
pub fn check_edits(edits: &HeaderEdits) {
    for name in &edits.remove {
        check_header(name, "");
    }
    for (name, value) in &edits.set {
        check_header(name, value);
    }
}

fn check_header(name: &str, value: &str) {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
        "header name {name:?} is not a lower-case token"
    );
    assert!(
        !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
        "header {name} has a line break or NUL: {value:?}"
    );
}

/// The issuer, audience and leeway of the JWT fixture (leeway: the default 60 s).
pub const JWT_ISSUER: &str = "https://issuer.fuzz";
pub const JWT_AUDIENCE: &str = "modelgate";
pub const JWT_LEEWAY_SECS: u64 = 60;

/// A JWT with these raw header and claims bytes, signed with [`HS256_SECRET`].
pub fn signed_token(header: &[u8], claims: &[u8]) -> String {
    sign(header, claims, HS256_SECRET, jsonwebtoken::Algorithm::HS256)
}

/// A JWT with these raw header and claims bytes, signed with `secret` under `alg` (an HMAC).
pub fn sign(header: &[u8], claims: &[u8], secret: &[u8], alg: jsonwebtoken::Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    match jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg) {
        Ok(signature) => format!("{message}.{signature}"),
        Err(error) => panic!("{alg:?} signing failed: {error}"),
    }
}
