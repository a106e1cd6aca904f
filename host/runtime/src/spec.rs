//! What a plugin is loaded from ([`PluginSpec`], [`FailurePolicy`]) and what loading and running
//! it reports ([`LoadError`], the per-plugin counters): the runtime's vocabulary, below the VMs
//! that read it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Everything needed to load one Proxy-Wasm plugin, as Envoy's `PluginConfig` + `VmConfig`.
#[derive(Clone)]
pub struct PluginSpec {
    /// Plugin name: log tag and the `plugin_name` property.
    pub name: String,
    pub root_id: String,
    /// Namespace for shared data and queues.
    pub vm_id: String,
    pub wasm: Arc<[u8]>,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// What happens after the VM fails at run time.
    pub failure_policy: FailurePolicy,
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+, false by default):
    /// whether a Pause (`StopIteration`) from request headers still delivers the body to the
    /// filter, holding only the headers (see [`crate::ChainStream::request_headers`]).
    pub allow_on_headers_stop_iteration: bool,
    /// Variables visible through WASI `environ_*`.
    pub env: Vec<(String, String)>,
    /// One VM per worker, like Envoy (0 => available parallelism).
    pub vm_count: usize,
    pub memory_limit_bytes: usize,
    pub callback_deadline: Duration,
}

/// What a plugin does once a VM failed at run time (a trap, the callback deadline, the memory
/// limit), as Envoy's `PluginConfig.failure_policy` (api/envoy/extensions/wasm/v3/wasm.proto;
/// source/extensions/common/wasm/wasm.cc, `PluginConfig::PluginConfig` and
/// `PluginConfig::maybeReloadHandleIfNeeded`). A failed VM is never called again: a new one
/// comes only from a reload or from loading the plugin again (a config push).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Every stream that reaches the failed VM gets 503 (details `wasm_fail_stream`) until the
    /// plugin is loaded again. Envoy's default (`UNSPECIFIED` and `fail_open: false`), so what
    /// Envoy Gateway's `failOpen: false` gives: one trap is an outage of that worker's routes.
    #[default]
    FailClosed,
    /// The filter is skipped on every stream of the failed VM (Envoy's legacy `fail_open`,
    /// which Envoy Gateway's `failOpen: true` sets).
    FailOpen,
    /// A new stream that finds the VM failed builds a new one, at most once per backoff
    /// interval since the last load; in between streams fail closed (`FAIL_RELOAD` with
    /// `reload_config.backoff.base_interval`, 1s by default).
    FailReload { base_interval: Duration },
}

/// Envoy's default `ReloadConfig` backoff base interval (wasm.proto, `ReloadConfig.backoff`).
pub const DEFAULT_RELOAD_BASE_INTERVAL: Duration = Duration::from_secs(1);

/// Envoy's per-plugin Wasm stats (`wasm.<plugin name>.*`, documented in
/// `docs/root/configuration/other_features/wasm.rst`), plus the VM failures Envoy does not
/// count: there a failure shows only as `wasm_fail_stream` response details.
#[derive(Debug, Default)]
#[expect(clippy::struct_field_names, reason = "named after Envoy's stats")]
pub(crate) struct PluginCounters {
    pub(crate) vm_failures: AtomicU64,
    pub(crate) vm_reload_backoff: AtomicU64,
    pub(crate) vm_reload_success: AtomicU64,
    pub(crate) vm_reload_failure: AtomicU64,
}

/// A snapshot of one plugin's [`PluginCounters`], by plugin name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// VMs that failed at run time (host-only: Envoy has no such stat).
    pub vm_failures: u64,
    /// `wasm.<name>.vm_reload_backoff`: reloads skipped because the backoff had not elapsed.
    pub vm_reload_backoff: u64,
    /// `wasm.<name>.vm_reload_success`.
    pub vm_reload_success: u64,
    /// `wasm.<name>.vm_reload_failure`: a reload whose new VM did not start.
    pub vm_reload_failure: u64,
}

/// Why a plugin could not be loaded; the message always names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin}: cannot compile the module: {reason}")]
    Compile { plugin: String, reason: String },
    #[error("plugin {plugin}: cannot start a VM: {reason}")]
    Start { plugin: String, reason: String },
    #[error("plugin {plugin}: {callback} returned false")]
    Rejected {
        plugin: String,
        callback: &'static str,
    },
}
