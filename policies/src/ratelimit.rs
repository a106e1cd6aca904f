//! Per-model quotas: governor's GCRA over host shared data, so every worker VM shares one limit.
//!
//! governor keeps one "theoretical arrival time" (TAT) per key and lets a [`StateStore`]
//! decide where it lives. [`SharedTat`] keeps it in the host's shared data, in one bucket of
//! the quota's fixed table (see [`slots`]: the state stays bounded whatever the number of
//! keys, and a check is one read and one write), and updates the bucket with
//! compare-and-swap, retrying when another VM wrote in between.
//! A per-VM counter would multiply the limit by the number of workers.
//!
//! Time is injected: a limiter is built per check around a [`SharedTat`] (which borrows the
//! request's store) and an [`InjectedClock`] whose epoch is the Unix epoch, so stored TATs are
//! absolute Unix nanoseconds that any VM can read. Building one costs a few arithmetic
//! operations (`Gcra::new`); the quota itself is compiled once.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};

use crate::store::{SharedStore, StoreError};

pub(crate) mod slots;

use slots::{Probe, SlotTable};

/// Keys per quota when the configuration does not say (`rateLimit.maxKeys`).
pub(crate) const DEFAULT_MAX_KEYS: u32 = 16_384;

/// How many times a CAS conflict is retried before the check counts as an internal fault.
/// Each retry means another VM made progress, so this is only reached under extreme contention.
pub(crate) const MAX_CAS_ATTEMPTS: u32 = 16;

/// Caller keys longer than this are truncated. Keys come from headers or claims that the caller
/// controls anyway, so truncation gives them nothing they could not already choose.
pub(crate) const MAX_KEY_BYTES: usize = 256;

/// A compiled per-model quota.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    gcra: governor::Quota,
    /// `RateLimit-Limit`: the burst capacity.
    limit: u32,
    /// Where the keys' states live.
    slots: SlotTable,
}

/// A key's standing within its quota after an admitted request: OpenAI's
/// `x-ratelimit-*-requests` (`RateLimit-*` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaStanding {
    /// The burst capacity.
    pub(crate) limit: u32,
    /// Requests that may still go at once.
    pub(crate) remaining: u32,
    /// Seconds until the full burst is available again.
    pub(crate) reset_secs: u64,
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Within the quota.
    Allowed {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    /// Over the quota.
    Limited {
        limit: u32,
        retry_after_secs: u64,
        reset_secs: u64,
    },
    /// The key's bucket holds its share of other callers' live state (see [`slots`]): the
    /// key is refused, as if over its quota, until the first of them frees.
    Crowded { limit: u32, retry_after_secs: u64 },
    /// Shared data could not be updated (see [`MAX_CAS_ATTEMPTS`]).
    StoreFailed(StoreError),
}

impl Quota {
    /// `per` is one second or one minute; `rate` cells replenish per `per`, `burst` at once;
    /// at most `max_keys` keys have state at once.
    pub(crate) fn new(
        model: &str,
        rate: NonZeroU32,
        per: Duration,
        burst: NonZeroU32,
        max_keys: NonZeroU32,
    ) -> Self {
        let replenish_one = per / rate.get();
        // `with_period` is `None` only for a zero period; `per / rate` with rate <= u32::MAX and
        // per >= 1 s is at least 232 ns.
        let quota = governor::Quota::with_period(replenish_one)
            .unwrap_or_else(|| governor::Quota::per_second(rate))
            .allow_burst(burst);
        Self {
            gcra: quota,
            limit: burst.get(),
            slots: SlotTable::new(model, max_keys.get()),
        }
    }

    /// Count one request for `key` at `now` (since the Unix epoch).
    pub(crate) fn check(&self, key: &str, now: Duration, store: &dyn SharedStore) -> Check {
        let mut cut = key.len().min(MAX_KEY_BYTES);
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        let state = SharedTat {
            store,
            slots: &self.slots,
            key: &key.as_bytes()[..cut],
            now: Nanos::from(now),
            tat: Cell::new(None),
            crowded_until: Cell::new(None),
            failed: Cell::new(None),
        };
        let limiter: RateLimiter<NotKeyed, _, _, StateInformationMiddleware> =
            RateLimiter::new(self.gcra, state, InjectedClock(Cell::new(Duration::ZERO)));
        limiter.clock().0.set(now);
        let result = limiter.check();
        let state = limiter.into_state_store();
        if let Some(error) = state.failed.get() {
            return Check::StoreFailed(error);
        }
        let now_nanos = Nanos::from(now);
        if let Some(frees_at) = state.crowded_until.get() {
            return Check::Crowded {
                limit: self.limit,
                retry_after_secs: ceil_secs(frees_at.saturating_sub(now_nanos)).max(1),
            };
        }
        let reset_secs = state
            .tat
            .get()
            .map_or(0, |tat| ceil_secs(tat.saturating_sub(now_nanos)));
        match result {
            Ok(snapshot) => Check::Allowed {
                limit: self.limit,
                remaining: snapshot.remaining_burst_capacity(),
                reset_secs,
            },
            Err(not_until) => Check::Limited {
                limit: self.limit,
                retry_after_secs: ceil_secs(Nanos::from(not_until.wait_time_from(now))).max(1),
                reset_secs,
            },
        }
    }
}

fn ceil_secs(nanos: Nanos) -> u64 {
    nanos.as_u64().div_ceil(1_000_000_000)
}

/// A clock that answers the time it was given: governor's `start` is read when the limiter is
/// built (at zero, the Unix epoch), then the request's time is set before `check`.
#[derive(Debug)]
struct InjectedClock(Cell<Duration>);

impl Clock for InjectedClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.get()
    }
}

/// One key's TAT in its shared-data bucket.
struct SharedTat<'a> {
    store: &'a dyn SharedStore,
    slots: &'a SlotTable,
    key: &'a [u8],
    /// The request's time: a record whose state is older is dropped.
    now: Nanos,
    /// The TAT after this check (stored, or found when limited): for `RateLimit-Reset`.
    tat: Cell<Option<Nanos>>,
    /// Set when the key found no room: when the first record of its bucket frees.
    crowded_until: Cell<Option<Nanos>>,
    /// Set when the store refused the update for good.
    failed: Cell<Option<StoreError>>,
}

impl StateStore for SharedTat<'_> {
    type Key = NotKeyed;

    // governor's signature has no error channel of its own: a crowded table and a store that
    // refused are reported as flags beside the outcome, and `Quota::check` turns them into
    // `Check::Crowded` and `Check::StoreFailed`.
    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (bucket, current) = match self.slots.probe(self.key, self.now, self.store) {
                Probe::Slot { bucket, tat } => (bucket, tat),
                Probe::Full { frees_at } => {
                    self.crowded_until.set(Some(frees_at));
                    return f(None).map(|(outcome, _)| outcome);
                }
            };
            self.tat.set(current);
            let (outcome, next) = f(current)?;
            match self
                .slots
                .write(&bucket, self.key, next, self.now, self.store)
            {
                Ok(()) => {
                    self.tat.set(Some(next));
                    return Ok(outcome);
                }
                // Another VM wrote the bucket (this key, or another in it): look again.
                Err(StoreError::CasMismatch) if attempts < MAX_CAS_ATTEMPTS => {}
                Err(error) => {
                    self.failed.set(Some(error));
                    return Ok(outcome);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
