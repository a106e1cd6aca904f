//! Inputs the fuzz targets (fuzz/, see fuzz/README.md) found the policies getting wrong, each a
//! named case that keeps the fix, checked here without nightly or libFuzzer. A case names the
//! target and the oracle that flagged it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_policies::{
    BodyDecision, HeadersDecision, KnownClient, MemoryStore, Policies, RequestView,
};

/// The fuzz targets' time, and their open fixture (fuzz/src/lib.rs `OPEN_CONFIG`, trimmed to
/// what these cases need).
const NOW_SECS: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

const OPEN_CONFIG: &str = r#"{
  "version": 1,
  "models": {
    "sklearn-iris": {
      "aliases": ["iris"],
      "protocols": ["v1", "v2"],
      "validation": {"featureCount": 4, "maxInstances": 64}
    }
  }
}"#;

/// The status a POST with `body` gets (200 when forwarded), and the reply's body.
fn post(path: &str, body: &[u8]) -> (u16, String) {
    post_with(OPEN_CONFIG, path, body)
}

fn post_with(config: &str, path: &str, body: &[u8]) -> (u16, String) {
    let policies = Policies::from_json(config.as_bytes()).expect("fixture config");
    let store = MemoryStore::new();
    let headers = vec![("content-type", "application/json")];
    let client = KnownClient {
        headers: &headers,
        address: Some("127.0.0.1:40000"),
    };
    let view = RequestView {
        method: "POST",
        path,
        headers: &client,
    };
    match policies.on_request_headers(&view, now(), &store) {
        HeadersDecision::NeedBody(need) => {
            match policies.on_request_body(&need.pending, body, now(), &store) {
                BodyDecision::Continue(_) => (200, String::new()),
                BodyDecision::Reply(reply) => (reply.status, reply.body),
            }
        }
        HeadersDecision::Continue(_) => (200, String::new()),
        HeadersDecision::Reply(reply) => (reply.status, reply.body),
    }
}

fn infer(body: &str) -> (u16, String) {
    post("/v2/models/sklearn-iris/infer", body.as_bytes())
}

/// `v2_body`, reference `v2_accepts`: an input is a JSON object (Open Inference Protocol); serde's
/// derive also reads a list as a struct, field by field in declaration order.
#[test]
fn v2_input_given_as_a_list_is_refused() {
    // The fixture's featureCount makes a V2 input [N, 4].
    let (status, _) = infer(
        r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}"#,
    );
    assert_eq!(status, 200);
    let (status, error) = infer(r#"{"inputs": [["x", [1], "FP32", [1.0], null]]}"#);
    assert_eq!(status, 400);
    assert!(
        error.contains("inputs[0]: invalid type: sequence, expected an object"),
        "{error}"
    );
}

/// `v2_body`, reference `v2_accepts`: `parameters` is an object; a list was read as
/// `{"binary_data_size": ...}` by position.
#[test]
fn v2_parameters_given_as_a_list_are_refused() {
    let (status, error) = infer(
        r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": [null]}]}"#,
    );
    assert_eq!(status, 400);
    assert!(
        error.contains("inputs[0].parameters: invalid type: sequence, expected an object"),
        "{error}"
    );
}

/// `body_model`, reference `body_model`: a body with invalid UTF-8 in a field the filter skips
/// (here a key inside `messages`) is not JSON; it got the unknown model's 404 instead of 400,
/// and for a known model it was forwarded.
#[test]
fn invalid_utf8_in_a_skipped_field_is_400() {
    const BODY_MODEL_CONFIG: &str = r#"{
      "version": 1,
      "routing": {"bodyModel": {"field": "model", "paths": ["/openai/v1/chat/completions"]}},
      "models": {"sklearn-iris": {"aliases": ["iris"], "protocols": ["v1", "v2"]}}
    }"#;
    let skipped_key = b"{\"model\":\"iris\",\"messages\":[{\"\xff\xffent\":\"hi\"}]}";
    let (status, error) = post_with(
        BODY_MODEL_CONFIG,
        "/openai/v1/chat/completions",
        skipped_key,
    );
    assert_eq!(status, 400);
    assert!(error.contains("invalid unicode code point"), "{error}");

    // V1 and V2 bodies with the same fault, in fields their validators do not read (`v1_body`
    // and `v2_body`: the V2 one was forwarded).
    let v1 = b"{\"instances\": [[5.1, 3.5, 1.4, 0.2]], \"note\": \"\xc3(\"}";
    let v2 = b"{\"inputs\": [{\"name\": \"x\", \"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 4], \"tag\": \"\xe2\x82\"}]}";
    for (path, body, why) in [
        (
            "/v1/models/iris:predict",
            &v1[..],
            "invalid unicode code point",
        ),
        ("/v2/models/iris/infer", &v2[..], "not UTF-8 at byte 93"),
    ] {
        let (status, error) = post(path, body);
        assert_eq!(status, 400, "{path}: {error}");
        assert!(error.contains(why), "{path}: {error}");
    }
}

/// `jwt`, signed material: a token signed with the configured key whose header holds invalid
/// UTF-8 in a member the filter does not read was accepted; a JOSE header is UTF-8 JSON.
#[test]
fn a_signed_token_with_invalid_utf8_in_its_header_is_refused() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"modelgate-fuzz-secret-0123456789abcdef";
    let config = format!(
        r#"{{"version": 1,
            "jwt": {{"issuer": "https://issuer.fuzz", "audiences": ["modelgate"],
                     "jwks": {{"keys": [{{"kty": "oct", "kid": "fuzz", "alg": "HS256", "k": "{}"}}]}}}},
            "models": {{"sklearn-iris": {{}}}}}}"#,
        URL_SAFE_NO_PAD.encode(SECRET)
    );
    let policies = Policies::from_json(config.as_bytes()).expect("fixture config");
    let claims =
        br#"{"iss":"https://issuer.fuzz","aud":"modelgate","sub":"alice","exp":1900000615}"#;
    let status = |header: &[u8]| {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .expect("HS256");
        let authorization = format!("Bearer {message}.{signature}");
        let headers = vec![("authorization", authorization.as_str())];
        let client = KnownClient {
            headers: &headers,
            address: None,
        };
        let view = RequestView {
            method: "GET",
            path: "/v1/models/sklearn-iris",
            headers: &client,
        };
        match policies.on_request_headers(&view, now(), &MemoryStore::new()) {
            HeadersDecision::Continue(_) => (200, String::new()),
            HeadersDecision::Reply(reply) => (reply.status, reply.body),
            HeadersDecision::NeedBody(_) => (0, String::new()),
        }
    };
    assert_eq!(
        status(br#"{"alg":"HS256","kid":"fuzz","typ":"JWT"}"#).0,
        200
    );
    let (code, body) = status(b"{\"alg\":\"HS256\",\"kid\":\"fuzz\",\"typ[\":\"JW\xffT\"}");
    assert_eq!(code, 401);
    assert!(body.contains("malformed token header"), "{body}");
}
