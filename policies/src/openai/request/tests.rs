use super::*;

fn chat(extra: &str) -> Result<Parsed, Invalid> {
    let body =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hello"}}]{extra}}}"#);
    parse(Kind::Chat, body.as_bytes())
}

fn param(result: Result<Parsed, Invalid>) -> String {
    result.unwrap_err().param.unwrap_or_default()
}

#[test]
fn a_plain_chat_request_is_read_with_its_defaults() {
    let parsed = chat("").unwrap();
    assert_eq!(parsed.model, "m");
    assert_eq!(
        (parsed.text_bytes, parsed.messages, parsed.token_ids),
        (5, 1, 0)
    );
    assert_eq!(parsed.max_tokens, None);
    assert_eq!(parsed.n, 1);
    assert!(!parsed.stream && !parsed.include_usage);
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    assert_eq!(
        chat(r#","max_tokens":9,"max_completion_tokens":4"#)
            .unwrap()
            .max_tokens,
        Some(4)
    );
    assert_eq!(chat(r#","max_tokens":9"#).unwrap().max_tokens, Some(9));
}

#[test]
fn integers_are_read_as_pydantic_lax_mode_reads_them() {
    for (text, want) in [
        ("5", 5),
        ("5.0", 5),
        (r#""5""#, 5),
        (r#"" 7""#, 7),
        ("true", 1),
    ] {
        let parsed = chat(&format!(r#","max_tokens":{text}"#)).unwrap();
        assert_eq!(parsed.max_tokens, Some(want), "{text}");
    }
    for text in ["5.5", r#""five""#, "[]", "{}"] {
        assert_eq!(
            param(chat(&format!(r#","max_tokens":{text}"#))),
            "max_tokens",
            "{text}"
        );
    }
}

#[test]
fn a_chat_needs_at_least_one_token_and_one_choice() {
    let err = chat(r#","max_tokens":0"#).unwrap_err();
    assert_eq!(err.message, "max_tokens: must be at least 1, got 0");
    assert_eq!(param(chat(r#","n":0"#)), "n");
    assert_eq!(chat(r#","n":null"#).unwrap().n, 1);
    assert_eq!(chat(r#","n":3"#).unwrap().n, 3);
}

#[test]
fn booleans_are_read_as_pydantic_lax_mode_reads_them() {
    for (text, want) in [
        ("true", true),
        ("1", true),
        ("0", false),
        (r#""yes""#, true),
        (r#""Off""#, false),
        ("null", false),
    ] {
        assert_eq!(
            chat(&format!(r#","stream":{text}"#)).unwrap().stream,
            want,
            "{text}"
        );
    }
    assert_eq!(param(chat(r#","stream":2"#)), "stream");
}

#[test]
fn stream_options_need_a_stream_unless_empty() {
    let err = chat(r#","stream_options":{"include_usage":true}"#).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("stream_options"));
    assert!(
        err.message
            .contains("Stream options can only be defined when `stream=True`.")
    );
    assert!(chat(r#","stream_options":{}"#).is_ok());
    let parsed = chat(r#","stream":true,"stream_options":{"include_usage":"yes"}"#).unwrap();
    assert!(parsed.stream && parsed.include_usage);
    let parsed = chat(r#","stream":true,"stream_options":{"include_usage":null}"#).unwrap();
    assert!(!parsed.include_usage);
    assert_eq!(
        param(chat(r#","stream":true,"stream_options":5"#)),
        "stream_options"
    );
    assert_eq!(
        param(chat(
            r#","stream":true,"stream_options":{"include_usage":"maybe"}"#
        )),
        "stream_options.include_usage"
    );
}

#[test]
fn messages_need_a_role_and_a_content_vllm_accepts() {
    let check = |messages: &str| {
        parse(
            Kind::Chat,
            format!(r#"{{"model":"m","messages":{messages}}}"#).as_bytes(),
        )
    };
    assert_eq!(param(check(r#"[{"content":"a"}]"#)), "messages[0].role");
    assert_eq!(
        param(check(r#"[{"role":5,"content":"a"}]"#)),
        "messages[0].role"
    );
    assert_eq!(
        param(check(r#"[{"role":"user","content":null}]"#)),
        "messages[0].content"
    );
    assert_eq!(
        param(check(r#"[{"role":"user","content":5}]"#)),
        "messages[0].content"
    );
    assert_eq!(param(check(r#"["hi"]"#)), "messages[0]");
    assert_eq!(param(check(r#""hi""#)), "messages");
    assert!(
        check(r#"[{"role":"assistant","content":null},{"role":"custom","content":"x"}]"#).is_ok()
    );
    let parts =
        check(r#"[{"role":"user","content":[{"type":"text","text":"abc"},"de"]}]"#).unwrap();
    assert_eq!(parts.text_bytes, "text".len() as u64 + 3 + 2);
    assert_eq!(param(parse(Kind::Chat, br#"{"model":"m"}"#)), "messages");
}

/// The content parts of one message with `role` (docs/config.md, "Request shapes"); the
/// verdicts are those KServe 0.21 with vLLM 0.24 gave here (pydantic, then vLLM's parser).
fn parts(role: &str, parts: &str) -> Result<Parsed, Invalid> {
    let body = format!(r#"{{"model":"m","messages":[{{"role":"{role}","content":{parts}}}]}}"#);
    parse(Kind::Chat, body.as_bytes())
}

#[test]
fn content_parts_of_every_chat_type_are_forwarded() {
    for part in [
        r#"{"type":"text","text":"a","extra":1}"#,
        r#"{"type":"image_url","image_url":{"url":"http://x/a.png"}}"#,
        r#"{"type":"image_url","image_url":{"url":"http://x/a.png","detail":"low"}}"#,
        r#"{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}"#,
        r#"{"type":"audio_url","audio_url":{"url":"http://x/a.mp3"}}"#,
        // `detail` is an image URL's member only: beside an audio URL it is not read.
        r#"{"type":"audio_url","audio_url":{"url":"http://x/a.mp3","detail":5}}"#,
        r#"{"type":"video_url","video_url":{"url":"http://x/a.mp4"}}"#,
        r#"{"type":"refusal","refusal":"no"}"#,
        r#"{"type":"thinking","thinking":"hm","closed":true}"#,
        r#"{"type":"image_embeds","image_embeds":"AAAA"}"#,
        r#"{"type":"prompt_embeds","data":"AAAA"}"#,
        r#"{"type":"tool_reference","name":"t"}"#,
        r#"{"image_url":"http://x/a.png"}"#,
        r#"{"video_url":"http://x/a.mp4"}"#,
    ] {
        for role in ["user", "system", "assistant", "narrator"] {
            assert!(parts(role, &format!("[{part}]")).is_ok(), "{role}: {part}");
        }
    }
    // Strings beside a chat part, strings alone for a role vLLM's own type reads, no parts.
    assert!(parts("user", r#"[{"type":"text","text":"a"},"b"]"#).is_ok());
    assert!(parts("narrator", r#"["a","b"]"#).is_ok());
    assert!(parts("function", r#"["a"]"#).is_ok());
    assert!(parts("user", "[]").is_ok());
}

#[test]
fn content_parts_kserve_cannot_read_are_refused_where_they_are() {
    let refused = |role: &str, list: &str| param(parts(role, list));
    // The two shapes KServe answered with a 500 (test_openai_decoding.py).
    assert_eq!(
        refused("user", r#"[{"text":"a"}]"#),
        "messages[0].content[0]"
    );
    assert_eq!(
        refused("user", r#"[{"type":"text","text":5}]"#),
        "messages[0].content[0].text"
    );
    // A null text: vLLM skips the part, but only a custom role's message gets that far.
    assert_eq!(
        refused("user", r#"[{"type":"text","text":null}]"#),
        "messages[0].content[0]"
    );
    assert!(parts("narrator", r#"[{"type":"text","text":null}]"#).is_ok());
    assert!(
        parts(
            "user",
            r#"[{"type":"text","text":"a"},{"type":"text","text":null}]"#
        )
        .is_ok()
    );
    assert_eq!(
        refused("user", r#"[{"type":"text"}]"#),
        "messages[0].content[0].text"
    );
    assert_eq!(
        refused("user", r#"[{"type":"text","text":"a"},{}]"#),
        "messages[0].content[1]"
    );
    assert_eq!(
        refused("user", r#"[{"type":5,"text":"a"}]"#),
        "messages[0].content[0].type"
    );
    let unknown = parts("user", r#"[{"type":"file","file":{"file_id":"f"}}]"#).unwrap_err();
    assert_eq!(
        unknown.param.as_deref(),
        Some("messages[0].content[0].type")
    );
    assert!(
        unknown
            .message
            .contains("unsupported content part type \"file\""),
        "{}",
        unknown.message
    );
    assert_eq!(
        refused("user", r#"[{"type":"image_url","image_url":{}}]"#),
        "messages[0].content[0].image_url.url"
    );
    assert_eq!(
        refused(
            "user",
            r#"[{"type":"image_url","image_url":"http://x/a.png"}]"#
        ),
        "messages[0].content[0].image_url"
    );
    assert_eq!(
        refused(
            "user",
            r#"[{"type":"image_url","image_url":{"url":"u","detail":"x"}}]"#
        ),
        "messages[0].content[0].image_url.detail"
    );
    assert_eq!(
        refused(
            "user",
            r#"[{"type":"input_audio","input_audio":{"data":"AAAA","format":"ogg"}}]"#
        ),
        "messages[0].content[0].input_audio.format"
    );
    assert_eq!(
        refused("user", r#"[{"type":"image_pil","image_pil":"x"}]"#),
        "messages[0].content[0].image_pil"
    );
    // A tool reference's name is optional, but a string when sent.
    assert!(parts("user", r#"[{"type":"tool_reference"}]"#).is_ok());
    assert_eq!(
        refused("user", r#"[{"type":"tool_reference","name":5}]"#),
        "messages[0].content[0].name"
    );
    // Without a type, a media URL is read only as a string; the object form needs a uuid.
    assert_eq!(
        refused("user", r#"[{"image_url":{"url":"http://x/a.png"}}]"#),
        "messages[0].content[0]"
    );
    // Neither a string nor an object, for any role (pydantic: 422).
    for bad in ["5", "null", r#"["a"]"#, "true"] {
        for role in ["user", "narrator"] {
            assert_eq!(
                refused(role, &format!(r#"["x",{bad}]"#)),
                "messages[0].content[1]",
                "{role}: {bad}"
            );
        }
    }
}

#[test]
fn string_parts_alone_and_parts_with_a_uuid_are_read_by_role_and_as_media() {
    let refused = |role: &str, list: &str| param(parts(role, list));
    // Only strings, or only Responses-API parts, for a role OpenAI's message type reads.
    for role in ["developer", "system", "user", "assistant", "tool"] {
        assert_eq!(refused(role, r#"["a","b"]"#), "messages[0].content[0]");
        assert_eq!(
            refused(role, r#"[{"type":"input_text","text":"a"}]"#),
            "messages[0].content[0]"
        );
    }
    assert!(parts("narrator", r#"[{"type":"input_text","text":"a"}]"#).is_ok());
    // `input_image` is one of them, its payload left to the server.
    assert!(
        parts(
            "narrator",
            r#"[{"type":"input_image","image_url":"http://x/a.png"}]"#
        )
        .is_ok()
    );
    // vLLM reads a part with a uuid as media given directly, whatever its type.
    assert_eq!(
        refused("user", r#"[{"type":"text","text":"a","uuid":"u"}]"#),
        "messages[0].content[0]"
    );
    assert!(
        parts(
            "user",
            r#"[{"type":"image_url","image_url":{"url":"http://x/a.png"},"uuid":"u"}]"#
        )
        .is_ok()
    );
}

#[test]
fn model_must_be_a_non_empty_string() {
    assert_eq!(param(parse(Kind::Chat, br#"{"messages":[]}"#)), "model");
    assert_eq!(
        param(parse(Kind::Chat, br#"{"model":null,"messages":[]}"#)),
        "model"
    );
    assert_eq!(
        param(parse(Kind::Chat, br#"{"model":5,"messages":[]}"#)),
        "model"
    );
    assert_eq!(
        param(parse(Kind::Chat, br#"{"model":"","messages":[]}"#)),
        "model"
    );
}

#[test]
fn completions_default_to_sixteen_tokens_as_vllm_does() {
    let parsed = parse(Kind::Completions, br#"{"model":"m","prompt":"abc"}"#).unwrap();
    assert_eq!(parsed.max_tokens, Some(16));
    let parsed = parse(
        Kind::Completions,
        br#"{"model":"m","prompt":"abc","max_tokens":null}"#,
    )
    .unwrap();
    assert_eq!(parsed.max_tokens, Some(16));
    let parsed = parse(
        Kind::Completions,
        br#"{"model":"m","prompt":"abc","max_tokens":0}"#,
    )
    .unwrap();
    assert_eq!(parsed.max_tokens, Some(0));
    assert_eq!(
        param(parse(
            Kind::Completions,
            br#"{"model":"m","prompt":"abc","n":null}"#
        )),
        "n"
    );
}

#[test]
fn prompts_are_strings_or_token_ids() {
    let read = |prompt: &str| {
        parse(
            Kind::Completions,
            format!(r#"{{"model":"m","prompt":{prompt}}}"#).as_bytes(),
        )
    };
    assert_eq!(read(r#""abcd""#).unwrap().text_bytes, 4);
    assert_eq!(read(r#"["ab","c"]"#).unwrap().text_bytes, 3);
    assert_eq!(read("[1,2,3]").unwrap().token_ids, 3);
    assert_eq!(read("[[1,2],[3]]").unwrap().token_ids, 3);
    assert_eq!(param(read("[-1]")), "prompt[0]");
    assert_eq!(param(read("[[1],[-2]]")), "prompt[1][0]");
    assert_eq!(param(read(r#""""#)), "prompt");
    assert_eq!(param(read("5")), "prompt");
    assert_eq!(
        param(parse(Kind::Completions, br#"{"model":"m"}"#)),
        "prompt"
    );
}

#[test]
fn prompt_embeds_stand_in_for_the_prompt_when_not_empty() {
    // vLLM's `validate_prompt_and_prompt_embeds`: a prompt that is absent, null or "" needs
    // `prompt_embeds` that are neither null nor an empty list.
    let read = |members: &str| {
        parse(
            Kind::Completions,
            format!(r#"{{"model":"m"{members}}}"#).as_bytes(),
        )
    };
    // The embeddings' bytes count as the prompt's text for the reservation.
    assert_eq!(read(r#","prompt_embeds":"AAAA""#).unwrap().text_bytes, 4);
    assert_eq!(
        read(r#","prompt":null,"prompt_embeds":["AAAA","BB"]"#)
            .unwrap()
            .text_bytes,
        6
    );
    assert!(read(r#","prompt":"","prompt_embeds":"AAAA""#).is_ok());
    for refused in [
        r#","prompt_embeds":null"#,
        r#","prompt_embeds":[]"#,
        r#","prompt":"","prompt_embeds":[]"#,
        r#","prompt":null,"prompt_embeds":null"#,
    ] {
        let err = read(refused).unwrap_err();
        assert_eq!(
            err.message, "prompt: Either prompt or prompt_embeds must be provided and non-empty.",
            "{refused}"
        );
    }
}

#[test]
fn embeddings_take_inputs_or_messages() {
    let parsed = parse(Kind::Embeddings, br#"{"model":"m","input":["abc","de"]}"#).unwrap();
    assert_eq!((parsed.text_bytes, parsed.max_tokens), (5, None));
    let parsed = parse(
        Kind::Embeddings,
        br#"{"model":"m","messages":[{"role":"user","content":"abcd"}]}"#,
    )
    .unwrap();
    assert_eq!((parsed.text_bytes, parsed.messages), (4, 1));
    let parsed = parse(
        Kind::Embeddings,
        br#"{"model":"m","input":[{"role":"user","content":"ab"}]}"#,
    )
    .unwrap();
    assert_eq!((parsed.text_bytes, parsed.messages), (2, 1));
    assert_eq!(param(parse(Kind::Embeddings, br#"{"model":"m"}"#)), "input");
    assert_eq!(
        param(parse(Kind::Embeddings, br#"{"model":"m","input":true}"#)),
        "input"
    );
}

#[test]
fn every_string_is_decoded_and_the_last_duplicate_wins() {
    let err = parse(Kind::Chat, br#"{"model":"m","messages":[],"x":"\ud800"}"#).unwrap_err();
    assert!(
        err.message.starts_with("body: invalid JSON"),
        "{}",
        err.message
    );
    let parsed = parse(Kind::Chat, br#"{"model":"a","model":"b","messages":[]}"#).unwrap();
    assert_eq!(parsed.model, "b");
    assert!(
        parse(Kind::Chat, b"[]")
            .unwrap_err()
            .message
            .contains("JSON object")
    );
}
