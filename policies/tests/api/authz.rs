//! Per-model authorization: scopes (`scope` string or `scp` list) and claim values -> 403.

use jsonwebtoken::Algorithm;
use modelgate_policies::{MemoryStore, Outcome};
use serde_json::json;

use crate::support::{
    IRIS_BODY, NOW, Req, at, base_config, claims, mint, policies, reply_header, rsa, token,
};

#[test]
fn missing_scope_is_forbidden_with_insufficient_scope() {
    let p = policies(&base_config());
    let reply = Req::post("/v1/models/sklearn-iris:predict")
        .bearer(&token("bob", "models:wine"))
        .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
        .unwrap_err();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.verdict.outcome, Outcome::Forbidden);
    assert_eq!(reply.verdict.model.as_deref(), Some("sklearn-iris"));
    assert_eq!(
        reply_header(&reply, "www-authenticate"),
        Some(
            "Bearer realm=\"modelgate\", error=\"insufficient_scope\", \
             error_description=\"missing scope models:iris\", scope=\"models:iris\""
        )
    );
    assert_eq!(
        reply.body,
        r#"{"error":"forbidden: missing scope models:iris for model sklearn-iris"}"#
    );
}

#[test]
fn scopes_come_from_scope_string_or_scp_list() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let mut c = claims("carol", "");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["other", "models:iris"]);
    let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
    assert!(
        Req::get("/v1/models/sklearn-iris")
            .bearer(&t)
            .send(&p, b"", at(NOW), &store)
            .is_ok()
    );
    let t = token("dave", "a models:iris b");
    assert!(
        Req::get("/v1/models/iris")
            .bearer(&t)
            .send(&p, b"", at(NOW), &store)
            .is_ok()
    );
}

#[test]
fn required_claims_must_hold_an_allowed_value() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let wine = Req::get("/v1/models/sklearn-wine");
    let with_tenant = |tenant: serde_json::Value| {
        let mut c = claims("erin", "models:wine");
        c["tenant"] = tenant;
        mint(Algorithm::RS256, Some("rsa"), &rsa(), &c)
    };
    let cases = [
        (json!("acme"), None),
        (json!("globex"), None),
        (json!(["x", "globex"]), None),
        (json!("initech"), Some(403)),
        (json!(null), Some(403)),
        (json!({"name": "acme"}), Some(403)),
    ];
    for (tenant, want) in cases {
        let got = wine
            .clone()
            .bearer(&with_tenant(tenant.clone()))
            .send(&p, b"", at(NOW), &store);
        assert_eq!(got.err().map(|r| r.status), want, "tenant {tenant}");
    }
    let reply = wine
        .bearer(&with_tenant(json!("initech")))
        .send(&p, b"", at(NOW), &store)
        .unwrap_err();
    assert!(
        reply_header(&reply, "www-authenticate")
            .unwrap()
            .contains("claim tenant does not hold a required value"),
        "{reply:?}"
    );
}

#[test]
fn models_without_requirements_need_only_a_valid_token() {
    let p = policies(&base_config());
    let t = token("frank", "");
    let ok = Req::get("/v2/models/tensor-model/ready").bearer(&t).send(
        &p,
        b"",
        at(NOW),
        &MemoryStore::new(),
    );
    assert!(ok.is_ok());
}

/// A boolean or numeric claim matches an allowed value written as its JSON text (`"true"`,
/// `"2"`), and only that value.
#[test]
fn boolean_and_numeric_claims_match_their_text() {
    let mut cfg = base_config();
    cfg["models"]["sklearn-iris"]["requiredClaims"] =
        json!({ "verified": ["true"], "tier": ["2"] });
    let p = policies(&cfg);
    for (verified, tier, allowed) in [
        (json!(true), json!(2), true),
        (json!(false), json!(2), false),
        (json!(true), json!(3), false),
    ] {
        let mut c = claims("alice", "models:iris");
        c["verified"] = verified.clone();
        c["tier"] = tier.clone();
        let t = mint(Algorithm::RS256, Some("rsa"), &rsa(), &c);
        let result = Req::get("/v1/models/sklearn-iris").bearer(&t).send(
            &p,
            b"",
            at(NOW),
            &MemoryStore::new(),
        );
        assert_eq!(result.is_ok(), allowed, "verified {verified}, tier {tier}");
    }
}
