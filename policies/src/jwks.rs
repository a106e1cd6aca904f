//! JWKs compiled into verification keys (inline ones from the config, fetched ones from
//! `remote_jwks`). The key decides the algorithm: a token's `alg`
//! header is only accepted when it is one the key itself allows, which is what defeats
//! algorithm confusion (an HS256 token "signed" with an RSA public key as HMAC secret).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::RawJwk;
use crate::error::ConfigError;

/// One verification key.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    /// The algorithms this key verifies, already narrowed to the configured ones.
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) decoding: DecodingKey,
    /// The public members that make the key (`kty`, `crv`, `n`, `e`, `x`, `y`), to tell whether
    /// a refreshed JWKS changed it. Empty for `oct` keys: a secret is kept nowhere but in
    /// `decoding`, and symmetric keys never come from a remote JWKS.
    fingerprint: String,
}

impl Key {
    /// Whether `other` verifies exactly the tokens this key verifies.
    pub(crate) fn same_as(&self, other: &Key) -> bool {
        self.kid == other.kid
            && self.algorithms == other.algorithms
            && !self.fingerprint.is_empty()
            && self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (HMAC secrets).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
pub(crate) const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Every algorithm modelgate verifies.
pub(crate) const ALL_ALGS: [Algorithm; 12] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
];

/// Compile one JWK at `path` (`jwt.jwks.keys[2]`), keeping only `allowed` algorithms; `env`
/// looks up the variable an `oct` key's `kFromEnv` names.
pub(crate) fn compile_key(
    jwk: &RawJwk,
    allowed: &[Algorithm],
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Key, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::at(&format!("{path}.{field}"), msg);
    if jwk.k_from_env.is_some() && jwk.kty != "oct" {
        return Err(err(
            "kFromEnv",
            format!("only an \"oct\" key has a secret, not kty {:?}", jwk.kty),
        ));
    }
    if let Some(use_) = &jwk.use_
        && use_ != "sig"
    {
        return Err(err("use", format!("key use {use_:?} is not \"sig\"")));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err(err(
            "key_ops",
            "key_ops does not include \"verify\"".to_owned(),
        ));
    }
    let required = |field: &str, value: &Option<String>| {
        value
            .clone()
            .ok_or_else(|| err(field, format!("required for kty {:?}", jwk.kty)))
    };
    let (family, decoding): (Vec<Algorithm>, DecodingKey) = match jwk.kty.as_str() {
        "RSA" => {
            let (n, e) = (required("n", &jwk.n)?, required("e", &jwk.e)?);
            let key = DecodingKey::from_rsa_components(&n, &e)
                .map_err(|e| err("n", format!("invalid RSA key: {e}")))?;
            (RSA_ALGS.to_vec(), key)
        }
        "EC" => {
            let crv = required("crv", &jwk.crv)?;
            let alg = match crv.as_str() {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                other => return Err(err("crv", format!("unsupported curve {other:?}"))),
            };
            let (x, y) = (required("x", &jwk.x)?, required("y", &jwk.y)?);
            let key = DecodingKey::from_ec_components(&x, &y)
                .map_err(|e| err("x", format!("invalid EC key: {e}")))?;
            (vec![alg], key)
        }
        "OKP" => {
            let crv = required("crv", &jwk.crv)?;
            if crv != "Ed25519" {
                return Err(err("crv", format!("unsupported curve {crv:?}")));
            }
            let x = required("x", &jwk.x)?;
            let key = DecodingKey::from_ed_components(&x)
                .map_err(|e| err("x", format!("invalid Ed25519 key: {e}")))?;
            (vec![Algorithm::EdDSA], key)
        }
        "oct" => {
            let (field, secret) = hmac_secret(jwk, path, env)?;
            if secret.len() < 32 {
                return Err(err(
                    field,
                    "HMAC secrets must be at least 32 bytes".to_owned(),
                ));
            }
            (HMAC_ALGS.to_vec(), DecodingKey::from_secret(&secret))
        }
        other => return Err(err("kty", format!("unsupported key type {other:?}"))),
    };
    let mut algorithms = match &jwk.alg {
        Some(alg) => {
            let alg = parse_algorithm(alg).map_err(|m| err("alg", m))?;
            if !family.contains(&alg) {
                return Err(err(
                    "alg",
                    format!("{alg:?} does not fit kty {:?}", jwk.kty),
                ));
            }
            vec![alg]
        }
        None => family,
    };
    algorithms.retain(|a| allowed.contains(a));
    if algorithms.is_empty() {
        return Err(ConfigError::at(
            path,
            "the key allows none of the configured algorithms",
        ));
    }
    // Build a verifier once now so that key material the crypto backend rejects (a point not
    // on the curve, a too-small modulus) fails at configuration time, not per request.
    for alg in &algorithms {
        (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, &decoding)
            .map_err(|e| ConfigError::at(path, format!("unusable key for {alg:?}: {e}")))?;
    }
    Ok(Key {
        kid: jwk.kid.clone(),
        algorithms,
        decoding,
        fingerprint: fingerprint(jwk),
    })
}

/// The public members that make a key, joined; empty for `oct` keys (see [`Key::same_as`]).
fn fingerprint(jwk: &RawJwk) -> String {
    if jwk.kty == "oct" {
        return String::new();
    }
    [&jwk.crv, &jwk.n, &jwk.e, &jwk.x, &jwk.y]
        .iter()
        .fold(jwk.kty.clone(), |mut acc, member| {
            acc.push('|');
            acc.push_str(member.as_deref().unwrap_or_default());
            acc
        })
}

/// An `oct` key's secret and the field it came from: `k` (base64url, as in RFC 7518) or the
/// raw bytes of the environment variable `kFromEnv` names. No error carries the secret.
fn hmac_secret(
    jwk: &RawJwk,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(&'static str, Vec<u8>), ConfigError> {
    match (&jwk.k, &jwk.k_from_env) {
        (Some(k), None) => URL_SAFE_NO_PAD
            .decode(k.trim_end_matches('='))
            .map(|secret| ("k", secret))
            .map_err(|e| ConfigError::at(&format!("{path}.k"), format!("invalid base64url: {e}"))),
        (None, Some(name)) => {
            let at = format!("{path}.kFromEnv");
            if name.is_empty() {
                return Err(ConfigError::at(&at, "must name an environment variable"));
            }
            match env(name) {
                Some(value) if !value.is_empty() => Ok(("kFromEnv", value.into_bytes())),
                Some(_) => Err(ConfigError::at(
                    &at,
                    format!("environment variable {name} is empty"),
                )),
                None => Err(ConfigError::at(
                    &at,
                    format!("environment variable {name} is not set (list it in env.hostKeys)"),
                )),
            }
        }
        _ => Err(ConfigError::at(path, "exactly one of k and kFromEnv")),
    }
}

/// Parse a JOSE algorithm name; `none` is never accepted.
pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" is never accepted".to_owned());
    }
    name.parse::<Algorithm>()
        .ok()
        .filter(|a| ALL_ALGS.contains(a))
        .ok_or_else(|| format!("unsupported algorithm {name:?}"))
}
