//! `FilterRoot`: the per-VM root context. It compiles the plugin configuration into
//! [`Policies`] (`crate::configured`) and defines the metrics, once per `on_configure`, and hands both to every stream.
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
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::configured::{Configured, configure};
use crate::http::{HttpFilter, current_time};
use crate::jwks::{JwksFetcher, TICK};

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
