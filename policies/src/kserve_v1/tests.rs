use super::{V1Rules, validate};
use crate::config::{CloudEvents, ElementType};

const IRIS: V1Rules = V1Rules {
    feature_count: Some(4),
    max_instances: Some(10),
    element_type: ElementType::Number,
    cloud_events: CloudEvents::Reject,
};
const FREE: V1Rules = V1Rules {
    feature_count: None,
    max_instances: None,
    element_type: ElementType::Number,
    cloud_events: CloudEvents::Reject,
};
const IRIS_EVENTS: V1Rules = V1Rules {
    cloud_events: CloudEvents::Unwrap,
    ..IRIS
};

#[test]
fn accepts_well_formed_bodies() {
    let ok = [
        (
            IRIS,
            r#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6, 3.4, 4.5, 1.6]]}"#,
        ),
        (
            IRIS,
            r#"{"inputs": [[1, 2, 3, 4]], "parameters": {"x": [1, "a", null]}}"#,
        ),
        (FREE, r#"{"instances": [1, 2.5, -3]}"#),
        (
            FREE,
            r#"{"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}"#,
        ),
        (FREE, r#" {"instances":[[1]]} "#),
    ];
    for (rules, body) in ok {
        assert_eq!(validate(body.as_bytes(), &rules), Ok(()), "body {body}");
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "a data table, one case per line")]
fn rejects_each_malformed_class_naming_the_place() {
    let cases = [
        (
            IRIS,
            "",
            "body: invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            IRIS,
            "{",
            "body: invalid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (IRIS, "[1]", "body: expected a JSON object, got a list"),
        (
            IRIS,
            "42",
            "body: invalid type: integer `42`, expected a JSON object at line 1 column 2",
        ),
        (IRIS, "{}", "body: missing instances or inputs"),
        (
            IRIS,
            r#"{"instances": [[1,2,3,4]], "inputs": [[1,2,3,4]]}"#,
            "body: exactly one of instances or inputs is allowed",
        ),
        (
            IRIS,
            r#"{"instances": [[1,2,3,4]], "instances": [[1,2,3,4]]}"#,
            "body: duplicate field instances",
        ),
        (
            IRIS,
            r#"{"instances": {}}"#,
            "instances: expected a list, got an object",
        ),
        (
            IRIS,
            r#"{"instances": "x"}"#,
            "instances: expected a list, got a string",
        ),
        (
            IRIS,
            r#"{"instances": null}"#,
            "instances: expected a list, got null",
        ),
        (IRIS, r#"{"instances": []}"#, "instances: must not be empty"),
        (
            IRIS,
            r#"{"instances": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3]]}"#,
            "instances[3]: expected 4 features, got 3",
        ),
        (
            V1Rules {
                max_instances: Some(3),
                ..IRIS
            },
            r#"{"instances": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]}"#,
            "instances: more than 3 instances",
        ),
        (
            IRIS,
            r#"{"instances": [[1,2,3]]}"#,
            "instances[0]: expected 4 features, got 3",
        ),
        (
            IRIS,
            r#"{"instances": [1]}"#,
            "instances[0]: expected a list of 4 features, got a scalar",
        ),
        (
            IRIS,
            r#"{"instances": [[1,2,"3",4]]}"#,
            "instances[0][2]: expected a number, got a string",
        ),
        (
            IRIS,
            r#"{"instances": [[1,2,null,4]]}"#,
            "instances[0][2]: expected a number, got null",
        ),
        (
            IRIS,
            r#"{"instances": [[1,2,true,4]]}"#,
            "instances[0][2]: expected a number, got a boolean",
        ),
        (
            IRIS,
            r#"{"inputs": [[1,2,{},4]]}"#,
            "inputs[0][2]: expected a number, got an object",
        ),
        (
            FREE,
            r#"{"instances": [[1,2],[1,2,3]]}"#,
            "instances[1]: expected 2 features, got 3",
        ),
        (
            FREE,
            r#"{"instances": [[1,2],3]}"#,
            "instances[1]: expected shape [2] like instances[0], got []",
        ),
        (
            FREE,
            r#"{"instances": [[[1,2],[3]]]}"#,
            "instances[0][1]: ragged list: expected shape [2], got [1]",
        ),
        (FREE, r#"{"instances": [[]]}"#, "instances[0]: empty list"),
        (
            FREE,
            r#"{"instances": [[1,2]]} x"#,
            "body: invalid JSON: trailing characters at line 1 column 24",
        ),
    ];
    for (rules, body, want) in cases {
        assert_eq!(
            validate(body.as_bytes(), &rules),
            Err(want.to_owned()),
            "body {body}"
        );
    }
}

#[test]
fn element_type_decides_what_a_row_may_hold() {
    let strings = V1Rules {
        element_type: ElementType::String,
        ..FREE
    };
    let bools = V1Rules {
        element_type: ElementType::Bool,
        ..FREE
    };
    let any = V1Rules {
        element_type: ElementType::Any,
        ..FREE
    };
    assert_eq!(
        validate(br#"{"instances": [["a", "b"]]}"#, &strings),
        Ok(())
    );
    assert_eq!(
        validate(br#"{"instances": [["a", 1]]}"#, &strings),
        Err("instances[0][1]: expected a string, got a number".to_owned())
    );
    assert_eq!(
        validate(br#"{"instances": [[true, false]]}"#, &bools),
        Ok(())
    );
    assert_eq!(
        validate(br#"{"instances": [["a", 1, true]]}"#, &any),
        Ok(())
    );
    assert_eq!(
        validate(br#"{"instances": [["a", null]]}"#, &any),
        Err("instances[0][1]: expected a scalar, got null".to_owned())
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let body = format!(
        "{{\"instances\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = validate(body.as_bytes(), &FREE).unwrap_err();
    assert!(err.contains("recursion limit exceeded"), "{err}");
}

#[test]
fn rows_nested_past_the_rank_limit_are_refused() {
    let deep = format!("{}1{}", "[".repeat(9), "]".repeat(9));
    let body = format!("{{\"instances\": [{deep}]}}");
    assert_eq!(
        validate(body.as_bytes(), &FREE),
        Err("instances[0]: rows nest deeper than 8 levels".to_owned())
    );
    let ok = format!("{{\"instances\": [{}1{}]}}", "[".repeat(7), "]".repeat(7));
    assert_eq!(validate(ok.as_bytes(), &FREE), Ok(()));
}

/// A structured `CloudEvent` as KServe's `is_structured_cloudevent` recognises it, around `data`,
/// with `outer` members besides the attributes.
fn event(data: &str, outer: &str) -> String {
    format!(
        r#"{{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "time": "2020-01-01T00:00:00Z", "data": {data}{outer}}}"#
    )
}

#[test]
fn a_structured_cloudevent_is_refused_by_default() {
    let body = event(r#"{"instances": [[1, 2, 3, 4]]}"#, "");
    assert_eq!(
        validate(body.as_bytes(), &IRIS),
        Err("body: a structured CloudEvent (specversion, id, source, type, time and data) is not accepted here".to_owned())
    );
}

#[test]
fn an_unwrapped_cloudevent_is_judged_by_its_data_not_its_outer_rows() {
    let valid_data = event(r#"{"instances": [[1, 2, 3, 4]]}"#, "");
    assert_eq!(validate(valid_data.as_bytes(), &IRIS_EVENTS), Ok(()));

    // The bypass KServe allowed: valid outer rows, three features in what the model is fed.
    let smuggled = event(
        r#"{"instances": [[1, 2, 3]]}"#,
        r#", "instances": [[1, 2, 3, 4]]"#,
    );
    assert_eq!(
        validate(smuggled.as_bytes(), &IRIS_EVENTS),
        Err("data.instances[0]: expected 4 features, got 3".to_owned())
    );
    let too_many = event(
        &format!(r#"{{"instances": [{}]}}"#, ["[1, 2, 3, 4]"; 11].join(", ")),
        "",
    );
    assert_eq!(
        validate(too_many.as_bytes(), &IRIS_EVENTS),
        Err("data.instances: more than 10 instances".to_owned())
    );
    for (data, want) in [
        (
            "null",
            "data: invalid type: null, expected a JSON object at line 1 column 4",
        ),
        (
            r#""{\"instances\": [[1, 2, 3, 4]]}""#,
            "data: invalid type: string \"{\\\"instances\\\": [[1, 2, 3, 4]]}\", expected a JSON object at line 1 column 33",
        ),
        ("[[1, 2, 3, 4]]", "data: expected a JSON object, got a list"),
        ("{}", "data: missing instances or inputs"),
    ] {
        assert_eq!(
            validate(event(data, "").as_bytes(), &IRIS_EVENTS),
            Err(want.to_owned()),
            "{data}"
        );
    }
    // KServe unwraps once: an event inside `data` is a plain body and needs its own rows.
    let nested = event(&event(r#"{"instances": [[1, 2, 3, 4]]}"#, ""), "");
    assert_eq!(
        validate(nested.as_bytes(), &IRIS_EVENTS),
        Err("data: missing instances or inputs".to_owned())
    );
}

#[test]
fn a_body_missing_one_cloudevent_attribute_is_a_plain_body() {
    // No `time`: KServe predicts on the outer rows, and so the filter validates those.
    let body = r#"{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": {"instances": [[1, 2, 3]]}, "instances": [[1, 2, 3, 4]]}"#;
    assert_eq!(validate(body.as_bytes(), &IRIS), Ok(()));
    assert_eq!(validate(body.as_bytes(), &IRIS_EVENTS), Ok(()));
}

#[test]
fn a_repeated_data_member_is_refused() {
    let body = event(
        r#"{"instances": [[1, 2, 3, 4]]}"#,
        r#", "data": {"instances": [[1, 2, 3]]}"#,
    );
    assert_eq!(
        validate(body.as_bytes(), &IRIS_EVENTS),
        Err("body: duplicate field data".to_owned())
    );
}

#[test]
fn a_lone_surrogate_anywhere_is_refused_as_orjson_refuses_it() {
    let body = r#"{"instances": [[1, 2, 3, 4]], "note": "\ud800"}"#;
    assert!(validate(body.as_bytes(), &IRIS).is_err());
    let in_data = event(r#"{"instances": [[1, 2, 3, 4]], "note": "\ud800"}"#, "");
    assert!(validate(in_data.as_bytes(), &IRIS_EVENTS).is_err());
    let paired = r#"{"instances": [[1, 2, 3, 4]], "note": "\ud83d\ude00"}"#;
    assert_eq!(validate(paired.as_bytes(), &IRIS), Ok(()));
}
