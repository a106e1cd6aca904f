//! The expected readings below were checked against KServe's own parser: protobuf 6.33 (upb)
//! `ModelInferRequest.ParseFromString` in the project's venv.

use super::*;

/// One uncompressed gRPC message around `message`.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    body
}

#[test]
fn methods_of_the_service_and_nothing_else() {
    assert_eq!(
        method("/inference.GRPCInferenceService/ModelInfer"),
        Some(Method::Model(Endpoint::Infer))
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/ModelReady"),
        Some(Method::Model(Endpoint::Ready))
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/ModelMetadata"),
        Some(Method::Model(Endpoint::Metadata))
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/RepositoryModelUnload"),
        Some(Method::Model(Endpoint::Repository))
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/ServerLive"),
        Some(Method::Server)
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/ModelInfer?x=1"),
        Some(Method::Unknown)
    );
    assert_eq!(
        method("/inference.GRPCInferenceService/modelinfer"),
        Some(Method::Unknown)
    );
    assert_eq!(method("/v2/models/m/infer"), None);
    assert_eq!(method("/inference.GRPCInferenceServiceX/ModelInfer"), None);
}

#[test]
fn the_model_is_field_one() {
    // model_name "sklearn-iris", model_version "v1", id "x".
    let message = b"\x0a\x0csklearn-iris\x12\x02v1\x1a\x01x";
    assert_eq!(model_name(&framed(message)), Ok("sklearn-iris"));
}

#[test]
fn the_last_occurrence_wins_as_in_upb() {
    assert_eq!(model_name(&framed(b"\x0a\x01a\x0a\x01b")), Ok("b"));
}

#[test]
fn field_one_of_another_wire_type_is_skipped_as_in_upb() {
    assert_eq!(model_name(&framed(b"\x08\x05\x0a\x01c")), Ok("c"));
    assert_eq!(model_name(&framed(b"\x0a\x01c\x08\x05")), Ok("c"));
    assert_eq!(
        model_name(&framed(b"\x0a\x01c\x0d\x01\x02\x03\x04")),
        Ok("c")
    );
}

#[test]
fn unknown_and_later_fields_are_skipped() {
    // Field 100 (key 0x6a2 as a varint) before the name, field 2 after it.
    assert_eq!(
        model_name(&framed(b"\xa2\x06\x01x\x0a\x01m\x12\x01v")),
        Ok("m")
    );
    assert_eq!(
        model_name(&framed(b"\x11\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x01m")),
        Ok("m")
    );
}

#[test]
fn no_field_one_is_the_empty_name() {
    assert_eq!(model_name(&framed(b"")), Ok(""));
    assert_eq!(model_name(&framed(b"\x12\x01v")), Ok(""));
}

#[test]
fn what_upb_refuses_is_refused() {
    for message in [
        &b"\x0a\x02\xff\xfe"[..], // not UTF-8
        b"\x0a\x05ab",            // runs past the end
        b"\x0a\x01m\x00",         // field number 0
        b"\x0a",                  // truncated length
        b"\x80",                  // truncated key
        b"\x09\x01\x02",          // truncated fixed64
    ] {
        let body = framed(message);
        let result = model_name(&body);
        assert!(result.is_err(), "{message:?} read as {result:?}");
    }
}

#[test]
fn groups_are_refused_rather_than_walked() {
    let body = framed(b"\x0b\x0c\x0a\x01m");
    let result = model_name(&body);
    assert_eq!(
        result,
        Err("gRPC message: unsupported wire type 3".to_owned())
    );
}

#[test]
fn framing_is_one_uncompressed_message() {
    let one = framed(b"\x0a\x01m");
    assert_eq!(model_name(&one), Ok("m"));
    let mut two = one.clone();
    two.extend_from_slice(&one);
    assert!(
        model_name(&two)
            .unwrap_err()
            .contains("more than one message")
    );
    assert!(
        model_name(&one[..one.len() - 1])
            .unwrap_err()
            .contains("truncated")
    );
    assert!(model_name(&one[..3]).unwrap_err().contains("prefix"));
    assert!(model_name(b"").unwrap_err().contains("prefix"));
    let mut compressed = one.clone();
    compressed[0] = 1;
    assert!(model_name(&compressed).unwrap_err().contains("compressed"));
    let mut flags = one;
    flags[0] = 2;
    assert!(model_name(&flags).unwrap_err().contains("invalid flags"));
}
