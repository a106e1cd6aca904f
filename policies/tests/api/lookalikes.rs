//! Client-sent look-alikes of the headers the policy sets (`lookalikeHeaders`): `x_user_id`
//! beside the `x-user-id` the filter fills from the token.

use std::sync::Arc;

use modelgate_policies::{MemoryStore, Outcome};
use serde_json::json;

use crate::support::{IRIS_BODY, NOW, Req, at, base_config, policies, set_header, token};

const PREDICT: &str = "/v1/models/sklearn-iris:predict";

fn removed(c: &modelgate_policies::Continue) -> Vec<&str> {
    c.headers.remove.iter().map(Arc::as_ref).collect()
}

#[test]
fn lookalikes_of_every_header_the_policy_sets_are_dropped() {
    // base_config sets x-gateway-model-name, x-user-id (the sub claim) and x-ratelimit-key.
    let p = policies(&base_config());
    let req = Req::post(PREDICT)
        .bearer(&token("alice", "models:iris"))
        .header("x_user_id", "admin")
        .header("X_User-Id", "admin")
        .header("x-user_id", "admin")
        .header("x_gateway_model_name", "sklearn-wine")
        .header("x_ratelimit_key", "someone-else")
        .header("x_user_id_extra", "kept: not the same name")
        .header("x-user", "kept");
    let c = req
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap();
    let mut dropped = removed(&c);
    dropped.sort_unstable();
    assert_eq!(
        dropped,
        [
            "x-user_id",
            "x_gateway_model_name",
            "x_ratelimit_key",
            "x_user-id",
            "x_user_id"
        ]
    );
    assert_eq!(set_header(&c, "x-user-id"), Some("alice"));
    assert_eq!(set_header(&c, "x-gateway-model-name"), Some("sklearn-iris"));
}

#[test]
fn lookalikes_are_dropped_on_every_forward_not_only_model_requests() {
    let mut cfg = base_config();
    cfg["routing"] = json!({ "unknownModel": "passThrough" });
    let p = policies(&cfg);
    for path in ["/", "/v2/health/ready", "/v1/models/nope:predict"] {
        let c = Req::post(path)
            .bearer(&token("alice", "models:iris"))
            .header("x_user_id", "admin")
            .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
            .unwrap();
        assert!(removed(&c).contains(&"x_user_id"), "{path}: {c:?}");
    }
}

#[test]
fn reject_answers_400_naming_the_header_before_anything_else() {
    let mut cfg = base_config();
    cfg["lookalikeHeaders"] = json!("reject");
    let p = policies(&cfg);
    // Even without a token: the request is malformed whoever sends it.
    let r = Req::post(PREDICT)
        .header("x_user_id", "admin")
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(r.status, 400);
    assert_eq!(r.verdict.outcome, Outcome::Invalid);
    assert_eq!(
        r.body,
        r#"{"error":"request header x_user_id is not allowed: it reads as x-user-id, which the gateway sets"}"#
    );
    // The exact header is not a look-alike: it is replaced, as always.
    let c = Req::post(PREDICT)
        .bearer(&token("alice", "models:iris"))
        .header("x-user-id", "admin")
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap();
    assert_eq!(set_header(&c, "x-user-id"), Some("alice"));
}

#[test]
fn a_configured_name_with_underscores_is_protected_from_its_dashed_spelling() {
    let mut cfg = base_config();
    cfg["jwt"]["forwardClaims"] = json!({ "sub": "x_user_id" });
    let p = policies(&cfg);
    let c = Req::post(PREDICT)
        .bearer(&token("alice", "models:iris"))
        .header("x-user-id", "admin")
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap();
    assert!(removed(&c).contains(&"x-user-id"), "{c:?}");
    assert_eq!(set_header(&c, "x_user_id"), Some("alice"));
}

#[test]
fn an_unknown_lookalike_setting_names_the_field() {
    let mut cfg = base_config();
    cfg["lookalikeHeaders"] = json!("allow");
    let err = modelgate_policies::Policies::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("lookalikeHeaders: "), "{err}");
}
