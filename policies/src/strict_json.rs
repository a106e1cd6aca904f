//! JSON values read the way KServe's parsers read them, where `serde::de::IgnoredAny` is looser.
//!
//! `serde_json` skips an ignored string without decoding its escapes (`ignore_escape`: "we don't
//! care if the codepoint is valid"), so a lone surrogate such as `"\ud800"` in a field the
//! validators do not look at passed. KServe 0.21's V1 decoder (orjson) refuses the whole body
//! for it, and a V2 body carrying one (Python's `json` lets it through) fails when the server
//! encodes its answer. [`AnyValue`] visits every value and decodes every string, so such a body
//! is refused here with `serde_json`'s error (`unexpected end of hex escape`, `lone leading
//! surrogate in hex escape`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Any JSON value, every string in it decoded (and so checked), nothing kept.
#[derive(Clone, Copy)]
pub(crate) struct AnyValue;

impl<'de> DeserializeSeed<'de> for AnyValue {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyValue).map(|()| AnyValue)
    }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(AnyValue)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(AnyValue)?.is_some() {
            map.next_value_seed(AnyValue)?;
        }
        Ok(())
    }
}

/// Check every string of a JSON document that holds a `\u` escape (the only way to write a lone
/// surrogate); documents without one are not parsed again.
pub(crate) fn check_escapes(json: &[u8]) -> Result<(), serde_json::Error> {
    if !json.windows(2).any(|w| w == b"\\u") {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    AnyValue.deserialize(&mut de)?;
    de.end()
}

#[cfg(test)]
mod tests {
    use super::check_escapes;

    #[test]
    fn lone_surrogates_are_refused_anywhere_pairs_and_other_escapes_are_not() {
        for ok in [
            r#"{"a": "\u00e9t\u00e9", "b": ["\ud83d\ude00"], "c": {"\u0041": 1}}"#,
            r#"{"a": [1, 2.5, true, null, "x"]}"#,
        ] {
            assert!(check_escapes(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            r#"{"a": "\ud800"}"#,
            r#"{"a": [{"b": "x\udc00"}]}"#,
            r#"{"\ud800": 1}"#,
        ] {
            assert!(check_escapes(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
