//! The OTLP messages the exporter sends, encoded by hand: `ExportTraceServiceRequest` and the
//! handful of messages under it (`opentelemetry/proto/collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`), with only
//! the fields Envoy's OpenTelemetry tracer fills. They are a few length-delimited fields, two
//! enums and two fixed64s; a protobuf crate (prost plus generated code or build-time protoc)
//! would be the gateway's largest dependency for about 80 lines, and the test suite decodes
//! what this writes with the official `opentelemetry-proto` package, so a wrong field number
//! or wire type fails a test.

/// `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanKind {
    Server = 2,
    Client = 3,
}

/// One finished span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// String attributes in the order set (Envoy's `setTag` keeps keys unique).
    pub attributes: Vec<(String, String)>,
    /// `Status.code = STATUS_CODE_ERROR`.
    pub error: bool,
}

/// `ExportTraceServiceRequest` with one `ResourceSpans` (the resource's string attributes) and
/// one `ScopeSpans` holding `spans`, as Envoy's `Tracer::flushSpans` builds it.
pub(crate) fn export_request(resource: &[(String, String)], spans: &[SpanData]) -> Vec<u8> {
    let mut resource_msg = Vec::new();
    for (k, v) in resource {
        message(&mut resource_msg, 1, &key_value(k, v));
    }
    let mut scope_spans = Vec::new();
    for span in spans {
        message(&mut scope_spans, 2, &encode_span(span));
    }
    let mut resource_spans = Vec::new();
    message(&mut resource_spans, 1, &resource_msg);
    message(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::new();
    message(&mut request, 1, &resource_spans);
    request
}

fn encode_span(span: &SpanData) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    bytes(&mut out, 1, &span.trace_id);
    bytes(&mut out, 2, &span.span_id);
    if !span.trace_state.is_empty() {
        bytes(&mut out, 3, span.trace_state.as_bytes());
    }
    if let Some(parent) = &span.parent_span_id {
        bytes(&mut out, 4, parent);
    }
    bytes(&mut out, 5, span.name.as_bytes());
    varint_field(&mut out, 6, span.kind as u64);
    fixed64(&mut out, 7, span.start_unix_nanos);
    fixed64(&mut out, 8, span.end_unix_nanos);
    for (k, v) in &span.attributes {
        message(&mut out, 9, &key_value(k, v));
    }
    if span.error {
        // Status { code = STATUS_CODE_ERROR (2) }
        let mut status = Vec::new();
        varint_field(&mut status, 3, 2);
        message(&mut out, 15, &status);
    }
    out
}

/// `KeyValue { key, value: AnyValue { string_value } }`.
fn key_value(key: &str, value: &str) -> Vec<u8> {
    let mut any = Vec::new();
    bytes(&mut any, 1, value.as_bytes());
    let mut kv = Vec::new();
    bytes(&mut kv, 1, key.as_bytes());
    message(&mut kv, 2, &any);
    kv
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(low_byte(v) | 0x80);
        v >>= 7;
    }
    out.push(low_byte(v));
}

fn low_byte(v: u64) -> u8 {
    v.to_le_bytes()[0]
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 0);
    varint(out, v);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn message(out: &mut Vec<u8>, field: u32, encoded: &[u8]) {
    bytes(out, field, encoded);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_tags_follow_the_wire_format() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        varint_field(&mut out, 6, 2);
        assert_eq!(out, [0x30, 0x02]);
        let mut out = Vec::new();
        fixed64(&mut out, 7, 1);
        assert_eq!(out, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_span_encodes_its_fields_in_order() {
        let span = SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: "ingress".into(),
            kind: SpanKind::Server,
            start_unix_nanos: 5,
            end_unix_nanos: 6,
            attributes: vec![("k".into(), "v".into())],
            error: true,
        };
        let encoded = encode_span(&span);
        let mut expected = vec![0x0a, 16];
        expected.extend([1; 16]);
        expected.extend([0x12, 8]);
        expected.extend([2; 8]);
        expected.extend([0x2a, 7]);
        expected.extend(b"ingress");
        expected.extend([0x30, 2]);
        expected.extend([0x39, 5, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0x41, 6, 0, 0, 0, 0, 0, 0, 0]);
        // attributes: KeyValue{key "k", value AnyValue{string_value "v"}}
        expected.extend([0x4a, 8, 0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']);
        // status: field 15, Status{code: 2}
        expected.extend([0x7a, 2, 0x18, 2]);
        assert_eq!(encoded, expected);
    }
}
