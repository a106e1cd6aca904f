//! JWT authentication against the claims and keys this target generates itself.
//!
//! Three halves, on every input:
//! - the raw bytes as an `Authorization` value: material not signed with the configured key is
//!   never let through;
//! - a token built from the input's first bytes (the key, algorithm, kid, issuer, audience,
//!   exp/nbf times around the leeway, scope, each right or wrong): the decision is exactly the
//!   one the generated claims call for (forwarded, 401 or 403), so an expired, wrong-audience,
//!   wrong-issuer or wrong-key token is never accepted and a good one never refused;
//! - arbitrary header and claims bytes (split at the first 0xff) signed with the right key: a
//!   token the filter lets through has, read independently, HS256, the configured kid or none,
//!   the issuer, the audience, an unexpired exp, a reached nbf and the model's scope.
#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use modelgate_fuzz::reference::Json;
use modelgate_fuzz::{
    HS256_SECRET, JWT_AUDIENCE, JWT_ISSUER, JWT_LEEWAY_SECS, headers, jwt_policies, now, sign,
    signed_token,
};
use modelgate_policies::{HeadersDecision, MemoryStore};
use serde_json::json;

const PATH: &str = "/v1/models/sklearn-iris";

fn decide(token: &str) -> HeadersDecision {
    let authorization = format!("Bearer {token}");
    headers(
        jwt_policies(),
        &MemoryStore::new(),
        "GET",
        PATH,
        &[("authorization", &authorization)],
    )
}

/// 0 for a forward, else the reply's status.
fn status(decision: &HeadersDecision) -> u16 {
    match decision {
        HeadersDecision::Continue(_) => 0,
        HeadersDecision::Reply(reply) => reply.status,
        HeadersDecision::NeedBody(_) => panic!("a GET asked for its body"),
    }
}

fn now_secs() -> i64 {
    match now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A token whose every property comes from `knobs`, and the status it must get.
fn generated(knobs: [u8; 6]) -> (String, u16) {
    let [flags, more, exp_hi, exp_lo, nbf_hi, nbf_lo] = knobs;
    let bit = |byte: u8, n: u8| byte & (1 << n) != 0;
    let now = now_secs();
    let leeway = i64::try_from(JWT_LEEWAY_SECS).unwrap_or(0);
    let exp = now + i64::from(i16::from_be_bytes([exp_hi, exp_lo]));
    let nbf = now + i64::from(i16::from_be_bytes([nbf_hi, nbf_lo]));

    let right_key = !bit(flags, 0);
    let alg = if bit(flags, 1) {
        Algorithm::HS384
    } else {
        Algorithm::HS256
    };
    let mut header = json!({"alg": format!("{alg:?}"), "typ": "JWT"});
    let kid_ok = if bit(flags, 2) {
        header["kid"] = json!("other");
        false
    } else {
        if !bit(flags, 3) {
            header["kid"] = json!("fuzz");
        }
        true // the configured kid, or none with a single key configured
    };
    let iss_ok = !bit(flags, 4);
    let aud_ok = !bit(flags, 5);
    let mut claims = json!({
        "iss": if iss_ok { JWT_ISSUER } else { "https://issuer.fuzz.evil" },
        "sub": "fuzz",
    });
    claims["aud"] = match (aud_ok, bit(flags, 6)) {
        (true, false) => json!(JWT_AUDIENCE),
        (true, true) => json!(["other", JWT_AUDIENCE]),
        (false, false) => json!("someone-else"),
        (false, true) => json!(["other", "someone-else"]),
    };
    let scoped = !bit(flags, 7);
    if scoped {
        claims["scope"] = if bit(more, 3) {
            json!(["x", "predict"])
        } else {
            json!("x predict")
        };
    }
    let exp_ok = if bit(more, 0) {
        false // missing
    } else if bit(more, 4) {
        claims["exp"] = json!(exp.to_string());
        false // a string is not a NumericDate
    } else if bit(more, 1) {
        // A fractional NumericDate counts by its whole seconds.
        claims["exp"] = json!(exp as f64 + 0.5);
        now <= exp + leeway
    } else {
        claims["exp"] = json!(exp);
        now <= exp + leeway
    };
    let nbf_ok = if bit(more, 2) {
        claims["nbf"] = json!(nbf);
        now + leeway >= nbf
    } else {
        true
    };
    let secret: &[u8] = if right_key {
        HS256_SECRET
    } else {
        b"another-secret-of-32-bytes-length!"
    };
    let token = sign(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        secret,
        alg,
    );
    let verified = right_key && alg == Algorithm::HS256 && kid_ok;
    let expected = match (verified && exp_ok && nbf_ok && iss_ok && aud_ok, scoped) {
        (false, _) => 401,
        (true, false) => 403,
        (true, true) => 0,
    };
    (token, expected)
}

/// The last value of `key` (RFC 7519 section 4: a duplicated claim is read lexically last).
fn last<'a>(doc: &'a Json, key: &str) -> Option<&'a Json> {
    match doc {
        Json::Obj(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn number(value: Option<&Json>) -> Option<f64> {
    match value? {
        Json::Int(n) => Some(*n as f64),
        Json::Float(f) => Some(*f),
        _ => None,
    }
}

fn has_string(value: Option<&Json>, wanted: &str, split: bool) -> bool {
    match value {
        Some(Json::Str(s)) if split => s.split_whitespace().any(|w| w == wanted),
        Some(Json::Str(s)) => s == wanted,
        Some(Json::Arr(items)) => items
            .iter()
            .any(|i| matches!(i, Json::Str(s) if s == wanted)),
        _ => false,
    }
}

/// What a token the filter let through must satisfy, read from its own header and claims.
fn acceptable(header: &[u8], claims: &[u8]) -> bool {
    let (Some(header), Some(claims)) = (Json::parse(header), Json::parse(claims)) else {
        return false;
    };
    let now = now_secs() as f64;
    let leeway = JWT_LEEWAY_SECS as f64;
    let alg_ok = matches!(last(&header, "alg"), Some(Json::Str(a)) if a == "HS256");
    let kid_ok = matches!(last(&header, "kid"), None | Some(Json::Null))
        || matches!(last(&header, "kid"), Some(Json::Str(k)) if k == "fuzz");
    let exp_ok = number(last(&claims, "exp")).is_some_and(|exp| exp >= now - leeway);
    let nbf_ok = match last(&claims, "nbf") {
        None => true,
        nbf => number(nbf).is_some_and(|nbf| nbf < now + leeway + 1.0),
    };
    let iss_ok = matches!(last(&claims, "iss"), Some(Json::Str(i)) if i == JWT_ISSUER);
    let aud_ok = has_string(last(&claims, "aud"), JWT_AUDIENCE, false);
    let scope_ok = has_string(last(&claims, "scope"), "predict", true)
        || has_string(last(&claims, "scp"), "predict", true);
    alg_ok && kid_ok && exp_ok && nbf_ok && iss_ok && aud_ok && scope_ok
}

fuzz_target!(|data: &[u8]| {
    // Unsigned material: whatever it is, it must not be let through.
    let raw = String::from_utf8_lossy(data);
    assert!(
        !matches!(decide(&raw), HeadersDecision::Continue(_)),
        "a token not signed with the configured key passed: {raw:?}"
    );

    // A generated token: the decision its claims and key call for, exactly.
    let mut knobs = [0u8; 6];
    for (knob, byte) in knobs.iter_mut().zip(data) {
        *knob = *byte;
    }
    let (token, expected) = generated(knobs);
    let got = status(&decide(&token));
    assert_eq!(got, expected, "generated token {token} (knobs {knobs:?})");

    // Signed material: header and claims split at the first 0xff byte.
    let (header, claims) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&br#"{"alg":"HS256","kid":"fuzz","typ":"JWT"}"#[..], data),
    };
    let token = signed_token(header, claims);
    if matches!(decide(&token), HeadersDecision::Continue(_)) {
        assert!(
            acceptable(header, claims),
            "accepted a token whose header or claims fail the rules: {:?} {:?}",
            String::from_utf8_lossy(header),
            String::from_utf8_lossy(claims)
        );
    }
});
