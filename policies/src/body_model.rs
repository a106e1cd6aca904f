//! The model name from a JSON body's field (OpenAI-style `{"model": "..."}`), read without
//! building a JSON tree: other fields are checked as KServe's parsers read them
//! ([`AnyValue`]), not kept.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::strict_json::AnyValue;

/// The string value of top-level `field`; the error is the 400 message.
pub(crate) fn find(body: &[u8], field: &str) -> Result<String, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = Finder { field }
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found));
    match result {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(format!("body: missing string field {field}")),
        Err(e) if e.is_data() => Err(format!("body: {e}")),
        Err(e) => Err(format!("body: invalid JSON: {e}")),
    }
}

struct Finder<'a> {
    field: &'a str,
}

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Finder<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field {
                if found.is_some() {
                    return Err(de::Error::custom(format_args!(
                        "duplicate field {}",
                        self.field
                    )));
                }
                found = Some(map.next_value::<String>()?);
            } else {
                // Decoded, not skipped: `IgnoredAny` passes invalid UTF-8 and lone surrogates
                // in a string (found by the `body_model` fuzz target's reference).
                map.next_value_seed(AnyValue)?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn the_model_field_is_read_and_each_kind_of_bad_body_says_what_it_is() {
        assert_eq!(
            find(br#"{"a": [1, {"b": null}], "model": "iris"}"#, "model"),
            Ok("iris".to_owned())
        );
        assert_eq!(
            find(br#"{"a": 1}"#, "model"),
            Err("body: missing string field model".to_owned())
        );
        // A well-formed body of the wrong shape: serde's data error, naming what was expected.
        let not_an_object = find(b"[1]", "model").unwrap_err();
        assert!(
            not_an_object.starts_with("body: invalid type: sequence, expected a JSON object"),
            "{not_an_object}"
        );
        let not_a_string = find(br#"{"model": 5}"#, "model").unwrap_err();
        assert!(
            not_a_string.starts_with("body: invalid type: integer `5`, expected a string"),
            "{not_a_string}"
        );
        // Not JSON at all: said so.
        let cut_short = find(br#"{"model": "#, "model").unwrap_err();
        assert!(
            cut_short.starts_with("body: invalid JSON: EOF while parsing"),
            "{cut_short}"
        );
    }
}
