//! Reference readings of the rules the fuzz targets check the policies against.
//!
//! Written from the rules as documented (docs/config.md, the module docs of `kserve_v1`,
//! `kserve_v2`, `body_model`, REFERENCE.md sections 2 and 5) and from KServe's own routes, not
//! from the policies' code: they build a whole JSON tree where the policies stream, and they
//! share nothing with the policies but serde_json's tokenizer (so number syntax, escapes and
//! the nesting limit are the same on both sides; what is compared is the rule). A target
//! asserts that the policies and the reference reach the same verdict.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps every object entry in order, duplicates included (serde_json's
/// `Value` keeps the last one, which would hide a duplicated field).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer literal that fits i64 or u64 (what serde_json reports as an integer).
    Int(i128),
    /// Any other number (a fraction, an exponent, an integer too large for u64).
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The document, or `None` when it is not exactly one JSON value.
    pub fn parse(bytes: &[u8]) -> Option<Json> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = de.deserialize_any(JsonVisitor).ok()?;
        de.end().ok()?;
        Some(value)
    }

    fn fields(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(entries) => Some(entries),
            _ => None,
        }
    }
}

/// The one value of `key` in an object's entries: `Ok(None)` when absent, `Err(())` when the
/// key appears more than once.
fn single<'a>(entries: &'a [(String, Json)], key: &str) -> Result<Option<&'a Json>, ()> {
    let mut found = entries.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}

struct JsonVisitor;

impl<'de> de::DeserializeSeed<'de> for JsonVisitor {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Int(i128::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(JsonVisitor)? {
            items.push(item);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value_seed(JsonVisitor)?));
        }
        Ok(Json::Obj(entries))
    }
}

// -- KServe V1 ------------------------------------------------------------------------------

/// What a V1 row element may be (`validation.elementType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    Number,
    Any,
}

/// One model's V1 rules (`validation` in the config).
#[derive(Debug, Clone, Copy)]
pub struct V1Model {
    pub feature_count: Option<usize>,
    pub max_instances: Option<usize>,
    pub element: Element,
}

/// Deepest row nesting the rule allows (docs/config.md: rows up to 8 levels deep).
const V1_MAX_RANK: usize = 8;

/// The V1 rule: a JSON object with exactly one of `instances`/`inputs` (other fields are the
/// model's business), holding a non-empty list of at most `max_instances` rows; every row a
/// scalar of the element type or a rectangular, non-empty nested list of them, all rows of
/// one shape; with a feature count, every row a flat list of exactly that many.
///
/// `None` for a body KServe would read as a structured CloudEvent (an object holding all of
/// `specversion`, `id`, `source`, `type`, `time` and `data`, `kserve.utils.utils.
/// is_structured_cloudevent`): how the filter treats those is being settled
/// (`validation.cloudEvents`), so they are not compared yet.
pub fn v1_accepts(body: &[u8], model: &V1Model) -> Option<bool> {
    let Some(doc) = Json::parse(body) else {
        return Some(false);
    };
    let Some(entries) = doc.fields() else {
        return Some(false);
    };
    let cloud_event = ["specversion", "id", "source", "type", "time", "data"];
    if cloud_event
        .iter()
        .all(|a| entries.iter().any(|(k, _)| k == a))
    {
        return None;
    }
    Some(v1_rows_ok(entries, model))
}

fn v1_rows_ok(entries: &[(String, Json)], model: &V1Model) -> bool {
    let (Ok(instances), Ok(inputs)) = (single(entries, "instances"), single(entries, "inputs"))
    else {
        return false;
    };
    let rows = match (instances, inputs) {
        (Some(rows), None) | (None, Some(rows)) => rows,
        _ => return false,
    };
    let Json::Arr(rows) = rows else {
        return false;
    };
    if rows.is_empty() || model.max_instances.is_some_and(|max| rows.len() > max) {
        return false;
    }
    let mut shapes = rows.iter().map(|row| row_shape(row, model.element));
    let Some(Some(first)) = shapes.next() else {
        return false;
    };
    if let Some(n) = model.feature_count
        && first != [n]
    {
        return false;
    }
    shapes.all(|shape| shape.as_ref() == Some(&first))
}

/// A row's shape (`[]` for a scalar), or `None` when it breaks the rule.
fn row_shape(value: &Json, element: Element) -> Option<Vec<usize>> {
    match value {
        Json::Int(_) | Json::Float(_) => Some(Vec::new()),
        Json::Str(_) | Json::Bool(_) if element == Element::Any => Some(Vec::new()),
        Json::Arr(items) => {
            let mut inner = items.iter().map(|item| row_shape(item, element));
            let first = inner.next()??;
            if first.len() == V1_MAX_RANK || !inner.all(|shape| shape.as_ref() == Some(&first)) {
                return None;
            }
            Some(std::iter::once(items.len()).chain(first).collect())
        }
        _ => None,
    }
}

// -- KServe V2 (Open Inference Protocol) ----------------------------------------------------

/// The V2 rule for a JSON body (no binary extension): a JSON object whose `inputs` is a
/// non-empty list of tensor objects, each with a non-empty string `name`, an OIP `datatype`
/// KServe can read from JSON (not FP16 or BF16),
/// a `shape` of non-negative integers and `data`: a list, flat with product(shape) elements or
/// nested exactly in the shape's layout, of values the datatype can hold. `parameters`, when
/// present, is an object, and `binary_data_size` in it needs the binary extension. Every other
/// field is the model's business. A field the rule reads may appear once.
///
/// `None` for a body with a zero-size or more-than-64-dimension shape, or two inputs of one
/// name: rules for those are being added (numpy's limits, KServe's input lookup by name), so
/// they are not compared yet.
pub fn v2_accepts(body: &[u8]) -> Option<bool> {
    let Some(doc) = Json::parse(body) else {
        return Some(false);
    };
    let Some(entries) = doc.fields() else {
        return Some(false);
    };
    let Ok(Some(Json::Arr(inputs))) = single(entries, "inputs") else {
        return Some(false);
    };
    // Request `parameters`: an object when present; its `content_type` (once) may be anything,
    // `"pd"` asking KServe for a DataFrame, which matters only to models with a feature count.
    match single(entries, "parameters") {
        Ok(None | Some(Json::Null)) => {}
        Ok(Some(Json::Obj(parameters))) if single(parameters, "content_type").is_ok() => {}
        _ => return Some(false),
    }
    if in_flux(inputs) {
        return None;
    }
    Some(!inputs.is_empty() && inputs.iter().all(tensor_ok))
}

fn in_flux(inputs: &[Json]) -> bool {
    let names: Vec<&Json> = inputs
        .iter()
        .filter_map(|i| i.fields())
        .filter_map(|f| f.iter().find(|(k, _)| k == "name").map(|(_, v)| v))
        .collect();
    let duplicate = names
        .iter()
        .enumerate()
        .any(|(i, n)| names[..i].contains(n));
    let odd_shape = inputs
        .iter()
        .filter_map(|i| i.fields())
        .flat_map(|f| f.iter().filter(|(k, _)| k == "shape"))
        .any(|(_, shape)| match shape {
            Json::Arr(dims) => dims.len() > 64 || dims.contains(&Json::Int(0)),
            _ => false,
        });
    duplicate || odd_shape
}

fn tensor_ok(input: &Json) -> bool {
    let Some(fields) = input.fields() else {
        return false;
    };
    let field = |key| single(fields, key);
    let (Ok(Some(Json::Str(name))), Ok(Some(Json::Str(datatype))), Ok(Some(Json::Arr(shape)))) =
        (field("name"), field("datatype"), field("shape"))
    else {
        return false;
    };
    // KServe 0.21 has no numpy type for BF16 and takes FP16 only in the binary extension
    // (`kserve/utils/numpy_codec.py`, `kserve/protocol/infer_type.py`).
    if name.is_empty() || datatype == "BF16" || datatype == "FP16" {
        return false;
    }
    match field("parameters") {
        Ok(None | Some(Json::Null)) => {}
        Ok(Some(Json::Obj(parameters))) => match single(parameters, "binary_data_size") {
            // Absent or null: no binary data. Any value needs the binary extension header,
            // which these bodies never carry.
            Ok(None | Some(Json::Null)) => {}
            _ => return false,
        },
        _ => return false,
    }
    let Some(dims) = shape
        .iter()
        .map(|d| match d {
            Json::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()
    else {
        return false;
    };
    let Some(count) = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d)) else {
        return false;
    };
    let Ok(Some(data @ Json::Arr(_))) = field("data") else {
        return false;
    };
    let Some(data_shape) = tensor_shape(data) else {
        return false;
    };
    let layout_ok = if data_shape.len() > 1 {
        data_shape == dims
    } else {
        data_shape.first().copied() == Some(count)
    };
    layout_ok && leaves(data).all(|v| fits(datatype, v))
}

/// The shape of rectangular nested lists (`[]` for a scalar), `None` when ragged.
fn tensor_shape(value: &Json) -> Option<Vec<u64>> {
    let Json::Arr(items) = value else {
        return Some(Vec::new());
    };
    let mut shapes = items.iter().map(tensor_shape);
    let inner = match shapes.next() {
        None => Vec::new(),
        Some(first) => {
            let first = first?;
            if !shapes.all(|s| s.as_ref() == Some(&first)) {
                return None;
            }
            first
        }
    };
    Some(std::iter::once(items.len() as u64).chain(inner).collect())
}

fn leaves(value: &Json) -> Box<dyn Iterator<Item = &Json> + '_> {
    match value {
        Json::Arr(items) => Box::new(items.iter().flat_map(leaves)),
        other => Box::new(std::iter::once(other)),
    }
}

/// Whether a JSON scalar is a value of the OIP datatype (integers in the type's range).
fn fits(datatype: &str, value: &Json) -> bool {
    let int_range = |min: i128, max: i128| matches!(value, Json::Int(n) if (min..=max).contains(n));
    match datatype {
        "BOOL" => matches!(value, Json::Bool(_)),
        "BYTES" => matches!(value, Json::Str(_)),
        "FP32" | "FP64" => matches!(value, Json::Int(_) | Json::Float(_)),
        "UINT8" => int_range(0, i128::from(u8::MAX)),
        "UINT16" => int_range(0, i128::from(u16::MAX)),
        "UINT32" => int_range(0, i128::from(u32::MAX)),
        "UINT64" => int_range(0, i128::from(u64::MAX)),
        "INT8" => int_range(i128::from(i8::MIN), i128::from(i8::MAX)),
        "INT16" => int_range(i128::from(i16::MIN), i128::from(i16::MAX)),
        "INT32" => int_range(i128::from(i32::MIN), i128::from(i32::MAX)),
        "INT64" => int_range(i128::from(i64::MIN), i128::from(i64::MAX)),
        _ => false,
    }
}

// -- the body's model field -----------------------------------------------------------------

/// The model a body names through `field`: a JSON object with that field exactly once, a
/// string. `None` when the body does not name one that way.
pub fn body_model<'a>(doc: &'a Json, field: &str) -> Option<&'a str> {
    match single(doc.fields()?, field) {
        Ok(Some(Json::Str(name))) => Some(name),
        _ => None,
    }
}

// -- KServe's routes ------------------------------------------------------------------------

/// The model KServe's REST server (kserve 0.21, `kserve/protocol/rest/v1_endpoints.py` and
/// `v2_endpoints.py`) would hand the request to, whatever the method: uvicorn percent-decodes
/// the path (`urllib.parse.unquote`, UTF-8 with replacement) and Starlette matches
/// `{model_name}` as `[^/]+` in `/v1/models/{m}`, `/v1/models/{m}:predict|:explain`,
/// `/v2/models/{m}[/versions/{v}][/ready|/infer]` and `/v2/repository/models/{m}/load|unload`.
/// The OpenAI routes (`/openai/v1/...`) are registered only with `kserve[llm]`, which the
/// deployment here does not run, so they are not modelled.
pub fn kserve_model(path: &str) -> Option<String> {
    let raw = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(raw);
    let segments: Vec<&str> = decoded.split('/').collect();
    let nonempty = |s: &&str| !s.is_empty();
    match segments.as_slice() {
        ["", "v1", "models", m] if nonempty(m) => {
            let name = m
                .strip_suffix(":predict")
                .or_else(|| m.strip_suffix(":explain"))
                .filter(nonempty)
                .unwrap_or(m);
            Some(name.to_owned())
        }
        ["", "v2", "models", m] | ["", "v2", "models", m, "ready" | "infer"] if nonempty(m) => {
            Some((*m).to_owned())
        }
        ["", "v2", "models", m, "versions", v]
        | ["", "v2", "models", m, "versions", v, "ready" | "infer"]
            if nonempty(m) && nonempty(v) =>
        {
            Some((*m).to_owned())
        }
        ["", "v2", "repository", "models", m, "load" | "unload"] if nonempty(m) => {
            Some((*m).to_owned())
        }
        _ => None,
    }
}

/// `urllib.parse.unquote`: `%XX` escapes become bytes, the rest stays, and the bytes are read
/// as UTF-8 with invalid sequences replaced.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
