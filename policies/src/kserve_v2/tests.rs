use super::{DeclaredInput, V2Rules, validate as validate_with};
use crate::config::ElementType;

fn validate(body: &[u8], binary: Option<&str>) -> Result<(), String> {
    validate_with(body, binary, &V2Rules::default())
}

fn ok(body: &str) {
    assert_eq!(validate(body.as_bytes(), None), Ok(()), "body {body}");
}

fn err(body: &str, want: &str) {
    assert_eq!(
        validate(body.as_bytes(), None),
        Err(want.to_owned()),
        "body {body}"
    );
}

fn input(name: &str, datatype: &str, shape: &str, data: &str) -> String {
    format!(
        r#"{{"inputs": [{{"name": "{name}", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}]}}"#
    )
}

#[test]
fn accepts_each_datatype_with_fitting_values() {
    let cases = [
        ("BOOL", "[2]", "[true, false]"),
        ("UINT8", "[2]", "[0, 255]"),
        ("UINT16", "[1]", "[65535]"),
        ("UINT32", "[1]", "[4294967295]"),
        ("UINT64", "[1]", "[18446744073709551615]"),
        ("INT8", "[2]", "[-128, 127]"),
        ("INT16", "[2]", "[-32768, 32767]"),
        ("INT32", "[1]", "[-2147483648]"),
        (
            "INT64",
            "[2]",
            "[-9223372036854775808, 9223372036854775807]",
        ),
        ("FP32", "[2, 2]", "[1, 2, 3, 4.5]"),
        ("FP64", "[2, 2]", "[[1, 2], [3, 4.5]]"),
        ("BYTES", "[1]", r#"["hello"]"#),
        ("FP32", "[]", "[7]"),
    ];
    for (datatype, shape, data) in cases {
        ok(&input("x", datatype, shape, data));
    }
    ok(r#"{"id": "1", "parameters": {"a": 1}, "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [6.8, 2.8, 4.8, 1.4], "parameters": {}},
        {"name": "b", "datatype": "INT32", "shape": [1], "data": [1]}],
        "outputs": [{"name": "predict"}]}"#);
}

#[test]
fn rejects_each_malformed_class_naming_the_place() {
    err(
        "",
        "body: invalid JSON: EOF while parsing a value at line 1 column 0",
    );
    err("[]", "body: expected a JSON object");
    err(" 42", "body: expected a JSON object");
    err("{}", "inputs: missing");
    err(r#"{"inputs": []}"#, "inputs: must not be empty");
    err(
        r#"{"inputs": {}}"#,
        "inputs: invalid type: map, expected a sequence at line 1 column 11",
    );
    err(
        r#"{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}"#,
        "inputs[0]: missing field `name` at line 1 column 59",
    );
    err(
        &input("", "FP32", "[1]", "[1]"),
        "inputs[0].name: must not be empty",
    );
    err(
        &input("x", "FLOAT", "[1]", "[1]"),
        "inputs[0].datatype: unknown datatype \"FLOAT\"",
    );
    err(
        &input("x", "FP32", "[-1]", "[1]"),
        "inputs[0].shape[0]: invalid value: integer `-1`, expected u64 at line 1 column 58",
    );
    err(
        &input("x", "FP32", "[1.5]", "[1]"),
        "inputs[0].shape[0]: invalid type: floating point `1.5`, expected u64 at line 1 column 59",
    );
    err(
        &input("x", "FP32", "[2, 3]", "[1, 2, 3, 4, 5]"),
        "inputs[0].data: 5 elements, shape [2, 3] needs 6",
    );
    err(
        &input("x", "FP32", "[3, 2]", "[[1, 2, 3], [4, 5, 6]]"),
        "inputs[0].data: nested shape [2, 3] does not match shape [3, 2]",
    );
    err(
        &input("x", "FP32", "[2, 2]", "[[1, 2], [3]]"),
        "inputs[0].data: ragged nested list at line 1 column 84",
    );
    err(
        r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}"#,
        "inputs[0].data: missing",
    );
    err(
        &input("x", "UINT8", "[1]", "[256]"),
        "inputs[0].data: value 256 out of range for UINT8",
    );
    err(
        &input("x", "UINT8", "[1]", "[-1]"),
        "inputs[0].data: value -1 out of range for UINT8",
    );
    err(
        &input("x", "INT8", "[1]", "[-129]"),
        "inputs[0].data: value -129 out of range for INT8",
    );
    err(
        &input("x", "INT32", "[1]", "[1.5]"),
        "inputs[0].data: expected integers, found a non-integer number",
    );
    err(
        &input("x", "BOOL", "[1]", "[1]"),
        "inputs[0].data: expected booleans, found an integer",
    );
    err(
        &input("x", "FP32", "[1]", r#"["1"]"#),
        "inputs[0].data: expected numbers, found a string",
    );
    err(
        &input("x", "FP32", "[1]", "[null]"),
        "inputs[0].data: expected numbers, found null or an object",
    );
    err(
        &input("x", "BYTES", "[1]", "[1]"),
        "inputs[0].data: expected strings, found an integer",
    );
    err(
        &input("x", "FP32", "[18446744073709551615, 2]", "[1]"),
        "inputs[0].shape: element count overflows",
    );
    err(
        r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"binary_data_size": 4}}]}"#,
        "inputs[0].parameters.binary_data_size: needs the inference-header-content-length header",
    );
}

#[test]
fn validates_the_json_header_of_binary_bodies() {
    let header = r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&[0u8; 8]);
    let len = header.len().to_string();
    assert_eq!(validate(&body, Some(&len)), Ok(()));

    body.push(0);
    assert_eq!(
        validate(&body, Some(&len)),
        Err("body: binary data is 9 bytes, inputs declare 8".to_owned())
    );

    let wrong = r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 8}}]}"#;
    let mut body = wrong.as_bytes().to_vec();
    body.extend_from_slice(&[0u8; 8]);
    assert_eq!(
        validate(&body, Some(&wrong.len().to_string())),
        Err(
            "inputs[0].parameters.binary_data_size: 8 bytes, shape [3] of FP32 needs 12".to_owned()
        )
    );
    assert_eq!(
        validate(&body, Some("100000")),
        Err(format!(
            "inference-header-content-length: 100000 exceeds the body's {} bytes",
            body.len()
        ))
    );
    // The JSON header may be the whole body: every input carries its data in JSON.
    let plain = r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}"#;
    assert_eq!(
        validate(plain.as_bytes(), Some(&plain.len().to_string())),
        Ok(())
    );
    assert_eq!(
        validate(&body, Some("-3")),
        Err("inference-header-content-length: not a non-negative integer".to_owned())
    );
}

fn body(inputs: &[String]) -> String {
    format!(r#"{{"inputs": [{}]}}"#, inputs.join(", "))
}

/// One input object (where `input` gives a whole body).
fn tensor(name: &str, datatype: &str, shape: &str, data: &str) -> String {
    format!(r#"{{"name": "{name}", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}"#)
}

#[test]
fn refuses_shapes_numpy_cannot_build_or_that_hold_no_data() {
    let deep = vec!["1"; 65].join(", ");
    err(
        &body(&[tensor("x", "FP64", &format!("[{deep}]"), "[1.0]")]),
        "inputs[0].shape: 65 dimensions, the model server's numpy accepts at most 64",
    );
    let deepest_allowed = vec!["1"; 64].join(", ");
    ok(&body(&[tensor(
        "x",
        "FP64",
        &format!("[{deepest_allowed}]"),
        "[1.0]",
    )]));
    err(
        &body(&[tensor("x", "FP64", "[0, 4]", "[]")]),
        "inputs[0].shape: [0, 4] is a zero-size tensor, which gives the model no data",
    );
    err(
        &input("x", "FP32", "[0]", "[]"),
        "inputs[0].shape: [0] is a zero-size tensor, which gives the model no data",
    );
}

fn iris_rules() -> V2Rules {
    V2Rules {
        inputs: None,
        feature_count: Some(4),
        max_instances: Some(2),
        element_type: Some(ElementType::Number),
    }
}

fn check(rules: &V2Rules, inputs: &[String]) -> Result<(), String> {
    validate_with(body(inputs).as_bytes(), None, rules)
}

#[test]
fn feature_count_max_instances_and_element_type_apply_to_v2() {
    let rules = iris_rules();
    let row = "[5.1, 3.5, 1.4, 0.2]";
    assert_eq!(
        check(&rules, &[tensor("input-0", "FP64", "[1, 4]", row)]),
        Ok(())
    );
    assert_eq!(
        check(
            &rules,
            &[tensor("input-0", "INT32", "[1, 4]", "[5, 3, 1, 0]")]
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &rules,
            &[tensor("input-0", "FP64", "[1, 3]", "[5.1, 3.5, 1.4]")]
        ),
        Err("inputs[0].shape: [1, 3], this model takes [N, 4] (4 features per row)".to_owned())
    );
    assert_eq!(
        check(&rules, &[tensor("input-0", "FP64", "[4]", row)]),
        Err("inputs[0].shape: [4], this model takes [N, 4] (4 features per row)".to_owned())
    );
    assert_eq!(
        check(
            &rules,
            &[tensor(
                "input-0",
                "FP64",
                "[3, 4]",
                &format!("[{row}, {row}, {row}]")
            )]
        ),
        Err("inputs[0].shape: 3 instances, at most 2".to_owned())
    );
    assert_eq!(
        check(&rules, &[tensor("input-0", "BYTES", "[1, 4]", r#"["a", "b", "c", "d"]"#)]),
        Err("inputs[0].datatype: BYTES, this model takes numbers (an integer or floating-point datatype)".to_owned())
    );
    assert_eq!(
        check(&rules, &[tensor("input-0", "BOOL", "[1, 4]", "[true, false, true, true]")]),
        Err("inputs[0].datatype: BOOL, this model takes numbers (an integer or floating-point datatype)".to_owned())
    );
}

#[test]
fn declared_inputs_fix_names_datatypes_and_shapes() {
    let rules = V2Rules {
        inputs: Some(vec![
            DeclaredInput {
                name: "input-0".to_owned(),
                datatype: "FP64".to_owned(),
                shape: vec![None, Some(4)],
            },
            DeclaredInput {
                name: "mask".to_owned(),
                datatype: "BOOL".to_owned(),
                shape: vec![None],
            },
        ]),
        // Declared inputs take the place of featureCount for V2.
        feature_count: Some(13),
        ..V2Rules::default()
    };
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let features = tensor("input-0", "FP64", "[2, 4]", &format!("[{row}, {row}]"));
    let mask = tensor("mask", "BOOL", "[2]", "[true, false]");
    assert_eq!(check(&rules, &[mask.clone(), features.clone()]), Ok(()));
    assert_eq!(
        check(&rules, std::slice::from_ref(&features)),
        Err(r#"inputs: missing input "mask""#.to_owned())
    );
    assert_eq!(
        check(
            &rules,
            &[
                features.clone(),
                mask.clone(),
                tensor("extra", "FP64", "[1]", "[1.0]")
            ]
        ),
        Err(
            r#"inputs[2].name: unknown input "extra", the model declares input-0, mask"#.to_owned()
        )
    );
    assert_eq!(
        check(&rules, &[features.clone(), mask.clone(), mask.clone()]),
        Err(r#"inputs[2].name: duplicate input "mask""#.to_owned())
    );
    assert_eq!(
        check(
            &rules,
            &[tensor("input-0", "FP32", "[1, 4]", row), mask.clone()]
        ),
        Err(r#"inputs[0].datatype: FP32, the model declares FP64 for "input-0""#.to_owned())
    );
    assert_eq!(
        check(
            &rules,
            &[tensor("input-0", "FP64", "[1, 1, 4]", row), mask.clone()]
        ),
        Err("inputs[0].shape: [1, 1, 4] does not fit the declared [-1, 4]".to_owned())
    );
    // Of the same rank, a shape fits only where every fixed dimension is the declared one.
    assert_eq!(
        check(
            &rules,
            &[
                tensor("input-0", "FP64", "[1, 3]", "[[5.1, 3.5, 1.4]]"),
                mask
            ]
        ),
        Err("inputs[0].shape: [1, 3] does not fit the declared [-1, 4]".to_owned())
    );
}

#[test]
fn a_lone_surrogate_in_a_field_the_validator_skips_is_refused() {
    let body = r#"{"id": "\ud800", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}"#;
    assert!(validate(body.as_bytes(), None).is_err_and(|e| e.starts_with("body: invalid JSON: ")),);
}

#[test]
fn fp16_only_in_the_binary_extension_and_never_bf16_as_kserve_reads_them() {
    err(
        &input("x", "FP16", "[2]", "[1.5, 2]"),
        "inputs[0].data: FP16 tensors reach the model server only in the binary extension",
    );
    err(
        &input("x", "BF16", "[1]", "[0.5]"),
        "inputs[0].datatype: BF16 has no numpy type in the model server",
    );
    let header = r#"{"inputs": [{"name": "x", "datatype": "FP16", "shape": [2], "parameters": {"binary_data_size": 4}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&[0, 60, 0, 64]);
    assert_eq!(validate(&body, Some(&header.len().to_string())), Ok(()));
}

#[test]
fn a_dataframe_request_is_one_feature_column_per_input() {
    let rules = iris_rules();
    let pd = |inputs: &[String]| {
        format!(
            r#"{{"parameters": {{"content_type": "pd"}}, "inputs": [{}]}}"#,
            inputs.join(", ")
        )
    };
    let column = |name: &str| tensor(name, "FP64", "[2]", "[1.0, 2.0]");
    let four = [column("a"), column("b"), column("c"), column("d")];
    assert_eq!(validate_with(pd(&four).as_bytes(), None, &rules), Ok(()));
    // What KServe turns into a one-column DataFrame: a 500 from the model.
    let one = pd(&[tensor("input-0", "FP64", "[1, 4]", "[5.1, 3.5, 1.4, 0.2]")]);
    assert_eq!(
        validate_with(one.as_bytes(), None, &rules),
        Err("inputs[0].shape: parameters.content_type \"pd\" makes each input one feature column; this model takes 4, the request has 1".to_owned())
    );
    let mut wide = four.to_vec();
    wide[3] = tensor("d", "FP64", "[2, 1]", "[1.0, 2.0]");
    assert_eq!(
        validate_with(pd(&wide).as_bytes(), None, &rules),
        Err("inputs[3].shape: [2, 1], a feature column (content_type \"pd\") is [N]".to_owned())
    );
}
