//! `FilterRoot`: the per-VM root context. It compiles the plugin configuration into
//! [`Policies`] and defines the metrics, once per `on_configure`, and hands both to every stream.
//!
//! Callback contracts:
//!
//! - `on_configure`: reads the plugin configuration (buffer type 7, readable only here),
//!   compiles it, applies its log level and defines the metrics. On any error it logs the reason
//!   at error level (a configuration error names the field path) and returns `false`, which makes
//!   the host reject the plugin; a previous good configuration, if any, stays in force.
//! - `create_http_context`: a new [`HttpFilter`] sharing the compiled policies through `Rc`.
//! - `on_tick` and `on_http_call_response`: the remote JWKS's timer and fetches, when the
//!   configuration has one (see [`crate::jwks`]).

use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use modelgate_policies::{LogLevel, Policies};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::gen_ai::GenAiMetrics;
use crate::http::{HttpFilter, current_time};
use crate::jwks::{JwksFetcher, TICK};
use crate::metrics::Metrics;

/// What `on_configure` builds and every stream of this VM shares.
#[derive(Debug)]
pub(crate) struct Configured {
    pub(crate) policies: Policies,
    pub(crate) metrics: Metrics,
    pub(crate) gen_ai: GenAiMetrics,
}

/// The root context of one VM.
pub(crate) struct FilterRoot {
    configured: Option<Rc<Configured>>,
    jwks: JwksFetcher,
}

impl FilterRoot {
    pub(crate) fn new() -> Self {
        Self {
            configured: None,
            jwks: JwksFetcher::default(),
        }
    }

    /// Start the remote JWKS's timer and first fetch, or stop the timer of an earlier
    /// configuration that had one.
    fn start_jwks(&mut self) {
        self.jwks.reset();
        let Some(configured) = self.configured.clone() else {
            return;
        };
        let period = if configured.policies.jwks_fetch().is_some() {
            TICK
        } else {
            Duration::ZERO
        };
        if let Err(status) = hostcalls::set_tick_period(period) {
            error!("modelgate: cannot set the tick period: {status:?}");
        }
        self.jwks.poll(&configured.policies, current_time());
    }
}

/// Read, compile and apply the plugin configuration of this VM.
fn configure() -> Result<Configured, String> {
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

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(configured) = &self.configured {
            self.jwks
                .on_response(&configured.policies, token_id, num_headers, body_size);
        }
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match configure() {
            Ok(configured) => {
                info!(
                    "modelgate: configured {} models",
                    configured.policies.model_names().count()
                );
                self.configured = Some(Rc::new(configured));
                self.start_jwks();
                true
            }
            Err(message) => {
                error!("modelgate: {message}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(configured) = &self.configured {
            self.jwks.poll(&configured.policies, current_time());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(self.configured.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
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
