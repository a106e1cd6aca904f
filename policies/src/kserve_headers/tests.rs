use super::{Framing, v1, v2};

fn set(header: &'static str, value: &str) -> Framing {
    Framing {
        set: Some((header, value.to_owned())),
        binary_header: None,
    }
}

#[test]
fn v1_json_types_are_rewritten_to_the_exact_type_kserve_parses() {
    let cases = [
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ("Application/JSON;charset=\"UTF-8\"", "application/json"),
        ("application/json;", "application/json"),
        (
            "application/cloudevents+json; charset=utf-8",
            "application/cloudevents+json",
        ),
        ("application/ld+json", "application/ld+json"),
        ("application/octet-stream", "application/octet-stream"),
    ];
    for (sent, forwarded) in cases {
        let headers = vec![("content-type", sent)];
        assert_eq!(v1(&headers), Ok(set("content-type", forwarded)), "{sent}");
    }
}

#[test]
fn v1_without_a_content_type_is_parsed_as_json_and_left_alone() {
    let headers: Vec<(&str, &str)> = vec![];
    assert_eq!(v1(&headers), Ok(Framing::default()));
}

#[test]
fn v1_types_kserve_hands_to_the_model_as_bytes_are_415() {
    for sent in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
        "application/json; boundary=x",
        "application/json, text/plain",
        "application/problem+json",
        "",
    ] {
        let headers = vec![("content-type", sent)];
        let refusal = v1(&headers).expect_err(sent);
        assert_eq!(refusal.status, 415, "{sent}");
        assert!(refusal.message.starts_with("content-type: "), "{refusal:?}");
    }
}

#[test]
fn v1_binary_cloudevents_are_refused_only_when_kserve_would_see_one() {
    let all = vec![
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-source", "s"),
        ("ce-type", "t"),
        ("ce-id", "1"),
    ];
    let refusal = v1(&all).expect_err("binary cloudevent");
    assert_eq!(refusal.status, 400);
    assert!(
        refusal.message.starts_with("ce-specversion: "),
        "{refusal:?}"
    );

    // Three of the four: KServe decodes the body as plain JSON, and so does the filter.
    let partial: Vec<(&str, &str)> = all.iter().copied().filter(|(k, _)| *k != "ce-id").collect();
    assert_eq!(v1(&partial), Ok(set("content-type", "application/json")));
}

#[test]
fn v2_json_follows_fastapis_rule() {
    for sent in [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/cloudevents+json",
        "application/vnd.custom+json; v=2",
    ] {
        let headers = vec![("content-type", sent)];
        assert_eq!(v2(&headers), Ok(Framing::default()), "{sent}");
    }
    for sent in [
        "text/plain",
        "application/octet-stream",
        "text/json",
        "application/json/x",
    ] {
        let headers = vec![("content-type", sent)];
        assert_eq!(v2(&headers).map_err(|r| r.status), Err(415), "{sent}");
    }
    let none: Vec<(&str, &str)> = vec![];
    assert_eq!(v2(&none).map_err(|r| r.status), Err(415));
}

#[test]
fn v2_binary_extension_needs_a_non_json_type_and_pins_the_length_header() {
    for headers in [
        vec![
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", "12"),
        ],
        vec![("inference-header-content-length", "12")],
    ] {
        assert_eq!(
            v2(&headers),
            Ok(Framing {
                set: Some(("inference-header-content-length", "12".to_owned())),
                binary_header: Some("12".to_owned()),
            })
        );
    }
    let json = vec![
        ("content-type", "application/json"),
        ("inference-header-content-length", "12"),
    ];
    assert_eq!(v2(&json).map_err(|r| r.status), Err(415));
}
