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
