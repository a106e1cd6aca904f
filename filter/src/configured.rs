//! What `on_configure` builds from the plugin configuration and every stream of the VM shares:
//! the compiled [`Policies`] and the metrics defined for its models.

use modelgate_policies::{LogLevel, Policies};
use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

use crate::gen_ai::GenAiMetrics;
use crate::metrics::Metrics;

/// What `on_configure` builds and every stream of this VM shares.
#[derive(Debug)]
pub(crate) struct Configured {
    pub(crate) policies: Policies,
    pub(crate) metrics: Metrics,
    pub(crate) gen_ai: GenAiMetrics,
}

/// Read, compile and apply the plugin configuration of this VM.
pub(crate) fn configure() -> Result<Configured, String> {
    let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(config)) => config,
        Ok(None) => Vec::new(),
        Err(status) => return Err(format!("cannot read the plugin configuration: {status:?}")),
    };
    // `kFromEnv` secrets come from the VM's WASI environment, which holds exactly the
    // variables the host lets through (Envoy Gateway's `env.hostKeys`, Istio's `vmConfig.env`).
    let policies = Policies::from_json_with_env(&config, &|name| std::env::var(name).ok())
        .map_err(|e| format!("invalid configuration: {e}"))?;
    proxy_wasm::set_log_level(log_level(policies.log_level()));
    let metrics = Metrics::define(policies.model_names(), hostcalls::define_metric)
        .map_err(|status| format!("cannot define metrics: {status:?}"))?;
    let gen_ai = GenAiMetrics::define(
        policies.openai_model_names(),
        policies.caller_classes(),
        hostcalls::define_metric,
    )
    .map_err(|status| format!("cannot define the GenAI metrics: {status:?}"))?;
    Ok(Configured {
        policies,
        metrics,
        gen_ai,
    })
}

/// The SDK's level for the configured one.
fn log_level(level: LogLevel) -> proxy_wasm::types::LogLevel {
    use proxy_wasm::types::LogLevel as Sdk;
    match level {
        LogLevel::Trace => Sdk::Trace,
        LogLevel::Debug => Sdk::Debug,
        LogLevel::Info => Sdk::Info,
        LogLevel::Warn => Sdk::Warn,
        LogLevel::Error => Sdk::Error,
        LogLevel::Critical => Sdk::Critical,
    }
}
