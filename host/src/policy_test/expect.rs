//! Comparing an expectation with what happened: every difference, each named by its field path
//! (`status`, `headers.retry-after`, `body.error`, `upstream.headers.x-jwt-sub`).

use std::fmt::Write as _;

use serde_json::Value;

use super::exchange::{Outcome, Received};
use super::suite::{Expect, ReceivedExpect, Scalar, UpstreamExpect};
use modelgate_runtime::Headers;

/// One difference between expected and actual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mismatch {
    pub(super) path: String,
    pub(super) expected: String,
    pub(super) actual: String,
}

const ABSENT: &str = "(absent)";
const PRESENT: &str = "(present)";

/// Every way `outcome` differs from `expect`; empty when it matches.
pub(super) fn compare(expect: &Expect, routing_header: &str, outcome: &Outcome) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let Some(status) = expect.status
        && status != outcome.status
    {
        out.push(Mismatch {
            path: "status".into(),
            expected: status.to_string(),
            actual: outcome.status.to_string(),
        });
    }
    compare_headers(
        "headers",
        &expect.headers,
        &expect.headers_present,
        &expect.headers_absent,
        &outcome.headers,
        &mut out,
    );
    if let Some(body) = &expect.body {
        compare_json_body("body", body, &outcome.body, &mut out);
    }
    if let Some(exact) = &expect.body_exact
        && exact.as_bytes() != outcome.body.as_slice()
    {
        out.push(Mismatch {
            path: "bodyExact".into(),
            expected: quote(exact),
            actual: quote(&String::from_utf8_lossy(&outcome.body)),
        });
    }
    if let Some(part) = &expect.body_contains
        && !String::from_utf8_lossy(&outcome.body).contains(part.as_str())
    {
        out.push(Mismatch {
            path: "bodyContains".into(),
            expected: format!("a body containing {}", quote(part)),
            actual: quote(&String::from_utf8_lossy(&outcome.body)),
        });
    }
    if let Some(model) = &expect.routed_to {
        let actual = outcome
            .upstream
            .as_ref()
            .map(|received| header_text(&received.headers, routing_header));
        let actual = match actual {
            None => "(not forwarded upstream)".to_owned(),
            Some(None) => format!("({routing_header} absent)"),
            Some(Some(value)) => quote(&value),
        };
        if actual != quote(model) {
            out.push(Mismatch {
                path: format!("routedTo ({routing_header})"),
                expected: quote(model),
                actual,
            });
        }
    }
    match (&expect.upstream, &outcome.upstream) {
        (None, _) | (Some(UpstreamExpect::NotReached), None) => {}
        (Some(UpstreamExpect::NotReached), Some(_)) => out.push(Mismatch {
            path: "upstream".into(),
            expected: "not reached".into(),
            actual: "reached".into(),
        }),
        (Some(UpstreamExpect::Reached(_)), None) => out.push(Mismatch {
            path: "upstream".into(),
            expected: "reached".into(),
            actual: format!("not reached (answered {})", outcome.status),
        }),
        (Some(UpstreamExpect::Reached(want)), Some(received)) => {
            compare_received(want, received, &mut out);
        }
    }
    out
}

fn compare_received(want: &ReceivedExpect, received: &Received, out: &mut Vec<Mismatch>) {
    compare_headers(
        "upstream.headers",
        &want.headers,
        &want.headers_present,
        &want.headers_absent,
        &received.headers,
        out,
    );
    if let Some(body) = &want.body {
        compare_json_body("upstream.body", body, &received.body, out);
    }
}

fn compare_headers(
    at: &str,
    equal: &std::collections::BTreeMap<String, Scalar>,
    present: &[String],
    absent: &[String],
    actual: &Headers,
    out: &mut Vec<Mismatch>,
) {
    for (name, value) in equal {
        let got = header_text(actual, name);
        if got.as_deref() != Some(value.0.as_str()) {
            out.push(Mismatch {
                path: format!("{at}.{name}"),
                expected: quote(&value.0),
                actual: got.map_or_else(|| ABSENT.to_owned(), |v| quote(&v)),
            });
        }
    }
    for name in present {
        if header_text(actual, name).is_none() {
            out.push(Mismatch {
                path: format!("{at}.{name}"),
                expected: PRESENT.into(),
                actual: ABSENT.into(),
            });
        }
    }
    for name in absent {
        if let Some(value) = header_text(actual, name) {
            out.push(Mismatch {
                path: format!("{at}.{name}"),
                expected: ABSENT.into(),
                actual: quote(&value),
            });
        }
    }
}

/// Every value of `name` (case-insensitive), joined as one header line would carry them.
fn header_text(headers: &Headers, name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let values: Vec<_> = headers
        .iter()
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn compare_json_body(at: &str, expected: &Value, body: &[u8], out: &mut Vec<Mismatch>) {
    match serde_json::from_slice::<Value>(body) {
        Ok(actual) => subset(at, expected, &actual, out),
        Err(_) => out.push(Mismatch {
            path: at.into(),
            expected: expected.to_string(),
            actual: format!(
                "a body that is not JSON: {}",
                quote(&String::from_utf8_lossy(body))
            ),
        }),
    }
}

/// `expected` is contained in `actual`: objects may have more members; arrays and scalars
/// are equal (numbers by value, so `1` matches `1.0`).
fn subset(at: &str, expected: &Value, actual: &Value, out: &mut Vec<Mismatch>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let path = format!("{at}.{key}");
                match got.get(key) {
                    Some(got) => subset(&path, value, got, out),
                    None => out.push(Mismatch {
                        path,
                        expected: value.to_string(),
                        actual: ABSENT.into(),
                    }),
                }
            }
        }
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            for (i, (want, got)) in want.iter().zip(got).enumerate() {
                subset(&format!("{at}[{i}]"), want, got, out);
            }
        }
        (Value::Number(want), Value::Number(got)) if want.as_f64() == got.as_f64() => {}
        (want, got) if want == got => {}
        (want, got) => out.push(Mismatch {
            path: at.into(),
            expected: want.to_string(),
            actual: got.to_string(),
        }),
    }
}

fn quote(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The differences as a diff: `-` what was expected, `+` what came, under each field path.
pub(super) fn render(mismatches: &[Mismatch], indent: &str) -> String {
    let mut text = String::new();
    for m in mismatches {
        let _ = writeln!(text, "{indent}{}", m.path);
        let _ = writeln!(text, "{indent}  - {}", m.expected);
        let _ = writeln!(text, "{indent}  + {}", m.actual);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, headers: &[(&str, &str)], body: &str, upstream: bool) -> Outcome {
        let list = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect()
        };
        Outcome {
            status,
            headers: list(headers),
            body: body.as_bytes().to_vec(),
            upstream: upstream.then(|| Received {
                headers: list(&[(":path", "/v1/models/m:predict"), ("x-model", "m")]),
                body: Vec::new(),
            }),
        }
    }

    fn expect(yaml: &str) -> Expect {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn a_matching_outcome_has_no_differences() {
        let got = outcome(
            429,
            &[("retry-after", "1"), ("content-type", "application/json")],
            r#"{"error": "rate limited", "extra": 1}"#,
            false,
        );
        let want = expect(
            "{status: 429, headers: {Retry-After: 1}, headersAbsent: [x-model], body: {error: rate limited}, upstream: false}",
        );
        assert_eq!(compare(&want, "x-model", &got), vec![]);
    }

    #[test]
    fn every_difference_is_named_by_its_path() {
        let got = outcome(200, &[("x-a", "1")], r#"{"error": {"code": 2}}"#, true);
        let want = expect(
            "{status: 429, headers: {retry-after: 1}, headersAbsent: [x-a], body: {error: {code: 3}}, routedTo: n, upstream: false}",
        );
        let paths: Vec<_> = compare(&want, "x-model", &got)
            .into_iter()
            .map(|m| (m.path, m.expected, m.actual))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("status".into(), "429".into(), "200".into()),
                ("headers.retry-after".into(), "\"1\"".into(), ABSENT.into()),
                ("headers.x-a".into(), ABSENT.into(), "\"1\"".into()),
                ("body.error.code".into(), "3".into(), "2".into()),
                ("routedTo (x-model)".into(), "\"n\"".into(), "\"m\"".into()),
                ("upstream".into(), "not reached".into(), "reached".into()),
            ]
        );
    }

    #[test]
    fn upstream_headers_and_non_json_bodies() {
        let got = outcome(403, &[], "denied", false);
        let want = expect("{body: {error: x}, upstream: {headers: {x-model: m}}}");
        let found = compare(&want, "x-model", &got);
        assert_eq!(found[0].path, "body");
        assert!(found[0].actual.contains("not JSON"), "{found:?}");
        assert_eq!(found[1].path, "upstream");
        let got = outcome(200, &[], "{}", true);
        let want = expect("{upstream: {headers: {x-model: other}, headersAbsent: [':path']}}");
        let found = compare(&want, "x-model", &got);
        assert_eq!(
            found.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(),
            ["upstream.headers.x-model", "upstream.headers.:path"]
        );
    }

    #[test]
    fn renders_a_diff() {
        let text = render(
            &[Mismatch {
                path: "status".into(),
                expected: "429".into(),
                actual: "200".into(),
            }],
            "  ",
        );
        assert_eq!(text, "  status\n    - 429\n    + 200\n");
    }
}
