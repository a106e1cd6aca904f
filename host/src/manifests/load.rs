//! Reads manifests from files and directories into objects.
//!
//! A directory with a `kustomization.yaml` is read as kustomize builds it: its `resources`
//! (files and directories, recursively) in order, then its `patches` (JSON 6902 operations on
//! a `target`), so `deploy/` gives exactly the objects `kubectl apply -k deploy/` applies and
//! none of the alternatives that sit beside them. Any other directory gives every `*.yaml` and
//! `*.yml` below it (multi-document files too). An object with the same kind, namespace and
//! name as one read before replaces it, as a second `kubectl apply` would: that is how a
//! later path overrides an earlier one.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use super::fields::Fields;

/// One Kubernetes object.
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub doc: Value,
}

impl Object {
    /// `Kind namespace/name`, as errors and warnings name an object.
    pub(crate) fn id(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Kinds without a namespace (the rest default to `default`, as kubectl does).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "GatewayClass",
    "ClusterRole",
    "CustomResourceDefinition",
];

/// The objects of every path, in order, and every file read (to watch for changes).
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub objects: Vec<Object>,
    pub files: Vec<PathBuf>,
    /// Kustomization fields the reader does not apply.
    pub warnings: Vec<String>,
}

impl Loaded {
    fn add(&mut self, object: Object) {
        match self.objects.iter_mut().find(|o| {
            o.kind == object.kind && o.namespace == object.namespace && o.name == object.name
        }) {
            Some(existing) => *existing = object,
            None => self.objects.push(object),
        }
    }
}

pub(crate) fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<String>> {
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    for path in paths {
        if let Err(e) = read_path(path, &mut loaded) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn read_path(path: &Path, loaded: &mut Loaded) -> Result<(), String> {
    if path.is_dir() {
        let kustomization = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
            .iter()
            .map(|name| path.join(name))
            .find(|p| p.is_file());
        if let Some(file) = kustomization {
            return read_kustomization(&file, loaded);
        }
        for file in yaml_files(path)? {
            read_file(&file, loaded)?;
        }
        Ok(())
    } else {
        read_file(path, loaded)
    }
}

/// Every `*.yaml`/`*.yml` below `dir` except kustomization files, in path order.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && !path
                    .file_stem()
                    .is_some_and(|s| s.eq_ignore_ascii_case("kustomization"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(file: &Path, loaded: &mut Loaded) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    loaded.files.push(file.to_path_buf());
    for (i, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let doc = Value::deserialize(document)
            .map_err(|e| format!("{} (document {}): {e}", file.display(), i + 1))?;
        if doc.is_null() {
            continue;
        }
        let at = || format!("{} (document {})", file.display(), i + 1);
        let kind = doc["kind"]
            .as_str()
            .ok_or_else(|| format!("{}: kind: missing", at()))?
            .to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .ok_or_else(|| format!("{}: metadata.name: missing", at()))?
            .to_owned();
        let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            String::new()
        } else {
            doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        };
        loaded.add(Object {
            kind,
            namespace,
            name,
            doc,
        });
    }
    Ok(())
}

fn read_kustomization(file: &Path, loaded: &mut Loaded) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    loaded.files.push(file.to_path_buf());
    let doc: Value =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let fields = Fields::default();
    let root = fields.root(&doc);
    root.accept("apiVersion");
    root.accept("kind");
    for resource in root.list("resources") {
        let at = resource.path().to_owned();
        let relative = resource
            .text()
            .ok_or_else(|| format!("{}: {at}: not a path", file.display()))?;
        read_path(&base.join(relative), loaded)
            .map_err(|e| format!("{}: {at}: {e}", file.display()))?;
    }
    for patch in root.list("patches") {
        apply_patch(&patch, base, file, loaded)?;
    }
    for field in fields.not_emulated(&doc) {
        loaded.warnings.push(format!(
            "Kustomization {}: {field}: not emulated",
            file.display()
        ));
    }
    Ok(())
}

/// A kustomize `patches[]` entry holding JSON 6902 operations (inline or in a file) applied
/// to every object its `target` selects.
fn apply_patch(
    patch: &super::fields::Node<'_>,
    base: &Path,
    file: &Path,
    loaded: &mut Loaded,
) -> Result<(), String> {
    let at = format!("{}: {}", file.display(), patch.path());
    let text = match (patch.str("patch"), patch.str("path")) {
        (Some(text), None) => text,
        (None, Some(relative)) => {
            let file = base.join(relative);
            loaded.files.push(file.clone());
            std::fs::read_to_string(&file).map_err(|e| format!("{at}.path: {e}"))?
        }
        _ => return Err(format!("{at}: give exactly one of patch and path")),
    };
    let operations: Value = serde_norway::from_str(&text).map_err(|e| format!("{at}: {e}"))?;
    let operations = operations.as_array().ok_or_else(|| {
        format!("{at}: only JSON 6902 patches (a list of operations) are supported")
    })?;
    let target = patch
        .get("target")
        .ok_or_else(|| format!("{at}.target: required for a JSON 6902 patch"))?;
    let want = |key: &str| target.str(key);
    let (kind, name, namespace) = (want("kind"), want("name"), want("namespace"));
    target.accept("group");
    target.accept("version");
    let mut matched = 0;
    for object in &mut loaded.objects {
        if kind.as_ref().is_some_and(|k| *k != object.kind)
            || name.as_ref().is_some_and(|n| *n != object.name)
            || namespace.as_ref().is_some_and(|n| *n != object.namespace)
        {
            continue;
        }
        matched += 1;
        for (i, op) in operations.iter().enumerate() {
            json6902(&mut object.doc, op).map_err(|e| format!("{at}: operation {i}: {e}"))?;
        }
    }
    if matched == 0 {
        return Err(format!("{at}.target: selects no object"));
    }
    Ok(())
}

/// One RFC 6902 operation: `add`, `replace` or `remove`.
fn json6902(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("path: missing")?;
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("path {path:?}: not a JSON pointer"))?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let container = doc
        .pointer_mut(parent)
        .ok_or_else(|| format!("path {path:?}: {parent:?} does not exist"))?;
    let verb = op["op"].as_str().unwrap_or_default();
    let value = || op.get("value").cloned().ok_or("value: missing");
    match (verb, container) {
        ("add", Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("path {path:?}: no index {last}"))?
            };
            items.insert(index, value()?);
        }
        ("add" | "replace", Value::Object(map)) => {
            if verb == "replace" && !map.contains_key(&last) {
                return Err(format!("path {path:?}: nothing to replace"));
            }
            map.insert(last, value()?);
        }
        ("replace" | "remove", Value::Array(items)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(|| format!("path {path:?}: no index {last}"))?;
            if verb == "replace" {
                items[index] = value()?;
            } else {
                items.remove(index);
            }
        }
        ("remove", Value::Object(map)) => {
            map.remove(&last)
                .ok_or_else(|| format!("path {path:?}: nothing to remove"))?;
        }
        ("add" | "replace" | "remove", _) => {
            return Err(format!("path {path:?}: {parent:?} is not a map or list"));
        }
        (other, _) => {
            return Err(format!(
                "op {other:?}: only add, replace and remove are supported"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json6902_adds_replaces_and_removes() {
        let mut doc = serde_json::json!({"a": {"list": [1, 2]}, "b": 1});
        for op in [
            serde_json::json!({"op": "add", "path": "/a/list/-", "value": 3}),
            serde_json::json!({"op": "add", "path": "/a/list/0", "value": 0}),
            serde_json::json!({"op": "replace", "path": "/b", "value": 2}),
            serde_json::json!({"op": "remove", "path": "/a/list/1"}),
            serde_json::json!({"op": "add", "path": "/c", "value": {"d": 1}}),
        ] {
            json6902(&mut doc, &op).unwrap();
        }
        assert_eq!(
            doc,
            serde_json::json!({"a": {"list": [0, 2, 3]}, "b": 2, "c": {"d": 1}})
        );
        let error = json6902(
            &mut doc,
            &serde_json::json!({"op": "replace", "path": "/x", "value": 1}),
        )
        .unwrap_err();
        assert_eq!(error, "path \"/x\": nothing to replace");
        let error = json6902(
            &mut doc,
            &serde_json::json!({"op": "add", "path": "/no/such", "value": 1}),
        )
        .unwrap_err();
        assert_eq!(error, "path \"/no/such\": \"/no\" does not exist");
    }
}
