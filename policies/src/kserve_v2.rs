//! KServe V2 (Open Inference Protocol) `infer` body validation.
//!
//! Each input needs a name, an OIP datatype and a shape of non-negative integers; its `data`
//! (flat, or nested in the shape's layout) must hold exactly product(shape) values that fit
//! the datatype. Tensor data is summarised while parsing (counts, ranges, kinds), never kept.
//!
//! Binary extension: with `inference-header-content-length: N` the first N bytes are the JSON
//! header and tensors follow as raw bytes. The header is validated; an input whose
//! `parameters.binary_data_size` is set carries its data in the binary part, whose size is
//! checked against the shape for fixed-size datatypes and, in total, against the body.
//!
//! Shapes the model server cannot turn into an array are refused for every model: KServe
//! 0.21 builds each input with numpy (`kserve/protocol/infer_type.py`, `InferInput.as_numpy`),
//! which refuses more than [`NUMPY_MAX_DIMS`] dimensions, and a zero-size tensor gives the model
//! no rows at all (scikit-learn answers 500). Per model ([`V2Rules`]), the inputs may be
//! declared as KServe/Triton model metadata declares them, and the V1 rules `featureCount`,
//! `maxInstances` and `elementType` apply where a tensor has their meaning.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::ElementType;
use crate::strict_json::{self, AnyValue};

/// The most dimensions numpy 2 accepts (`NPY_MAXDIMS`; numpy 1 accepted 32). The model servers
/// here run numpy 2.4 (`tests/requirements.txt`).
pub(crate) const NUMPY_MAX_DIMS: usize = 64;

/// One model's V2 rules (all optional).
#[derive(Debug, Clone, Default)]
pub(crate) struct V2Rules {
    /// The inputs the model declares: every request names exactly these.
    pub(crate) inputs: Option<Vec<DeclaredInput>>,
    /// Each input is `[N, featureCount]` (when `inputs` is not declared).
    pub(crate) feature_count: Option<u64>,
    /// Each input's first dimension is at most this.
    pub(crate) max_instances: Option<u64>,
    /// The datatypes allowed (`number`: the integer and floating-point ones).
    pub(crate) element_type: Option<ElementType>,
}

/// An input as model metadata declares it: `{"name", "datatype", "shape"}`, `-1` for any size.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredInput {
    pub(crate) name: String,
    /// One of the OIP datatype names (checked when the config is compiled).
    pub(crate) datatype: String,
    /// `None` where the declaration says `-1`.
    pub(crate) shape: Vec<Option<u64>>,
}

impl DeclaredInput {
    fn fits(&self, shape: &[u64]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(want, got)| want.is_none_or(|w| w == *got))
    }

    fn shape_text(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.map_or_else(|| "-1".to_owned(), |d| d.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

/// Validate a V2 infer body. `binary_header_len` is the `inference-header-content-length`
/// header, when present.
pub(crate) fn validate(
    body: &[u8],
    binary_header_len: Option<&str>,
    rules: &V2Rules,
) -> Result<(), String> {
    let (json, binary_len) = match binary_header_len {
        None => (body, None),
        Some(raw) => {
            let n: usize = raw.trim().parse().map_err(|_| {
                "inference-header-content-length: not a non-negative integer".to_owned()
            })?;
            if n > body.len() {
                return Err(format!(
                    "inference-header-content-length: {n} exceeds the body's {} bytes",
                    body.len()
                ));
            }
            (&body[..n], Some(body.len() - n))
        }
    };
    // Fields the derive below skips are not decoded; a lone surrogate in one fails the model
    // server's answer (see `strict_json`).
    strict_json::check_escapes(json).map_err(|e| format!("body: invalid JSON: {e}"))?;
    // Nor are their bytes: KServe decodes the whole body as UTF-8 before parsing it, so a body
    // malformed only in a field skipped here is refused here too (found by the `v2_body` fuzz
    // target's reference, which reads the whole document).
    std::str::from_utf8(json)
        .map_err(|e| format!("body: invalid JSON: not UTF-8 at byte {}", e.valid_up_to()))?;
    // serde's derive would also accept a JSON list as a struct; the protocol wants an object.
    if let Some(first) = json.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
    {
        return Err("body: expected a JSON object".to_owned());
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    let request: InferRequest = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let place = if path == "." { "body" } else { path.as_str() };
        if inner.is_data() {
            format!("{place}: {inner}")
        } else {
            format!("{place}: invalid JSON: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("body: invalid JSON: {e}"))?;
    let inputs = request.inputs.as_ref().ok_or("inputs: missing")?;
    if inputs.is_empty() {
        return Err("inputs: must not be empty".to_owned());
    }
    let columns = request.is_dataframe().then_some(inputs.len());
    let mut binary_total: u64 = 0;
    for (i, input) in inputs.iter().enumerate() {
        let place = |m: String| format!("inputs[{i}].{m}");
        binary_total =
            binary_total.saturating_add(check_input(input, binary_len.is_some()).map_err(place)?);
        check_model_rules(input, rules, columns).map_err(place)?;
        if inputs[..i].iter().any(|other| other.name == input.name) {
            return Err(place(format!("name: duplicate input {:?}", input.name)));
        }
    }
    if let Some(declared) = &rules.inputs
        && let Some(missing) = declared
            .iter()
            .find(|d| !inputs.iter().any(|input| input.name == d.name))
    {
        return Err(format!("inputs: missing input {:?}", missing.name));
    }
    if let Some(len) = binary_len
        && binary_total != len as u64
    {
        return Err(format!(
            "body: binary data is {len} bytes, inputs declare {binary_total}"
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct InferRequest {
    inputs: Option<Vec<Object<Input>>>,
    parameters: Option<Object<RequestParameters>>,
}

#[derive(Deserialize)]
struct RequestParameters {
    /// `"pd"` makes KServe hand the model a pandas `DataFrame`, one column per input
    /// (`kserve.utils.utils.get_predict_input`); any other value, an array of `inputs[0]`.
    content_type: Option<IsPandas>,
}

impl InferRequest {
    fn is_dataframe(&self) -> bool {
        self.parameters
            .as_ref()
            .and_then(|p| p.content_type.as_ref())
            .is_some_and(|c| c.0)
    }
}

/// Whether a JSON value is the string `"pd"` (without building a `serde_json::Value`, which
/// would grow the filter by about 12 KB).
struct IsPandas(bool);

impl<'de> Deserialize<'de> for IsPandas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IsPandasVisitor)
    }
}

struct IsPandasVisitor;

impl<'de> Visitor<'de> for IsPandasVisitor {
    type Value = IsPandas;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<IsPandas, E> {
        Ok(IsPandas(v == "pd"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<IsPandas, E> {
        Ok(IsPandas(false))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<IsPandas, E> {
        Ok(IsPandas(false))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<IsPandas, E> {
        Ok(IsPandas(false))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<IsPandas, E> {
        Ok(IsPandas(false))
    }
    fn visit_unit<E: de::Error>(self) -> Result<IsPandas, E> {
        Ok(IsPandas(false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<IsPandas, A::Error> {
        AnyValue.visit_seq(seq).map(|()| IsPandas(false))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<IsPandas, A::Error> {
        AnyValue.visit_map(map).map(|()| IsPandas(false))
    }
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Option<Data>,
    parameters: Option<Object<InputParameters>>,
}

#[derive(Deserialize)]
struct InputParameters {
    binary_data_size: Option<u64>,
}

/// Check one input; returns the binary bytes it declares. Errors start with the field name.
fn check_input(input: &Input, binary: bool) -> Result<u64, String> {
    if input.name.is_empty() {
        return Err("name: must not be empty".to_owned());
    }
    let datatype = Datatype::parse(&input.datatype)
        .ok_or_else(|| format!("datatype: unknown datatype {:?}", input.datatype))?;
    // KServe 0.21 maps no numpy type to BF16 (`kserve/utils/numpy_codec.py` `to_np_dtype`), and
    // refuses FP16 data sent as JSON (`kserve/protocol/infer_type.py`): its 400s, after the
    // request reached it.
    if input.datatype == "BF16" {
        return Err("datatype: BF16 has no numpy type in the model server".to_owned());
    }
    if datatype == Datatype::Float(2) && input.data.is_some() {
        return Err(
            "data: FP16 tensors reach the model server only in the binary extension".to_owned(),
        );
    }
    if input.shape.len() > NUMPY_MAX_DIMS {
        return Err(format!(
            "shape: {} dimensions, the model server's numpy accepts at most {NUMPY_MAX_DIMS}",
            input.shape.len()
        ));
    }
    if input.shape.contains(&0) {
        return Err(format!(
            "shape: {:?} is a zero-size tensor, which gives the model no data",
            input.shape
        ));
    }
    let count = input
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or("shape: element count overflows")?;
    let binary_size = input.parameters.as_ref().and_then(|p| p.binary_data_size);
    if let Some(size) = binary_size {
        if !binary {
            return Err(
                "parameters.binary_data_size: needs the inference-header-content-length header"
                    .to_owned(),
            );
        }
        if input.data.is_some() {
            return Err("data: not allowed with binary_data_size".to_owned());
        }
        if let Some(width) = datatype.width()
            && count.checked_mul(width) != Some(size)
        {
            return Err(format!(
                "parameters.binary_data_size: {size} bytes, shape {:?} of {} needs {}",
                input.shape,
                input.datatype,
                count.saturating_mul(width)
            ));
        }
        return Ok(size);
    }
    let data = input.data.as_ref().ok_or("data: missing")?;
    if data.nested {
        if data.shape.len() != input.shape.len()
            || data.shape.iter().zip(&input.shape).any(|(a, b)| *a != *b)
        {
            return Err(format!(
                "data: nested shape {:?} does not match shape {:?}",
                data.shape, input.shape
            ));
        }
    } else if data.count != count {
        return Err(format!(
            "data: {} elements, shape {:?} needs {count}",
            data.count, input.shape
        ));
    }
    datatype.check(data).map_err(|m| format!("data: {m}"))?;
    Ok(0)
}

/// Check an input against what the model declares or configures. Errors start with the field.
/// `columns` is the number of inputs when the request asks for a `DataFrame` (`content_type:
/// "pd"`): each input is then one feature column of shape `[N]`.
fn check_model_rules(input: &Input, rules: &V2Rules, columns: Option<usize>) -> Result<(), String> {
    // `check_input` has parsed it already.
    let datatype = Datatype::parse(&input.datatype).ok_or("datatype: unknown datatype")?;
    if let Some(element) = rules.element_type
        && !datatype.is(element)
    {
        return Err(format!(
            "datatype: {}, this model takes {}",
            input.datatype,
            element_text(element)
        ));
    }
    if let Some(declared) = &rules.inputs {
        let Some(d) = declared.iter().find(|d| d.name == input.name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "name: unknown input {:?}, the model declares {}",
                input.name,
                names.join(", ")
            ));
        };
        if d.datatype != input.datatype {
            return Err(format!(
                "datatype: {}, the model declares {} for {:?}",
                input.datatype, d.datatype, d.name
            ));
        }
        if !d.fits(&input.shape) {
            return Err(format!(
                "shape: {:?} does not fit the declared {}",
                input.shape,
                d.shape_text()
            ));
        }
    } else if let Some(n) = rules.feature_count {
        match columns {
            None if !matches!(input.shape.as_slice(), [_, features] if *features == n) => {
                return Err(format!(
                    "shape: {:?}, this model takes [N, {n}] ({n} features per row)",
                    input.shape
                ));
            }
            Some(columns) if u64::try_from(columns).ok() != Some(n) => {
                return Err(format!(
                    "shape: parameters.content_type \"pd\" makes each input one feature column; \
                     this model takes {n}, the request has {columns}"
                ));
            }
            Some(_) if input.shape.len() != 1 => {
                return Err(format!(
                    "shape: {:?}, a feature column (content_type \"pd\") is [N]",
                    input.shape
                ));
            }
            _ => {}
        }
    }
    if let (Some(max), Some(first)) = (rules.max_instances, input.shape.first())
        && *first > max
    {
        return Err(format!("shape: {first} instances, at most {max}"));
    }
    Ok(())
}

fn element_text(element: ElementType) -> &'static str {
    match element {
        ElementType::Number => "numbers (an integer or floating-point datatype)",
        ElementType::String => "strings (BYTES)",
        ElementType::Bool => "booleans (BOOL)",
        ElementType::Any => "any datatype",
    }
}

/// The Open Inference Protocol datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datatype {
    Bool,
    Uint(u32),
    Int(u32),
    Float(u64),
    Bytes,
}

impl Datatype {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "BOOL" => Datatype::Bool,
            "UINT8" => Datatype::Uint(8),
            "UINT16" => Datatype::Uint(16),
            "UINT32" => Datatype::Uint(32),
            "UINT64" => Datatype::Uint(64),
            "INT8" => Datatype::Int(8),
            "INT16" => Datatype::Int(16),
            "INT32" => Datatype::Int(32),
            "INT64" => Datatype::Int(64),
            "FP16" | "BF16" => Datatype::Float(2),
            "FP32" => Datatype::Float(4),
            "FP64" => Datatype::Float(8),
            "BYTES" => Datatype::Bytes,
            _ => return None,
        })
    }

    /// Whether tensors of this datatype hold elements of `element`.
    pub(crate) fn is(self, element: ElementType) -> bool {
        match element {
            ElementType::Number => {
                matches!(
                    self,
                    Datatype::Uint(_) | Datatype::Int(_) | Datatype::Float(_)
                )
            }
            ElementType::String => self == Datatype::Bytes,
            ElementType::Bool => self == Datatype::Bool,
            ElementType::Any => true,
        }
    }

    /// Bytes per element in the binary extension (`None` for BYTES: length-prefixed).
    fn width(self) -> Option<u64> {
        match self {
            Datatype::Bool => Some(1),
            Datatype::Uint(bits) | Datatype::Int(bits) => Some(u64::from(bits / 8)),
            Datatype::Float(bytes) => Some(bytes),
            Datatype::Bytes => None,
        }
    }

    fn check(self, data: &Data) -> Result<(), String> {
        let k = data.kinds;
        let (ok, want) = match self {
            Datatype::Bool => (k.only(Kinds::BOOL), "booleans"),
            Datatype::Bytes => (k.only(Kinds::STRING), "strings"),
            Datatype::Float(_) => (k.only(Kinds::INT | Kinds::FLOAT), "numbers"),
            Datatype::Uint(_) | Datatype::Int(_) => (k.only(Kinds::INT), "integers"),
        };
        if !ok {
            return Err(format!("expected {want}, found {}", k.describe_other(self)));
        }
        let (min, max) = match self {
            Datatype::Uint(bits) => (0, (1i128 << bits) - 1),
            Datatype::Int(bits) => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
            _ => return Ok(()),
        };
        if data.count > 0 && (data.min < min || data.max > max) {
            let bad = if data.min < min { data.min } else { data.max };
            return Err(format!("value {bad} out of range for {self}"));
        }
        Ok(())
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datatype::Bool => f.write_str("BOOL"),
            Datatype::Uint(b) => write!(f, "UINT{b}"),
            Datatype::Int(b) => write!(f, "INT{b}"),
            Datatype::Float(b) => write!(f, "FP{}", b * 8),
            Datatype::Bytes => f.write_str("BYTES"),
        }
    }
}

/// Which kinds of JSON values a tensor holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Kinds(u8);

impl Kinds {
    const BOOL: u8 = 1;
    const INT: u8 = 2;
    const FLOAT: u8 = 4;
    const STRING: u8 = 8;
    const OTHER: u8 = 16;

    fn only(self, allowed: u8) -> bool {
        self.0 & !allowed == 0
    }

    fn describe_other(self, datatype: Datatype) -> &'static str {
        let allowed = match datatype {
            Datatype::Bool => Self::BOOL,
            Datatype::Bytes => Self::STRING,
            Datatype::Float(_) => Self::INT | Self::FLOAT,
            Datatype::Uint(_) | Datatype::Int(_) => Self::INT,
        };
        let extra = self.0 & !allowed;
        if extra & Self::OTHER != 0 {
            "null or an object"
        } else if extra & Self::STRING != 0 {
            "a string"
        } else if extra & Self::BOOL != 0 {
            "a boolean"
        } else if extra & Self::FLOAT != 0 {
            "a non-integer number"
        } else {
            "an integer"
        }
    }
}

/// A summary of a `data` array: its nested shape (or `[n]` when flat), element count,
/// value kinds and integer range.
#[derive(Debug, Default)]
struct Data {
    nested: bool,
    shape: Vec<u64>,
    count: u64,
    kinds: Kinds,
    min: i128,
    max: i128,
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut data = Data {
            min: i128::MAX,
            max: i128::MIN,
            ..Data::default()
        };
        let shape = d.deserialize_any(DataVisitor(&mut data))?;
        let Node::List(shape) = shape else {
            return Err(de::Error::custom("expected a list"));
        };
        data.nested = shape.len() > 1;
        data.shape = shape;
        Ok(data)
    }
}

/// A visited value: a scalar, or a list with its (rectangular) shape.
enum Node {
    Scalar,
    List(Vec<u64>),
}

struct DataVisitor<'a>(&'a mut Data);

impl DataVisitor<'_> {
    fn scalar(self, kind: u8) -> Node {
        self.0.kinds.0 |= kind;
        self.0.count += 1;
        Node::Scalar
    }
    fn int(self, v: i128) -> Node {
        self.0.min = self.0.min.min(v);
        self.0.max = self.0.max.max(v);
        self.scalar(Kinds::INT)
    }
}

impl<'de> Visitor<'de> for DataVisitor<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(self.scalar(Kinds::BOOL))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(self.int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(self.int(i128::from(v)))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(self.scalar(Kinds::FLOAT))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(self.scalar(Kinds::STRING))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(self.scalar(Kinds::OTHER))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(self.scalar(Kinds::OTHER))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let data = self.0;
        let mut first: Option<Node> = None;
        let mut len: u64 = 0;
        while let Some(node) = seq.next_element_seed(DataSeed(&mut *data))? {
            match (&first, &node) {
                (None, _) => first = Some(node),
                (Some(Node::Scalar), Node::Scalar) => {}
                (Some(Node::List(a)), Node::List(b)) if a == b => {}
                _ => return Err(de::Error::custom("ragged nested list")),
            }
            len += 1;
        }
        let mut shape = vec![len];
        if let Some(Node::List(inner)) = first {
            shape.extend(inner);
        }
        Ok(Node::List(shape))
    }
}

struct DataSeed<'a>(&'a mut Data);

impl<'de> de::DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(DataVisitor(self.0))
    }
}

/// A struct read from a JSON object only. serde's derive also reads a struct from a list, field
/// by field in declaration order (`["x", [1], "FP32", [1.0], null]` as an input), which the
/// protocol does not allow and KServe's pydantic models refuse (422): such a body must not get
/// past the gateway as valid (found by the `v2_body` fuzz target's reference).
struct Object<T>(T);

impl<T> Deref for Object<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests;
