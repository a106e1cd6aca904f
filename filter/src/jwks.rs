//! The plumbing of a remote JWKS (`jwt.remoteJwks`): a timer on the root context and an
//! `http_call` to the configured cluster. When to fetch and what an answer is worth are the
//! policies' decisions; this module only makes the calls and reports back.
//!
//! Callback contracts:
//!
//! - after `on_configure` and on every tick ([`TICK`]): if the policies say a fetch is due,
//!   dispatch it (one at a time). A call the host refuses (an unknown cluster: `BadArgument`)
//!   counts as a failed fetch and is retried after `minRefreshIntervalSeconds`.
//! - `on_http_call_response`: an answer to the call in flight is read (`:status` and the body)
//!   and handed to the policies; an answer with no headers is a failure (Envoy calls back with
//!   none when the connection fails, is reset or times out: `Context::onHttpCallFailure` in
//!   envoy source/extensions/common/wasm/context.cc). An answer to a call of an earlier
//!   configuration is dropped.
//!
//! Each VM (one per Envoy worker) fetches for itself, as Envoy's own `jwt_authn` filter keeps one
//! JWKS cache per worker thread: with `concurrency` workers the provider sees that many fetches
//! per refresh.

use std::time::{Duration, SystemTime};

use log::{info, warn};
use modelgate_policies::{JwksFetchError, Policies};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

/// How often the root context asks whether a fetch is due. It bounds how long a token with a
/// new `kid` waits for the refresh it triggers, on top of `minRefreshIntervalSeconds`.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The JWKS call of one VM's root context.
#[derive(Debug, Default)]
pub(crate) struct JwksFetcher {
    /// The token of the call in flight, if any.
    in_flight: Option<u32>,
}

impl JwksFetcher {
    /// Forget a call made for an earlier configuration: its answer is not for these policies.
    pub(crate) fn reset(&mut self) {
        self.in_flight = None;
    }

    /// Start a fetch when the policies say one is due.
    pub(crate) fn poll(&mut self, policies: &Policies, now: SystemTime) {
        let Some(fetch) = policies.jwks_fetch() else {
            return;
        };
        if !policies.jwks_fetch_due(now) {
            return;
        }
        match hostcalls::dispatch_http_call(
            fetch.cluster,
            fetch.headers.to_vec(),
            None,
            Vec::new(),
            fetch.timeout,
        ) {
            Ok(token) => self.in_flight = Some(token),
            Err(status) => {
                policies.jwks_fetch_failed();
                let error = JwksFetchError::Dispatch {
                    cluster: fetch.cluster.to_owned(),
                    reason: format!("{status:?}"),
                };
                warn!("modelgate: remote JWKS: {error}; keeping the keys in force");
            }
        }
    }

    /// The host answered call `token` with `num_headers` headers and `body_size` body bytes.
    pub(crate) fn on_response(
        &mut self,
        policies: &Policies,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if self.in_flight != Some(token) {
            return;
        }
        self.in_flight = None;
        let Some(fetch) = policies.jwks_fetch() else {
            return;
        };
        if num_headers == 0 {
            policies.jwks_fetch_failed();
            let error = JwksFetchError::NoResponse {
                cluster: fetch.cluster.to_owned(),
            };
            warn!("modelgate: remote JWKS: {error}; keeping the keys in force");
            return;
        }
        let status =
            match hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status") {
                Ok(Some(value)) => std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(0),
                Ok(None) | Err(_) => 0,
            };
        let body = match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(status) => {
                policies.jwks_fetch_failed();
                warn!("modelgate: remote JWKS: cannot read the response body: {status:?}");
                return;
            }
        };
        match policies.jwks_fetched(status, &body) {
            Ok(update) if update.changed => {
                let kids: Vec<&str> = update
                    .kids
                    .iter()
                    .map(|kid| kid.as_deref().unwrap_or("(no kid)"))
                    .collect();
                info!(
                    "modelgate: remote JWKS from cluster {}: {} keys in force ({})",
                    fetch.cluster,
                    kids.len(),
                    kids.join(", ")
                );
                for reason in &update.skipped {
                    warn!("modelgate: remote JWKS: skipped {reason}");
                }
            }
            Ok(_) => {}
            Err(error) => {
                warn!("modelgate: remote JWKS: {error}; keeping the keys in force");
            }
        }
    }
}
