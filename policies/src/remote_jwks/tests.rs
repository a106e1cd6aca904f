//! The refresh schedule, step by step with injected time, and the JWKS reader's choices.

use std::time::Duration;

use super::*;

fn settings() -> Settings {
    Settings {
        cluster: "idp".to_owned(),
        authority: "idp.example".to_owned(),
        path: "/jwks".to_owned(),
        timeout: Duration::from_secs(2),
        refresh_interval: Duration::from_mins(10),
        min_refresh_interval: Duration::from_secs(10),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn the_first_fetch_is_due_at_once_and_only_one_runs_at_a_time() {
    let s = settings();
    let mut schedule = Schedule::default();
    assert!(schedule.due(&s, secs(100)));
    schedule.started(secs(100));
    assert!(
        !schedule.due(&s, secs(101)),
        "one fetch in flight at a time"
    );
}

#[test]
fn after_a_good_fetch_the_next_waits_for_the_refresh_interval() {
    let s = settings();
    let mut schedule = Schedule::default();
    schedule.started(secs(100));
    schedule.finished(true);
    assert!(!schedule.due(&s, secs(699)));
    assert!(schedule.due(&s, secs(700)));
}

#[test]
fn after_a_failed_fetch_the_next_waits_for_the_minimum_interval() {
    let s = settings();
    let mut schedule = Schedule::default();
    schedule.started(secs(100));
    schedule.finished(false);
    assert!(!schedule.due(&s, secs(109)));
    assert!(schedule.due(&s, secs(110)));
}

#[test]
fn an_unknown_kid_brings_the_refresh_forward_but_no_closer_than_the_minimum_interval() {
    let s = settings();
    let mut schedule = Schedule::default();
    schedule.started(secs(100));
    schedule.finished(true);
    schedule.saw_unknown_kid();
    assert!(!schedule.due(&s, secs(105)), "rate limited");
    assert!(schedule.due(&s, secs(110)));
    schedule.started(secs(110));
    schedule.finished(true);
    assert!(
        !schedule.due(&s, secs(125)),
        "the kid is forgotten once a fetch finished"
    );
}

#[test]
fn an_answer_that_never_comes_does_not_stop_refreshing() {
    let s = Settings {
        min_refresh_interval: secs(1),
        ..settings()
    };
    let mut schedule = Schedule::default();
    schedule.started(secs(100));
    // Timeout (2 s) plus the grace for a lost answer.
    assert!(!schedule.due(&s, secs(106)));
    assert!(schedule.due(&s, secs(107)));
}
