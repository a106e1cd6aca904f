//! Shared test fixtures: fixed keys, token minting, a base config, and request helpers.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_policies::{
    BodyDecision, Continue, HeadersDecision, KnownClient, Policies, Reply, RequestView, SharedStore,
};
use serde_json::{Value, json};

/// The injected "now" of every test, in Unix seconds.
pub(crate) const NOW: u64 = 1_800_000_000;
pub(crate) const ISSUER: &str = "https://issuer.test";
pub(crate) const HS_SECRET: &[u8] = b"an-hmac-secret-of-at-least-32-bytes!";

pub(crate) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn at_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

pub(crate) fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!("../keys/rsa_private_pkcs1.der"))
}
pub(crate) fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!("../keys/rsa2_private_pkcs1.der"))
}
pub(crate) fn p256() -> EncodingKey {
    EncodingKey::from_ec_der(include_bytes!("../keys/p256_private_pkcs8.der"))
}
pub(crate) fn p384() -> EncodingKey {
    EncodingKey::from_ec_der(include_bytes!("../keys/p384_private_pkcs8.der"))
}
pub(crate) fn ed25519() -> EncodingKey {
    EncodingKey::from_ed_der(include_bytes!("../keys/ed25519_private_pkcs8.der"))
}
pub(crate) fn hs() -> EncodingKey {
    EncodingKey::from_secret(HS_SECRET)
}

/// The public JWK of `key`, with `kid`, and `alg` only when given.
fn public_jwk(key: &EncodingKey, derive_with: Algorithm, kid: &str, alg: Option<&str>) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, derive_with).unwrap()).unwrap();
    let obj = jwk.as_object_mut().unwrap();
    obj.remove("alg");
    obj.insert("kid".into(), json!(kid));
    if let Some(alg) = alg {
        obj.insert("alg".into(), json!(alg));
    }
    jwk
}

/// The test JWKS: `rsa` (no alg: RS* and PS*), `rsa-rs256` (the second RSA key, RS256 only),
/// `p256`, `p384`, `ed` and `hs` (an oct key).
pub(crate) fn jwks() -> Value {
    // Deriving public keys is slow in debug builds; do it once per test binary.
    static JWKS: OnceLock<Value> = OnceLock::new();
    JWKS.get_or_init(derive_jwks).clone()
}

fn derive_jwks() -> Value {
    let ed_spki = include_bytes!("../keys/ed25519_public_spki.der");
    let ed_x = URL_SAFE_NO_PAD.encode(&ed_spki[ed_spki.len() - 32..]);
    json!({ "keys": [
        public_jwk(&rsa(), Algorithm::RS256, "rsa", None),
        public_jwk(&rsa2(), Algorithm::RS256, "rsa-rs256", Some("RS256")),
        public_jwk(&p256(), Algorithm::ES256, "p256", None),
        public_jwk(&p384(), Algorithm::ES384, "p384", None),
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ed_x },
        public_jwk(&hs(), Algorithm::HS256, "hs", None),
    ]})
}

pub(crate) fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Valid claims for `sub` with `scope`, expiring in an hour.
pub(crate) fn claims(sub: &str, scope: &str) -> Value {
    json!({ "iss": ISSUER, "aud": "modelgate", "sub": sub, "scope": scope,
            "exp": NOW + 3600, "iat": NOW, "tenant": "acme" })
}

/// An RS256 token for `sub` with `scope`.
pub(crate) fn token(sub: &str, scope: &str) -> String {
    mint(Algorithm::RS256, Some("rsa"), &rsa(), &claims(sub, scope))
}

pub(crate) fn base_config() -> Value {
    json!({
        "version": 1,
        "jwt": {
            "issuer": ISSUER,
            "audiences": "modelgate",
            "jwks": jwks(),
            "forwardClaims": { "sub": "x-user-id" }
        },
        "rateLimit": { "keyHeader": "x-ratelimit-key" },
        "models": {
            "sklearn-iris": {
                "aliases": ["iris"],
                "requiredScopes": ["models:iris"],
                "rateLimit": { "requestsPerSecond": 1, "burst": 3 },
                "validation": { "featureCount": 4 }
            },
            "sklearn-wine": {
                "requiredScopes": ["models:wine"],
                "requiredClaims": { "tenant": ["acme", "globex"] }
            },
            "tensor-model": { "protocols": ["v2"] }
        }
    })
}

pub(crate) fn policies(config: &Value) -> Policies {
    Policies::from_json(config.to_string().as_bytes()).unwrap()
}

/// A request as the adapter would describe it.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) client: Option<String>,
}

impl Req {
    pub(crate) fn get(path: &str) -> Self {
        Self {
            method: "GET",
            path: path.to_owned(),
            headers: Vec::new(),
            client: Some("10.0.0.7:41000".to_owned()),
        }
    }
    pub(crate) fn post(path: &str) -> Self {
        Self {
            method: "POST",
            ..Self::get(path)
        }
    }
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub(crate) fn headers_decision(
        &self,
        p: &Policies,
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> HeadersDecision {
        let source = KnownClient {
            headers: &self.headers,
            address: self.client.as_deref(),
        };
        let view = RequestView {
            method: self.method,
            path: &self.path,
            headers: &source,
        };
        p.on_request_headers(&view, now, store)
    }

    /// Run the whole request: headers, then the body when the policy asks for it.
    pub(crate) fn send(
        &self,
        p: &Policies,
        body: &[u8],
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> Result<Continue, Reply> {
        match self.headers_decision(p, now, store) {
            HeadersDecision::Continue(c) => Ok(c),
            HeadersDecision::Reply(r) => Err(r),
            HeadersDecision::NeedBody(need) => {
                if body.len() > need.max_bytes {
                    return Err(p.reject_oversized_body(&need.pending));
                }
                match p.on_request_body(&need.pending, body, now, store) {
                    // What the upstream gets: the edits applied at header time plus any the
                    // body decision adds.
                    BodyDecision::Continue(mut c) => {
                        let mut headers = need.headers;
                        headers.remove.append(&mut c.headers.remove);
                        headers.set.append(&mut c.headers.set);
                        c.headers = headers;
                        c.route_changed |= need.route_changed;
                        Ok(c)
                    }
                    BodyDecision::Reply(r) => Err(r),
                }
            }
        }
    }
}

/// A reply header's value.
pub(crate) fn reply_header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// A header the decision sets upstream.
pub(crate) fn set_header<'a>(c: &'a Continue, name: &str) -> Option<&'a str> {
    c.headers
        .set
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) const IRIS_BODY: &[u8] = br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#;
