//! JWT authentication: find the token, verify it against the JWKS (inline, or fetched through
//! `remote_jwks`), check its claims, and remember it until it expires.
//!
//! jsonwebtoken (pure-Rust backend) checks signatures only: the header is parsed here so the
//! key, not the token, decides the algorithm, and the time claims are checked here against
//! the injected time (jsonwebtoken's own `exp` check would read the wall clock).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwks::{Key, parse_algorithm};
use crate::remote_jwks::{JwksFetchError, JwksUpdate, RemoteKeys};
use crate::request::RequestView;
use crate::routing;
use crate::token_cache::TokenCache;

/// Where a token is read from.
#[derive(Debug, Clone)]
pub(crate) enum TokenSource {
    /// A header, with an optional scheme prefix matched case-insensitively (`Bearer `).
    Header { name: String, prefix: String },
    /// A query parameter.
    Query(String),
}

/// Why authentication failed: the RFC 6750 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No token at all: `WWW-Authenticate: Bearer realm="..."` without an error code.
    Missing,
    /// A token that is not acceptable: `error="invalid_token"` with this description.
    Invalid(&'static str),
    /// No keys to verify it with yet: the remote JWKS has not been fetched
    /// (`untilFetched: deny`). Not the caller's fault: 503.
    KeysUnavailable,
}

/// Where the verification keys come from.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// `jwt.jwks`, fixed for the life of the configuration.
    Inline(Arc<[Key]>),
    /// `jwt.remoteJwks`, refreshed by the adapter.
    Remote(RemoteKeys),
}

/// A verified token's claims and what the policy derives from them.
#[derive(Debug)]
pub(crate) struct Identity {
    claims: Map<String, Value>,
    scopes: Vec<String>,
    /// `exp` in Unix seconds.
    exp: u64,
    /// Headers to forward upstream (claim values), computed once per token.
    pub(crate) forwarded: Vec<(Arc<str>, String)>,
}

impl Identity {
    pub(crate) fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// A claim as a rate-limit key: strings as they are, numbers in JSON form.
    pub(crate) fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The compiled JWT settings.
#[derive(Debug)]
pub(crate) struct Verifier {
    pub(crate) keys: KeySource,
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: u64,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) forward: Vec<(String, Arc<str>)>,
    pub(crate) max_token_bytes: usize,
    pub(crate) realm: String,
    /// `Some("authorization")` when the header is stripped before forwarding.
    pub(crate) strip_authorization: Option<Arc<str>>,
    pub(crate) cache: TokenCache<Arc<Identity>>,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl Verifier {
    /// Authenticate a request at `now_secs` (Unix seconds).
    pub(crate) fn authenticate(
        &self,
        request: &RequestView<'_>,
        now_secs: u64,
    ) -> Result<Arc<Identity>, AuthError> {
        let token = self.find_token(request).ok_or(AuthError::Missing)?;
        self.verify(&token, now_secs)
    }

    /// Verify a token (through the cache).
    pub(crate) fn verify(&self, token: &str, now_secs: u64) -> Result<Arc<Identity>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::Invalid("token too large"));
        }
        if let Some((identity, valid_until)) = self.cache.get(token) {
            if now_secs > valid_until {
                self.cache.remove(token);
                return Err(AuthError::Invalid("token expired"));
            }
            return Ok(identity);
        }
        let identity = Arc::new(self.verify_uncached(token, now_secs)?);
        self.cache.insert(
            token,
            Arc::clone(&identity),
            identity.exp.saturating_add(self.leeway),
            now_secs,
        );
        Ok(identity)
    }

    /// The remote JWKS, when the keys come from one.
    pub(crate) fn remote(&self) -> Option<&RemoteKeys> {
        match &self.keys {
            KeySource::Remote(remote) => Some(remote),
            KeySource::Inline(_) => None,
        }
    }

    /// A fetch of the remote JWKS answered: install its keys if they are good. Tokens verified
    /// with keys that are no longer published are forgotten, so they are checked again.
    pub(crate) fn jwks_fetched(
        &self,
        remote: &RemoteKeys,
        status: u16,
        body: &[u8],
    ) -> Result<JwksUpdate, JwksFetchError> {
        let update = remote.fetched(status, body)?;
        if update.changed {
            self.cache.clear();
        }
        Ok(update)
    }

    fn find_token(&self, request: &RequestView<'_>) -> Option<String> {
        for source in &self.sources {
            let found = match source {
                TokenSource::Header { name, prefix } => {
                    request.headers.header(name).and_then(|v| {
                        let v = v.trim();
                        let token = if prefix.is_empty() {
                            v
                        } else {
                            let head = v.get(..prefix.len())?;
                            if !head.eq_ignore_ascii_case(prefix) {
                                return None;
                            }
                            v[prefix.len()..].trim_start()
                        };
                        (!token.is_empty()).then(|| token.to_owned())
                    })
                }
                TokenSource::Query(param) => routing::query(request.path).and_then(|q| {
                    q.split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(k, v)| k == param && !v.is_empty())
                        .map(|(_, v)| v.to_owned())
                }),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        use AuthError::Invalid;
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid("malformed token"));
        };
        let header: JoseHeader =
            decode_json(header_b64).ok_or(Invalid("malformed token header"))?;
        if header.crit.is_some() {
            return Err(Invalid("unsupported critical header parameters"));
        }
        let alg = parse_algorithm(&header.alg).map_err(|_| {
            if header.alg.eq_ignore_ascii_case("none") {
                Invalid("unsigned tokens are not accepted")
            } else {
                Invalid("unsupported algorithm")
            }
        })?;
        let keys = match &self.keys {
            KeySource::Inline(keys) => Arc::clone(keys),
            KeySource::Remote(remote) => remote.current().ok_or(AuthError::KeysUnavailable)?,
        };
        let key = select_key(&keys, header.kid.as_deref()).inspect_err(|_| {
            if let (KeySource::Remote(remote), Some(_)) = (&self.keys, &header.kid) {
                remote.saw_unknown_kid();
            }
        })?;
        if !key.algorithms.contains(&alg) {
            return Err(Invalid("algorithm not allowed for this key"));
        }
        let message_len = header_b64.len() + 1 + payload_b64.len();
        let verified = jsonwebtoken::crypto::verify(
            signature,
            &token.as_bytes()[..message_len],
            &key.decoding,
            alg,
        );
        if !matches!(verified, Ok(true)) {
            return Err(Invalid("invalid signature"));
        }
        let claims: Map<String, Value> =
            decode_json(payload_b64).ok_or(Invalid("malformed token claims"))?;
        let exp = numeric_date(claims.get("exp")).ok_or(Invalid("missing or invalid exp"))?;
        if now > exp.saturating_add(self.leeway) {
            return Err(Invalid("token expired"));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(Some(nbf)).ok_or(Invalid("invalid nbf"))?;
            if now.saturating_add(self.leeway) < nbf {
                return Err(Invalid("token not yet valid"));
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Invalid("wrong issuer"));
        }
        if !self.audiences.is_empty() && !self.audience_ok(claims.get("aud")) {
            return Err(Invalid("wrong audience"));
        }
        Ok(self.identity(claims, exp))
    }

    fn audience_ok(&self, aud: Option<&Value>) -> bool {
        match aud {
            Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            _ => false,
        }
    }

    fn identity(&self, claims: Map<String, Value>, exp: u64) -> Identity {
        let mut scopes = Vec::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
                Some(Value::Array(list)) => {
                    scopes.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                _ => {}
            }
        }
        let forwarded = self
            .forward
            .iter()
            .filter_map(|(claim, header)| {
                let value = header_value(claims.get(claim)?)?;
                Some((Arc::clone(header), value))
            })
            .collect();
        Identity {
            claims,
            scopes,
            exp,
            forwarded,
        }
    }
}

/// The key a token's `kid` names.
fn select_key<'k>(keys: &'k [Key], kid: Option<&str>) -> Result<&'k Key, AuthError> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or(AuthError::Invalid("unknown key id")),
        // Without a kid only an unambiguous JWKS (a single key) can be used.
        None => match keys {
            [only] => Ok(only),
            _ => Err(AuthError::Invalid("token has no key id")),
        },
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    // The whole segment is UTF-8 JSON (RFC 7515 section 4, RFC 7519 section 7.2): the header's
    // derive skips the members it does not name without looking at their bytes (found by the
    // `jwt` fuzz target, which reads every member).
    serde_json::from_str(std::str::from_utf8(&bytes).ok()?).ok()
}

/// A NumericDate (seconds, possibly fractional) as whole Unix seconds.
fn numeric_date(value: Option<&Value>) -> Option<u64> {
    let n = value?.as_number()?;
    if let Some(secs) = n.as_u64() {
        return Some(secs);
    }
    let f = n.as_f64()?;
    // Saturating float-to-int: negative dates become 0, absurd ones u64::MAX.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "NumericDate is seconds; sub-second precision and negative dates do not matter"
    )]
    (f.is_finite()).then_some(f as u64)
}

/// A claim as a header value: scalars as text, lists of scalars comma-joined. Values with
/// control characters are dropped so a claim can never inject a header line.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    };
    (!text.bytes().any(|b| b < 0x20 || b == 0x7f)).then_some(text)
}
