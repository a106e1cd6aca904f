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
        req = req
            .header("Content-Type", "application/octet-stream")
            .header("Inference-Header-Content-Length", &n.to_string());
    } else {
        req = req.header("Content-Type", "application/json");
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

#[test]
fn a_body_that_is_only_validated_reads_no_clock_and_one_routed_by_its_model_does() {
    let mut cfg = base_config();
    cfg["routing"] = json!({"bodyModel": {"paths": ["/openai/v1/chat/completions"]}});
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let need = |path: &str| {
        let req = Req::post(path).bearer(&token("alice", "models:iris"));
        match req.headers_decision(&p, at(NOW), &store) {
            HeadersDecision::NeedBody(need) => need.pending,
            other => panic!("{path} must buffer the body, got {other:?}"),
        }
    };
    let predict = need("/v1/models/iris:predict");
    assert!(!predict.reads_clock());
    // The filter then hands it the headers' time, or none at all: the decision is the same.
    for when in [at(NOW), std::time::SystemTime::UNIX_EPOCH] {
        assert!(matches!(
            p.on_request_body(&predict, IRIS_BODY, when, &store),
            BodyDecision::Continue(_)
        ));
    }
    assert!(need("/openai/v1/chat/completions").reads_clock());
}

/// The header decision for a body request to `path` with these headers.
fn framing(path: &str, headers: &[(&str, &str)]) -> Result<Vec<(String, String)>, (u16, String)> {
    let p = policies(&base_config());
    let mut req = Req::post(path).bearer(&token("alice", "models:iris"));
    for (name, value) in headers {
        req = req.header(name, value);
    }
    match req.headers_decision(&p, at(NOW), &MemoryStore::new()) {
        HeadersDecision::NeedBody(need) => Ok(need
            .headers
            .set
            .iter()
            .filter(|(name, _)| {
                ["content-type", "inference-header-content-length"].contains(&&**name)
            })
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()),
        HeadersDecision::Reply(r) => Err((r.status, r.body)),
        HeadersDecision::Continue(_) => panic!("a body request was forwarded without its body"),
    }
}

#[test]
fn the_content_type_is_pinned_to_the_one_kserve_parses_before_the_body_is_read() {
    let predict = "/v1/models/iris:predict";
    assert_eq!(
        framing(
            predict,
            &[("content-type", "application/json; charset=UTF-8")]
        ),
        Ok(vec![(
            "content-type".to_owned(),
            "application/json".to_owned()
        )])
    );
    assert_eq!(framing(predict, &[]), Ok(vec![]));
    assert_eq!(
        framing(predict, &[("content-type", "text/plain")]),
        Err((
            415,
            json!({"error": r#"content-type: "text/plain" is not read as JSON by the model server; send application/json"#})
                .to_string()
        ))
    );
    let binary_event = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-source", "s"),
        ("ce-type", "t"),
        ("ce-id", "1"),
    ];
    assert_eq!(
        framing("/v1/models/iris:explain", &binary_event).map_err(|(status, _)| status),
        Err(400)
    );
    let infer = "/v2/models/tensor-model/infer";
    assert_eq!(
        framing(
            infer,
            &[("content-type", "application/json; charset=utf-8")]
        ),
        Ok(vec![])
    );
    assert_eq!(framing(infer, &[]).map_err(|(status, _)| status), Err(415));
    assert_eq!(
        framing(infer, &[("inference-header-content-length", "10")]),
        Ok(vec![(
            "inference-header-content-length".to_owned(),
            "10".to_owned()
        )])
    );
}

#[test]
fn a_structured_cloudevent_is_refused_unless_unwrapping_is_configured() {
    let event = br#"{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "time": "2020-01-01T00:00:00Z", "data": {"instances": [[1, 2, 3]]}, "instances": [[1, 2, 3, 4]]}"#;
    assert_eq!(predict(event).map_err(|(status, _)| status), Err(400));
    let mut config = base_config();
    config["validation"]["cloudEvents"] = json!("unwrap");
    let p = policies(&config);
    let reply = Req::post("/v1/models/iris:predict")
        .bearer(&token("alice", "models:iris"))
        .send(&p, event, at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(
        (reply.status, reply.body),
        (
            400,
            json!({"error": "data.instances[0]: expected 4 features, got 3"}).to_string()
        )
    );
}

/// A model served with KServe's ART explainer (`validation.explain: art`): `:explain` takes
/// `[inputs, labels]`, as the explainer reads them; `:predict` keeps the row rules.
#[test]
fn art_explain_bodies_are_inputs_and_labels() {
    let mut config = base_config();
    config["models"]["sklearn-iris"]["validation"] = json!({"featureCount": 4, "explain": "art"});
    let p = policies(&config);
    let send = |path: &str, body: &[u8]| {
        Req::post(path)
            .bearer(&token("alice", "models:iris"))
            .header("Content-Type", "application/json")
            .send(&p, body, at(NOW), &MemoryStore::new())
            .map(|_| ())
            .map_err(|r| (r.status, r.body))
    };
    let explain = "/v1/models/iris:explain";
    assert_eq!(
        send(
            explain,
            br#"{"instances": [[[[[1], [2]], [[3], [4]]]], [0]]}"#
        ),
        Ok(())
    );
    // The guide's tabular body is a predict body: the explainer cannot read it.
    assert_eq!(
        send(explain, IRIS_BODY),
        bad("instances: the ART explainer takes [inputs, labels], got 1 entries")
    );
    assert_eq!(
        send(explain, br#"{"instances": [[[1, 2, 3]], [0]]}"#),
        bad("instances[0][0]: expected 4 values, got 3")
    );
    // Predict on the same model is unchanged: rows of 4, and the ART shape is refused.
    assert_eq!(send("/v1/models/iris:predict", IRIS_BODY), Ok(()));
    assert!(
        send(
            "/v1/models/iris:predict",
            br#"{"instances": [[[[[1], [2]], [[3], [4]]]], [0]]}"#
        )
        .is_err()
    );
}
