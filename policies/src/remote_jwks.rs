//! Keys fetched from an identity provider's JWKS URI: when to fetch, how to read what came back,
//! and which keys are in force meanwhile.
//!
//! The adapter does the I/O (a Proxy-Wasm `http_call` to a named cluster, on a timer); this
//! module decides, with the time passed in:
//!
//! - **when** a fetch is due ([`Schedule`]): at start-up, every `refreshIntervalSeconds` after a
//!   good fetch, every `minRefreshIntervalSeconds` after a failed one, and, at most once per
//!   `minRefreshIntervalSeconds`, when a token names a `kid` the current set does not hold (the
//!   provider has rotated its keys);
//! - **what** a response is worth ([`parse_jwks`]): only a 200 whose body is a JWKS with at least
//!   one usable signing key replaces the keys; anything else (a refused connection, a timeout, a
//!   5xx, an HTML error page, a set with no usable key) keeps the last good keys;
//! - **which** keys verify tokens until the first good fetch: none (`untilFetched: deny`, the
//!   request is answered 503) or the inline `jwt.jwks` (`untilFetched: inlineKeys`).
//!
//! Keys from a URI are public keys only. A symmetric (`oct`) key is never taken from one: an
//! HMAC secret that is published can be used by anyone who reads it to mint tokens. Members this
//! reader does not know are ignored (RFC 7517 §4), keys meant for encryption (`use: enc`) or of
//! an unsupported type are skipped, and a key carrying private members (`d`, ...) is skipped: a
//! provider that publishes its private key has a problem no verifier can fix.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::config::RemoteJwksDocument;
use crate::jwks::{self, Key};

/// The largest JWKS document read. Providers publish a few keys (Google, Auth0, Entra ID and
/// Keycloak JWKS are 1–10 KiB); anything this big is not a JWKS and is not parsed.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;

/// How long past its timeout a fetch counts as still in flight. The host always answers a
/// call (with a failure at the latest when the timeout fires); this only keeps a lost answer
/// from stopping every later refresh.
const LOST_ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Where the JWKS lives and how often to read it (`jwt.remoteJwks`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) cluster: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) timeout: Duration,
    pub(crate) refresh_interval: Duration,
    pub(crate) min_refresh_interval: Duration,
}

/// When the next fetch is due. Times are since the Unix epoch, passed in by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// When the fetch now in flight started.
    in_flight: Option<Duration>,
    /// When the last fetch (good or not) started.
    last_attempt: Option<Duration>,
    /// Whether the last finished fetch installed keys.
    last_ok: bool,
    /// A token named a kid the keys in force do not hold, since the last fetch finished.
    unknown_kid: bool,
}

impl Schedule {
    /// Whether a fetch should start at `now`.
    pub(crate) fn due(&self, settings: &Settings, now: Duration) -> bool {
        if let Some(started) = self.in_flight
            && now < started + settings.timeout + LOST_ANSWER_GRACE
        {
            return false;
        }
        let Some(last) = self.last_attempt else {
            return true;
        };
        let wait = if !self.last_ok || self.unknown_kid {
            settings.min_refresh_interval
        } else {
            settings.refresh_interval
        };
        now >= last + wait
    }

    /// A fetch starts at `now`.
    pub(crate) fn started(&mut self, now: Duration) {
        self.in_flight = Some(now);
        self.last_attempt = Some(now);
    }

    /// The fetch in flight finished; `ok` when it installed keys. A kid seen while it was in
    /// flight is forgotten: if the new set lacks it, the next token naming it says so again.
    pub(crate) fn finished(&mut self, ok: bool) {
        self.in_flight = None;
        self.last_ok = ok;
        self.unknown_kid = false;
    }

    /// A token named a kid the keys in force do not hold.
    pub(crate) fn saw_unknown_kid(&mut self) {
        self.unknown_kid = true;
    }
}

/// Why a fetch did not replace the keys. The last good keys stay in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksFetchError {
    /// The host could not start the call (`http_call` refused it: an unknown cluster, say).
    #[error("cannot call cluster {cluster}: {reason}")]
    Dispatch {
        /// The configured cluster.
        cluster: String,
        /// What the host said.
        reason: String,
    },
    /// No response: connection refused or reset, or the timeout passed.
    #[error("no response from cluster {cluster} (connection failure or timeout)")]
    NoResponse {
        /// The configured cluster.
        cluster: String,
    },
    /// A response other than 200.
    #[error("the JWKS endpoint answered {status}")]
    Status {
        /// The response status.
        status: u16,
    },
    /// A body larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS document is {size} bytes, more than the {MAX_JWKS_BYTES} read")]
    TooLarge {
        /// The body's size.
        size: usize,
    },
    /// A body that is not a JWKS (`{"keys": [...]}`).
    #[error("the response is not a JWKS: {reason}")]
    NotJwks {
        /// What is wrong with it.
        reason: String,
    },
    /// A JWKS in which no key can verify tokens here.
    #[error("the JWKS has no usable signing key ({skipped})")]
    NoUsableKey {
        /// Why each key was skipped.
        skipped: String,
    },
}

/// What a good fetch installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUpdate {
    /// The kids of the keys now in force (`None` for a key without one), in document order.
    pub kids: Vec<Option<String>>,
    /// Keys of the document that were skipped, each with its reason.
    pub skipped: Vec<String>,
    /// Whether the keys differ from those in force before.
    pub changed: bool,
}

/// A parsed JWKS: the usable keys and why the others were skipped.
pub(crate) struct ParsedJwks {
    pub(crate) keys: Vec<Key>,
    pub(crate) skipped: Vec<String>,
}

/// Read a JWKS document fetched from a URI, keeping the keys that can verify tokens here. A
/// document that is not a JWKS at all (not JSON, no `keys` list, an entry that is not an
/// object, a member of the wrong type) is refused whole.
pub(crate) fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<ParsedJwks, JwksFetchError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksFetchError::TooLarge { size: body.len() });
    }
    let document: RemoteJwksDocument =
        serde_json::from_slice(body).map_err(|e| JwksFetchError::NotJwks {
            reason: e.to_string(),
        })?;
    let no_env = |_: &str| None;
    let mut keys: Vec<Key> = Vec::with_capacity(document.keys.len());
    let mut skipped = Vec::new();
    for (i, jwk) in document.keys.into_iter().enumerate() {
        let path = format!("keys[{i}]");
        if jwk.kty() == "oct" {
            skipped.push(format!(
                "{path}: symmetric keys are never taken from a remote JWKS"
            ));
            continue;
        }
        if let Some(private) = jwk.private_member() {
            skipped.push(format!("{path}: carries the private member {private:?}"));
            continue;
        }
        match jwks::compile_key(&jwk.into_public(), allowed, &path, &no_env) {
            Ok(key) if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) => {
                skipped.push(format!("{path}: duplicate kid"));
            }
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if keys.is_empty() {
        let skipped = if skipped.is_empty() {
            "the list is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(JwksFetchError::NoUsableKey { skipped });
    }
    Ok(ParsedJwks { keys, skipped })
}

/// The keys in force and the fetch schedule of one remote JWKS. Shared by every stream of a VM
/// (the adapter holds the compiled policies in an `Rc`); the lock is held for lookups only.
#[derive(Debug)]
pub(crate) struct RemoteKeys {
    pub(crate) settings: Settings,
    /// Algorithms a fetched key may allow (the configured ones, HMAC never).
    allowed: Vec<Algorithm>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The keys tokens are verified with: the inline ones or none until the first good fetch,
    /// then the last good fetch's.
    keys: Arc<[Key]>,
    fetched: bool,
    schedule: Schedule,
}

impl RemoteKeys {
    /// Remote keys with `inline` in force until the first good fetch.
    pub(crate) fn new(settings: Settings, allowed: Vec<Algorithm>, inline: Vec<Key>) -> Self {
        Self {
            settings,
            allowed,
            state: Mutex::new(State {
                keys: inline.into(),
                fetched: false,
                schedule: Schedule::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after any statement; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys in force; `None` while none are (`untilFetched: deny` before the first good
    /// fetch).
    pub(crate) fn current(&self) -> Option<Arc<[Key]>> {
        let state = self.lock();
        (!state.keys.is_empty()).then(|| Arc::clone(&state.keys))
    }

    /// A token named `kid`, which the keys in force do not hold: refresh early.
    pub(crate) fn saw_unknown_kid(&self) {
        self.lock().schedule.saw_unknown_kid();
    }

    /// Start a fetch at `now` when one is due; `true` when the caller should make the call.
    pub(crate) fn start_fetch_if_due(&self, now: Duration) -> bool {
        let mut state = self.lock();
        let due = state.schedule.due(&self.settings, now);
        if due {
            state.schedule.started(now);
        }
        due
    }

    /// The fetch in flight failed before there was a JWKS to read.
    pub(crate) fn fetch_failed(&self) {
        self.lock().schedule.finished(false);
    }

    /// The fetch in flight answered `status` with `body`: install its keys if it is a good
    /// JWKS. `Ok(changed)` tells whether the keys differ from before (the caller then drops
    /// tokens verified with the old ones).
    pub(crate) fn fetched(&self, status: u16, body: &[u8]) -> Result<JwksUpdate, JwksFetchError> {
        let parsed = if status == 200 {
            parse_jwks(body, &self.allowed)
        } else {
            Err(JwksFetchError::Status { status })
        };
        let mut state = self.lock();
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                state.schedule.finished(false);
                return Err(e);
            }
        };
        let changed = !state.fetched || !same_keys(&state.keys, &parsed.keys);
        let kids = parsed.keys.iter().map(|k| k.kid.clone()).collect();
        if changed {
            state.keys = parsed.keys.into();
        }
        state.fetched = true;
        state.schedule.finished(true);
        Ok(JwksUpdate {
            kids,
            skipped: parsed.skipped,
            changed,
        })
    }
}

/// Whether two key sets verify exactly the same tokens.
fn same_keys(a: &[Key], b: &[Key]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
}

#[cfg(test)]
mod tests;
