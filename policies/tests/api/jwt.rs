//! Authentication: every algorithm, every attack token, token sources, forwarding, caching.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use modelgate_policies::{MemoryStore, Outcome};
use serde_json::{Value, json};

use crate::support::{
    IRIS_BODY, NOW, Req, at, base_config, claims, ed25519, hs, mint, p256, p384, policies,
    reply_header, rsa, rsa2, set_header, token,
};

const PREDICT: &str = "/v1/models/sklearn-iris:predict";
const SCOPE: &str = "models:iris";

/// Send a predict with `token`; `Ok(())` when forwarded, else the 401 `WWW-Authenticate`.
fn check_token(token: &str) -> Result<(), String> {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    match Req::post(PREDICT)
        .bearer(token)
        .send(&p, IRIS_BODY, at(NOW), &store)
    {
        Ok(c) => {
            assert_eq!(c.verdict.outcome, Outcome::Allowed);
            Ok(())
        }
        Err(reply) => {
            assert_eq!(reply.status, 401, "{}", reply.body);
            assert_eq!(reply.verdict.outcome, Outcome::Unauthenticated);
            Err(reply_header(&reply, "www-authenticate").unwrap().to_owned())
        }
    }
}

fn invalid(description: &str) -> Result<(), String> {
    Err(format!(
        "Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"{description}\""
    ))
}

#[test]
fn accepts_every_supported_algorithm() {
    let c = claims("alice", SCOPE);
    let cases = [
        (Algorithm::RS256, "rsa", rsa()),
        (Algorithm::RS384, "rsa", rsa()),
        (Algorithm::RS512, "rsa", rsa()),
        (Algorithm::PS256, "rsa", rsa()),
        (Algorithm::PS384, "rsa", rsa()),
        (Algorithm::PS512, "rsa", rsa()),
        (Algorithm::RS256, "rsa-rs256", rsa2()),
        (Algorithm::ES256, "p256", p256()),
        (Algorithm::ES384, "p384", p384()),
        (Algorithm::EdDSA, "ed", ed25519()),
        (Algorithm::HS256, "hs", hs()),
        (Algorithm::HS384, "hs", hs()),
        (Algorithm::HS512, "hs", hs()),
    ];
    for (alg, kid, key) in cases {
        assert_eq!(
            check_token(&mint(alg, Some(kid), &key, &c)),
            Ok(()),
            "{alg:?} with {kid}"
        );
    }
}

/// A token with a hand-written header and an arbitrary signature.
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
#[expect(clippy::too_many_lines, reason = "a data table, one case per line")]
fn rejects_attack_tokens() {
    let c = claims("mallory", SCOPE);
    let good = token("mallory", SCOPE);
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();

    // HS256 "signed" with the RSA public key's JWK as the HMAC secret: algorithm confusion.
    let rsa_public = crate::support::jwks()["keys"][0].to_string();
    let confused = mint(
        Algorithm::HS256,
        Some("rsa"),
        &jsonwebtoken::EncodingKey::from_secret(rsa_public.as_bytes()),
        &c,
    );
    let mut tampered_claims = c.clone();
    tampered_claims["scope"] = json!("models:iris models:wine admin");
    let tampered = format!(
        "{head}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string())
    );

    let cases: Vec<(&str, String, Result<(), String>)> = vec![
        (
            "alg none",
            forged(&json!({"alg": "none", "kid": "rsa"}), &c, b""),
            invalid("unsigned tokens are not accepted"),
        ),
        (
            "alg None",
            forged(&json!({"alg": "None"}), &c, b""),
            invalid("unsigned tokens are not accepted"),
        ),
        (
            "hs with an rsa key",
            confused,
            invalid("algorithm not allowed for this key"),
        ),
        (
            "es256 on an rsa key",
            mint(Algorithm::ES256, Some("rsa"), &p256(), &c),
            invalid("algorithm not allowed for this key"),
        ),
        (
            "ps256 on an rs256-only key",
            mint(Algorithm::PS256, Some("rsa-rs256"), &rsa2(), &c),
            invalid("algorithm not allowed for this key"),
        ),
        (
            "unknown kid",
            mint(Algorithm::RS256, Some("nope"), &rsa(), &c),
            invalid("unknown key id"),
        ),
        (
            "no kid with several keys",
            mint(Algorithm::RS256, None, &rsa(), &c),
            invalid("token has no key id"),
        ),
        (
            "signed by another key",
            mint(Algorithm::RS256, Some("rsa"), &rsa2(), &c),
            invalid("invalid signature"),
        ),
        ("tampered claims", tampered, invalid("invalid signature")),
        (
            "unsupported alg",
            forged(&json!({"alg": "HS1", "kid": "hs"}), &c, b"x"),
            invalid("unsupported algorithm"),
        ),
        (
            "crit header",
            forged(
                &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"]}),
                &c,
                b"x",
            ),
            invalid("unsupported critical header parameters"),
        ),
        ("garbage", "garbage".to_owned(), invalid("malformed token")),
        ("two parts", "a.b".to_owned(), invalid("malformed token")),
        (
            "four parts",
            "a.b.c.d".to_owned(),
            invalid("malformed token"),
        ),
        (
            "header not base64",
            "!!!.e30.e30".to_owned(),
            invalid("malformed token header"),
        ),
        (
            "header not json",
            format!("{}.e30.e30", URL_SAFE_NO_PAD.encode("nope")),
            invalid("malformed token header"),
        ),
        (
            "oversized",
            mint(
                Algorithm::RS256,
                Some("rsa"),
                &rsa(),
                &json!({"pad": "x".repeat(9000)}),
            ),
            invalid("token too large"),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(check_token(&token), want, "{name}");
    }
}

#[test]
fn checks_time_issuer_and_audience_claims() {
    let with = |patch: Value| {
        let mut c = claims("alice", SCOPE);
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        mint(Algorithm::ES256, Some("p256"), &p256(), &c)
    };
    let cases = [
        (
            "expired past leeway",
            with(json!({"exp": NOW - 61})),
            invalid("token expired"),
        ),
        (
            "expired within leeway",
            with(json!({"exp": NOW - 59})),
            Ok(()),
        ),
        (
            "fractional exp",
            with(json!({"exp": 1_800_000_010.5})),
            Ok(()),
        ),
        (
            "missing exp",
            with(json!({"exp": null})),
            invalid("missing or invalid exp"),
        ),
        (
            "string exp",
            with(json!({"exp": "tomorrow"})),
            invalid("missing or invalid exp"),
        ),
        (
            "nbf in the future",
            with(json!({"nbf": NOW + 120})),
            invalid("token not yet valid"),
        ),
        ("nbf within leeway", with(json!({"nbf": NOW + 30})), Ok(())),
        (
            "wrong issuer",
            with(json!({"iss": "https://evil.test"})),
            invalid("wrong issuer"),
        ),
        (
            "missing issuer",
            with(json!({"iss": null})),
            invalid("wrong issuer"),
        ),
        (
            "wrong audience",
            with(json!({"aud": "other"})),
            invalid("wrong audience"),
        ),
        (
            "audience list",
            with(json!({"aud": ["other", "modelgate"]})),
            Ok(()),
        ),
        (
            "audience list without ours",
            with(json!({"aud": ["a", "b"]})),
            invalid("wrong audience"),
        ),
        (
            "missing audience",
            with(json!({"aud": null})),
            invalid("wrong audience"),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(check_token(&token), want, "{name}");
    }
}

#[test]
fn missing_token_gets_a_challenge_without_error_code() {
    let p = policies(&base_config());
    let reply = Req::post(PREDICT)
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply_header(&reply, "www-authenticate"),
        Some("Bearer realm=\"modelgate\"")
    );
    assert_eq!(reply.body, r#"{"error":"missing bearer token"}"#);
    // A non-Bearer scheme is no token either.
    let reply = Req::post(PREDICT)
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(
        reply_header(&reply, "www-authenticate"),
        Some("Bearer realm=\"modelgate\"")
    );
}

#[test]
fn reads_tokens_from_configured_sources_in_order() {
    let mut cfg = base_config();
    cfg["jwt"]["tokenSources"] = json!([{"header": "x-api-token"}, {"query": "access_token"}]);
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let t = token("alice", SCOPE);
    assert!(
        Req::post(PREDICT)
            .header("x-api-token", &t)
            .send(&p, IRIS_BODY, at(NOW), &store)
            .is_ok()
    );
    let by_query = Req::post(&format!("{PREDICT}?x=1&access_token={t}"));
    assert!(by_query.send(&p, IRIS_BODY, at(NOW), &store).is_ok());
    // Authorization is not a source in this config.
    let reply = Req::post(PREDICT)
        .bearer(&t)
        .send(&p, IRIS_BODY, at(NOW), &store)
        .unwrap_err();
    assert_eq!(reply.status, 401);
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let p = policies(&base_config());
    let t = token("alice", SCOPE);
    let req = Req::post(PREDICT).header("Authorization", &format!("bearer   {t}"));
    assert!(
        req.send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
            .is_ok()
    );
}

#[test]
fn forwards_claims_and_replaces_client_supplied_copies() {
    let mut cfg = base_config();
    cfg["jwt"]["stripAuthorization"] = json!(true);
    let p = policies(&cfg);
    let req = Req::post(PREDICT)
        .bearer(&token("alice", SCOPE))
        .header("x-user-id", "admin");
    let c = req
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap();
    // A set replaces the client's value; no separate removal is asked for.
    assert_eq!(set_header(&c, "x-user-id"), Some("alice"));
    assert!(!c.headers.remove.iter().any(|h| &**h == "x-user-id"));
    assert!(c.headers.remove.iter().any(|h| &**h == "authorization"));

    // A token without the claim: the client's copy is removed, nothing is set.
    let mut no_sub = claims("alice", SCOPE);
    no_sub.as_object_mut().unwrap().remove("sub");
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &no_sub);
    let req = Req::post(PREDICT).bearer(&t).header("x-user-id", "admin");
    let c = req
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap();
    assert_eq!(set_header(&c, "x-user-id"), None);
    assert!(c.headers.remove.iter().any(|h| &**h == "x-user-id"));
}

#[test]
fn cached_tokens_stop_working_at_expiry() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let mut c = claims("alice", SCOPE);
    c["exp"] = json!(NOW + 10);
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
    let get = Req::get("/v1/models/sklearn-iris").bearer(&t);
    assert!(get.send(&p, b"", at(NOW), &store).is_ok());
    // Cached now; still valid within the leeway (60 s) past exp...
    assert!(get.send(&p, b"", at(NOW + 70), &store).is_ok());
    // ...and refused after it, from the cache as from a fresh verification.
    let reply = get.send(&p, b"", at(NOW + 71), &store).unwrap_err();
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("token expired"), "{}", reply.body);
}

#[test]
fn a_cached_token_is_checked_again_when_reused_before_nbf() {
    // A token refused for nbf is not cached: the same token is accepted once nbf passes.
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let mut c = claims("alice", SCOPE);
    c["nbf"] = json!(NOW + 100);
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
    let get = Req::get("/v1/models/sklearn-iris").bearer(&t);
    assert_eq!(get.send(&p, b"", at(NOW), &store).unwrap_err().status, 401);
    assert!(get.send(&p, b"", at(NOW + 100), &store).is_ok());
}

#[test]
fn authentication_is_off_without_jwt_config() {
    let cfg = json!({"version": 1, "models": {"m": {}}});
    let p = policies(&cfg);
    let c = Req::get("/v1/models/m")
        .send(&p, b"", at(NOW), &MemoryStore::new())
        .unwrap();
    assert_eq!(set_header(&c, "x-gateway-model-name"), Some("m"));
}

/// `maxTokenBytes` is the largest token accepted: a token of exactly that size passes, one byte
/// over is refused before it is parsed.
#[test]
fn a_token_of_exactly_max_token_bytes_is_accepted() {
    let t = token("alice", SCOPE);
    for (max, accepted) in [(t.len(), true), (t.len() - 1, false)] {
        let mut cfg = base_config();
        cfg["jwt"]["maxTokenBytes"] = json!(max);
        let p = policies(&cfg);
        let result = Req::get("/v1/models/sklearn-iris").bearer(&t).send(
            &p,
            b"",
            at(NOW),
            &MemoryStore::new(),
        );
        match result {
            Ok(_) => assert!(accepted, "maxTokenBytes {max}: accepted"),
            Err(reply) => {
                assert!(!accepted, "maxTokenBytes {max}: {}", reply.body);
                assert!(reply.body.contains("token too large"), "{}", reply.body);
            }
        }
    }
}

/// A token first seen at exactly `exp` + leeway is still valid (the leeway is inclusive, as for
/// a cached token), and one second later it is expired.
#[test]
fn a_token_first_seen_at_exp_plus_leeway_is_still_valid() {
    let mut c = claims("alice", SCOPE);
    c["exp"] = json!(NOW + 10);
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
    let get = Req::get("/v1/models/sklearn-iris").bearer(&t);
    // A fresh policy set each time: nothing cached, every check is a full verification.
    assert!(
        get.send(
            &policies(&base_config()),
            b"",
            at(NOW + 70),
            &MemoryStore::new()
        )
        .is_ok()
    );
    let reply = get
        .send(
            &policies(&base_config()),
            b"",
            at(NOW + 71),
            &MemoryStore::new(),
        )
        .unwrap_err();
    assert!(reply.body.contains("token expired"), "{}", reply.body);
}

/// `nbf` is reached at `nbf` - leeway, inclusive: a token whose nbf is exactly leeway (60 s)
/// ahead is valid now, one a second further ahead is not.
#[test]
fn nbf_exactly_a_leeway_ahead_is_valid() {
    for (nbf, valid) in [(NOW + 60, true), (NOW + 61, false)] {
        let mut c = claims("alice", SCOPE);
        c["nbf"] = json!(nbf);
        let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
        let result = Req::get("/v1/models/sklearn-iris").bearer(&t).send(
            &policies(&base_config()),
            b"",
            at(NOW),
            &MemoryStore::new(),
        );
        assert_eq!(result.is_ok(), valid, "nbf {nbf}");
    }
}

/// With a single key configured, a token without `kid` is verified with that key (and with
/// several, it names none: `token has no key id`).
#[test]
fn a_token_without_kid_uses_the_only_key() {
    let mut cfg = base_config();
    let only = cfg["jwt"]["jwks"]["keys"][0].clone();
    cfg["jwt"]["jwks"] = json!({ "keys": [only] });
    let t = mint(Algorithm::RS256, None, &rsa(), &claims("alice", SCOPE));
    let get = Req::get("/v1/models/sklearn-iris").bearer(&t);
    assert!(
        get.send(&policies(&cfg), b"", at(NOW), &MemoryStore::new())
            .is_ok()
    );
    let reply = get
        .send(&policies(&base_config()), b"", at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert!(reply.body.contains("token has no key id"), "{}", reply.body);
}

/// Numeric and boolean claims are forwarded as their JSON text, lists of scalars comma-joined.
#[test]
fn numeric_boolean_and_list_claims_are_forwarded_as_text() {
    let mut cfg = base_config();
    cfg["jwt"]["forwardClaims"] =
        json!({ "uid": "x-uid", "admin": "x-admin", "groups": "x-groups" });
    let mut c = claims("alice", SCOPE);
    c["uid"] = json!(7);
    c["admin"] = json!(true);
    c["groups"] = json!(["a", 2, false]);
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
    let forwarded = Req::get("/v1/models/sklearn-iris")
        .bearer(&t)
        .send(&policies(&cfg), b"", at(NOW), &MemoryStore::new())
        .unwrap();
    assert_eq!(set_header(&forwarded, "x-uid"), Some("7"));
    assert_eq!(set_header(&forwarded, "x-admin"), Some("true"));
    assert_eq!(set_header(&forwarded, "x-groups"), Some("a,2,false"));
}

/// A claim with a control character (below 0x20, or DEL) is not forwarded, so a claim cannot
/// inject a header line; a space is ordinary text and is forwarded.
#[test]
fn claims_with_control_characters_are_not_forwarded() {
    for (sub, forwarded) in [
        ("a b", Some("a b")),
        ("a\u{1}b", None),
        ("a\tb", None),
        ("a\u{7f}b", None),
    ] {
        let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &claims(sub, SCOPE));
        let c = Req::get("/v1/models/sklearn-iris")
            .bearer(&t)
            .send(&policies(&base_config()), b"", at(NOW), &MemoryStore::new())
            .unwrap();
        assert_eq!(set_header(&c, "x-user-id"), forwarded, "{sub:?}");
    }
}
