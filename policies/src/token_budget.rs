//! Token budgets: tokens per caller and model in several windows at once (a minute, an hour,
//! a day), reserved at admission and settled from the response's `usage`.
//!
//! Each window is a token bucket of `tokens` that refills continuously over its window,
//! kept as GCRA keeps a request quota: one time value per caller, the instant the bucket is
//! full again (its TAT). Taking `c` tokens moves it `c × window / tokens` later; the request
//! fits when the result is at most one window ahead of now. Unlike a request quota the cost
//! is only known later, so the TAT also moves back (a refund, when the response used less
//! than was reserved) and forward past the window (a debt, when it used more: the caller then
//! waits until it is paid back).
//!
//! Every window has its own table in shared data (`modelgate/tb/<model>/<window>/<index>`,
//! the bounded buckets of [`crate::ratelimit::slots`], so the state stays bounded whatever the
//! number of callers and a take is one read and one write), updated with compare-and-swap, so
//! every worker VM shares one budget.
//! A reservation takes every window in turn and gives back what it took when a later window
//! refuses: between the two another request may find a window tighter than it is, never
//! looser.

use std::num::NonZeroU32;

use governor::nanos::Nanos;

use crate::config::BudgetWindow;
use crate::ratelimit::slots::{Probe, SlotTable};
use crate::ratelimit::{MAX_CAS_ATTEMPTS, MAX_KEY_BYTES};
use crate::store::{SharedStore, StoreError};

/// A model's compiled token budgets.
#[derive(Debug, Clone)]
pub(crate) struct TokenBudget {
    windows: Vec<Window>,
}

#[derive(Debug, Clone)]
struct Window {
    per: BudgetWindow,
    tokens: u64,
    slots: SlotTable,
}

/// Where the tightest window stands for a caller (OpenAI's `x-ratelimit-*-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) per: BudgetWindow,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub(crate) reset_nanos: u64,
}

/// The result of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// Reserved in every window; the tightest one after the reservation.
    Reserved(Standing),
    /// A window has too few tokens left: nothing is reserved.
    Limited {
        standing: Standing,
        retry_after_secs: u64,
    },
    /// The caller's bucket in a window holds its share of other callers' live state.
    Crowded { retry_after_secs: u64 },
    /// More tokens than a window holds at all: it can never fit.
    NeverFits { per: BudgetWindow, limit: u64 },
    /// Shared data could not be updated.
    StoreFailed(StoreError),
}

/// One window's answer to a take.
enum Take {
    Taken(Standing),
    Limited(Standing, u64),
    Crowded(u64),
    Failed(StoreError),
}

impl TokenBudget {
    /// `windows` are `(tokens, per)` with `tokens > 0`, at most one per window length.
    pub(crate) fn new(model: &str, windows: &[(u64, BudgetWindow)], max_keys: NonZeroU32) -> Self {
        let windows = windows
            .iter()
            .map(|&(tokens, per)| Window {
                per,
                tokens,
                slots: SlotTable::with_prefix(
                    format!("modelgate/tb/{model}/{}/", per.as_str()),
                    max_keys.get(),
                ),
            })
            .collect();
        Self { windows }
    }

    /// Reserve `cost` tokens for `key` at `now` (nanoseconds since the Unix epoch) in every
    /// window, or in none.
    pub(crate) fn reserve(
        &self,
        key: &str,
        cost: u64,
        now: u64,
        store: &dyn SharedStore,
    ) -> Reserve {
        if let Some(w) = self.windows.iter().find(|w| cost > w.tokens) {
            return Reserve::NeverFits {
                per: w.per,
                limit: w.tokens,
            };
        }
        let key = truncated(key);
        let mut tightest: Option<Standing> = None;
        for (taken, window) in self.windows.iter().enumerate() {
            let refused = match window.take(key, cost, now, store) {
                Take::Taken(standing) => {
                    if tightest.is_none_or(|t| standing.remaining < t.remaining) {
                        tightest = Some(standing);
                    }
                    continue;
                }
                Take::Limited(standing, retry_after_secs) => Reserve::Limited {
                    standing,
                    retry_after_secs,
                },
                Take::Crowded(retry_after_secs) => Reserve::Crowded { retry_after_secs },
                Take::Failed(error) => Reserve::StoreFailed(error),
            };
            for window in &self.windows[..taken] {
                // Best effort: a give-back that fails leaves the caller charged, never favoured.
                let _ = window.adjust(key, -i128::from(cost), now, store);
            }
            return refused;
        }
        match tightest {
            Some(standing) => Reserve::Reserved(standing),
            // No window configured: the compiler never builds such a budget.
            None => Reserve::StoreFailed(StoreError::Unavailable),
        }
    }

    /// Charge `delta` more tokens to `key` (a refund when negative) in every window: the
    /// settlement of a reservation. The first store error is returned after every window was
    /// tried.
    pub(crate) fn adjust(
        &self,
        key: &str,
        delta: i128,
        now: u64,
        store: &dyn SharedStore,
    ) -> Result<(), StoreError> {
        let key = truncated(key);
        let mut result = Ok(());
        for window in &self.windows {
            if let Err(error) = window.adjust(key, delta, now, store) {
                result = result.and(Err(error));
            }
        }
        result
    }
}

impl Window {
    fn period(&self) -> u64 {
        self.per.seconds() * 1_000_000_000
    }

    /// Nanoseconds of refill that `tokens` stand for.
    fn nanos_for(&self, tokens: u128) -> u64 {
        let nanos = tokens * u128::from(self.period()) / u128::from(self.tokens);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Where the bucket stands when it is full again at `tat`.
    fn standing(&self, tat: u64, now: u64) -> Standing {
        let ahead = tat.saturating_sub(now);
        let free = u128::from(self.period().saturating_sub(ahead));
        let remaining = free * u128::from(self.tokens) / u128::from(self.period());
        Standing {
            per: self.per,
            limit: self.tokens,
            remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
            reset_nanos: ahead,
        }
    }

    fn take(&self, key: &[u8], cost: u64, now: u64, store: &dyn SharedStore) -> Take {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bucket, tat) = match self.slots.probe(key, Nanos::from(now), store) {
                Probe::Slot { bucket, tat } => (bucket, tat),
                Probe::Full { frees_at } => {
                    return Take::Crowded(ceil_secs(frees_at.as_u64().saturating_sub(now)).max(1));
                }
            };
            let start = tat.map_or(now, Nanos::as_u64).max(now);
            let next = start.saturating_add(self.nanos_for(u128::from(cost)));
            let ahead = next - now;
            if ahead > self.period() {
                let retry = ceil_secs(ahead - self.period()).max(1);
                return Take::Limited(self.standing(start, now), retry);
            }
            match self
                .slots
                .write(&bucket, key, Nanos::from(next), Nanos::from(now), store)
            {
                Ok(()) => return Take::Taken(self.standing(next, now)),
                Err(StoreError::CasMismatch) => {}
                Err(error) => return Take::Failed(error),
            }
        }
        Take::Failed(StoreError::CasMismatch)
    }

    fn adjust(
        &self,
        key: &[u8],
        delta: i128,
        now: u64,
        store: &dyn SharedStore,
    ) -> Result<(), StoreError> {
        if delta == 0 {
            return Ok(());
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bucket, tat) = match self.slots.probe(key, Nanos::from(now), store) {
                Probe::Slot { bucket, tat } => (bucket, tat.map(Nanos::as_u64)),
                // No room to charge: the caller's bucket is full of others' live state, and
                // it will be refused until one frees anyway.
                Probe::Full { .. } => return Err(StoreError::Unavailable),
            };
            let shift = self.nanos_for(delta.unsigned_abs());
            let next = match tat {
                // A debt starts from now when the bucket had refilled.
                _ if delta > 0 => tat.unwrap_or(now).max(now).saturating_add(shift),
                // Nothing is owed to a bucket that is full again (its record may even have
                // been dropped): a refund changes nothing.
                None => return Ok(()),
                Some(tat) if tat <= now => return Ok(()),
                Some(tat) => tat.saturating_sub(shift),
            };
            match self
                .slots
                .write(&bucket, key, Nanos::from(next), Nanos::from(now), store)
            {
                Ok(()) => return Ok(()),
                Err(StoreError::CasMismatch) => {}
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

/// The key as request quotas keep it: at most [`MAX_KEY_BYTES`], cut at a char boundary.
fn truncated(key: &str) -> &[u8] {
    let mut cut = key.len().min(MAX_KEY_BYTES);
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    &key.as_bytes()[..cut]
}

pub(crate) fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests;
