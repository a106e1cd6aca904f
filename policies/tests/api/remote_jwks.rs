//! Remote JWKS: the keys in force before, between and after fetches, as the adapter drives
//! them (`jwks_fetch_due` on its timer, `jwks_fetched`/`jwks_fetch_failed` with the answer).

use jsonwebtoken::Algorithm;
use modelgate_policies::{JwksFetchError, MemoryStore, Outcome, Policies};
use serde_json::{Value, json};

use crate::support::{
    IRIS_BODY, NOW, Req, at, base_config, claims, jwks, mint, p256, policies, rsa, rsa2,
};

const PREDICT: &str = "/v1/models/sklearn-iris:predict";
const SCOPE: &str = "models:iris";

/// The test JWKS's keys named by kid.
fn jwk(kid: &str) -> Value {
    jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn jwks_of(kids: &[&str]) -> Vec<u8> {
    let keys: Vec<Value> = kids.iter().map(|k| jwk(k)).collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

fn remote_config(remote: Value, inline: Option<Value>) -> Value {
    let mut config = base_config();
    let jwt = config["jwt"].as_object_mut().unwrap();
    match inline {
        Some(keys) => jwt.insert("jwks".into(), keys),
        None => jwt.remove("jwks"),
    };
    jwt.insert("remoteJwks".into(), remote);
    config
}

fn remote() -> Value {
    json!({
        "cluster": "idp",
        "authority": "idp.example.com",
        "path": "/.well-known/jwks.json",
        "refreshIntervalSeconds": 300,
        "minRefreshIntervalSeconds": 5
    })
}

/// A token signed by the test key named `kid`.
fn token_for(kid: &str) -> String {
    let c = claims("alice", SCOPE);
    match kid {
        "rsa" => mint(Algorithm::RS256, Some("rsa"), &rsa(), &c),
        "rsa-rs256" => mint(Algorithm::RS256, Some("rsa-rs256"), &rsa2(), &c),
        "p256" => mint(Algorithm::ES256, Some("p256"), &p256(), &c),
        other => panic!("no test key {other}"),
    }
}

/// Send a predict with the token of `kid` at `now`: the status and the error text.
fn send(p: &Policies, kid: &str, now: u64) -> (u16, String) {
    match Req::post(PREDICT).bearer(&token_for(kid)).send(
        p,
        IRIS_BODY,
        at(now),
        &MemoryStore::new(),
    ) {
        Ok(c) => {
            assert_eq!(c.verdict.outcome, Outcome::Allowed);
            (200, String::new())
        }
        Err(reply) => (reply.status, reply.body),
    }
}

fn config_error(config: &Value) -> String {
    Policies::from_json(config.to_string().as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn config_errors_name_the_field() {
    let mut neither = base_config();
    neither["jwt"].as_object_mut().unwrap().remove("jwks");
    assert_eq!(
        config_error(&neither),
        "jwt: one of jwks and remoteJwks is required"
    );
    let mut inline_without_keys = remote();
    inline_without_keys["untilFetched"] = json!("inlineKeys");
    assert!(
        config_error(&remote_config(inline_without_keys, None))
            .starts_with("jwt.remoteJwks.untilFetched: ")
    );
    assert!(config_error(&remote_config(remote(), Some(jwks()))).starts_with("jwt.jwks: "));
    for (field, value, path) in [
        ("cluster", json!(""), "jwt.remoteJwks.cluster"),
        ("path", json!("jwks.json"), "jwt.remoteJwks.path"),
        ("authority", json!("a b"), "jwt.remoteJwks.authority"),
        ("timeoutMs", json!(0), "jwt.remoteJwks.timeoutMs"),
        (
            "refreshIntervalSeconds",
            json!(0),
            "jwt.remoteJwks.refreshIntervalSeconds",
        ),
        (
            "minRefreshIntervalSeconds",
            json!(301),
            "jwt.remoteJwks.minRefreshIntervalSeconds",
        ),
        (
            "untilFetched",
            json!("never"),
            "jwt.remoteJwks.untilFetched",
        ),
        ("url", json!("https://idp"), "jwt.remoteJwks.url"),
    ] {
        let mut r = remote();
        r[field] = value;
        let error = config_error(&remote_config(r, None));
        assert!(error.starts_with(&format!("{path}: ")), "{field}: {error}");
    }
    let mut hmac_only = remote_config(remote(), None);
    hmac_only["jwt"]["algorithms"] = json!(["HS256"]);
    assert!(config_error(&hmac_only).starts_with("jwt.algorithms: "));
}

#[test]
fn the_fetch_request_is_a_get_to_the_configured_cluster() {
    let p = policies(&remote_config(remote(), None));
    let fetch = p.jwks_fetch().unwrap();
    assert_eq!(fetch.cluster, "idp");
    assert_eq!(fetch.headers[0], (":method", "GET"));
    assert_eq!(fetch.headers[1], (":path", "/.well-known/jwks.json"));
    assert_eq!(fetch.headers[2], (":authority", "idp.example.com"));
    assert_eq!(fetch.timeout.as_millis(), 5000, "the default timeout");
    assert!(policies(&base_config()).jwks_fetch().is_none());
    assert!(!policies(&base_config()).jwks_fetch_due(at(NOW)));
}

#[test]
fn until_the_first_fetch_requests_get_503_then_the_fetched_keys_verify() {
    let p = policies(&remote_config(remote(), None));
    let (status, body) = send(&p, "rsa", NOW);
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("JWKS has not been fetched")
    );
    // A missing token is still a 401: no key is needed to see there is none.
    let missing = Req::post(PREDICT).send(&p, IRIS_BODY, at(NOW), &MemoryStore::new());
    assert_eq!(missing.unwrap_err().status, 401);

    assert!(p.jwks_fetch_due(at(NOW)));
    assert!(!p.jwks_fetch_due(at(NOW)), "one fetch at a time");
    let update = p.jwks_fetched(200, &jwks_of(&["rsa", "p256"])).unwrap();
    assert_eq!(
        update.kids,
        [Some("rsa".to_owned()), Some("p256".to_owned())]
    );
    assert!(update.changed);
    assert_eq!(send(&p, "rsa", NOW).0, 200);
    assert_eq!(send(&p, "p256", NOW).0, 200);
}

#[test]
fn inline_keys_serve_until_the_first_fetch_replaces_them() {
    let mut r = remote();
    r["untilFetched"] = json!("inlineKeys");
    let inline = json!({ "keys": [jwk("rsa")] });
    let p = policies(&remote_config(r, Some(inline)));
    assert_eq!(send(&p, "rsa", NOW).0, 200);
    assert!(p.jwks_fetch_due(at(NOW)));
    p.jwks_fetched(200, &jwks_of(&["p256"])).unwrap();
    assert_eq!(send(&p, "p256", NOW).0, 200);
    let (status, body) = send(&p, "rsa", NOW);
    assert_eq!(status, 401, "the inline key is gone, its cached token too");
    assert!(body.contains("unknown key id"), "{body}");
}

#[test]
fn a_provider_that_fails_or_answers_garbage_leaves_the_last_good_keys() {
    let p = policies(&remote_config(remote(), None));
    assert!(p.jwks_fetch_due(at(NOW)));
    p.jwks_fetched(200, &jwks_of(&["rsa"])).unwrap();
    let mut now = NOW + 300;
    let answers: [(u16, &[u8]); 7] = [
        (503, b"upstream connect error"),
        (200, b"<html>maintenance</html>"),
        (200, b"{\"keys\": \"none\"}"),
        (200, b"{\"keys\": []}"),
        (200, b"{\"keys\": [\"not a key\"]}"),
        (200, b"{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\"}]}"),
        (404, b""),
    ];
    for (status, body) in answers {
        assert!(p.jwks_fetch_due(at(now)), "due at {now}");
        p.jwks_fetched(status, body).unwrap_err();
        assert_eq!(send(&p, "rsa", now).0, 200, "after a {status} answer");
        // A failure is retried after minRefreshIntervalSeconds, not refreshIntervalSeconds.
        assert!(!p.jwks_fetch_due(at(now + 4)));
        now += 5;
    }
    assert!(p.jwks_fetch_due(at(now)));
    p.jwks_fetch_failed();
    assert_eq!(send(&p, "rsa", now).0, 200, "after no answer at all");
}

#[test]
fn fetch_errors_say_what_was_wrong() {
    let p = policies(&remote_config(remote(), None));
    assert_eq!(
        p.jwks_fetched(500, b"").unwrap_err(),
        JwksFetchError::Status { status: 500 }
    );
    assert!(matches!(
        p.jwks_fetched(200, b"not json").unwrap_err(),
        JwksFetchError::NotJwks { .. }
    ));
    let huge = vec![b' '; 300 * 1024];
    assert!(matches!(
        p.jwks_fetched(200, &huge).unwrap_err(),
        JwksFetchError::TooLarge { size } if size == huge.len()
    ));
}

#[test]
fn a_token_with_a_new_kid_brings_the_refresh_forward() {
    let p = policies(&remote_config(remote(), None));
    assert!(p.jwks_fetch_due(at(NOW)));
    p.jwks_fetched(200, &jwks_of(&["rsa"])).unwrap();
    assert!(
        !p.jwks_fetch_due(at(NOW + 10)),
        "not due before refreshIntervalSeconds"
    );

    // The provider starts signing with p256: the first such token is refused...
    let (status, body) = send(&p, "p256", NOW + 10);
    assert_eq!(status, 401);
    assert!(body.contains("unknown key id"), "{body}");
    // ...and makes a refresh due (minRefreshIntervalSeconds after the last one).
    assert!(p.jwks_fetch_due(at(NOW + 10)));
    p.jwks_fetched(200, &jwks_of(&["rsa", "p256"])).unwrap();
    assert_eq!(send(&p, "p256", NOW + 10).0, 200);
    assert_eq!(
        send(&p, "rsa", NOW + 10).0,
        200,
        "a key still published keeps working"
    );

    // A forged kid cannot make the filter fetch more often than minRefreshIntervalSeconds.
    let forged = mint(
        Algorithm::RS256,
        Some("nope"),
        &rsa(),
        &claims("mallory", SCOPE),
    );
    let reply = Req::post(PREDICT)
        .bearer(&forged)
        .send(&p, IRIS_BODY, at(NOW + 11), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(reply.status, 401);
    assert!(!p.jwks_fetch_due(at(NOW + 14)));
    assert!(p.jwks_fetch_due(at(NOW + 15)));
}

#[test]
fn a_key_dropped_from_the_jwks_stops_verifying_even_cached_tokens() {
    let p = policies(&remote_config(remote(), None));
    assert!(p.jwks_fetch_due(at(NOW)));
    p.jwks_fetched(200, &jwks_of(&["rsa", "p256"])).unwrap();
    assert_eq!(send(&p, "rsa", NOW).0, 200);
    assert!(p.jwks_fetch_due(at(NOW + 300)));
    let same = p.jwks_fetched(200, &jwks_of(&["rsa", "p256"])).unwrap();
    assert!(!same.changed, "an unchanged JWKS keeps the token cache");
    assert!(p.jwks_fetch_due(at(NOW + 600)));
    let update = p.jwks_fetched(200, &jwks_of(&["p256"])).unwrap();
    assert!(update.changed);
    assert_eq!(send(&p, "rsa", NOW + 600).0, 401);
    assert_eq!(send(&p, "p256", NOW + 600).0, 200);
}

#[test]
fn only_public_signing_keys_are_taken_from_a_remote_jwks() {
    let p = policies(&remote_config(remote(), None));
    let mut with_extras = jwk("rsa");
    // Members a provider adds are ignored (RFC 7517 section 4).
    with_extras["x5c"] = json!(["MIIC..."]);
    with_extras["issuer"] = json!("https://idp.example.com");
    let mut private = jwk("p256");
    private["d"] = json!("c2VjcmV0");
    let mut encryption = jwk("rsa-rs256");
    encryption["use"] = json!("enc");
    let document = json!({ "keys": [
        with_extras,
        private,
        encryption,
        { "kty": "oct", "kid": "hs", "k": "YW4taG1hYy1zZWNyZXQtb2YtYXQtbGVhc3QtMzItYnl0ZXMh" },
        { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
        jwk("rsa"),
    ]});
    let update = p
        .jwks_fetched(200, document.to_string().as_bytes())
        .unwrap();
    assert_eq!(update.kids, [Some("rsa".to_owned())]);
    let skipped = update.skipped.join("\n");
    for reason in [
        "keys[1]: carries the private member \"d\"",
        "keys[2].use: key use \"enc\" is not \"sig\"",
        "keys[3]: symmetric keys are never taken from a remote JWKS",
        "keys[4].crv: unsupported curve \"P-521\"",
        "keys[5]: duplicate kid",
    ] {
        assert!(skipped.contains(reason), "{reason} not in\n{skipped}");
    }
    assert_eq!(send(&p, "rsa", NOW).0, 200);
    assert_eq!(send(&p, "p256", NOW).0, 401);
}
