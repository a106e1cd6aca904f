use super::*;
use crate::engine::openai_steps::openai_reply;
use crate::reply;

fn routes(prefix: &str) -> OpenAiRoutes {
    OpenAiRoutes {
        prefix: prefix.to_owned(),
        hold_headers: false,
        caller_class: None,
    }
}

#[test]
fn paths_are_recognised_under_the_prefix_only() {
    let r = routes("/openai");
    assert_eq!(
        r.classify("/openai/v1/chat/completions"),
        Some(Route::Body(Kind::Chat))
    );
    assert_eq!(
        r.classify("/openai/v1/completions?x=1"),
        Some(Route::Body(Kind::Completions))
    );
    assert_eq!(
        r.classify("/openai/v1/embeddings"),
        Some(Route::Body(Kind::Embeddings))
    );
    assert_eq!(
        r.classify("/openai/v1/rerank"),
        Some(Route::Body(Kind::Rerank))
    );
    assert_eq!(r.classify("/openai/v1/models"), Some(Route::List));
    assert_eq!(
        r.classify("/openai/v1/models/m-1"),
        Some(Route::Model("m-1"))
    );
    assert_eq!(r.classify("/openai/v1/models/a/b"), None);
    assert_eq!(r.classify("/openai/v1/other"), None);
    assert_eq!(r.classify("/v1/chat/completions"), None);
    assert_eq!(r.classify("/openaix/v1/completions"), None);
}

#[test]
fn an_empty_prefix_leaves_the_model_paths_to_v1() {
    let r = routes("");
    assert_eq!(
        r.classify("/v1/chat/completions"),
        Some(Route::Body(Kind::Chat))
    );
    assert_eq!(r.classify("/v1/models"), None);
    assert_eq!(r.classify("/v1/models/m"), None);
}

#[test]
fn resets_are_written_as_openai_writes_them() {
    const SEC: u64 = 1_000_000_000;
    assert_eq!(reset_text(20_000_000), "20ms");
    assert_eq!(reset_text(1), "1ms");
    assert_eq!(reset_text(0), "0ms");
    assert_eq!(reset_text(2 * SEC), "2s");
    assert_eq!(reset_text(2 * SEC + 1), "3s");
    assert_eq!(reset_text(90 * SEC), "1m30s");
    assert_eq!(reset_text(3600 * SEC), "1h0m0s");
}

#[test]
fn usage_is_asked_for_by_appending_the_last_member() {
    let body = br#"{"model":"m","stream":true}"#;
    assert_eq!(
        String::from_utf8(with_usage_requested(body)).unwrap(),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
    );
    // Trailing whitespace and the client's other options are kept.
    let body = b"{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"continuous_usage_stats\":false,\"include_usage\":false}}\n";
    let out = String::from_utf8(with_usage_requested(body)).unwrap();
    assert!(
        out.contains(r#""stream_options":{"continuous_usage_stats":false,"include_usage":false}"#)
    );
    assert!(
        out.contains(r#","stream_options":{"continuous_usage_stats":false,"include_usage":true}}"#)
    );
    assert!(out.ends_with('\n'));
    // Python's json.loads keeps the last duplicate: the server reads include_usage true.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["stream_options"]["include_usage"],
        serde_json::json!(true)
    );
}

#[test]
fn errors_take_openai_s_shape_with_kserve_s_values() {
    let reply = openai_reply(
        reply::invalid("max_tokens: too many", None),
        Some("max_tokens"),
    );
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {"message": "max_tokens: too many", "type": "BadRequestError",
                                     "param": "max_tokens", "code": "400"}})
    );
    let limited = openai_reply(reply::rate_limited(Arc::from("m"), 3, 2, 90), None);
    assert_eq!(limited.status, 429);
    let header = |name: &str| {
        limited
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-ratelimit-limit-requests").as_deref(), Some("3"));
    assert_eq!(
        header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(
        header("x-ratelimit-reset-requests").as_deref(),
        Some("1m30s")
    );
    assert_eq!(header("retry-after").as_deref(), Some("2"));
    assert!(limited.body.contains("\"type\":\"RateLimitError\""));
    // A listing is not an error and keeps its shape.
    let list = openai_reply(reply::openai_model_list(["a"].into_iter(), 5), None);
    assert!(list.body.starts_with("{\"data\""), "{}", list.body);
}

#[test]
fn the_prompt_estimate_rounds_up_and_counts_ids_and_messages() {
    let settings = ModelOpenAi {
        max_tokens: None,
        default_max_tokens: 10,
        max_n: 4,
        bytes_per_token: 4,
        budget: None,
    };
    let parsed = Parsed {
        model: "m".into(),
        text_bytes: 9,
        token_ids: 5,
        messages: 2,
        max_tokens: None,
        n: 1,
        stream: false,
        include_usage: false,
    };
    assert_eq!(
        estimate_prompt(Kind::Chat, &parsed, &settings, 100),
        3 + 5 + 8
    );
    assert_eq!(
        estimate_prompt(Kind::Rerank, &parsed, &settings, 100),
        25 + 5 + 8
    );
}
