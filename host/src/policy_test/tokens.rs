//! Test fixture: signing the tokens a test file describes, with the test file's own keys.
//!
//! This is the one place the host touches JWT, and it only makes tokens, the way a test's
//! identity provider would: the gateway never verifies one (the filter does). Policy tests
//! need it because a token's claims are the input a policy decides on, and a test that
//! could only replay pre-made tokens could not state `exp: now-1m` or a missing scope.
//! Headers are written by hand and signed with `jsonwebtoken::crypto::sign`, so a case can
//! also make the tokens a correct issuer never would (a wrong `alg`, no `kid`, `crit`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value};

use super::suite::{KeySpec, SignedToken};
use crate::units::ConfigDuration;

/// A loaded signing key.
pub(super) struct SigningKey {
    algorithm: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
}

/// The file's keys by name, and the tokens signed so far.
pub(super) struct Keys {
    keys: BTreeMap<String, SigningKey>,
    /// Signatures by key name, algorithm and signing input (a case may sign with another
    /// algorithm than its header names): cases of a file mostly sign the same claims at the
    /// same time, and an RSA signature cost about 2 ms, most of a case's time.
    signatures: Mutex<HashMap<(String, Algorithm, String), String>>,
}

impl Keys {
    /// Loads every key; errors are `(field path, message)`, key files relative to `base`.
    pub(super) fn load(
        specs: &BTreeMap<String, KeySpec>,
        base: &Path,
    ) -> Result<Keys, (String, String)> {
        let mut keys = BTreeMap::new();
        for (name, spec) in specs {
            let key = load_key(spec, base).map_err(|(field, message)| {
                let path = match field {
                    Some(field) => format!("keys.{name}.{field}"),
                    None => format!("keys.{name}"),
                };
                (path, message)
            })?;
            keys.insert(name.clone(), key);
        }
        Ok(Keys {
            keys,
            signatures: Mutex::default(),
        })
    }

    /// Signs `token` at `now`; errors name the field under `token`.
    pub(super) fn sign(
        &self,
        token: &SignedToken,
        now: SystemTime,
    ) -> Result<String, (String, String)> {
        let key = self.keys.get(&token.key).ok_or_else(|| {
            let known = self.keys.keys().cloned().collect::<Vec<_>>().join(", ");
            (
                "key".to_owned(),
                format!("no key named {:?} under `keys` (known: {known})", token.key),
            )
        })?;
        let algorithm = match &token.algorithm {
            Some(name) => Algorithm::from_str(name).map_err(|_| {
                (
                    "algorithm".to_owned(),
                    format!("unknown JWS algorithm {name:?}"),
                )
            })?,
            None => key.algorithm,
        };
        let mut header = Map::new();
        header.insert("alg".into(), Value::String(algorithm_name(algorithm)));
        header.insert("typ".into(), Value::String("JWT".into()));
        if let Some(kid) = &key.kid {
            header.insert("kid".into(), Value::String(kid.clone()));
        }
        for (name, value) in &token.header {
            if value.is_null() {
                header.remove(name);
            } else {
                header.insert(name.clone(), value.clone());
            }
        }
        let mut claims = token.claims.clone();
        for (name, value) in &mut claims {
            if let Value::String(text) = value
                && let Some(resolved) = relative_time(text, now)
                    .map_err(|message| (format!("claims.{name}"), message))?
            {
                *value = Value::from(resolved);
            }
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let cache_key = (token.key.clone(), algorithm, signing_input);
        let mut signatures = self
            .signatures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let signature = if let Some(signature) = signatures.get(&cache_key) {
            signature.clone()
        } else {
            let signature = jsonwebtoken::crypto::sign(cache_key.2.as_bytes(), &key.key, algorithm)
                .map_err(|e| {
                    (
                        "key".to_owned(),
                        format!("cannot sign with {algorithm:?}: {e}"),
                    )
                })?;
            signatures.insert(cache_key.clone(), signature.clone());
            signature
        };
        Ok(format!("{}.{signature}", cache_key.2))
    }
}

fn load_key(spec: &KeySpec, base: &Path) -> Result<SigningKey, (Option<&'static str>, String)> {
    let algorithm = Algorithm::from_str(&spec.algorithm).map_err(|_| {
        (
            Some("algorithm"),
            format!("unknown JWS algorithm {:?}", spec.algorithm),
        )
    })?;
    let pem = match (&spec.private_key, &spec.private_key_file) {
        (Some(pem), None) => Some(pem.clone().into_bytes()),
        (None, Some(file)) => {
            let path = base.join(file);
            Some(std::fs::read(&path).map_err(|e| {
                (
                    Some("privateKeyFile"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?)
        }
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err((None, "give privateKey or privateKeyFile, not both".into()));
        }
    };
    let bad_pem = |e: jsonwebtoken::errors::Error| {
        (
            Some("privateKey"),
            format!("not a {:?} private key in PEM: {e}", spec.algorithm),
        )
    };
    let key = match (pem, &spec.secret, &spec.secret_base64) {
        (Some(pem), None, None) => match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem).map_err(bad_pem)?,
            Algorithm::ES256 | Algorithm::ES384 => {
                EncodingKey::from_ec_pem(&pem).map_err(bad_pem)?
            }
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).map_err(bad_pem)?,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                return Err((Some("secret"), "HMAC algorithms take a secret".into()));
            }
        },
        (None, Some(secret), None) => EncodingKey::from_secret(secret.as_bytes()),
        (None, None, Some(secret)) => {
            // A JWK's `k` is unpadded base64url (RFC 7518 section 6.4.1); padding is accepted.
            let bytes = URL_SAFE_NO_PAD
                .decode(secret.trim_end_matches('='))
                .map_err(|e| (Some("secretBase64"), format!("not base64url: {e}")))?;
            EncodingKey::from_secret(&bytes)
        }
        _ => {
            return Err((
                None,
                "give exactly one of privateKey, privateKeyFile, secret, secretBase64".into(),
            ));
        }
    };
    Ok(SigningKey {
        algorithm,
        kid: spec.kid.clone(),
        key,
    })
}

fn algorithm_name(algorithm: Algorithm) -> String {
    // `Algorithm`'s Debug form is its JWS name (RS256, EdDSA, ...).
    format!("{algorithm:?}")
}

/// `now`, `now+90s`, `now-1h` as Unix seconds at `now`; `None` for any other text.
fn relative_time(text: &str, now: SystemTime) -> Result<Option<u64>, String> {
    let Some(rest) = text.strip_prefix("now") else {
        return Ok(None);
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let parse = |offset: &str| {
        serde_json::from_value::<ConfigDuration>(Value::String(offset.to_owned()))
            .map(|d| d.0.as_secs())
            .map_err(|e| format!("{text:?}: {e}"))
    };
    if rest.is_empty() {
        Ok(Some(now))
    } else if let Some(offset) = rest.strip_prefix('+') {
        Ok(Some(now.saturating_add(parse(offset)?)))
    } else if let Some(offset) = rest.strip_prefix('-') {
        Ok(Some(now.saturating_sub(parse(offset)?)))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn hs_keys() -> Keys {
        let mut specs = BTreeMap::new();
        specs.insert(
            "hs".to_owned(),
            KeySpec {
                algorithm: "HS256".into(),
                kid: Some("k1".into()),
                private_key_file: None,
                private_key: None,
                secret: Some("a-test-secret-of-at-least-32-bytes!!".into()),
                secret_base64: None,
            },
        );
        Keys::load(&specs, Path::new(".")).unwrap()
    }

    fn decode_segment(token: &str, index: usize) -> Value {
        let segment = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn signs_claims_with_times_relative_to_the_case_start() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token: SignedToken = serde_json::from_value(serde_json::json!({
            "key": "hs", "claims": {"sub": "alice", "exp": "now+1h", "nbf": "now-30s", "iat": "now"}
        }))
        .unwrap();
        let jwt = hs_keys().sign(&token, now).unwrap();
        assert_eq!(
            decode_segment(&jwt, 0),
            serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
        );
        assert_eq!(
            decode_segment(&jwt, 1),
            serde_json::json!({"sub": "alice", "exp": 1_003_600, "nbf": 999_970, "iat": 1_000_000})
        );
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_secret(b"a-test-secret-of-at-least-32-bytes!!"),
            &validation,
        )
        .expect("the signature verifies");
    }

    #[test]
    fn header_parameters_can_be_replaced_and_removed() {
        let token: SignedToken = serde_json::from_value(serde_json::json!({
            "key": "hs", "header": {"kid": null, "crit": ["exp"], "alg": "HS512"}
        }))
        .unwrap();
        let jwt = hs_keys().sign(&token, UNIX_EPOCH).unwrap();
        assert_eq!(
            decode_segment(&jwt, 0),
            serde_json::json!({"alg": "HS512", "typ": "JWT", "crit": ["exp"]})
        );
    }

    #[test]
    fn a_signature_is_reused_only_for_the_same_key_algorithm_and_input() {
        let keys = hs_keys();
        let spec = |extra: Value| -> SignedToken {
            let mut token = serde_json::json!({"key": "hs", "claims": {"sub": "alice"}});
            token
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(token).unwrap()
        };
        let first = keys.sign(&spec(serde_json::json!({})), UNIX_EPOCH).unwrap();
        assert_eq!(
            keys.sign(&spec(serde_json::json!({})), UNIX_EPOCH).unwrap(),
            first
        );
        // The same header and claims signed with HS512: the signing input is the same, the
        // signature is not, and the HS256 one must not be served from the cache.
        let header = serde_json::json!({"header": {"alg": "HS256"}});
        let hs512 = spec(serde_json::json!({"algorithm": "HS512", "header": header["header"]}));
        let other = keys.sign(&hs512, UNIX_EPOCH).unwrap();
        let (input, signature) = first.rsplit_once('.').unwrap();
        assert!(other.starts_with(input), "{other}");
        assert_ne!(other.rsplit_once('.').unwrap().1, signature);
        assert_eq!(
            other.rsplit_once('.').unwrap().1,
            jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &EncodingKey::from_secret(b"a-test-secret-of-at-least-32-bytes!!"),
                Algorithm::HS512
            )
            .unwrap()
        );
    }

    #[test]
    fn errors_name_the_key_field() {
        let token: SignedToken =
            serde_json::from_value(serde_json::json!({"key": "nope"})).unwrap();
        let (field, message) = hs_keys().sign(&token, UNIX_EPOCH).err().unwrap();
        assert_eq!(field, "key");
        assert!(message.contains("known: hs"), "{message}");
        let token: SignedToken =
            serde_json::from_value(serde_json::json!({"key": "hs", "claims": {"exp": "now+soon"}}))
                .unwrap();
        let (field, _) = hs_keys().sign(&token, UNIX_EPOCH).err().unwrap();
        assert_eq!(field, "claims.exp");
    }
}
