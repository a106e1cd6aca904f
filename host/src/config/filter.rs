//! The filters' shapes: the Wasm module, its plugin config from one of three sources, and
//! its VM settings as Envoy's `PluginConfig` names them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, ConfigDuration};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    pub name: String,
    pub wasm: PathBuf,
    /// Defaults to the policy's `rootID` when read from one, else "".
    #[serde(default)]
    pub root_id: Option<String>,
    /// Defaults to the filter's name (Envoy Gateway gives each wasm entry its own VM id).
    #[serde(default)]
    pub vm_id: Option<String>,
    /// Raw bytes handed to `on_vm_start`.
    #[serde(default)]
    pub vm_config: Option<String>,
    /// Inline plugin config (any YAML), delivered to `on_configure` as a JSON string.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Plugin config read verbatim from this file.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    #[serde(default)]
    pub from_envoy_extension_policy: Option<PolicySource>,
    /// Defaults to the policy's `failOpen` when read from one, else false. Envoy's legacy
    /// `fail_open`, the only failure setting Envoy Gateway's `EnvoyExtensionPolicy` exposes.
    #[serde(default)]
    pub fail_open: Option<bool>,
    /// Envoy's `PluginConfig.failure_policy`; only one of it and a true `failOpen` may be set.
    #[serde(default)]
    pub failure_policy: Option<FailurePolicyName>,
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+): a Pause from
    /// request headers holds only the headers and still delivers the body to the filter.
    /// False by default, as in Envoy, where the pause stops the body too.
    #[serde(default)]
    pub allow_on_headers_stop_iteration: bool,
    /// Envoy's `PluginConfig.reload_config`, read with `failurePolicy: FAIL_RELOAD`.
    #[serde(default)]
    pub reload_config: Option<VmReloadConfig>,
    #[serde(default)]
    pub env: Option<EnvConfig>,
    /// VMs per plugin (Envoy runs one per worker); 0 means one per CPU.
    #[serde(default)]
    pub vm_count: usize,
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    #[serde(default = "default_callback_deadline")]
    pub callback_deadline: ConfigDuration,
}

/// Envoy's `envoy.extensions.wasm.v3.FailurePolicy` values, spelled as in its JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants spell Envoy's FAIL_CLOSED, FAIL_OPEN and FAIL_RELOAD"
)]
pub enum FailurePolicyName {
    FailClosed,
    FailOpen,
    FailReload,
}

/// Envoy's `envoy.extensions.wasm.v3.ReloadConfig` (a failed VM's reload, not the config file's).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmReloadConfig {
    #[serde(default)]
    pub backoff: Option<ReloadBackoff>,
}

/// The part of Envoy's `config.core.v3.BackoffStrategy` the Wasm reload reads: Envoy builds
/// a `JitteredLowerBoundBackOffStrategy` from `base_interval` alone (wasm.cc).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReloadBackoff {
    pub base_interval: ConfigDuration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySource {
    pub file: PathBuf,
    /// Which `spec.wasm[]` entry; needed only when the manifest has several.
    #[serde(default)]
    pub wasm_name: Option<String>,
}

/// Host environment variables the VM may read, as Envoy Gateway's `env.hostKeys`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvConfig {
    #[serde(default)]
    pub host_keys: Vec<String>,
}

fn default_memory_limit() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_callback_deadline() -> ConfigDuration {
    ConfigDuration::from_millis(1_000)
}
