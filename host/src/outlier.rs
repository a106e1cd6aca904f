//! Passive health of one endpoint, after Envoy's outlier detection: consecutive connect
//! failures or 5xx answers eject it for a while, longer each time it is ejected again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::OutlierConfig;

#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_errors: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

/// What a failure did to the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Kept,
    Ejected(Duration),
}

impl Health {
    /// Whether the endpoint may take traffic at `now`; an expired ejection ends here.
    pub(crate) fn available(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match state.ejected_until {
            Some(until) if now < until => false,
            Some(_) => {
                state.ejected_until = None;
                state.consecutive_errors = 0;
                true
            }
            None => true,
        }
    }

    pub(crate) fn record_success(&self) {
        self.lock().consecutive_errors = 0;
    }

    /// Counts a connect failure or 5xx; ejects when the threshold is reached and
    /// `may_eject` (the cluster's ejection cap) allows it.
    pub(crate) fn record_failure(
        &self,
        config: &OutlierConfig,
        now: Instant,
        may_eject: bool,
    ) -> Verdict {
        let mut state = self.lock();
        state.consecutive_errors = state.consecutive_errors.saturating_add(1);
        if config.consecutive_errors == 0
            || state.consecutive_errors < config.consecutive_errors
            || state.ejected_until.is_some_and(|until| now < until)
            || !may_eject
        {
            return Verdict::Kept;
        }
        state.ejections = state.ejections.saturating_add(1);
        let period = config
            .base_ejection_time
            .0
            .saturating_mul(state.ejections)
            .min(config.max_ejection_time.0);
        state.ejected_until = Some(now + period);
        state.consecutive_errors = 0;
        Verdict::Ejected(period)
    }

    /// Ejected right now (without ending an expired ejection).
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_some_and(|until| now < until)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.lock().ejections
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters; a panic elsewhere cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ConfigDuration;

    fn config(errors: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_errors: errors,
            base_ejection_time: ConfigDuration::from_millis(1000),
            max_ejection_time: ConfigDuration::from_millis(2500),
            max_ejection_percent: 100,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_returns_later() {
        let health = Health::default();
        let now = Instant::now();
        assert_eq!(health.record_failure(&config(2), now, true), Verdict::Kept);
        assert_eq!(
            health.record_failure(&config(2), now, true),
            Verdict::Ejected(Duration::from_secs(1))
        );
        assert!(!health.available(now + Duration::from_millis(999)));
        assert!(health.available(now + Duration::from_secs(1)));
    }

    #[test]
    fn success_resets_the_count() {
        let health = Health::default();
        let now = Instant::now();
        health.record_failure(&config(2), now, true);
        health.record_success();
        assert_eq!(health.record_failure(&config(2), now, true), Verdict::Kept);
    }

    #[test]
    fn repeated_ejections_grow_up_to_the_cap() {
        let health = Health::default();
        let mut now = Instant::now();
        let mut periods = Vec::new();
        for _ in 0..3 {
            if let Verdict::Ejected(period) = health.record_failure(&config(1), now, true) {
                periods.push(period);
                now += period;
            }
        }
        assert_eq!(
            periods,
            [
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_millis(2500)
            ]
        );
        assert_eq!(health.ejections(), 3);
    }

    #[test]
    fn the_cap_and_zero_threshold_prevent_ejection() {
        let health = Health::default();
        let now = Instant::now();
        assert_eq!(health.record_failure(&config(1), now, false), Verdict::Kept);
        assert_eq!(health.record_failure(&config(0), now, true), Verdict::Kept);
        assert!(health.available(now));
    }
}
