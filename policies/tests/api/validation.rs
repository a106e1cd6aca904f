//! Validation through the API: 400 with the place, 413 past the limit, valid bodies forwarded.

use modelgate_policies::{BodyDecision, HeadersDecision, MemoryStore, Outcome};
use serde_json::json;

use crate::support::{IRIS_BODY, NOW, Req, at, base_config, policies, token};

fn predict(body: &[u8]) -> Result<(), (u16, String)> {
    let p = policies(&base_config());
    Req::post("/v1/models/iris:predict")
        .bearer(&token("alice", "models:iris"))
        .send(&p, body, at(NOW), &MemoryStore::new())
        .map(|_| ())
        .map_err(|r| (r.status, r.body))
}

fn infer(body: &[u8], binary_len: Option<usize>) -> Result<(), (u16, String)> {
    let p = policies(&base_config());
    let mut req = Req::post("/v2/models/tensor-model/infer").bearer(&token("alice", ""));
    if let Some(n) = binary_len {
        req = req.header("Inference-Header-Content-Length", &n.to_string());
    }
    req.send(&p, body, at(NOW), &MemoryStore::new())
        .map(|_| ())
        .map_err(|r| (r.status, r.body))
}

fn bad(message: &str) -> Result<(), (u16, String)> {
    Err((400, json!({ "error": message }).to_string()))
}

#[test]
fn v1_bodies_are_checked_against_the_model_rules() {
    assert_eq!(predict(IRIS_BODY), Ok(()));
    assert_eq!(
        predict(br#"{"inputs": [[1, 2, 3, 4], [5, 6, 7, 8]]}"#),
        Ok(())
    );
    assert_eq!(
        predict(br#"{"instances": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3]]}"#),
        bad("instances[3]: expected 4 features, got 3")
    );
    assert_eq!(
        predict(br#"{"instances": []}"#),
        bad("instances: must not be empty")
    );
    assert_eq!(predict(b"{}"), bad("body: missing instances or inputs"));
    assert_eq!(
        predict(br#"{"instances": [["a","b","c","d"]]}"#),
        bad("instances[0][0]: expected a number, got a string")
    );
    assert_eq!(
        predict(b"instances=1"),
        bad("body: invalid JSON: expected value at line 1 column 1")
    );
}

#[test]
fn invalid_bodies_are_counted_for_their_model() {
    let p = policies(&base_config());
    let reply = Req::post("/v1/models/iris:predict")
        .bearer(&token("alice", "models:iris"))
        .send(&p, b"[]", at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(reply.verdict.outcome, Outcome::Invalid);
    assert_eq!(reply.verdict.model.as_deref(), Some("sklearn-iris"));
    assert_eq!(
        reply.headers,
        [("content-type", "application/json".to_owned())]
    );
}

#[test]
fn v2_bodies_are_checked_against_the_protocol() {
    let ok = br#"{"inputs": [{"name": "in", "datatype": "FP32", "shape": [1, 4], "data": [6.8, 2.8, 4.8, 1.4]}]}"#;
    assert_eq!(infer(ok, None), Ok(()));
    assert_eq!(
        infer(br#"{"inputs": []}"#, None),
        bad("inputs: must not be empty")
    );
    assert_eq!(
        infer(
            br#"{"inputs": [{"name": "in", "datatype": "INT8", "shape": [2], "data": [1, 300]}]}"#,
            None
        ),
        bad("inputs[0].data: value 300 out of range for INT8")
    );
    // Binary extension: the JSON header is validated, the tensor bytes are counted.
    let header = br#"{"inputs": [{"name": "in", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&[0u8; 16]);
    assert_eq!(infer(&body, Some(header.len())), Ok(()));
    assert_eq!(
        infer(&body, None),
        bad("body: invalid JSON: trailing characters at line 1 column 106")
    );
}

#[test]
fn bodies_past_the_limit_get_413() {
    let mut cfg = base_config();
    cfg["validation"] = json!({"maxBodyBytes": 64});
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let req = Req::post("/v1/models/iris:predict").bearer(&token("alice", "models:iris"));
    let HeadersDecision::NeedBody(need) = req.headers_decision(&p, at(NOW), &store) else {
        panic!("predict must buffer the body");
    };
    assert_eq!(need.max_bytes, 64);
    assert_eq!(need.pending.max_body_bytes(), 64);
    assert_eq!(need.pending.model().map(|m| &**m), Some("sklearn-iris"));
    let reply = p.reject_oversized_body(&need.pending);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (413, r#"{"error":"request body exceeds 64 bytes"}"#)
    );
    assert_eq!(reply.verdict.outcome, Outcome::Invalid);
    // on_request_body enforces the limit too, if handed a larger body.
    let big = vec![b' '; 65];
    assert!(
        matches!(p.on_request_body(&need.pending, &big, at(NOW), &store), BodyDecision::Reply(r) if r.status == 413)
    );
    assert!(matches!(
        p.on_request_body(&need.pending, IRIS_BODY, at(NOW), &store),
        BodyDecision::Continue(_)
    ));
}
