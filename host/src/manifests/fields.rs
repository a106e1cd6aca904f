//! Which fields of a manifest the translation read, so that every other field is reported as
//! "not emulated" rather than silently ignored.
//!
//! A [`Node`] is a place in one object's document with its field path
//! (`spec.rules[0].matches[1].path`). Reading a value through it records the path as used;
//! looking inside it records it as touched. [`Fields::not_emulated`] then walks the document
//! and names the outermost paths that were neither: a field nobody looked into is reported
//! once, not with every field below it.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::Value;

/// The paths read in one object's document.
#[derive(Default)]
pub(super) struct Fields {
    used: RefCell<BTreeSet<String>>,
    touched: RefCell<BTreeSet<String>>,
}

/// A value in a document and the path that leads to it.
#[derive(Clone)]
pub(super) struct Node<'a> {
    value: &'a Value,
    path: String,
    fields: &'a Fields,
}

impl Fields {
    pub(super) fn root<'a>(&'a self, document: &'a Value) -> Node<'a> {
        Node {
            value: document,
            path: String::new(),
            fields: self,
        }
    }

    /// The outermost fields of `document` the translation neither read nor looked into.
    pub(super) fn not_emulated(&self, document: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(document, "", &mut out);
        out
    }

    fn walk(&self, value: &Value, path: &str, out: &mut Vec<String>) {
        if self.used.borrow().contains(path) {
            return;
        }
        let touched = path.is_empty() || self.touched.borrow().contains(path);
        match value {
            Value::Object(map) if touched => {
                for (key, child) in map {
                    self.walk(child, &join(path, key), out);
                }
            }
            Value::Array(items) if touched => {
                for (i, child) in items.iter().enumerate() {
                    self.walk(child, &format!("{path}[{i}]"), out);
                }
            }
            // An empty map or list says nothing the host could miss.
            Value::Object(map) if map.is_empty() => {}
            Value::Array(items) if items.is_empty() => {}
            Value::Null => {}
            _ => out.push(path.to_owned()),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Node<'a> {
    /// The field path of this value (empty at the document's root).
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// The path of a field below this one, for messages about a field that is absent.
    pub(super) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The field `key` of this map, if present (not null).
    pub(super) fn get(&self, key: &str) -> Option<Node<'a>> {
        self.touch();
        let value = self.value.get(key).filter(|v| !v.is_null())?;
        Some(Node {
            value,
            path: join(&self.path, key),
            fields: self.fields,
        })
    }

    /// The items of this list (none when it is not a list).
    pub(super) fn items(&self) -> Vec<Node<'a>> {
        self.touch();
        self.value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, value)| Node {
                        value,
                        path: format!("{}[{i}]", self.path),
                        fields: self.fields,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The list at `key`, or none.
    pub(super) fn list(&self, key: &str) -> Vec<Node<'a>> {
        self.get(key).map(|n| n.items()).unwrap_or_default()
    }

    /// The whole value, which counts as read with everything below it.
    pub(super) fn take(&self) -> &'a Value {
        self.fields.used.borrow_mut().insert(self.path.clone());
        self.value
    }

    /// This value as a string (a number or boolean in its YAML spelling), read.
    pub(super) fn text(&self) -> Option<String> {
        match self.take() {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The string field `key`, read.
    pub(super) fn str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|n| n.text())
    }

    /// The integer field `key`, read.
    pub(super) fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|n| n.take().as_u64())
    }

    /// The boolean field `key`, read.
    pub(super) fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|n| n.take().as_bool())
    }

    /// Marks the field `key` as read without using it (for fields whose meaning the host
    /// has by construction, such as `apiVersion`).
    pub(super) fn accept(&self, key: &str) {
        if let Some(node) = self.get(key) {
            node.take();
        }
    }

    fn touch(&self) {
        self.fields.touched.borrow_mut().insert(self.path.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_outermost_fields_nobody_read() {
        let doc = serde_json::json!({
            "spec": {
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/a"}}],
                           "sessionPersistence": {"sessionName": "s"}}],
                "extra": {"deep": {"deeper": 1}},
                "empty": {},
            }
        });
        let fields = Fields::default();
        let root = fields.root(&doc);
        let spec = root.get("spec").unwrap();
        for rule in spec.list("rules") {
            for m in rule.list("matches") {
                let path = m.get("path").unwrap();
                assert_eq!(path.str("type").as_deref(), Some("Exact"));
                assert_eq!(path.path(), "spec.rules[0].matches[0].path");
            }
        }
        assert_eq!(
            fields.not_emulated(&doc),
            [
                "spec.extra",
                "spec.rules[0].matches[0].path.value",
                "spec.rules[0].sessionPersistence",
            ]
        );
    }

    #[test]
    fn a_taken_value_covers_its_subtree() {
        let doc = serde_json::json!({"config": {"a": {"b": 1}}, "kind": "X"});
        let fields = Fields::default();
        let root = fields.root(&doc);
        root.get("config").unwrap().take();
        root.accept("kind");
        assert!(fields.not_emulated(&doc).is_empty());
    }
}
