use std::sync::Arc;

use super::*;
use crate::store::MemoryStore;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

fn budget(windows: &[(u64, BudgetWindow)]) -> TokenBudget {
    TokenBudget::new("m", windows, NonZeroU32::new(64).unwrap())
}

fn reserved(result: Reserve) -> Standing {
    match result {
        Reserve::Reserved(standing) => standing,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

#[test]
fn reservations_are_admitted_until_the_window_is_spent() {
    let b = budget(&[(1000, BudgetWindow::Minute)]);
    let store = MemoryStore::new();
    let first = reserved(b.reserve("alice", 400, T0, &store));
    assert_eq!((first.limit, first.remaining), (1000, 600));
    assert_eq!(first.reset_nanos, 24 * SEC);
    assert_eq!(reserved(b.reserve("alice", 400, T0, &store)).remaining, 200);
    match b.reserve("alice", 400, T0, &store) {
        Reserve::Limited {
            standing,
            retry_after_secs,
        } => {
            assert_eq!(standing.remaining, 200);
            // 200 more tokens refill in 12 s.
            assert_eq!(retry_after_secs, 12);
        }
        other => panic!("{other:?}"),
    }
    // Another caller has its own bucket.
    assert_eq!(reserved(b.reserve("bob", 1000, T0, &store)).remaining, 0);
    // The bucket refills continuously: 12 s later 200 more fit.
    assert!(matches!(
        b.reserve("alice", 400, T0 + 12 * SEC, &store),
        Reserve::Reserved(_)
    ));
}

#[test]
fn a_refund_returns_tokens_and_a_debt_delays_the_next_request() {
    let b = budget(&[(1000, BudgetWindow::Minute)]);
    let store = MemoryStore::new();
    reserved(b.reserve("alice", 1000, T0, &store));
    assert!(matches!(
        b.reserve("alice", 100, T0, &store),
        Reserve::Limited { .. }
    ));
    // The response used 300 of the 1000 reserved.
    b.adjust("alice", -700, T0, &store).unwrap();
    assert_eq!(reserved(b.reserve("alice", 700, T0, &store)).remaining, 0);
    // It used 500 more than reserved: the caller owes them.
    b.adjust("alice", 500, T0, &store).unwrap();
    match b.reserve("alice", 1, T0 + 29 * SEC, &store) {
        Reserve::Limited {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.reserve("alice", 1, T0 + 31 * SEC, &store),
        Reserve::Reserved(_)
    ));
}

#[test]
fn a_refund_to_a_bucket_that_refilled_changes_nothing() {
    let b = budget(&[(600, BudgetWindow::Minute)]);
    let store = MemoryStore::new();
    reserved(b.reserve("alice", 600, T0, &store));
    b.adjust("alice", -600, T0 + 120 * SEC, &store).unwrap();
    // Full again, and not more than full.
    assert!(matches!(
        b.reserve("alice", 601, T0 + 120 * SEC, &store),
        Reserve::NeverFits { .. }
    ));
    assert_eq!(
        reserved(b.reserve("alice", 600, T0 + 120 * SEC, &store)).remaining,
        0
    );
}

#[test]
fn every_window_must_fit_and_a_refusal_gives_back_what_was_taken() {
    let b = budget(&[(1000, BudgetWindow::Minute), (1500, BudgetWindow::Hour)]);
    let store = MemoryStore::new();
    let standing = reserved(b.reserve("alice", 1000, T0, &store));
    // The tightest window is reported.
    assert_eq!(
        (standing.per, standing.remaining),
        (BudgetWindow::Minute, 0)
    );
    // A minute later the minute window is full again, the hour window has 500 (+ ~16) left.
    match b.reserve("alice", 800, T0 + 60 * SEC, &store) {
        Reserve::Limited { standing, .. } => assert_eq!(standing.per, BudgetWindow::Hour),
        other => panic!("{other:?}"),
    }
    // The minute window was given back its 800: 1000 still fit there.
    assert!(matches!(
        b.reserve("alice", 500, T0 + 60 * SEC, &store),
        Reserve::Reserved(_)
    ));
}

#[test]
fn a_request_larger_than_a_window_never_fits() {
    let b = budget(&[(1000, BudgetWindow::Minute), (500, BudgetWindow::Day)]);
    let store = MemoryStore::new();
    assert_eq!(
        b.reserve("alice", 501, T0, &store),
        Reserve::NeverFits {
            per: BudgetWindow::Day,
            limit: 500
        }
    );
    assert!(store.is_empty());
}

#[test]
fn parallel_reservations_from_several_workers_never_exceed_the_budget() {
    // 50 requests of 100 tokens against 1,000: ten fit, from eight threads sharing one store.
    let b = Arc::new(budget(&[
        (1000, BudgetWindow::Minute),
        (5000, BudgetWindow::Day),
    ]));
    let store = Arc::new(MemoryStore::new());
    let admitted: usize = (0..8)
        .map(|worker| {
            let (b, store) = (Arc::clone(&b), Arc::clone(&store));
            std::thread::spawn(move || {
                (0..50)
                    .filter(|i| i % 8 == worker)
                    .filter(|_| {
                        matches!(b.reserve("alice", 100, T0, &*store), Reserve::Reserved(_))
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(admitted, 10);
}

#[test]
fn state_stays_in_the_bounded_table() {
    let b = TokenBudget::new(
        "m",
        &[(10, BudgetWindow::Minute)],
        NonZeroU32::new(64).unwrap(),
    );
    let store = MemoryStore::new();
    let mut reserved = 0;
    for i in 0..1000 {
        match b.reserve(&format!("caller-{i}"), 10, T0, &store) {
            Reserve::Reserved(_) => reserved += 1,
            Reserve::Crowded { .. } => {}
            other => panic!("caller-{i}: {other:?}"),
        }
    }
    // Each caller's whole minute is owed, so 64 callers fill the table's 64 keys, held in
    // 4 entries of 16, and the other 936 are refused rather than given state.
    assert_eq!(reserved, 64);
    assert_eq!(store.len(), 4, "{} entries", store.len());
}
