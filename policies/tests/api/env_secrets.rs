//! HMAC secrets taken from the environment (`kFromEnv`): the environment is an input the
//! adapter passes, so these tests pass a map, never the process environment.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, EncodingKey};
use modelgate_policies::{MemoryStore, Outcome, Policies};
use serde_json::{Value, json};

use crate::support::{IRIS_BODY, NOW, Req, at, base_config, claims, mint};

const VAR: &str = "MODELGATE_JWT_HMAC_KEY";
/// The variable's value is the secret's raw bytes (not base64url like `k`).
const SECRET: &str = "env-secret-0123456789-abcdefghijklmnopq";
const PREDICT: &str = "/v1/models/sklearn-iris:predict";

/// The base config with an `oct` key `env-hs` as key `keys[6]`, whose members are `members`.
fn config_with(members: &Value) -> Value {
    let mut cfg = base_config();
    let mut jwk = json!({ "kty": "oct", "kid": "env-hs", "alg": "HS256" });
    for (name, value) in members.as_object().unwrap() {
        jwk[name] = value.clone();
    }
    cfg["jwt"]["jwks"]["keys"].as_array_mut().unwrap().push(jwk);
    cfg
}

fn compile(cfg: &Value, vars: &[(&str, &str)]) -> Result<Policies, String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Policies::from_json_with_env(cfg.to_string().as_bytes(), &|name| vars.get(name).cloned())
        .map_err(|e| e.to_string())
}

/// The status of a predict carrying an HS256 token for `kid` signed with `secret`.
fn predict_status(p: &Policies, kid: &str, secret: &[u8]) -> u16 {
    let token = mint(
        Algorithm::HS256,
        Some(kid),
        &EncodingKey::from_secret(secret),
        &claims("alice", "models:iris"),
    );
    match Req::post(PREDICT)
        .bearer(&token)
        .send(p, IRIS_BODY, at(NOW), &MemoryStore::new())
    {
        Ok(c) => {
            assert_eq!(c.verdict.outcome, Outcome::Allowed);
            200
        }
        Err(reply) => reply.status,
    }
}

#[test]
fn a_key_from_the_environment_verifies_hs256_tokens() {
    let cfg = config_with(&json!({ "kFromEnv": VAR }));
    let p = compile(&cfg, &[(VAR, SECRET)]).unwrap();
    assert_eq!(predict_status(&p, "env-hs", SECRET.as_bytes()), 200);
    assert_eq!(
        predict_status(&p, "env-hs", b"another-secret-of-at-least-32-bytes!!"),
        401
    );
    // The raw bytes are the secret: its base64url text is a different key.
    assert_eq!(
        predict_status(
            &p,
            "env-hs",
            b"ZW52LXNlY3JldC0wMTIzNDU2Nzg5LWFiY2RlZmdoaWprbG1ub3Bx"
        ),
        401
    );
}

#[test]
fn a_missing_or_empty_variable_is_an_error_naming_path_and_variable() {
    let cfg = config_with(&json!({ "kFromEnv": VAR }));
    assert_eq!(
        compile(&cfg, &[]).unwrap_err(),
        format!(
            "jwt.jwks.keys[6].kFromEnv: environment variable {VAR} is not set (list it in env.hostKeys)"
        )
    );
    assert_eq!(
        compile(&cfg, &[(VAR, "")]).unwrap_err(),
        format!("jwt.jwks.keys[6].kFromEnv: environment variable {VAR} is empty")
    );
    // Without an environment at all, as `from_json` compiles.
    let err = Policies::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.path, "jwt.jwks.keys[6].kFromEnv");
}

#[test]
fn exactly_one_of_k_and_k_from_env() {
    let both = config_with(
        &json!({ "kFromEnv": VAR, "k": "ZW52LXNlY3JldC0wMTIzNDU2Nzg5LWFiY2RlZmdoaWprbG1ub3Bx" }),
    );
    let neither = config_with(&json!({}));
    for cfg in [both, neither] {
        assert_eq!(
            compile(&cfg, &[(VAR, SECRET)]).unwrap_err(),
            "jwt.jwks.keys[6]: exactly one of k and kFromEnv"
        );
    }
    assert_eq!(
        compile(&config_with(&json!({ "kFromEnv": "" })), &[(VAR, SECRET)]).unwrap_err(),
        "jwt.jwks.keys[6].kFromEnv: must name an environment variable"
    );
    let mut rsa = base_config();
    rsa["jwt"]["jwks"]["keys"][0]["kFromEnv"] = json!(VAR);
    assert_eq!(
        compile(&rsa, &[(VAR, SECRET)]).unwrap_err(),
        "jwt.jwks.keys[0].kFromEnv: only an \"oct\" key has a secret, not kty \"RSA\""
    );
}

#[test]
fn the_secret_appears_in_no_error_or_debug_output() {
    let cfg = config_with(&json!({ "kFromEnv": VAR }));
    let p = compile(&cfg, &[(VAR, SECRET)]).unwrap();
    assert!(!format!("{p:?}").contains(SECRET));
    assert!(!format!("{p:#?}").contains(SECRET));

    let short = "too-short-secret";
    let err = compile(&cfg, &[(VAR, short)]).unwrap_err();
    assert_eq!(
        err,
        "jwt.jwks.keys[6].kFromEnv: HMAC secrets must be at least 32 bytes"
    );
    // A later error in the same config, after the key compiled, does not carry it either.
    let mut later = cfg.clone();
    later["jwt"]["maxTokenBytes"] = json!(0);
    let err = compile(&later, &[(VAR, SECRET)]).unwrap_err();
    assert_eq!(err, "jwt.maxTokenBytes: must be greater than 0");
    // The duplicate-kid error comes after the secret is read.
    let mut dup = config_with(&json!({ "kFromEnv": VAR }));
    dup["jwt"]["jwks"]["keys"][6]["kid"] = json!("hs");
    let err = compile(&dup, &[(VAR, SECRET)]).unwrap_err();
    assert_eq!(err, "jwt.jwks.keys[6].kid: duplicate kid");
}
