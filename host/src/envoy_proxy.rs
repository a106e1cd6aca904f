//! The `EnvoyProxy` manifest a host config names (`statsTagsFromEnvoyProxy`,
//! `tracing.fromEnvoyProxy`), read from its file.

use std::path::Path;

use serde::Deserialize;

/// The first `EnvoyProxy` document of the (multi-document) YAML file at `path`; errors name
/// the file.
pub(crate) fn read(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(serde_json::Value::deserialize)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    docs.into_iter()
        .find(|d| d["kind"] == "EnvoyProxy")
        .ok_or_else(|| format!("{}: no EnvoyProxy in the file", path.display()))
}
