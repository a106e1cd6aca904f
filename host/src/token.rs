//! `modelgate token`: mint a signed JWT for trying a policy out ("test with curl").
//!
//! This is a tool for people, the way an identity provider's console mints a test token; the
//! gateway itself never reads or verifies a token (the filter does). The key comes from a file
//! as a PEM private key (RSA PKCS#1 or PKCS#8, EC SEC1 or PKCS#8 on P-256/P-384, Ed25519
//! PKCS#8), a private JWK (`RSA`, `EC`, `OKP`, or `oct`), or an HMAC secret file whose bytes
//! are the secret as they are (the same bytes `kFromEnv` reads). jsonwebtoken signs; this
//! module turns each format into the DER it takes.

mod der;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// What `modelgate token` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenArgs {
    pub key: KeyFile,
    pub algorithm: Option<String>,
    pub kid: Option<String>,
    pub claims: Vec<ClaimArg>,
    pub expires_in: Duration,
}

/// Where the signing key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    /// A PEM private key or a private JWK.
    Key(PathBuf),
    /// A file whose bytes are an HMAC secret.
    HmacSecret(PathBuf),
}

/// One `--claims` or `--claim`, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimArg {
    /// `--claims`: a JSON object, or `@FILE` holding one.
    Object(String),
    /// `--claim NAME=VALUE`.
    One(String, String),
}

/// A signing key and what it signs with unless told otherwise.
struct SigningKey {
    key: EncodingKey,
    default_alg: Algorithm,
    /// The algorithms this key can sign with.
    family: &'static [Algorithm],
    kid: Option<String>,
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Mint the token `args` describe at `now`.
pub fn mint(args: &TokenArgs, now: SystemTime) -> Result<String, String> {
    let signing = match &args.key {
        KeyFile::Key(path) => {
            let text = read(path)?;
            read_key(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        KeyFile::HmacSecret(path) => {
            let secret =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            hmac_key(&secret, None).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let alg = match &args.algorithm {
        Some(name) => {
            Algorithm::from_str(name).map_err(|_| format!("--alg: unknown algorithm {name:?}"))?
        }
        None => signing.default_alg,
    };
    if !signing.family.contains(&alg) {
        return Err(format!("--alg: this key cannot sign {alg:?}"));
    }
    let claims = claims(&args.claims, args.expires_in, now)?;
    let mut header = Header::new(alg);
    header.kid = args.kid.clone().or(signing.kid);
    jsonwebtoken::encode(&header, &Value::Object(claims), &signing.key)
        .map_err(|e| format!("cannot sign with {alg:?}: {e}"))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The claims: every `--claims` object and `--claim`, in order, then `iat` and `exp` unless given.
fn claims(
    args: &[ClaimArg],
    expires_in: Duration,
    now: SystemTime,
) -> Result<Map<String, Value>, String> {
    let mut claims = Map::new();
    for arg in args {
        match arg {
            ClaimArg::Object(text) => {
                let json = match text.strip_prefix('@') {
                    Some(file) => read(Path::new(file))?,
                    None => text.clone(),
                };
                match serde_json::from_str(&json) {
                    Ok(Value::Object(object)) => claims.extend(object),
                    Ok(_) => return Err("--claims: not a JSON object".to_owned()),
                    Err(e) => return Err(format!("--claims: invalid JSON: {e}")),
                }
            }
            ClaimArg::One(name, value) => {
                let value =
                    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()));
                claims.insert(name.clone(), value);
            }
        }
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    claims.entry("iat").or_insert(Value::from(now));
    claims
        .entry("exp")
        .or_insert(Value::from(now.saturating_add(expires_in.as_secs())));
    Ok(claims)
}

/// A PEM private key or a private JWK.
fn read_key(text: &str) -> Result<SigningKey, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let jwk: Map<String, Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("not a JWK: {e}"))?;
        return jwk_key(&jwk);
    }
    if trimmed.starts_with("-----BEGIN ") {
        return pem_key(trimmed);
    }
    Err(
        "neither a PEM private key nor a JWK (an HMAC secret goes in --hmac-secret-file)"
            .to_owned(),
    )
}

fn hmac_key(secret: &[u8], kid: Option<String>) -> Result<SigningKey, String> {
    if secret.is_empty() {
        return Err("the HMAC secret is empty".to_owned());
    }
    Ok(SigningKey {
        key: EncodingKey::from_secret(secret),
        default_alg: Algorithm::HS256,
        family: HMAC,
        kid,
    })
}

fn rsa_key(pkcs1: &[u8], kid: Option<String>) -> SigningKey {
    SigningKey {
        key: EncodingKey::from_rsa_der(pkcs1),
        default_alg: Algorithm::RS256,
        family: RSA,
        kid,
    }
}

fn ec_key(curve: der::Curve, pkcs8: &[u8], kid: Option<String>) -> SigningKey {
    let alg = match curve {
        der::Curve::P256 => (Algorithm::ES256, &[Algorithm::ES256][..]),
        der::Curve::P384 => (Algorithm::ES384, &[Algorithm::ES384][..]),
    };
    SigningKey {
        key: EncodingKey::from_ec_der(pkcs8),
        default_alg: alg.0,
        family: alg.1,
        kid,
    }
}

fn ed_key(pkcs8: &[u8], kid: Option<String>) -> SigningKey {
    SigningKey {
        key: EncodingKey::from_ed_der(pkcs8),
        default_alg: Algorithm::EdDSA,
        family: &[Algorithm::EdDSA],
        kid,
    }
}

fn pem_key(text: &str) -> Result<SigningKey, String> {
    let (label, der) = der::pem_decode(text)?;
    match label.as_str() {
        "RSA PRIVATE KEY" => Ok(rsa_key(&der, None)),
        "EC PRIVATE KEY" => {
            let curve = der::sec1_curve(&der)?;
            Ok(ec_key(curve, &der::pkcs8_ec(curve, &der), None))
        }
        "PRIVATE KEY" => match der::pkcs8_kind(&der)? {
            der::Pkcs8Kind::Rsa(pkcs1) => Ok(rsa_key(&pkcs1, None)),
            der::Pkcs8Kind::Ec(curve) => Ok(ec_key(curve, &der, None)),
            der::Pkcs8Kind::Ed25519 => Ok(ed_key(&der, None)),
        },
        "ENCRYPTED PRIVATE KEY" => {
            Err("an encrypted key: decrypt it first (openssl pkcs8 -in KEY -out PLAIN)".to_owned())
        }
        other => Err(format!("a PEM {other:?}, not a private key")),
    }
}

fn jwk_key(jwk: &Map<String, Value>) -> Result<SigningKey, String> {
    let member = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or(format!("the JWK has no {name:?} (a private key is needed)"))?;
        der::base64url(text).map_err(|e| format!("JWK member {name:?}: {e}"))
    };
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let names = ["n", "e", "d", "p", "q", "dp", "dq", "qi"];
            let parts = names
                .iter()
                .map(|n| member(n))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rsa_key(&der::pkcs1_rsa(&parts), kid))
        }
        Some("EC") => {
            let curve = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => der::Curve::P256,
                Some("P-384") => der::Curve::P384,
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let sec1 = der::sec1_ec(curve, &member("d")?);
            Ok(ec_key(curve, &der::pkcs8_ec(curve, &sec1), kid))
        }
        Some("OKP") if jwk.get("crv").and_then(Value::as_str) == Some("Ed25519") => {
            Ok(ed_key(&der::pkcs8_ed25519(&member("d")?)?, kid))
        }
        Some("oct") => hmac_key(&member("k")?, kid),
        other => Err(format!("unsupported JWK kty {other:?}")),
    }
}

#[cfg(test)]
mod tests;
