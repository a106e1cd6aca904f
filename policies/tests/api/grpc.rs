//! gRPC calls to KServe's `inference.GRPCInferenceService`: the model comes from the message,
//! and is authorized and rate limited as the REST endpoint the method stands for.

use modelgate_policies::{MemoryStore, Outcome};
use serde_json::json;

use crate::support::{NOW, Req, at, base_config, policies, token};

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// A unary call's body: one uncompressed gRPC message whose field 1 is `model`.
fn call(model: &str) -> Vec<u8> {
    let mut message = vec![0x0a, u8::try_from(model.len()).unwrap()];
    message.extend_from_slice(model.as_bytes());
    // model_version "1", as clients often send it.
    message.extend_from_slice(b"\x12\x011");
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    body
}

fn grpc(path: &str) -> Req {
    Req::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

#[test]
fn an_infer_call_is_authorized_for_the_model_its_message_names() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let allowed = grpc(INFER)
        .bearer(&token("alice", "models:wine"))
        .send(&p, &call("sklearn-wine"), at(NOW), &store)
        .unwrap();
    assert_eq!(allowed.verdict.model.as_deref(), Some("sklearn-wine"));
    assert_eq!(allowed.verdict.outcome, Outcome::Allowed);
    // The route was fixed by path: the message's model sets no routing header.
    assert!(!allowed.route_changed);
    assert!(allowed.headers.set.iter().all(|(_, v)| v != "sklearn-wine"));

    let denied = grpc(INFER)
        .bearer(&token("alice", "models:wine"))
        .send(&p, &call("sklearn-iris"), at(NOW), &store)
        .unwrap_err();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.verdict.outcome, Outcome::Forbidden);
    assert_eq!(denied.verdict.model.as_deref(), Some("sklearn-iris"));
}

#[test]
fn aliases_resolve_and_the_model_must_speak_v2() {
    let mut config = base_config();
    config["models"]["v1-only"] = json!({ "protocols": ["v1"] });
    let p = policies(&config);
    let store = MemoryStore::new();
    let t = token("bob", "models:iris");
    let by_alias = grpc(INFER)
        .bearer(&t)
        .send(&p, &call("iris"), at(NOW), &store)
        .unwrap();
    assert_eq!(by_alias.verdict.model.as_deref(), Some("sklearn-iris"));
    // A model that serves V1 only has no gRPC endpoint: unknown, 404 under `reject`.
    let v1_only = grpc(INFER)
        .bearer(&t)
        .send(&p, &call("v1-only"), at(NOW), &store)
        .unwrap_err();
    assert_eq!(v1_only.status, 404);
    assert_eq!(v1_only.verdict.outcome, Outcome::UnknownModel);
}

#[test]
fn no_token_is_refused_before_the_body() {
    let p = policies(&base_config());
    let reply = grpc(INFER).headers_decision(&p, at(NOW), &MemoryStore::new());
    let modelgate_policies::HeadersDecision::Reply(reply) = reply else {
        panic!("expected a 401 at header time, got {reply:?}");
    };
    assert_eq!(reply.status, 401);
}

#[test]
fn calls_are_rate_limited_per_model_like_rest() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let t = token("carol", "models:iris");
    // sklearn-iris: burst 3 at 1/s, shared with REST calls of the same caller.
    for _ in 0..2 {
        grpc(INFER)
            .bearer(&t)
            .send(&p, &call("sklearn-iris"), at(NOW), &store)
            .unwrap();
    }
    Req::get("/v2/models/sklearn-iris/ready")
        .bearer(&t)
        .send(&p, b"", at(NOW), &store)
        .unwrap();
    let limited = grpc(INFER)
        .bearer(&t)
        .send(&p, &call("sklearn-iris"), at(NOW), &store)
        .unwrap_err();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.verdict.outcome, Outcome::RateLimited);
}

#[test]
fn metadata_and_ready_read_the_name_field_and_server_calls_need_no_model() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let t = token("dan", "models:wine");
    for method in ["ModelReady", "ModelMetadata"] {
        let path = format!("/inference.GRPCInferenceService/{method}");
        let denied = grpc(&path)
            .bearer(&t)
            .send(&p, &call("sklearn-iris"), at(NOW), &store)
            .unwrap_err();
        assert_eq!(denied.status, 403, "{method}");
    }
    for method in ["ServerLive", "ServerReady", "ServerMetadata"] {
        let path = format!("/inference.GRPCInferenceService/{method}");
        let passed = grpc(&path)
            .bearer(&t)
            .send(&p, b"", at(NOW), &store)
            .unwrap();
        assert_eq!(passed.verdict.model, None, "{method}");
    }
}

#[test]
fn repository_calls_need_admin_scopes() {
    let mut config = base_config();
    config["models"]["sklearn-wine"]["adminScopes"] = json!(["models:admin"]);
    let p = policies(&config);
    let store = MemoryStore::new();
    let unload = "/inference.GRPCInferenceService/RepositoryModelUnload";
    let user = grpc(unload)
        .bearer(&token("erin", "models:wine"))
        .send(&p, &call("sklearn-wine"), at(NOW), &store)
        .unwrap_err();
    assert_eq!(user.status, 403);
    grpc(unload)
        .bearer(&token("frank", "models:admin"))
        .send(&p, &call("sklearn-wine"), at(NOW), &store)
        .unwrap();
    // Without adminScopes a repository call is refused for everyone.
    let no_admin = grpc(unload)
        .bearer(&token("frank", "models:admin models:iris"))
        .send(&p, &call("sklearn-iris"), at(NOW), &store)
        .unwrap_err();
    assert_eq!(no_admin.status, 403);
}

#[test]
fn unreadable_messages_are_400_with_the_reason() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let t = token("gina", "models:iris");
    let mut compressed = call("sklearn-iris");
    compressed[0] = 1;
    for (body, why) in [
        (compressed, "compressed"),
        (call(""), "invalid model name"),
        (call("a/b"), "invalid model name"),
        (
            b"\x00\x00\x00\x00\x02\x0a\x05".to_vec(),
            "runs past the end",
        ),
        (Vec::new(), "prefix"),
    ] {
        let reply = grpc(INFER)
            .bearer(&t)
            .send(&p, &body, at(NOW), &store)
            .unwrap_err();
        assert_eq!(reply.status, 400, "{why}: {}", reply.body);
        assert!(reply.body.contains(why), "{why}: {}", reply.body);
    }
    let get = Req::get(INFER)
        .bearer(&t)
        .send(&p, b"", at(NOW), &store)
        .unwrap_err();
    assert_eq!(get.status, 400);
}
