//! The wall clock guests read (`proxy_get_current_time_nanoseconds`, WASI's realtime clock).
//!
//! A gateway reads the system clock. An embedding that replays requests at chosen times (a
//! policy test runner checking quotas and token expiry without sleeping) gives the runtime a
//! [`ManualClock`] instead. The choice is an enum rather than a trait object, so the gateway's
//! per-request time read stays one branch and a direct `SystemTime::now`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a runtime's guests get the time of day.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// Whatever the embedding set last.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// Nanoseconds since the Unix epoch, as `proxy_get_current_time_nanoseconds` reports them.
    pub(crate) fn now_nanos(&self) -> u64 {
        match self {
            Clock::System => nanos_since_epoch(SystemTime::now()),
            Clock::Manual(clock) => clock.nanos.load(Ordering::Relaxed),
        }
    }
}

/// A wall clock that moves only when told to. Shared: set it between streams, and every VM of
/// the runtime sees the new time at its next read.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn new(now: SystemTime) -> ManualClock {
        ManualClock {
            nanos: AtomicU64::new(nanos_since_epoch(now)),
        }
    }

    pub fn set(&self, now: SystemTime) {
        self.nanos.store(nanos_since_epoch(now), Ordering::Relaxed);
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed suffices: the embedding moves the clock between guest calls, never during.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
    }

    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

fn nanos_since_epoch(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_reads_what_was_set_and_advanced() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_007);
        let manual = Arc::new(ManualClock::new(start));
        let clock = Clock::Manual(Arc::clone(&manual));
        assert_eq!(clock.now_nanos(), 1_800_000_007_000_000_000);
        manual.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_nanos(), 1_800_000_008_500_000_000);
        assert_eq!(manual.now(), start + Duration::from_millis(1_500));
        manual.set(start);
        assert_eq!(clock.now_nanos(), 1_800_000_007_000_000_000);
    }

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = nanos_since_epoch(SystemTime::now());
        let read = Clock::System.now_nanos();
        assert!(read >= before && read - before < 60_000_000_000);
    }
}
