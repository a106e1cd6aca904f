//! Routing through the API: routing header, aliases, unknown models, listing, odd paths,
//! body-model routing.

use jsonwebtoken::Algorithm;
use modelgate_policies::{BodyDecision, HeadersDecision, MemoryStore, Outcome, Policies, Reply};
use serde_json::json;

use crate::support::{
    IRIS_BODY, NOW, Req, at, base_config, claims, mint, policies, rsa, set_header, token,
};

fn all_scopes() -> String {
    token("alice", "models:iris models:wine")
}

#[test]
fn sets_the_routing_header_to_the_canonical_name() {
    let p = policies(&base_config());
    let t = all_scopes();
    let cases = [
        ("GET", "/v1/models/sklearn-iris", "sklearn-iris"),
        ("GET", "/v1/models/iris", "sklearn-iris"),
        ("POST", "/v1/models/iris:predict", "sklearn-iris"),
        ("POST", "/v1/models/iris:explain", "sklearn-iris"),
        ("GET", "/v2/models/iris", "sklearn-iris"),
        ("GET", "/v2/models/iris/ready", "sklearn-iris"),
        ("GET", "/v2/models/sklearn-wine/versions/2", "sklearn-wine"),
        ("GET", "/v2/models/tensor-model?verbose=1", "tensor-model"),
    ];
    for (method, path, model) in cases {
        let mut req = Req::get(path).bearer(&t);
        req.method = method;
        // A fresh store per request: this test is not about quotas.
        let c = req
            .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
            .unwrap_or_else(|r| panic!("{path}: {r:?}"));
        assert_eq!(
            set_header(&c, "x-gateway-model-name"),
            Some(model),
            "{path}"
        );
        assert!(c.route_changed, "{path}");
        assert_eq!(c.verdict.model.as_deref(), Some(model));
        assert_eq!(c.verdict.outcome, Outcome::Allowed);
    }
}

#[test]
fn a_prediction_names_its_model_before_the_body_is_read() {
    // Envoy picks the route and sends the request headers on when the header phase
    // continues, so the routing header and forwarded claims cannot wait for the body.
    let p = policies(&base_config());
    let t = all_scopes();
    for path in ["/v1/models/iris:predict", "/v2/models/iris/infer"] {
        let mut req = Req::get(path)
            .bearer(&t)
            .header("content-type", "application/json");
        req.method = "POST";
        let HeadersDecision::NeedBody(need) =
            req.headers_decision(&p, at(NOW), &MemoryStore::new())
        else {
            panic!("{path}: expected the body to be needed");
        };
        assert!(
            need.headers
                .set
                .iter()
                .any(|(k, v)| &**k == "x-gateway-model-name" && v == "sklearn-iris"),
            "{path}: {:?}",
            need.headers
        );
        assert!(need.route_changed, "{path}");
    }
}

#[test]
fn only_prediction_posts_buffer_the_body() {
    let p = policies(&base_config());
    let t = all_scopes();
    let needs_body = |method: &'static str, path: &str| {
        let mut req = Req::get(path)
            .bearer(&t)
            .header("content-type", "application/json");
        req.method = method;
        let store = MemoryStore::new();
        matches!(
            req.headers_decision(&p, at(NOW), &store),
            HeadersDecision::NeedBody(_)
        )
    };
    assert!(needs_body("POST", "/v1/models/iris:predict"));
    assert!(needs_body("POST", "/v1/models/iris:explain"));
    assert!(needs_body("POST", "/v2/models/iris/infer"));
    assert!(needs_body("POST", "/v2/models/iris/versions/1/infer"));
    assert!(!needs_body("GET", "/v1/models/iris:predict"));
    assert!(!needs_body("GET", "/v1/models/iris"));
    assert!(!needs_body("POST", "/v2/models/iris/ready"));
    assert!(!needs_body("POST", "/v2/health/live"));
}

#[test]
fn unknown_models_get_kserve_404_or_pass_through() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let t = all_scopes();
    let reply = Req::post("/v1/models/nope:predict")
        .bearer(&t)
        .send(&p, IRIS_BODY, at(NOW), &store)
        .unwrap_err();
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.body,
        r#"{"error":"Model with name nope does not exist."}"#
    );
    assert_eq!(reply.verdict.outcome, Outcome::UnknownModel);
    // A V2-only model on a V1 path is unknown there.
    let reply = Req::get("/v1/models/tensor-model")
        .bearer(&t)
        .send(&p, b"", at(NOW), &store)
        .unwrap_err();
    assert_eq!(reply.status, 404);

    let mut cfg = base_config();
    cfg["routing"] = json!({"unknownModel": "passThrough"});
    let p = policies(&cfg);
    let req = Req::post("/v1/models/nope:predict")
        .bearer(&t)
        .header("x-gateway-model-name", "sklearn-iris");
    let c = req.send(&p, IRIS_BODY, at(NOW), &store).unwrap();
    assert_eq!(c.verdict.outcome, Outcome::UnknownModel);
    assert_eq!(set_header(&c, "x-gateway-model-name"), None);
    assert!(
        c.headers
            .remove
            .iter()
            .any(|h| &**h == "x-gateway-model-name")
    );
    assert!(c.route_changed);
}

/// The local reply a request gets at header time (fails the test if it is forwarded).
fn refusal(p: &Policies, req: &Req) -> Reply {
    match req.headers_decision(p, at(NOW), &MemoryStore::new()) {
        HeadersDecision::Reply(r) => r,
        other => panic!("{} {}: not refused: {other:?}", req.method, req.path),
    }
}

#[test]
fn repository_actions_are_refused_unless_the_model_names_admin_scopes() {
    // KServe's `POST /v2/repository/models/{m}/unload` takes the model off the server until it
    // is restarted: with no `adminScopes`, no token may reach it, not even one that may
    // predict on the model.
    let p = policies(&base_config());
    let iris = token("alice", "models:iris");
    for path in [
        "/v2/repository/models/sklearn-iris/unload",
        "/v2/repository/models/iris/load",
        "/v2/repository/models/tensor-model/unload",
    ] {
        let r = refusal(&p, &Req::post(path).bearer(&iris));
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.verdict.outcome, Outcome::Forbidden, "{path}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("model repository API (load, unload) is not enabled"),
            "{path}: {message}"
        );
    }
    // Authentication still comes first, and an unknown model is still unknown.
    let anonymous = Req::post("/v2/repository/models/iris/unload");
    assert_eq!(refusal(&p, &anonymous).status, 401);
    let unknown = Req::post("/v2/repository/models/nope/unload").bearer(&iris);
    assert_eq!(refusal(&p, &unknown).status, 404);
}

#[test]
fn repository_actions_need_the_models_admin_scopes() {
    let mut cfg = base_config();
    cfg["models"]["sklearn-iris"]["adminScopes"] = json!(["admin:iris"]);
    cfg["models"]["sklearn-wine"]["adminScopes"] = json!(["admin:wine"]);
    cfg["models"]["v1-only"] = json!({ "protocols": ["v1"], "requiredScopes": ["models:v1"],
        "adminScopes": ["admin:v1"] });
    let p = policies(&cfg);
    let iris = token("alice", "models:iris");
    let iris_admin = token("root", "admin:iris");
    let wine_admin_acme = token("root", "admin:wine"); // tenant acme
    let wine_admin_other = {
        let mut c = claims("root", "admin:wine");
        c["tenant"] = json!("initech");
        mint(Algorithm::RS256, Some("rsa"), &rsa(), &c)
    };
    let v1_admin = token("root", "admin:v1");
    let cases: [(&str, Option<&str>, Result<&str, u16>); 10] = [
        // Permission to predict is not permission to unload.
        (
            "/v2/repository/models/sklearn-iris/unload",
            Some(&iris),
            Err(403),
        ),
        ("/v2/repository/models/iris/load", Some(&iris), Err(403)),
        ("/v2/repository/models/iris/unload", None, Err(401)),
        (
            "/v2/repository/models/nope/unload",
            Some(&iris_admin),
            Err(404),
        ),
        (
            "/v2/repository/models/ir%69s/unload",
            Some(&iris_admin),
            Err(400),
        ),
        (
            "/v2/repository/models/iris/unload",
            Some(&iris_admin),
            Ok("sklearn-iris"),
        ),
        (
            "/v2/repository/models/sklearn-iris/load",
            Some(&iris_admin),
            Ok("sklearn-iris"),
        ),
        // The model's required claims hold for its administrators too.
        (
            "/v2/repository/models/sklearn-wine/unload",
            Some(&wine_admin_acme),
            Ok("sklearn-wine"),
        ),
        (
            "/v2/repository/models/sklearn-wine/unload",
            Some(&wine_admin_other),
            Err(403),
        ),
        // The action concerns the model whatever protocol it serves.
        (
            "/v2/repository/models/v1-only/unload",
            Some(&v1_admin),
            Ok("v1-only"),
        ),
    ];
    for (path, bearer, want) in cases {
        let req = Req::post(path);
        let req = match bearer {
            Some(t) => req.bearer(t),
            None => req,
        };
        // Neither action has a body to validate: the decision is made on the headers.
        let got = match req.headers_decision(&p, at(NOW), &MemoryStore::new()) {
            HeadersDecision::Continue(c) => Ok(c),
            HeadersDecision::Reply(r) => Err(r),
            HeadersDecision::NeedBody(_) => panic!("{path}: asked for the body"),
        };
        match (got, want) {
            (Ok(c), Ok(model)) => {
                assert_eq!(
                    set_header(&c, "x-gateway-model-name"),
                    Some(model),
                    "{path}"
                );
                assert_eq!(c.verdict.model.as_deref(), Some(model), "{path}");
                assert_eq!(c.verdict.outcome, Outcome::Allowed, "{path}");
            }
            (Err(r), Err(status)) => assert_eq!(r.status, status, "{path}: {r:?}"),
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }
    // The 403 for a predict-only token names the scope that would allow the action.
    let r = refusal(
        &p,
        &Req::post("/v2/repository/models/iris/unload").bearer(&iris),
    );
    let challenge = r
        .headers
        .iter()
        .find(|(n, _)| *n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert!(challenge.contains("scope=\"admin:iris\""), "{challenge}");
}

#[test]
fn repository_actions_count_against_the_models_quota() {
    let mut cfg = base_config();
    cfg["models"]["sklearn-iris"]["adminScopes"] = json!(["admin:iris"]);
    let p = policies(&cfg);
    let iris_admin = token("root", "admin:iris");
    // sklearn-iris: burst 3.
    let store = MemoryStore::new();
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            match Req::post("/v2/repository/models/iris/unload")
                .bearer(&iris_admin)
                .headers_decision(&p, at(NOW), &store)
            {
                HeadersDecision::Reply(r) => r.status,
                _ => 200,
            }
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[test]
fn admin_scopes_must_be_a_non_empty_list_and_need_jwt() {
    let mut cfg = base_config();
    cfg["models"]["sklearn-iris"]["adminScopes"] = json!([]);
    let err = Policies::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("models.sklearn-iris.adminScopes: must list at least one scope"),
        "{err}"
    );
    let cfg = json!({ "version": 1, "models": { "m": { "adminScopes": ["admin"] } } });
    let err = Policies::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "models.m.adminScopes: adminScopes need jwt to be configured"
    );
}

#[test]
fn a_client_cannot_choose_its_own_route() {
    let p = policies(&base_config());
    let req = Req::get("/")
        .bearer(&all_scopes())
        .header("X-Gateway-Model-Name", "sklearn-wine");
    let c = req.send(&p, b"", at(NOW), &MemoryStore::new()).unwrap();
    assert!(
        c.headers
            .remove
            .iter()
            .any(|h| &**h == "x-gateway-model-name")
    );
    assert!(c.route_changed);
    assert_eq!(c.verdict.model, None);
}

#[test]
fn lists_the_models_the_caller_may_use() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let list = |path: &str, scope: &str| {
        let reply = Req::get(path)
            .bearer(&token("alice", scope))
            .send(&p, b"", at(NOW), &store)
            .unwrap_err();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.verdict.outcome, Outcome::Allowed);
        reply.body
    };
    assert_eq!(
        list("/v1/models", "models:iris"),
        r#"{"models":["sklearn-iris"]}"#
    );
    assert_eq!(
        list("/v1/models/", "models:iris models:wine"),
        r#"{"models":["sklearn-iris","sklearn-wine"]}"#
    );
    assert_eq!(
        list("/v2/models", "models:iris"),
        r#"{"models":["sklearn-iris","tensor-model"]}"#
    );
    assert_eq!(list("/v1/models", ""), r#"{"models":[]}"#);

    let mut cfg = base_config();
    cfg["routing"] = json!({"listModels": false});
    let p = policies(&cfg);
    let c = Req::get("/v1/models")
        .bearer(&all_scopes())
        .send(&p, b"", at(NOW), &store)
        .unwrap();
    assert_eq!(c.verdict.model, None);
}

#[test]
fn odd_paths_are_400_never_passed_through() {
    let mut cfg = base_config();
    cfg["routing"] = json!({"unknownModel": "passThrough"});
    let p = policies(&cfg);
    let t = all_scopes();
    for path in [
        "/v1/models/../models/sklearn-iris:predict",
        "/%761/models/sklearn-iris:predict",
        "/v1/models/sklearn%2Diris:predict",
        "/v1//models/sklearn-iris:predict",
        "/v1/models/ir\u{131}s:predict",
    ] {
        let reply = Req::post(path)
            .bearer(&t)
            .send(&p, IRIS_BODY, at(NOW), &MemoryStore::new())
            .unwrap_err();
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.verdict.outcome, Outcome::Invalid);
    }
}

#[test]
fn routes_by_the_body_model_field_and_authorizes_after_it() {
    let mut cfg = base_config();
    cfg["routing"] = json!({"bodyModel": {"paths": ["/openai/v1/chat/completions"]}});
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let chat = |scope: &str, body: &str| {
        Req::post("/openai/v1/chat/completions")
            .bearer(&token("alice", scope))
            .send(&p, body.as_bytes(), at(NOW), &store)
    };
    let c = chat("models:iris", r#"{"messages": [], "model": "iris"}"#).unwrap();
    assert_eq!(c.verdict.model.as_deref(), Some("sklearn-iris"));
    // The route was fixed by path when the headers went on: no routing header is set, and
    // everything that does not depend on the model was applied at header time.
    assert_eq!(set_header(&c, "x-gateway-model-name"), None);
    let req = Req::post("/openai/v1/chat/completions")
        .bearer(&token("alice", "models:iris"))
        .header("x-gateway-model-name", "sklearn-wine");
    let HeadersDecision::NeedBody(need) = req.headers_decision(&p, at(NOW), &MemoryStore::new())
    else {
        panic!("body routing must buffer the body");
    };
    assert!(need.route_changed);
    assert!(
        need.headers
            .remove
            .iter()
            .any(|h| &**h == "x-gateway-model-name")
    );
    assert!(
        need.headers
            .set
            .iter()
            .any(|(h, v)| &**h == "x-user-id" && v == "alice")
    );
    assert!(
        need.headers
            .set
            .iter()
            .any(|(h, v)| &**h == "x-ratelimit-key" && v == "alice")
    );
    let BodyDecision::Continue(after) = p.on_request_body(
        &need.pending,
        br#"{"model": "iris"}"#,
        at(NOW),
        &MemoryStore::new(),
    ) else {
        panic!("an allowed body must continue");
    };
    assert!(after.headers.is_empty());
    assert_eq!(
        chat("models:iris", r#"{"model": "sklearn-wine"}"#)
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        chat("models:iris", r#"{"model": "gpt-5"}"#)
            .unwrap_err()
            .body,
        r#"{"error":"Model with name gpt-5 does not exist."}"#
    );
    assert_eq!(
        chat("models:iris", r#"{"messages": []}"#).unwrap_err().body,
        r#"{"error":"body: missing string field model"}"#
    );
    assert_eq!(
        chat("models:iris", r#"{"model": 7}"#).unwrap_err().status,
        400
    );
    assert_eq!(chat("models:iris", "not json").unwrap_err().status, 400);
    // The quota of the body's model applies (burst 3, one already used above).
    assert!(chat("models:iris", r#"{"model": "iris"}"#).is_ok());
    assert!(chat("models:iris", r#"{"model": "iris"}"#).is_ok());
    assert_eq!(
        chat("models:iris", r#"{"model": "iris"}"#)
            .unwrap_err()
            .status,
        429
    );
    // Unauthenticated requests are refused before their body is buffered.
    let d = Req::post("/openai/v1/chat/completions").headers_decision(&p, at(NOW), &store);
    assert!(matches!(d, HeadersDecision::Reply(r) if r.status == 401));
}

#[test]
fn exposes_what_the_adapter_needs() {
    let p = policies(&base_config());
    assert_eq!(p.routing_header(), "x-gateway-model-name");
    assert_eq!(
        p.model_names().collect::<Vec<_>>(),
        ["sklearn-iris", "sklearn-wine", "tensor-model"]
    );
    assert_eq!(p.log_level(), modelgate_policies::LogLevel::Info);
    assert_eq!(p.failure_mode(), modelgate_policies::FailureMode::Deny);
    let fault = p.internal_fault_reply(Some("iris")).unwrap();
    assert_eq!(fault.status, 503);
    assert_eq!(fault.verdict.model.as_deref(), Some("sklearn-iris"));
    let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(
        labels,
        [
            "allowed",
            "unauthenticated",
            "forbidden",
            "rate_limited",
            "invalid",
            "unknown_model",
            "internal_error"
        ]
    );
}
