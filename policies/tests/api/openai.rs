//! KServe's OpenAI endpoints through the public API: routing by the body's model, OpenAI's
//! error shape, token budgets reserved at admission and settled from usage.

use modelgate_policies::{HeadersDecision, MemoryStore, Outcome, Policies};
use serde_json::{Value, json};

use crate::support::{NOW, Req, at, base_config, policies, reply_header, set_header, token};

const CHAT: &str = "/openai/v1/chat/completions";

/// The base config plus two OpenAI models: `markov` (scope `models:markov`, 1,000 tokens a
/// minute, 5,000 a day, maxTokens 200) and `markov-free` (no scope, no budget).
fn config(hold: bool) -> Value {
    let mut config = base_config();
    config["openai"] = json!({ "holdHeadersForBody": hold });
    config["models"]["markov"] = json!({
        "aliases": ["mk"],
        "protocols": ["openai"],
        "requiredScopes": ["models:markov"],
        "openai": {
            "maxTokens": 200,
            "defaultMaxTokens": 50,
            "tokenBudgets": [{ "tokens": 1000, "per": "minute" }, { "tokens": 5000, "per": "day" }]
        }
    });
    config["models"]["markov-free"] = json!({ "protocols": ["openai", "v1"] });
    config
}

fn chat_body(model: &str, max_tokens: u64, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"abcdefgh"}}],"max_tokens":{max_tokens}{extra}}}"#
    )
    .into_bytes()
}

fn error_of(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap()["error"].clone()
}

fn markov_token() -> String {
    token("alice", "models:markov")
}

#[test]
fn the_body_names_the_model_and_with_held_headers_the_routing_header_follows() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let HeadersDecision::NeedBody(need) = req.headers_decision(&p, at(NOW), &store) else {
        panic!("an OpenAI body is needed");
    };
    assert!(need.hold_headers);
    let c = req
        .send(&p, &chat_body("mk", 10, ""), at(NOW), &store)
        .unwrap();
    assert_eq!(set_header(&c, "x-gateway-model-name"), Some("markov"));
    assert!(c.route_changed);
    assert_eq!(c.verdict.model.as_deref(), Some("markov"));
    let exchange = c.openai.expect("an OpenAI exchange");
    assert_eq!(&*exchange.model, "markov");
    assert_eq!(&*exchange.caller_class, "authenticated");
    assert_eq!(exchange.body, None);
    // 8 bytes of text + 4 for the message + 10 completion tokens reserved of 1,000.
    let remaining = exchange
        .response_headers
        .iter()
        .find(|(n, _)| *n == "x-ratelimit-remaining-tokens")
        .map(|(_, v)| v.as_str());
    assert_eq!(remaining, Some("978"));
}

#[test]
fn without_held_headers_the_route_stays_the_path_s() {
    let p = policies(&config(false));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let HeadersDecision::NeedBody(need) = req.headers_decision(&p, at(NOW), &store) else {
        panic!("an OpenAI body is needed");
    };
    assert!(!need.hold_headers);
    let c = req
        .send(
            &p,
            &chat_body("markov", 10, r#","stream":true"#),
            at(NOW),
            &store,
        )
        .unwrap();
    assert_eq!(set_header(&c, "x-gateway-model-name"), None);
    // The body cannot be changed either: no usage is asked for.
    assert_eq!(c.openai.unwrap().body, None);
}

#[test]
fn a_stream_without_usage_gets_it_asked_for_and_content_length_follows() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let c = req
        .send(
            &p,
            &chat_body("markov", 10, r#","stream":true"#),
            at(NOW),
            &store,
        )
        .unwrap();
    let exchange = c.openai.as_ref().unwrap();
    let body = exchange.body.clone().expect("a rewritten body");
    assert!(body.ends_with(br#","stream_options":{"include_usage":true}}"#));
    assert_eq!(
        set_header(&c, "content-length"),
        Some(body.len().to_string().as_str())
    );
    // A client that asked for usage itself gets its body untouched.
    let c = req
        .send(
            &p,
            &chat_body(
                "markov",
                10,
                r#","stream":true,"stream_options":{"include_usage":true}"#,
            ),
            at(NOW),
            &store,
        )
        .unwrap();
    assert_eq!(c.openai.unwrap().body, None);
}

#[test]
fn refusals_use_openai_s_error_shape() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let send = |req: &Req, body: &[u8]| req.send(&p, body, at(NOW), &store).unwrap_err();

    let unknown = send(
        &Req::post(CHAT).bearer(&markov_token()),
        &chat_body("gpt-9", 10, ""),
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(
        error_of(&unknown.body),
        json!({"message": "Model with name gpt-9 does not exist.", "type": "NotFoundError", "param": null, "code": "404"})
    );
    // A V1-only model is not an OpenAI model.
    let v1 = send(
        &Req::post(CHAT).bearer(&markov_token()),
        &chat_body("sklearn-iris", 10, ""),
    );
    assert_eq!(v1.status, 404);

    let forbidden = send(
        &Req::post(CHAT).bearer(&token("bob", "models:iris")),
        &chat_body("markov", 10, ""),
    );
    assert_eq!(forbidden.status, 403);
    assert_eq!(error_of(&forbidden.body)["type"], "PermissionDeniedError");
    assert!(reply_header(&forbidden, "www-authenticate").is_some());

    let unauthenticated = send(&Req::post(CHAT), &chat_body("markov", 10, ""));
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(error_of(&unauthenticated.body)["code"], "401");

    let too_many = send(
        &Req::post(CHAT).bearer(&markov_token()),
        &chat_body("markov", 201, ""),
    );
    assert_eq!(too_many.status, 400);
    assert_eq!(
        error_of(&too_many.body),
        json!({"message": "max_tokens: 201 is more than model markov allows (200)", "type": "BadRequestError",
               "param": "max_tokens", "code": "400"})
    );
    let malformed = send(
        &Req::post(CHAT).bearer(&markov_token()),
        br#"{"model":"markov","messages":[{"content":"x"}]}"#,
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(error_of(&malformed.body)["param"], "messages[0].role");
    assert_eq!(malformed.verdict.outcome, Outcome::Invalid);

    let oversized = {
        let req = Req::post(CHAT).bearer(&markov_token());
        let HeadersDecision::NeedBody(need) = req.headers_decision(&p, at(NOW), &store) else {
            panic!("an OpenAI body is needed");
        };
        p.reject_oversized_body(&need.pending)
    };
    assert_eq!(oversized.status, 413);
    assert_eq!(error_of(&oversized.body)["type"], "RequestTooLargeError");
}

#[test]
fn the_budget_refuses_what_does_not_fit_and_settlement_gives_back_what_was_not_used() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    // Each reserves 8 + 4 + 200 = 212 tokens: four fit in 1,000.
    let mut exchanges = Vec::new();
    for _ in 0..4 {
        let c = req
            .send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
            .unwrap();
        exchanges.push(c.openai.unwrap());
    }
    let refused = req
        .send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
        .unwrap_err();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.verdict.outcome, Outcome::RateLimited);
    assert_eq!(error_of(&refused.body)["type"], "RateLimitError");
    assert_eq!(
        reply_header(&refused, "x-ratelimit-limit-tokens"),
        Some("1000")
    );
    assert_eq!(
        reply_header(&refused, "x-ratelimit-remaining-tokens"),
        Some("152")
    );
    // 60 more tokens refill in 3.6 s.
    assert_eq!(reply_header(&refused, "retry-after"), Some("4"));
    assert_eq!(
        reply_header(&refused, "x-ratelimit-reset-tokens"),
        Some("51s")
    );

    // Each used 10 + 20 tokens: settling the first two gives back 2 × 182.
    for exchange in &exchanges[..2] {
        let mut meter = p.response_meter(exchange, 200, Some("application/json"));
        meter.feed(br#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}"#, true);
        let settled = p.settle(exchange, Some(&meter), at(NOW), &store);
        assert_eq!((settled.input, settled.output), (10, 20));
    }
    // 152 + 364 = 516 now remain: two more of 212 fit, a third does not.
    for _ in 0..2 {
        req.send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
            .unwrap();
    }
    assert_eq!(
        req.send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
            .unwrap_err()
            .status,
        429
    );
}

#[test]
fn admitted_responses_carry_openai_s_request_and_token_headers_and_a_token_429_both() {
    let mut config = config(true);
    // 3 requests at once, one more every 20 s.
    config["models"]["markov"]["rateLimit"] = json!({ "requestsPerMinute": 3, "burst": 3 });
    let p = policies(&config);
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let header = |headers: &[(&'static str, String)], name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let first = req
        .send(&p, &chat_body("markov", 10, ""), at(NOW), &store)
        .unwrap()
        .openai
        .unwrap();
    let h = &first.response_headers;
    assert_eq!(
        header(h, "x-ratelimit-limit-requests").as_deref(),
        Some("3")
    );
    assert_eq!(
        header(h, "x-ratelimit-remaining-requests").as_deref(),
        Some("2")
    );
    // One request's worth refills in 20 s.
    assert_eq!(
        header(h, "x-ratelimit-reset-requests").as_deref(),
        Some("20s")
    );
    assert_eq!(
        header(h, "x-ratelimit-remaining-tokens").as_deref(),
        Some("978")
    );
    let second = req
        .send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
        .unwrap()
        .openai
        .unwrap();
    assert_eq!(
        header(&second.response_headers, "x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    assert_eq!(
        header(&second.response_headers, "x-ratelimit-reset-requests").as_deref(),
        Some("40s")
    );
    // The third is within the request quota (its last) but its 4 × 200 + 12 tokens are more
    // than the 766 left this minute: the 429 gives both standings.
    let refused = req
        .send(&p, &chat_body("markov", 200, r#","n":4"#), at(NOW), &store)
        .unwrap_err();
    assert_eq!(refused.status, 429);
    assert_eq!(
        reply_header(&refused, "x-ratelimit-remaining-tokens"),
        Some("766")
    );
    assert_eq!(
        reply_header(&refused, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    assert_eq!(
        reply_header(&refused, "x-ratelimit-limit-requests"),
        Some("3")
    );
}

#[test]
fn a_reservation_larger_than_a_window_is_a_400() {
    let mut config = config(true);
    config["models"]["markov"]["openai"]["tokenBudgets"] =
        json!([{ "tokens": 100, "per": "hour" }]);
    let p = policies(&config);
    let store = MemoryStore::new();
    let reply = Req::post(CHAT)
        .bearer(&markov_token())
        .send(&p, &chat_body("markov", 150, ""), at(NOW), &store)
        .unwrap_err();
    assert_eq!(reply.status, 400);
    assert_eq!(
        error_of(&reply.body)["message"],
        "max_tokens: the request needs up to 162 tokens, more than model markov's budget of 100 per hour"
    );
}

#[test]
fn shadow_mode_forwards_over_budget_requests_and_charges_their_usage() {
    let mut config = config(true);
    config["rateLimit"]["shadow"] = json!(true);
    let p = policies(&config);
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    for _ in 0..4 {
        req.send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
            .unwrap();
    }
    let c = req
        .send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
        .unwrap();
    assert!(c.verdict.shadow_rate_limited);
    assert_eq!(c.verdict.outcome, Outcome::Allowed);
}

#[test]
fn an_aborted_stream_is_charged_its_prompt_estimate_and_the_events_sent() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let c = req
        .send(
            &p,
            &chat_body("markov", 200, r#","stream":true"#),
            at(NOW),
            &store,
        )
        .unwrap();
    let exchange = c.openai.unwrap();
    let mut meter = p.response_meter(&exchange, 200, Some("text/event-stream"));
    let event = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    meter.feed(event.repeat(3).as_bytes(), false);
    let settled = p.settle(&exchange, Some(&meter), at(NOW), &store);
    assert_eq!((settled.input, settled.output), (12, 3));
    // No response at all: the prompt only.
    let c = req
        .send(&p, &chat_body("markov", 200, ""), at(NOW), &store)
        .unwrap();
    let settled = p.settle(&c.openai.unwrap(), None, at(NOW), &store);
    assert_eq!((settled.input, settled.output), (12, 0));
}

#[test]
fn the_openai_listing_shows_only_the_models_the_caller_may_use() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let list = |token: &str| {
        let reply = Req::get("/openai/v1/models")
            .bearer(token)
            .send(&p, b"", at(NOW), &store)
            .unwrap_err();
        assert_eq!(reply.status, 200);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["object"], "list");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&markov_token()), ["markov", "markov-free"]);
    assert_eq!(list(&token("bob", "models:iris")), ["markov-free"]);
}

#[test]
fn a_model_readiness_path_is_authorized_for_its_model() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let c = Req::get("/openai/v1/models/mk")
        .bearer(&markov_token())
        .send(&p, b"", at(NOW), &store)
        .unwrap();
    assert_eq!(set_header(&c, "x-gateway-model-name"), Some("markov"));
    let refused = Req::get("/openai/v1/models/markov")
        .bearer(&token("bob", ""))
        .send(&p, b"", at(NOW), &store)
        .unwrap_err();
    assert_eq!(refused.status, 403);
    assert_eq!(error_of(&refused.body)["code"], "403");
}

#[test]
fn config_errors_name_the_openai_fields() {
    let error = |config: &Value| {
        Policies::from_json(config.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    let mut c = config(true);
    c["openai"]["prefix"] = json!("openai/");
    assert!(error(&c).starts_with("openai.prefix:"), "{}", error(&c));
    let mut c = config(true);
    c["models"]["markov"]["openai"]["tokenBudgets"] = json!([{ "tokens": 0, "per": "minute" }]);
    assert!(
        error(&c).starts_with("models.markov.openai.tokenBudgets[0].tokens:"),
        "{}",
        error(&c)
    );
    let mut c = config(true);
    c["models"]["markov"]["openai"]["defaultMaxTokens"] = json!(300);
    assert!(
        error(&c).starts_with("models.markov.openai.defaultMaxTokens:"),
        "{}",
        error(&c)
    );
    let mut c = config(true);
    c["models"]["sklearn-iris"]["openai"] = json!({});
    assert!(
        error(&c).starts_with("models.sklearn-iris.openai:"),
        "{}",
        error(&c)
    );
    let mut c = config(true);
    c.as_object_mut().unwrap().remove("openai");
    assert!(
        error(&c).contains("openai needs the top-level openai section"),
        "{}",
        error(&c)
    );
    let mut c = config(true);
    c["routing"] = json!({ "bodyModel": { "paths": ["/openai/v1/completions"] } });
    assert!(
        error(&c).starts_with("routing.bodyModel.paths[0]:"),
        "{}",
        error(&c)
    );
}

#[test]
fn the_caller_class_is_the_claim_among_the_configured_values() {
    let mut config = config(true);
    config["openai"]["callerClass"] = json!({ "claim": "tenant", "values": ["acme", "initech"] });
    let p = policies(&config);
    assert_eq!(
        p.caller_classes().iter().map(|c| &**c).collect::<Vec<_>>(),
        ["acme", "initech", "other", "authenticated", "anonymous"]
    );
    let store = MemoryStore::new();
    let class = |tenant: &str| {
        let mut claims = crate::support::claims("alice", "models:markov");
        claims["tenant"] = json!(tenant);
        let token = crate::support::mint(
            jsonwebtoken::Algorithm::RS256,
            Some("rsa"),
            &crate::support::rsa(),
            &claims,
        );
        let c = Req::post(CHAT)
            .bearer(&token)
            .send(&p, &chat_body("markov", 1, ""), at(NOW), &store)
            .unwrap();
        c.openai.unwrap().caller_class.to_string()
    };
    assert_eq!(class("acme"), "acme");
    assert_eq!(class("globex"), "other");
}

#[test]
fn without_a_token_the_caller_is_anonymous_and_keyed_by_address() {
    let p = policies(&json!({
        "version": 1,
        "openai": { "prefix": "" },
        "models": { "llm": { "protocols": ["openai"], "openai": { "tokenBudgets": [{ "tokens": 100, "per": "minute" }] } } }
    }));
    assert_eq!(p.openai_model_names().collect::<Vec<_>>(), ["llm"]);
    let store = MemoryStore::new();
    let c = Req::post("/v1/chat/completions")
        .send(&p, &chat_body("llm", 20, ""), at(NOW), &store)
        .unwrap();
    assert_eq!(&*c.openai.unwrap().caller_class, "anonymous");
    // With an empty prefix `GET /v1/models` is KServe's V1 listing, OpenAI models included.
    let list = Req::get("/v1/models")
        .send(&p, b"", at(NOW), &store)
        .unwrap_err();
    assert_eq!(list.body, r#"{"models":["llm"]}"#);
    // The 68 tokens left do not hold a 72-token reservation; another client address has a
    // budget of its own.
    let big = chat_body("llm", 60, "");
    assert_eq!(
        Req::post("/v1/chat/completions")
            .send(&p, &big, at(NOW), &store)
            .unwrap_err()
            .status,
        429
    );
    let mut other = Req::post("/v1/chat/completions");
    other.client = Some("10.0.0.8:1".to_owned());
    assert!(other.send(&p, &big, at(NOW), &store).is_ok());
}

#[test]
fn a_prefix_must_be_plain_path_segments() {
    for (prefix, ok) in [
        ("", true),
        ("/openai", true),
        ("/a/b-c", true),
        ("openai", false),
        ("/openai/", false),
        ("/a//b", false),
        ("/a/../b", false),
        ("/a b", false),
    ] {
        let mut c = config(true);
        c["openai"]["prefix"] = json!(prefix);
        assert_eq!(
            Policies::from_json(c.to_string().as_bytes()).is_ok(),
            ok,
            "{prefix:?}"
        );
    }
}

#[test]
fn only_a_post_to_a_body_endpoint_waits_for_the_body() {
    // KServe's OpenAI body endpoints are POST routes; a GET there carries no body to read and
    // goes on as any other path does (the server answers it with 405).
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let get = Req::get(CHAT).bearer(&markov_token());
    let decision = get.headers_decision(&p, at(NOW), &store);
    assert!(
        matches!(decision, HeadersDecision::Continue(_)),
        "{decision:?}"
    );
    assert!(matches!(
        Req::post(CHAT)
            .bearer(&markov_token())
            .headers_decision(&p, at(NOW), &store),
        HeadersDecision::NeedBody(_)
    ));
}

#[test]
fn the_listing_is_answered_only_for_a_get_with_list_models_on() {
    // Otherwise it is forwarded after authentication (docs/config.md, `GET P/v1/models`).
    let store = MemoryStore::new();
    let p = policies(&config(true));
    let post = Req::post("/openai/v1/models")
        .bearer(&markov_token())
        .headers_decision(&p, at(NOW), &store);
    assert!(matches!(post, HeadersDecision::Continue(_)), "{post:?}");
    let mut off = config(true);
    off["routing"]["listModels"] = json!(false);
    let p = policies(&off);
    let get = Req::get("/openai/v1/models")
        .bearer(&markov_token())
        .headers_decision(&p, at(NOW), &store);
    assert!(matches!(get, HeadersDecision::Continue(_)), "{get:?}");
}

#[test]
fn settlement_charges_the_prompt_plus_the_completion_tokens() {
    let p = policies(&config(true));
    let store = MemoryStore::new();
    let req = Req::post(CHAT).bearer(&markov_token());
    let remaining = |c: &modelgate_policies::Continue| {
        let exchange = c.openai.as_ref().unwrap();
        exchange
            .response_headers
            .iter()
            .find(|(n, _)| *n == "x-ratelimit-remaining-tokens")
            .map(|(_, v)| v.clone())
    };
    // 8 bytes + 4 for the message + 10 completion tokens: 22 reserved of 1,000.
    let c = req
        .send(&p, &chat_body("markov", 10, ""), at(NOW), &store)
        .unwrap();
    assert_eq!(remaining(&c).as_deref(), Some("978"));
    let exchange = c.openai.unwrap();
    let mut meter = p.response_meter(&exchange, 200, Some("application/json"));
    meter.feed(
        br#"{"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
        true,
    );
    p.settle(&exchange, Some(&meter), at(NOW), &store);
    // 15 used, then 22 more reserved.
    let c = req
        .send(&p, &chat_body("markov", 10, ""), at(NOW), &store)
        .unwrap();
    assert_eq!(remaining(&c).as_deref(), Some("963"));
}

#[test]
fn a_crowded_budget_table_says_when_the_caller_s_bucket_frees() {
    // One key of live state per model: while alice's reservation is owed (22 tokens of 1,000 a
    // minute, 1.32 s), bob finds no room and is told to come back when it frees, in 2 s.
    let mut one_key = config(true);
    one_key["rateLimit"]["maxKeys"] = json!(1);
    let p = policies(&one_key);
    let store = MemoryStore::new();
    Req::post(CHAT)
        .bearer(&markov_token())
        .send(&p, &chat_body("markov", 10, ""), at(NOW), &store)
        .unwrap();
    let reply = Req::post(CHAT)
        .bearer(&token("bob", "models:markov"))
        .send(&p, &chat_body("markov", 10, ""), at(NOW), &store)
        .unwrap_err();
    assert_eq!(reply.status, 429);
    assert!(
        error_of(&reply.body)["message"]
            .as_str()
            .unwrap()
            .contains("too many active callers"),
        "{}",
        reply.body
    );
    assert_eq!(reply_header(&reply, "retry-after"), Some("2"));
}
