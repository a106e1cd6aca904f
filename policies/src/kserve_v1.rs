//! KServe V1 `:predict`/`:explain` body validation, streamed: the body is checked while it is
//! parsed, without building a JSON tree, so a 1 MiB batch costs one pass and no tree.
//!
//! Rules: a JSON object with exactly one of `instances`/`inputs`; a non-empty list; every row of
//! one shape (a scalar, or a rectangular nested list); elements of the model's element type;
//! optionally a fixed feature count and a maximum number of instances.
//!
//! The body is read as KServe 0.21 reads it (`kserve/protocol/dataplane.py`,
//! `DataPlane.decode` then `decode_cloudevent`): a JSON object holding every attribute
//! `kserve.utils.utils.is_structured_cloudevent` looks for (`time`, `type`, `source`, `id`,
//! `specversion` and `data`) is a structured `CloudEvent`, and the model is fed its `data`,
//! whatever else the object holds. So such a body is refused, or its `data` is validated as the
//! V1 body ([`CloudEvents`]); KServe unwraps only once, so `data` itself is a plain body.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::config::{CloudEvents, ElementType};
use crate::strict_json::AnyValue;

/// Deepest row nesting accepted (a row of images is 3 deep); deeper rows are refused, which
/// keeps [`Shape`] a fixed-size value: no allocation per row.
const MAX_RANK: usize = 8;

/// The shape of a row: `[]` for a scalar, `[4]` for four features, `[2, 2]` for a matrix.
#[derive(Clone, Copy, Eq)]
struct Shape {
    rank: usize,
    dims: [usize; MAX_RANK],
}

impl Shape {
    const SCALAR: Shape = Shape {
        rank: 0,
        dims: [0; MAX_RANK],
    };

    fn as_slice(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// This shape with an outer dimension `len` in front, or `None` past [`MAX_RANK`].
    fn within(self, len: usize) -> Option<Shape> {
        if self.rank == MAX_RANK {
            return None;
        }
        let mut dims = [0; MAX_RANK];
        dims[0] = len;
        dims[1..=self.rank].copy_from_slice(self.as_slice());
        Some(Shape {
            rank: self.rank + 1,
            dims,
        })
    }
}

/// Compares the dimensions in use, one `usize` at a time. Every element of every row is
/// compared with its first sibling, and the derived comparison of the whole array calls
/// `memcmp`, which on wasm32 compares one byte per loop turn: about 2,200 guest instructions
/// for a one-instance body of four features.
impl PartialEq for Shape {
    fn eq(&self, other: &Shape) -> bool {
        self.rank == other.rank
            && self
                .as_slice()
                .iter()
                .zip(other.as_slice())
                .all(|(a, b)| a == b)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// One model's V1 rules.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct V1Rules {
    pub(crate) feature_count: Option<usize>,
    pub(crate) max_instances: Option<usize>,
    pub(crate) element_type: ElementType,
    pub(crate) cloud_events: CloudEvents,
}

/// Validate a V1 body; the error names the place (`instances[3]: expected 4 features, got 3`,
/// or `data.instances[3]: ...` inside a structured `CloudEvent`).
pub(crate) fn validate(body: &[u8], rules: &V1Rules) -> Result<(), String> {
    match validate_object(body, rules, true)? {
        None => Ok(()),
        Some(data) => validate_object(data.get().as_bytes(), rules, false)
            .map(|_| ())
            .map_err(|e| match e.strip_prefix("body: ") {
                Some(rest) => format!("data: {rest}"),
                None => format!("data.{e}"),
            }),
    }
}

/// Validate one body object; with `unwrap`, a structured `CloudEvent`'s rows are not required
/// and its `data` is returned for the caller to validate (KServe feeds the model only that).
fn validate_object<'b>(
    body: &'b [u8],
    rules: &V1Rules,
    unwrap: bool,
) -> Result<Option<&'b RawValue>, String> {
    let ctx = Ctx {
        rules,
        unwrap,
        failure: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = BodySeed(&ctx)
        .deserialize(&mut de)
        .and_then(|data| de.end().map(|()| data));
    result.map_err(|e| match ctx.failure.into_inner() {
        Some(failure) => failure.render(),
        None if e.is_data() => format!("body: {e}"),
        None => format!("body: invalid JSON: {e}"),
    })
}

struct Ctx<'a> {
    rules: &'a V1Rules,
    /// Whether a structured `CloudEvent` is recognised here (the outer body only).
    unwrap: bool,
    failure: RefCell<Option<Failure>>,
}

/// A rejection being built: the message, and the list indices collected while unwinding.
struct Failure {
    field: &'static str,
    /// Innermost first.
    indices: Vec<usize>,
    message: String,
}

impl Failure {
    fn render(&self) -> String {
        let mut out = String::from(self.field);
        for i in self.indices.iter().rev() {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
        out.push_str(": ");
        out.push_str(&self.message);
        out
    }
}

impl Ctx<'_> {
    /// Record a rejection at the current position and abort parsing.
    fn fail<E: de::Error>(&self, field: &'static str, message: String) -> E {
        *self.failure.borrow_mut() = Some(Failure {
            field,
            indices: Vec::new(),
            message,
        });
        E::custom("rejected")
    }

    /// Add the index of the enclosing list to a rejection found inside element `index`.
    fn at_index(&self, index: usize) {
        if let Some(f) = self.failure.borrow_mut().as_mut() {
            f.indices.push(index);
        }
    }
}

struct BodySeed<'c, 'a>(&'c Ctx<'a>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    /// A structured `CloudEvent`'s `data`, when the body is one.
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The `CloudEvents` attributes `is_structured_cloudevent` requires besides `data`, one bit each.
const CLOUDEVENT_ATTRIBUTES: [&str; 5] = ["time", "type", "source", "id", "specversion"];
const ALL_ATTRIBUTES: u8 = (1 << CLOUDEVENT_ATTRIBUTES.len()) - 1;

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0;
        let mut seen: Option<&'static str> = None;
        let mut attributes = 0u8;
        let mut data: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let field = match key {
                Key::Rows(field) => field,
                Key::Data if ctx.unwrap => {
                    if data.is_some() {
                        return Err(ctx.fail("body", "duplicate field data".to_owned()));
                    }
                    data = Some(map.next_value()?);
                    continue;
                }
                Key::Attribute(bit) => {
                    attributes |= bit;
                    // Decoded, not skipped: orjson refuses the whole body for a bad escape.
                    map.next_value_seed(AnyValue)?;
                    continue;
                }
                Key::Data | Key::Other => {
                    map.next_value_seed(AnyValue)?;
                    continue;
                }
            };
            if let Some(previous) = seen {
                let message = if previous == field {
                    format!("duplicate field {field}")
                } else {
                    "exactly one of instances or inputs is allowed".to_owned()
                };
                return Err(ctx.fail("body", message));
            }
            seen = Some(field);
            map.next_value_seed(RowsSeed { ctx, field })?;
        }
        if let Some(data) = data
            && attributes == ALL_ATTRIBUTES
        {
            return match ctx.rules.cloud_events {
                CloudEvents::Unwrap => Ok(Some(data)),
                CloudEvents::Reject => Err(ctx.fail(
                    "body",
                    "a structured CloudEvent (specversion, id, source, type, time and data) \
                     is not accepted here"
                        .to_owned(),
                )),
            };
        }
        if seen.is_none() {
            return Err(ctx.fail("body", "missing instances or inputs".to_owned()));
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self
            .0
            .fail("body", "expected a JSON object, got a list".to_owned()))
    }
}

/// The top-level keys this validator tells apart.
enum Key {
    /// `instances` or `inputs`.
    Rows(&'static str),
    /// A structured `CloudEvent`'s payload.
    Data,
    /// One of [`CLOUDEVENT_ATTRIBUTES`], as its bit.
    Attribute(u8),
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(match v {
            "instances" => Key::Rows("instances"),
            "inputs" => Key::Rows("inputs"),
            "data" => Key::Data,
            _ => CLOUDEVENT_ATTRIBUTES
                .iter()
                .position(|a| *a == v)
                .map_or(Key::Other, |i| Key::Attribute(1 << i)),
        })
    }
}

/// The `instances`/`inputs` list.
struct RowsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    field: &'static str,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Self { ctx, field } = self;
        let rules = ctx.rules;
        let mut first: Option<Shape> = None;
        let mut index = 0;
        loop {
            let seed = ValueSeed {
                ctx,
                field,
                element: rules.element_type,
            };
            let shape = match seq.next_element_seed(seed) {
                Ok(Some(shape)) => shape,
                Ok(None) => break,
                Err(e) => {
                    ctx.at_index(index);
                    return Err(e);
                }
            };
            if let Some(max) = rules.max_instances
                && index >= max
            {
                return Err(ctx.fail(field, format!("more than {max} instances")));
            }
            let row_error = match (rules.feature_count, &first) {
                (Some(n), _) if shape.as_slice() != [n] => Some(match shape.as_slice() {
                    [] => format!("expected a list of {n} features, got a scalar"),
                    [got] => format!("expected {n} features, got {got}"),
                    other => format!("expected {n} features, got shape {other:?}"),
                }),
                (_, Some(first)) if *first != shape => {
                    Some(match (first.as_slice(), shape.as_slice()) {
                        ([want], [got]) => format!("expected {want} features, got {got}"),
                        (want, got) => {
                            format!("expected shape {want:?} like {field}[0], got {got:?}")
                        }
                    })
                }
                _ => None,
            };
            if let Some(message) = row_error {
                let error = ctx.fail(field, message);
                ctx.at_index(index);
                return Err(error);
            }
            if first.is_none() {
                first = Some(shape);
            }
            index += 1;
        }
        if index == 0 {
            return Err(ctx.fail(field, "must not be empty".to_owned()));
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got an object".to_owned()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got a string".to_owned()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got a boolean".to_owned()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got a number".to_owned()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got a number".to_owned()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got a number".to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self
            .ctx
            .fail(self.field, "expected a list, got null".to_owned()))
    }
}

/// One row or nested element; yields its shape (`[]` for a scalar).
struct ValueSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    field: &'static str,
    element: ElementType,
}

impl ValueSeed<'_, '_> {
    fn scalar<E: de::Error>(&self, kind: ElementType, name: &str) -> Result<Shape, E> {
        if self.element == ElementType::Any || self.element == kind {
            Ok(Shape::SCALAR)
        } else {
            Err(self.ctx.fail(
                self.field,
                format!("expected {}, got {name}", wanted(self.element)),
            ))
        }
    }
}

fn wanted(element: ElementType) -> &'static str {
    match element {
        ElementType::Number => "a number",
        ElementType::String => "a string",
        ElementType::Bool => "a boolean",
        ElementType::Any => "a scalar",
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.scalar(ElementType::Bool, "a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.scalar(ElementType::Number, "a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.scalar(ElementType::Number, "a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.scalar(ElementType::Number, "a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.scalar(ElementType::String, "a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.ctx.fail(
            self.field,
            format!("expected {}, got null", wanted(self.element)),
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.fail(
            self.field,
            format!("expected {}, got an object", wanted(self.element)),
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Self {
            ctx,
            field,
            element,
        } = self;
        let mut inner: Option<Shape> = None;
        let mut len = 0;
        loop {
            match seq.next_element_seed(ValueSeed {
                ctx,
                field,
                element,
            }) {
                Ok(Some(shape)) => {
                    match &inner {
                        None => inner = Some(shape),
                        Some(first) if *first != shape => {
                            let error = ctx.fail(
                                field,
                                format!("ragged list: expected shape {first:?}, got {shape:?}"),
                            );
                            ctx.at_index(len);
                            return Err(error);
                        }
                        Some(_) => {}
                    }
                    len += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    ctx.at_index(len);
                    return Err(e);
                }
            }
        }
        let Some(inner) = inner else {
            return Err(ctx.fail(field, "empty list".to_owned()));
        };
        inner
            .within(len)
            .ok_or_else(|| ctx.fail(field, format!("rows nest deeper than {MAX_RANK} levels")))
    }
}

#[cfg(test)]
mod tests;
