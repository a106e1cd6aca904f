use super::*;

const CHUNK_A: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
const CHUNK_B: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n";
const USAGE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

fn stream() -> String {
    [CHUNK_A, CHUNK_B, USAGE, DONE].concat()
}

/// Feed `body` cut at `cuts`, returning what the client receives.
fn run(meter: &mut ResponseMeter, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.to_vec();
    ends.push(body.len());
    for (i, end) in ends.iter().enumerate() {
        let chunk = &body[start..*end];
        let last = i == ends.len() - 1;
        match meter.feed(chunk, last) {
            Some(replacement) => out.extend_from_slice(&replacement),
            None => out.extend_from_slice(chunk),
        }
        start = *end;
    }
    out
}

#[test]
fn a_json_body_passes_unchanged_and_its_usage_is_read_at_the_end() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
    let mut meter = ResponseMeter::new(200, Some("application/json"), true);
    assert!(!meter.rewrites_body());
    assert_eq!(run(&mut meter, body, &[10, 50]), body.to_vec());
    assert_eq!(
        meter.usage(),
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 5
        })
    );
    assert!(!meter.is_stream());
    // A success is settled from its usage, not as an error.
    assert!(!meter.is_error());
}

#[test]
fn embeddings_usage_has_no_completion_tokens() {
    let body = br#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
    let mut meter = ResponseMeter::new(200, None, false);
    run(&mut meter, body, &[]);
    assert_eq!(
        meter.usage(),
        Some(Usage {
            prompt_tokens: 4,
            completion_tokens: 0
        })
    );
}

#[test]
fn the_usage_chunk_is_removed_at_every_split_and_nothing_else_changes() {
    let body = stream();
    let want = [CHUNK_A, CHUNK_B, DONE].concat();
    for cut in 0..=body.len() {
        let mut meter = ResponseMeter::new(200, Some("text/event-stream; charset=utf-8"), true);
        let out = run(&mut meter, body.as_bytes(), &[cut]);
        assert_eq!(String::from_utf8(out).unwrap(), want, "cut at {cut}");
        assert_eq!(
            meter.usage(),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        assert_eq!(meter.content_events(), 2);
    }
}

#[test]
fn byte_by_byte_chunks_still_give_the_client_every_other_byte() {
    let body = stream();
    let cuts: Vec<usize> = (1..body.len()).collect();
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
    let out = run(&mut meter, body.as_bytes(), &cuts);
    assert_eq!(out, [CHUNK_A, CHUNK_B, DONE].concat().into_bytes());
}

#[test]
fn when_the_client_asked_for_usage_the_stream_passes_byte_for_byte() {
    let body = stream();
    for cut in 0..=body.len() {
        let mut meter = ResponseMeter::new(200, Some("text/event-stream"), false);
        let mut start = 0;
        for (end, last) in [(cut, false), (body.len(), true)] {
            assert_eq!(meter.feed(&body.as_bytes()[start..end], last), None);
            start = end;
        }
        assert_eq!(
            meter.usage(),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            }),
            "cut at {cut}"
        );
    }
}

#[test]
fn crlf_events_are_read_too() {
    let body = stream().replace('\n', "\r\n");
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
    let out = run(&mut meter, body.as_bytes(), &[33, 140]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        [CHUNK_A, CHUNK_B, DONE].concat().replace('\n', "\r\n")
    );
    assert_eq!(meter.usage().map(|u| u.prompt_tokens), Some(7));
}

#[test]
fn a_stream_cut_short_has_no_usage_but_counts_its_content_events() {
    let body = [CHUNK_A, &CHUNK_B[..20]].concat();
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
    let out = run(&mut meter, body.as_bytes(), &[]);
    // What was held back is flushed at the end, whole or not.
    assert_eq!(out, body.as_bytes());
    assert_eq!(meter.usage(), None);
    assert_eq!(meter.content_events(), 1);
}

#[test]
fn an_error_response_is_never_rewritten() {
    let mut meter = ResponseMeter::new(500, Some("text/event-stream"), true);
    assert!(!meter.rewrites_body());
    assert!(meter.is_error());
    assert_eq!(meter.feed(stream().as_bytes(), true), None);
}

#[test]
fn an_event_without_a_blank_line_past_the_limit_is_passed_on_unread() {
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
    let big = vec![b'x'; MAX_EVENT_BYTES + 1];
    assert_eq!(meter.feed(&big, false), None);
    // Later bytes pass as they are.
    assert_eq!(meter.feed(USAGE.as_bytes(), true), None);
    assert_eq!(meter.usage(), None);
}

#[test]
fn only_a_meter_that_strips_the_usage_chunk_rewrites_the_body() {
    // The filter drops the response's content-length exactly when this is true.
    assert!(ResponseMeter::new(200, Some("text/event-stream"), true).rewrites_body());
    assert!(!ResponseMeter::new(200, Some("text/event-stream"), false).rewrites_body());
    assert!(!ResponseMeter::new(200, Some("application/json"), true).rewrites_body());
}

/// The limits as the module documents them, written out: a test that read the constants would
/// follow any change to them.
const JSON_LIMIT: usize = 4 * 1024 * 1024;
const EVENT_LIMIT: usize = 1024 * 1024;

/// A JSON body of exactly `len` bytes whose `usage` comes after `len` minus a few bytes of padding.
fn padded_json(len: usize) -> Vec<u8> {
    let usage = r#","usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
    let head = r#"{"pad":""#;
    let pad = len - head.len() - 1 - usage.len();
    let body = format!("{head}{}\"{usage}", "x".repeat(pad));
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[test]
fn a_json_body_up_to_four_mebibytes_is_read_and_a_larger_one_is_not() {
    let mut meter = ResponseMeter::new(200, Some("application/json"), false);
    let body = padded_json(JSON_LIMIT);
    run(&mut meter, &body, &[JSON_LIMIT / 2]);
    assert_eq!(meter.usage().map(|u| u.completion_tokens), Some(5));

    let mut meter = ResponseMeter::new(200, Some("application/json"), false);
    let body = padded_json(JSON_LIMIT + 1);
    // Still passed on unchanged; only its usage is not read.
    assert_eq!(run(&mut meter, &body, &[JSON_LIMIT / 2]), body);
    assert_eq!(meter.usage(), None);
}

#[test]
fn an_event_of_up_to_a_mebibyte_is_still_read() {
    // A content chunk whose first mebibyte arrives without its blank line is held, not passed
    // on unread, and the usage chunk after it is still removed.
    let head = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
    let tail = "\"}}]}\n\n";
    let content = "y".repeat(EVENT_LIMIT - head.len());
    let event = format!("{head}{content}{tail}");
    let body = [event.as_str(), USAGE, DONE].concat();
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
    let out = run(&mut meter, body.as_bytes(), &[EVENT_LIMIT]);
    assert_eq!(out, [event.as_str(), DONE].concat().into_bytes());
    assert_eq!(meter.usage().map(|u| u.prompt_tokens), Some(7));
    assert_eq!(meter.content_events(), 1);
}

#[test]
fn an_event_ends_at_its_blank_line_whatever_the_line_endings_around_it() {
    // The SSE spec lets every line end in LF or CRLF, and a line of one character (a `:`
    // comment) is not a blank line: the usage event ends where its blank line does, so the
    // client gets every other byte and nothing of it.
    let usage = USAGE.trim_end_matches('\n');
    for usage_event in [
        format!("{usage}\n:\n\n"),
        format!("{usage}\n\r\n"),
        format!("{usage}\r\n\n"),
    ] {
        let body = [CHUNK_A, usage_event.as_str(), DONE].concat();
        let mut meter = ResponseMeter::new(200, Some("text/event-stream"), true);
        let out = run(&mut meter, body.as_bytes(), &[]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            [CHUNK_A, DONE].concat(),
            "{usage_event:?}"
        );
        assert_eq!(meter.usage().map(|u| u.prompt_tokens), Some(7));
    }
}

#[test]
fn an_event_s_data_lines_are_joined_by_a_line_feed() {
    // The SSE spec's reading: one optional space after `data:` removed, the lines joined by LF.
    assert_eq!(
        event_data(b"data: a\ndata:b\r\nid: 1\ndata:  c\n\n"),
        b"a\nb\n c"
    );
    assert_eq!(event_data(b"data: [DONE]\n\n"), b"[DONE]");
    // So a usage object cut inside a number across two lines is not read as another number.
    let split = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1\ndata: 2}}\n\n";
    let mut meter = ResponseMeter::new(200, Some("text/event-stream"), false);
    run(&mut meter, split.as_bytes(), &[]);
    assert_eq!(meter.usage(), None);
}
