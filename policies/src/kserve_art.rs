//! `:explain` bodies for KServe's ART explainer, the only explainer KServe v0.20 ships.
//!
//! `ARTModel.explain` (kserve python/artexplainer/artserver/model.py) reads
//! `payload["instances"][0]` as the input batch and `payload["instances"][1]` as its labels,
//! turns both into numpy arrays and runs a `SquareAttack` over them. Its two entries have
//! different shapes, so the V1 row rules (every row of one shape) would refuse the one body
//! it accepts; a model whose `validation.explain` is `art` gets these rules for `:explain`:
//!
//! - a JSON object whose `instances` is a list of exactly two entries;
//! - `instances[0]`: a non-empty list of inputs, each a rectangular nested list of numbers, all
//!   of one shape, with `featureCount` numbers in all when set, at most `maxInstances` of them;
//! - `instances[1]`: one non-negative integer label per input.
//!
//! Explain bodies are small and rare (each one runs an attack), so this builds a JSON tree
//! rather than streaming as the predict validator does.

use std::fmt::Write as _;

use serde_json::Value;

use crate::kserve_v1::V1Rules;

/// Validate an ART `:explain` body; the error names the place.
pub(crate) fn validate(body: &[u8], rules: &V1Rules) -> Result<(), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body: invalid JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err("body: expected a JSON object".to_owned());
    };
    if let Some(other) = map.keys().find(|k| k.as_str() != "instances") {
        return Err(format!(
            "body: the ART explainer reads only instances, got {other}"
        ));
    }
    let Some(Value::Array(instances)) = map.get("instances") else {
        return Err("instances: expected a list [inputs, labels]".to_owned());
    };
    let [inputs, labels] = instances.as_slice() else {
        return Err(format!(
            "instances: the ART explainer takes [inputs, labels], got {} entries",
            instances.len()
        ));
    };
    let Value::Array(inputs) = inputs else {
        return Err("instances[0]: expected a list of inputs".to_owned());
    };
    if inputs.is_empty() {
        return Err("instances[0]: must not be empty".to_owned());
    }
    if let Some(max) = rules.max_instances
        && inputs.len() > max
    {
        return Err(format!("instances[0]: more than {max} inputs"));
    }
    let mut first: Option<Vec<usize>> = None;
    for (i, input) in inputs.iter().enumerate() {
        let mut place = format!("instances[0][{i}]");
        let shape = shape_of(input, &mut place)?;
        let count: usize = shape.iter().product();
        if let Some(want) = rules.feature_count
            && count != want
        {
            return Err(format!(
                "instances[0][{i}]: expected {want} values, got {count}"
            ));
        }
        match &first {
            Some(s) if *s != shape => {
                return Err(format!(
                    "instances[0][{i}]: shape {shape:?} differs from instances[0][0]'s {s:?}"
                ));
            }
            Some(_) => {}
            None => first = Some(shape),
        }
    }
    let Value::Array(labels) = labels else {
        return Err("instances[1]: expected a list of labels".to_owned());
    };
    if labels.len() != inputs.len() {
        return Err(format!(
            "instances[1]: {} labels for {} inputs",
            labels.len(),
            inputs.len()
        ));
    }
    if let Some(i) = labels.iter().position(|l| l.as_u64().is_none()) {
        return Err(format!(
            "instances[1][{i}]: expected a non-negative integer label"
        ));
    }
    Ok(())
}

/// The shape of a rectangular nested list of numbers (`[]` for a number); `place` is extended
/// to the offending element on error.
fn shape_of(value: &Value, place: &mut String) -> Result<Vec<usize>, String> {
    match value {
        Value::Number(_) => Ok(Vec::new()),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(format!("{place}: must not be empty"));
            }
            let mut inner: Option<Vec<usize>> = None;
            for (i, item) in items.iter().enumerate() {
                let len = place.len();
                let _ = write!(place, "[{i}]");
                let shape = shape_of(item, place)?;
                match &inner {
                    Some(s) if *s != shape => {
                        return Err(format!("{place}: not rectangular"));
                    }
                    Some(_) => {}
                    None => inner = Some(shape),
                }
                place.truncate(len);
            }
            let mut shape = vec![items.len()];
            shape.extend(inner.unwrap_or_default());
            Ok(shape)
        }
        other => Err(format!("{place}: expected a number, got {}", kind(other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist_rules() -> V1Rules {
        V1Rules {
            feature_count: Some(784),
            max_instances: Some(100),
            ..V1Rules::default()
        }
    }

    /// KServe's sample request (docs/samples/explanation/art/mnist/input.json): one 28×28×1
    /// image and its label.
    fn sample(images: usize, labels: &str) -> String {
        let row = format!("[{}]", vec!["[-0.5]"; 28].join(","));
        let image = format!("[{}]", vec![row.as_str(); 28].join(","));
        let batch = format!("[{}]", vec![image.as_str(); images].join(","));
        format!(r#"{{"instances": [{batch}, {labels}]}}"#)
    }

    #[test]
    fn accepts_the_art_samples_shape() {
        assert_eq!(
            validate(sample(1, "[7]").as_bytes(), &mnist_rules()),
            Ok(())
        );
        assert_eq!(
            validate(sample(2, "[7, 1]").as_bytes(), &mnist_rules()),
            Ok(())
        );
    }

    #[test]
    fn refuses_what_the_explainer_would_fail_on_naming_the_place() {
        let rules = mnist_rules();
        let cases = [
            (
                r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#.to_owned(),
                "instances: the ART explainer takes [inputs, labels], got 1 entries",
            ),
            (sample(1, "[7, 1]"), "instances[1]: 2 labels for 1 inputs"),
            (
                sample(1, r#"["seven"]"#),
                "instances[1][0]: expected a non-negative integer label",
            ),
            (
                r#"{"instances": [[[1, 2, 3]], [0]]}"#.to_owned(),
                "instances[0][0]: expected 784 values, got 3",
            ),
            (
                r#"{"instances": [[[[1], [2, 3]]], [0]]}"#.to_owned(),
                "instances[0][0][1]: not rectangular",
            ),
            (
                r#"{"instances": [[["a"]], [0]]}"#.to_owned(),
                "instances[0][0][0]: expected a number, got a string",
            ),
            (
                r#"{"instances": [[], []]}"#.to_owned(),
                "instances[0]: must not be empty",
            ),
            (
                r#"{"inputs": [[[1]], [0]]}"#.to_owned(),
                "body: the ART explainer reads only instances, got inputs",
            ),
            ("[1]".to_owned(), "body: expected a JSON object"),
        ];
        for (body, want) in cases {
            assert_eq!(
                validate(body.as_bytes(), &rules),
                Err(want.to_owned()),
                "{body}"
            );
        }
        let few = V1Rules {
            max_instances: Some(1),
            ..rules
        };
        assert_eq!(
            validate(sample(2, "[7, 1]").as_bytes(), &few),
            Err("instances[0]: more than 1 inputs".to_owned())
        );
    }
}
