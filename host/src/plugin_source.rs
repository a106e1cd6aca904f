//! Turns a `filters[]` entry into what the runtime loads: the wasm bytes and the plugin config
//! from inline YAML, a file, or an Envoy Gateway `EnvoyExtensionPolicy` manifest, so local and
//! in-cluster policy can be one source.
//!
//! Envoy Gateway delivers `spec.wasm[].config` (any JSON) to `on_configure` as a JSON string;
//! inline `config` is treated the same way.

use std::path::Path;
use std::sync::Arc;

use modelgate_runtime::{DEFAULT_RELOAD_BASE_INTERVAL, FailurePolicy};
use serde::Deserialize;

use crate::config::{FailurePolicyName, FilterConfig, PolicySource};

/// A filter entry with every file read and every default applied.
#[derive(Debug)]
pub(crate) struct ResolvedPlugin {
    pub wasm: Arc<[u8]>,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub failure_policy: FailurePolicy,
    pub env: Vec<(String, String)>,
}

/// The parts of an `EnvoyExtensionPolicy` the gateway reads; the rest is ignored on purpose,
/// since the manifest is validated against the real CRD elsewhere.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<PolicySpec>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct PolicySpec {
    #[serde(default)]
    wasm: Vec<PolicyWasm>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PolicyWasm {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "rootID")]
    root_id: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    fail_open: Option<bool>,
    #[serde(default)]
    env: Option<PolicyEnv>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PolicyEnv {
    #[serde(default)]
    host_keys: Vec<String>,
}

/// Reads everything `filter` (at `filters[index]`) names. Errors name the field path.
pub(crate) fn resolve(index: usize, filter: &FilterConfig) -> Result<ResolvedPlugin, String> {
    let at = format!("filters[{index}]");
    let wasm = std::fs::read(&filter.wasm)
        .map_err(|e| format!("{at}.wasm: cannot read {}: {e}", filter.wasm.display()))?;
    let mut root_id = None;
    let mut fail_open = None;
    let mut host_keys = filter.env.as_ref().map(|env| env.host_keys.clone());
    let plugin_config = if let Some(value) = &filter.config {
        json_string(value)
    } else if let Some(file) = &filter.config_file {
        std::fs::read(file)
            .map_err(|e| format!("{at}.configFile: cannot read {}: {e}", file.display()))?
    } else if let Some(source) = &filter.from_envoy_extension_policy {
        let entry =
            policy_entry(source).map_err(|e| format!("{at}.fromEnvoyExtensionPolicy: {e}"))?;
        root_id = entry.root_id;
        fail_open = entry.fail_open;
        if host_keys.is_none() {
            host_keys = entry.env.map(|env| env.host_keys);
        }
        entry.config.as_ref().map(json_string).unwrap_or_default()
    } else {
        Vec::new()
    };
    let env = host_keys
        .unwrap_or_default()
        .into_iter()
        .filter_map(|key| {
            let value = std::env::var(&key).ok();
            if value.is_none() {
                log::warn!("{at}.env.hostKeys: {key} is not set in the gateway's environment");
            }
            value.map(|value| (key, value))
        })
        .collect();
    let fail_open = filter.fail_open.or(fail_open).unwrap_or(false);
    let failure_policy = failure_policy(filter, fail_open).map_err(|e| format!("{at}: {e}"))?;
    Ok(ResolvedPlugin {
        wasm: wasm.into(),
        root_id: filter.root_id.clone().or(root_id).unwrap_or_default(),
        vm_id: filter.vm_id.clone().unwrap_or_else(|| filter.name.clone()),
        vm_config: filter.vm_config.clone().unwrap_or_default().into_bytes(),
        plugin_config,
        failure_policy,
        env,
    })
}

/// The failure policy as Envoy's `PluginConfig` constructor settles it (wasm.cc): a true
/// `fail_open` is `FAIL_OPEN` and excludes `failure_policy`; unset is `FAIL_CLOSED`;
/// `FAIL_RELOAD` takes `reload_config.backoff.base_interval`, 1s by default.
fn failure_policy(filter: &FilterConfig, fail_open: bool) -> Result<FailurePolicy, String> {
    if fail_open {
        if filter.failure_policy.is_some() {
            return Err("only one of failOpen or failurePolicy can be set".to_owned());
        }
        return Ok(FailurePolicy::FailOpen);
    }
    Ok(match filter.failure_policy {
        None | Some(FailurePolicyName::FailClosed) => FailurePolicy::FailClosed,
        Some(FailurePolicyName::FailOpen) => FailurePolicy::FailOpen,
        Some(FailurePolicyName::FailReload) => {
            let base_interval = filter
                .reload_config
                .as_ref()
                .and_then(|r| r.backoff.as_ref())
                .map_or(DEFAULT_RELOAD_BASE_INTERVAL, |b| b.base_interval.0);
            // Envoy's proto validation: base_interval must be at least 1ms.
            if base_interval < std::time::Duration::from_millis(1) {
                return Err("reloadConfig.backoff.baseInterval: must be at least 1ms".to_owned());
            }
            FailurePolicy::FailReload { base_interval }
        }
    })
}

/// What an `EnvoyExtensionPolicy` gives one `spec.wasm[]` entry, as the gateway reads it.
#[derive(Debug)]
pub(crate) struct PolicyPlugin {
    pub root_id: Option<String>,
    pub fail_open: Option<bool>,
    /// `env.hostKeys`: the host variables the VM may read.
    pub host_keys: Vec<String>,
    /// `config`, encoded as Envoy Gateway delivers it to `on_configure`.
    pub config: Vec<u8>,
}

/// Reads the `spec.wasm[]` entry `source` names (as `fromEnvoyExtensionPolicy` does).
pub(crate) fn read_policy(source: &PolicySource) -> Result<PolicyPlugin, String> {
    let entry = policy_entry(source)?;
    Ok(PolicyPlugin {
        root_id: entry.root_id,
        fail_open: entry.fail_open,
        host_keys: entry.env.map(|env| env.host_keys).unwrap_or_default(),
        config: entry.config.as_ref().map(json_string).unwrap_or_default(),
    })
}

fn json_string(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Finds the `spec.wasm[]` entry in a (possibly multi-document) manifest file.
fn policy_entry(source: &PolicySource) -> Result<PolicyWasm, String> {
    let text = std::fs::read_to_string(&source.file)
        .map_err(|e| format!("cannot read {}: {e}", source.file.display()))?;
    entry_in(&text, source.wasm_name.as_deref(), &source.file)
}

fn entry_in(text: &str, wasm_name: Option<&str>, file: &Path) -> Result<PolicyWasm, String> {
    let mut candidates = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let manifest =
            Manifest::deserialize(document).map_err(|e| format!("{}: {e}", file.display()))?;
        if manifest.kind != "EnvoyExtensionPolicy" {
            continue;
        }
        for (i, entry) in manifest.spec.into_iter().flat_map(|s| s.wasm).enumerate() {
            candidates.push((format!("{}.spec.wasm[{i}]", manifest.metadata.name), entry));
        }
    }
    if candidates.is_empty() {
        return Err(format!(
            "{} holds no EnvoyExtensionPolicy with spec.wasm entries",
            file.display()
        ));
    }
    match wasm_name {
        Some(name) => candidates
            .into_iter()
            .find(|(_, entry)| entry.name.as_deref() == Some(name))
            .map(|(_, entry)| entry)
            .ok_or_else(|| {
                format!(
                    "wasmName: no spec.wasm entry named {name:?} in {}",
                    file.display()
                )
            }),
        None if candidates.len() == 1 => Ok(candidates.remove(0).1),
        None => Err(format!(
            "wasmName: {} has {} wasm entries ({}); name one",
            file.display(),
            candidates.len(),
            candidates
                .iter()
                .map(|(at, _)| at.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
metadata: {name: modelgate, namespace: kserve}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: kserve-ingress-gateway}]
  wasm:
    - name: modelgate
      rootID: modelgate_root
      failOpen: true
      code: {type: HTTP, http: {url: "https://example.com/modelgate.wasm", sha256: abc}}
      config: {version: 1, models: {iris: {}}}
    - name: other
      code: {type: HTTP, http: {url: "https://example.com/other.wasm"}}
"#;

    #[test]
    fn picks_the_named_wasm_entry_and_encodes_config_as_json() {
        let entry = entry_in(POLICY, Some("modelgate"), Path::new("p.yaml")).unwrap();
        assert_eq!(entry.root_id.as_deref(), Some("modelgate_root"));
        assert_eq!(entry.fail_open, Some(true));
        let config: serde_json::Value =
            serde_json::from_slice(&json_string(&entry.config.unwrap())).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"version": 1, "models": {"iris": {}}})
        );
    }

    #[test]
    fn several_entries_need_a_name() {
        let error = entry_in(POLICY, None, Path::new("p.yaml")).unwrap_err();
        assert!(
            error.starts_with("wasmName: p.yaml has 2 wasm entries"),
            "{error}"
        );
        let error = entry_in(POLICY, Some("missing"), Path::new("p.yaml")).unwrap_err();
        assert_eq!(
            error,
            "wasmName: no spec.wasm entry named \"missing\" in p.yaml"
        );
    }

    #[test]
    fn a_manifest_without_a_policy_is_an_error() {
        let error = entry_in("kind: ConfigMap\n", None, Path::new("p.yaml")).unwrap_err();
        assert_eq!(
            error,
            "p.yaml holds no EnvoyExtensionPolicy with spec.wasm entries"
        );
    }
}
