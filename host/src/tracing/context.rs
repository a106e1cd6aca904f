//! W3C trace context (`traceparent`, `tracestate`) as Envoy's OpenTelemetry tracer reads and
//! writes it (envoy `source/extensions/tracers/opentelemetry/span_context_extractor.cc` and
//! `tracer.cc`, `Span::injectContext`).

use modelgate_runtime::Headers;

/// What an incoming `traceparent` (and its `tracestate`) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SpanContext {
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the gateway's server span.
    pub parent_id: [u8; 8],
    pub sampled: bool,
    /// Every `tracestate` field, joined with `,` (RFC 7230 field order).
    pub tracestate: String,
}

/// How a request's headers propagate a trace.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Extracted {
    /// No `traceparent`: a new trace, sampled as the gateway's sampling decides.
    Absent,
    Valid(SpanContext),
    /// A `traceparent` Envoy cannot read: it traces nothing and propagates nothing for the
    /// request (a `NullSpan`), so the header goes upstream as the client sent it.
    Invalid,
}

/// Reads `traceparent` by Envoy's rules: exactly 55 characters, four `-`-separated hex fields
/// of 2, 32, 16 and 2 digits, neither the trace id nor the parent id all zeros; bit 0 of the
/// flags is `sampled`. The version is not checked beyond being hex, as Envoy does.
pub(super) fn extract(headers: &Headers) -> Extracted {
    let Some(traceparent) = first(headers, "traceparent") else {
        return Extracted::Absent;
    };
    match parse_traceparent(traceparent) {
        Some((trace_id, parent_id, sampled)) => {
            let tracestate = headers
                .iter()
                .filter(|(k, _)| k == "tracestate")
                .map(|(_, v)| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
                .join(",");
            Extracted::Valid(SpanContext {
                trace_id,
                parent_id,
                sampled,
                tracestate,
            })
        }
        None => Extracted::Invalid,
    }
}

fn first<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    if value.len() != 55 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    // Envoy splits with SkipEmpty; at 55 characters any other layout fails a size check.
    let parts: Vec<&str> = text.split('-').filter(|p| !p.is_empty()).collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return None;
    };
    if version.len() != 2 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trace_id: [u8; 16] = decode_hex(trace_id)?;
    let parent_id: [u8; 8] = decode_hex(parent_id)?;
    let [flags]: [u8; 1] = decode_hex(flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags & 1 == 1))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The `traceparent` Envoy sends upstream: version `00`, the trace, the span the upstream's
/// work is a child of, and `01` or `00` for sampled or not.
pub(super) fn traceparent(trace_id: &[u8; 16], span_id: [u8; 8], sampled: bool) -> String {
    format!(
        "00-{}-{}-{}",
        hex(trace_id),
        hex(&span_id),
        if sampled { "01" } else { "00" }
    )
}

/// Replaces `traceparent` and `tracestate` in the upstream request's headers, as Envoy's
/// `setByReferenceKey` does: one of each, `tracestate` even when empty.
pub(super) fn inject(headers: &mut Headers, traceparent: String, tracestate: &str) {
    headers.retain(|(k, _)| k != "traceparent" && k != "tracestate");
    headers.push(("traceparent".to_owned(), traceparent.into_bytes()));
    headers.push(("tracestate".to_owned(), tracestate.as_bytes().to_vec()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn reads_a_sampled_traceparent_and_joins_tracestate() {
        let h = headers(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]);
        let Extracted::Valid(ctx) = extract(&h) else {
            panic!("not valid")
        };
        assert_eq!(hex(&ctx.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&ctx.parent_id), "b7ad6b7169203331");
        assert!(ctx.sampled);
        assert_eq!(ctx.tracestate, "a=1,b=2");
    }

    #[test]
    fn flags_bit_zero_is_sampled() {
        let unsampled = VALID.replace("-01", "-00");
        let Extracted::Valid(ctx) = extract(&headers(&[("traceparent", &unsampled)])) else {
            panic!()
        };
        assert!(!ctx.sampled);
        let other_bits = VALID.replace("-01", "-03");
        let Extracted::Valid(ctx) = extract(&headers(&[("traceparent", &other_bits)])) else {
            panic!()
        };
        assert!(ctx.sampled);
    }

    #[test]
    fn rejects_what_envoy_rejects() {
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "000af7651916cd43dd8448eb211c80319c--b7ad6b7169203331-01",
        ] {
            assert_eq!(
                extract(&headers(&[("traceparent", bad)])),
                Extracted::Invalid,
                "{bad}"
            );
        }
        assert_eq!(
            extract(&headers(&[("tracestate", "a=1")])),
            Extracted::Absent
        );
    }

    #[test]
    fn injects_one_of_each() {
        let mut h = headers(&[("traceparent", VALID), ("x", "y"), ("tracestate", "a=1")]);
        inject(&mut h, traceparent(&[1; 16], [2; 8], false), "");
        assert_eq!(
            h,
            headers(&[
                ("x", "y"),
                (
                    "traceparent",
                    "00-01010101010101010101010101010101-0202020202020202-00"
                ),
                ("tracestate", ""),
            ])
        );
    }
}
