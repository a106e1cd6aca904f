use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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

#[test]
fn the_tightest_window_is_reported_wherever_it_is_configured() {
    let b = budget(&[(1000, BudgetWindow::Minute), (1200, BudgetWindow::Hour)]);
    let store = MemoryStore::new();
    // Minute 0 left, hour 200: the first window is the tightest.
    let standing = reserved(b.reserve("alice", 1000, T0, &store));
    assert_eq!(
        (standing.per, standing.remaining),
        (BudgetWindow::Minute, 0)
    );
    // A minute later the minute window has 900 left after 100 more, the hour window 120
    // (3 s a token: 2,940 s owed plus 300 s): the second window is the tightest.
    let standing = reserved(b.reserve("alice", 100, T0 + 60 * SEC, &store));
    assert_eq!(
        (standing.per, standing.limit, standing.remaining),
        (BudgetWindow::Hour, 1200, 120)
    );
    assert_eq!(standing.reset_nanos, 3240 * SEC);
}

#[test]
fn on_a_tie_the_first_configured_window_is_reported() {
    // Both windows are spent (0 left): the headers name the first one, so the same state
    // always gives the same headers.
    let b = budget(&[(1000, BudgetWindow::Minute), (1000, BudgetWindow::Hour)]);
    let store = MemoryStore::new();
    let standing = reserved(b.reserve("alice", 1000, T0, &store));
    assert_eq!(
        (standing.per, standing.remaining, standing.reset_nanos),
        (BudgetWindow::Minute, 0, 60 * SEC)
    );
}

/// A store that counts its writes.
#[derive(Default)]
struct CountingWrites {
    inner: MemoryStore,
    sets: AtomicU32,
}

impl SharedStore for CountingWrites {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.sets.fetch_add(1, Ordering::Relaxed);
        self.inner.set(key, value, cas)
    }
}

#[test]
fn a_refund_to_a_bucket_that_refilled_writes_nothing() {
    // Settling a response that came after the window refilled costs no shared-data write.
    let b = budget(&[(600, BudgetWindow::Minute)]);
    let store = CountingWrites::default();
    reserved(b.reserve("alice", 600, T0, &store));
    let writes = store.sets.load(Ordering::Relaxed);
    b.adjust("alice", -600, T0 + 60 * SEC, &store).unwrap();
    b.adjust("alice", -600, T0 + 120 * SEC, &store).unwrap();
    assert_eq!(store.sets.load(Ordering::Relaxed), writes);
    // While the bucket still owes, a refund is written.
    reserved(b.reserve("alice", 600, T0 + 120 * SEC, &store));
    let writes = store.sets.load(Ordering::Relaxed);
    b.adjust("alice", -300, T0 + 150 * SEC, &store).unwrap();
    assert_eq!(store.sets.load(Ordering::Relaxed), writes + 1);
}

#[test]
fn a_key_is_cut_as_request_quotas_cut_it() {
    // 255 bytes, then a 2-byte char over byte 256: the key is its first 255 bytes, so two
    // keys that differ only from that char on share one budget.
    let head = format!("a{}", "\u{e9}".repeat(127));
    let b = budget(&[(1000, BudgetWindow::Minute)]);
    let store = MemoryStore::new();
    reserved(b.reserve(&format!("{head}\u{e9}-one"), 1000, T0, &store));
    assert!(matches!(
        b.reserve(&format!("{head}\u{e8}-two"), 1, T0, &store),
        Reserve::Limited { .. }
    ));
    // A key that differs within the first 255 bytes has a budget of its own.
    assert_eq!(
        reserved(b.reserve(&format!("b{}\u{e9}", &head[1..]), 1000, T0, &store)).remaining,
        0
    );
}
