//! Span tags from the config: Envoy Gateway's `customTags` (`Literal`, `Environment`,
//! `RequestHeader`) and `tags`, whose values are Envoy format strings (EG's `buildTracingTags`,
//! `internal/xds/translator/tracing.go`, writes them as `CustomTag.value`).
//!
//! The format strings understand the command operators a tag needs here: `%FILTER_STATE(KEY:
//! PLAIN)%` (what a filter stored with `proxy_set_property`, looked up by its full key, as
//! Envoy's `wasm.` prefix spells it), `%REQ(NAME)%` / `%REQ(NAME?ALT)%` and
//! `%ENVIRONMENT(NAME)%`; another operator is a config error naming it. As in Envoy's
//! plain-text formatter (`source/common/formatter/substitution_formatter.h`), an operator with
//! no value renders `-`. As in `CustomTagBase::applySpan` (envoy
//! `source/common/tracing/custom_tag_impl.cc`), a tag whose value is empty is not set.

use std::collections::BTreeMap;

use modelgate_runtime::Headers;

use super::config::CustomTag;

/// One configured tag, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tag {
    pub name: String,
    value: TagValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TagValue {
    /// A literal, or an environment variable read once at configure time (as Envoy's
    /// `EnvironmentCustomTag` does in its constructor).
    Fixed(String),
    RequestHeader {
        name: String,
        default: String,
    },
    Format(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    FilterState(String),
    /// Header names tried in order (`%REQ(A?B)%`), lowercased.
    Req(Vec<String>),
}

/// What a tag's value may read: the request's headers and the filter state.
pub(super) struct TagInput<'a> {
    pub request: &'a Headers,
    pub filter_state: &'a [(String, Vec<u8>)],
}

impl Tag {
    /// The value this tag gives the span, or `None` when it is empty (not set).
    pub(super) fn value(&self, input: &TagInput<'_>) -> Option<String> {
        let value = match &self.value {
            TagValue::Fixed(v) => v.clone(),
            TagValue::RequestHeader { name, default } => header(input.request, name).map_or_else(
                || default.clone(),
                |v| String::from_utf8_lossy(v).into_owned(),
            ),
            TagValue::Format(parts) => parts.iter().map(|p| render(p, input)).collect(),
        };
        (!value.is_empty()).then_some(value)
    }
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn render(part: &Part, input: &TagInput<'_>) -> String {
    let found = match part {
        Part::Text(text) => return text.clone(),
        Part::FilterState(key) => input
            .filter_state
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice()),
        Part::Req(names) => names.iter().find_map(|n| header(input.request, n)),
    };
    match found {
        Some(v) if !v.is_empty() => String::from_utf8_lossy(v).into_owned(),
        _ => "-".to_owned(),
    }
}

/// Compiles `customTags` then `tags` (a key in `tags` replaces the same key in `customTags`),
/// sorted by name as Envoy Gateway sorts them. `at` prefixes error paths.
pub(super) fn compile(
    custom_tags: &BTreeMap<String, CustomTag>,
    tags: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
) -> Result<Vec<Tag>, String> {
    let mut out: BTreeMap<String, TagValue> = BTreeMap::new();
    for (name, tag) in custom_tags {
        let at = format!("{at}.customTags.{name}");
        let value = match tag.kind.as_str() {
            "Literal" => TagValue::Fixed(
                tag.literal
                    .as_ref()
                    .ok_or(format!("{at}.literal: required for type Literal"))?
                    .value
                    .clone(),
            ),
            "Environment" => {
                let e = tag
                    .environment
                    .as_ref()
                    .ok_or(format!("{at}.environment: required for type Environment"))?;
                TagValue::Fixed(
                    env(&e.name).unwrap_or_else(|| e.default_value.clone().unwrap_or_default()),
                )
            }
            "RequestHeader" => {
                let h = tag.request_header.as_ref().ok_or(format!(
                    "{at}.requestHeader: required for type RequestHeader"
                ))?;
                TagValue::RequestHeader {
                    name: h.name.to_ascii_lowercase(),
                    default: h.default_value.clone().unwrap_or_default(),
                }
            }
            other => {
                return Err(format!(
                    "{at}.type: {other:?} is not one of Literal, Environment, RequestHeader"
                ));
            }
        };
        out.insert(name.clone(), value);
    }
    for (name, format) in tags {
        let parts = parse_format(format, env).map_err(|e| format!("{at}.tags.{name}: {e}"))?;
        out.insert(name.clone(), TagValue::Format(parts));
    }
    Ok(out
        .into_iter()
        .map(|(name, value)| Tag { name, value })
        .collect())
}

fn parse_format(format: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        text.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            // `%%` is a literal percent sign.
            text.push('%');
            rest = stripped;
            continue;
        }
        let end = after
            .find('%')
            .ok_or_else(|| format!("unterminated command operator in {format:?}"))?;
        let operator = &after[..end];
        rest = &after[end + 1..];
        if let Some(key) = argument(operator, "FILTER_STATE") {
            let (key, format) = key.split_once(':').unwrap_or((key, ""));
            if format != "PLAIN" {
                return Err(format!(
                    "%{operator}%: only the PLAIN form of FILTER_STATE is emulated"
                ));
            }
            flush(&mut parts, &mut text);
            parts.push(Part::FilterState(key.to_owned()));
        } else if let Some(names) = argument(operator, "REQ") {
            flush(&mut parts, &mut text);
            parts.push(Part::Req(
                names.split('?').map(str::to_ascii_lowercase).collect(),
            ));
        } else if let Some(name) = argument(operator, "ENVIRONMENT") {
            text.push_str(&env(name).unwrap_or_else(|| "-".to_owned()));
        } else {
            return Err(format!("command operator %{operator}% is not emulated"));
        }
    }
    text.push_str(rest);
    flush(&mut parts, &mut text);
    Ok(parts)
}

fn argument<'a>(operator: &'a str, name: &str) -> Option<&'a str> {
    operator
        .strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn flush(parts: &mut Vec<Part>, text: &mut String) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracing::config::{LiteralTag, NamedTag};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn values(tags: &[Tag], input: &TagInput<'_>) -> Vec<(String, Option<String>)> {
        tags.iter()
            .map(|t| (t.name.clone(), t.value(input)))
            .collect()
    }

    #[test]
    fn format_strings_read_filter_state_and_headers() {
        let tags: BTreeMap<String, String> = [
            ("m", "%FILTER_STATE(wasm.modelgate.model:PLAIN)%"),
            (
                "both",
                "model=%FILTER_STATE(wasm.modelgate.model:PLAIN)% ua=%REQ(User-Agent)%",
            ),
            ("missing", "%FILTER_STATE(wasm.nope:PLAIN)%"),
            ("alt", "%REQ(x-a?x-b)% 100%%"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let compiled = compile(&BTreeMap::new(), &tags, &no_env, "tracing").unwrap();
        let request = vec![
            ("user-agent".to_owned(), b"curl".to_vec()),
            ("x-b".to_owned(), b"bee".to_vec()),
        ];
        let state = vec![("wasm.modelgate.model".to_owned(), b"sklearn-iris".to_vec())];
        let input = TagInput {
            request: &request,
            filter_state: &state,
        };
        assert_eq!(
            values(&compiled, &input),
            vec![
                ("alt".into(), Some("bee 100%".into())),
                ("both".into(), Some("model=sklearn-iris ua=curl".into())),
                ("m".into(), Some("sklearn-iris".into())),
                ("missing".into(), Some("-".into())),
            ]
        );
    }

    #[test]
    fn custom_tags_and_tags_override() {
        let custom: BTreeMap<String, CustomTag> = [
            (
                "lit".to_owned(),
                CustomTag {
                    kind: "Literal".into(),
                    literal: Some(LiteralTag { value: "v".into() }),
                    environment: None,
                    request_header: None,
                },
            ),
            (
                "env".to_owned(),
                CustomTag {
                    kind: "Environment".into(),
                    literal: None,
                    environment: Some(NamedTag {
                        name: "POD".into(),
                        default_value: Some("none".into()),
                    }),
                    request_header: None,
                },
            ),
            (
                "hdr".to_owned(),
                CustomTag {
                    kind: "RequestHeader".into(),
                    literal: None,
                    environment: None,
                    request_header: Some(NamedTag {
                        name: "X-Tenant".into(),
                        default_value: None,
                    }),
                },
            ),
        ]
        .into_iter()
        .collect();
        let tags: BTreeMap<String, String> = [("lit".to_owned(), "from tags".to_owned())]
            .into_iter()
            .collect();
        let env = |name: &str| (name == "POD").then(|| "pod-1".to_owned());
        let compiled = compile(&custom, &tags, &env, "tracing").unwrap();
        let input = TagInput {
            request: &vec![],
            filter_state: &[],
        };
        // The header tag has no value and no default: not set.
        assert_eq!(
            values(&compiled, &input),
            vec![
                ("env".into(), Some("pod-1".into())),
                ("hdr".into(), None),
                ("lit".into(), Some("from tags".into())),
            ]
        );
    }

    #[test]
    fn operators_not_emulated_are_errors() {
        for (format, needle) in [
            ("%START_TIME%", "%START_TIME% is not emulated"),
            ("%FILTER_STATE(k)%", "only the PLAIN form"),
            ("%REQ(x)", "unterminated"),
        ] {
            let tags = [("t".to_owned(), format.to_owned())].into_iter().collect();
            let err = compile(&BTreeMap::new(), &tags, &no_env, "tracing").unwrap_err();
            assert!(err.starts_with("tracing.tags.t: "), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }
}
