use std::cell::Cell;
use std::num::NonZeroU32;
use std::time::Duration;

use super::{Check, Quota};
use crate::store::{MemoryStore, SharedStore, StoreError};

/// The injected "now" (an instant in 2027).
const T0: Duration = Duration::from_hours(500_000);

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::new(
        "iris",
        NonZeroU32::new(per_second).unwrap(),
        Duration::from_secs(1),
        NonZeroU32::new(burst).unwrap(),
        NonZeroU32::new(1024).unwrap(),
    )
}

#[test]
fn allows_the_burst_then_limits_then_refills() {
    let store = MemoryStore::new();
    assert!(store.is_empty());
    let q = quota(1, 3);
    for remaining in [2, 1, 0] {
        assert_eq!(
            q.check("alice", T0, &store),
            Check::Allowed {
                limit: 3,
                remaining,
                reset_secs: 3 - u64::from(remaining)
            }
        );
    }
    assert_eq!(
        q.check("alice", T0, &store),
        Check::Limited {
            limit: 3,
            retry_after_secs: 1,
            reset_secs: 3
        }
    );
    // Half a second later the next cell is still 0.5 s away: Retry-After rounds up.
    assert!(matches!(
        q.check("alice", T0 + Duration::from_millis(500), &store),
        Check::Limited {
            retry_after_secs: 1,
            ..
        }
    ));
    // One second later exactly one more request fits.
    assert!(matches!(
        q.check("alice", T0 + Duration::from_secs(1), &store),
        Check::Allowed { remaining: 0, .. }
    ));
    assert!(matches!(
        q.check("alice", T0 + Duration::from_secs(1), &store),
        Check::Limited { .. }
    ));
    // After the whole burst replenishes, the full burst is available again.
    assert!(matches!(
        q.check("alice", T0 + Duration::from_secs(10), &store),
        Check::Allowed { remaining: 2, .. }
    ));
    // Alice's state is one entry of the store.
    assert_eq!(store.len(), 1);
}

#[test]
fn keys_have_separate_buckets() {
    let store = MemoryStore::new();
    let q = quota(1, 1);
    assert!(matches!(
        q.check("alice", T0, &store),
        Check::Allowed { .. }
    ));
    assert!(matches!(
        q.check("alice", T0, &store),
        Check::Limited { .. }
    ));
    assert!(matches!(q.check("bob", T0, &store), Check::Allowed { .. }));
    assert!(matches!(q.check("bob", T0, &store), Check::Limited { .. }));
}

#[test]
fn per_minute_quota_reports_retry_after_in_seconds() {
    let store = MemoryStore::new();
    let q = Quota::new(
        "iris",
        NonZeroU32::new(2).unwrap(),
        Duration::from_mins(1),
        NonZeroU32::new(1).unwrap(),
        NonZeroU32::new(1024).unwrap(),
    );
    assert!(matches!(q.check("k", T0, &store), Check::Allowed { .. }));
    assert_eq!(
        q.check("k", T0 + Duration::from_secs(10), &store),
        Check::Limited {
            limit: 1,
            retry_after_secs: 20,
            reset_secs: 20
        }
    );
}

/// A store where another VM writes between our read and our write, `conflicts` times.
struct RacingStore {
    inner: MemoryStore,
    conflicts: Cell<u32>,
}

impl SharedStore for RacingStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.conflicts.get() > 0 {
            self.conflicts.set(self.conflicts.get() - 1);
            // The other VM counts one request for the same key first.
            quota(1, 3).check("alice", T0, &self.inner);
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn retries_after_a_cas_conflict_and_counts_both_requests() {
    let store = RacingStore {
        inner: MemoryStore::new(),
        conflicts: Cell::new(0),
    };
    // Create the key first: CAS only protects existing keys.
    assert!(matches!(
        quota(1, 3).check("alice", T0, &store),
        Check::Allowed { remaining: 2, .. }
    ));
    store.conflicts.set(1);
    // Our update loses the race once, retries on the other VM's value: 3 used in total.
    assert!(matches!(
        quota(1, 3).check("alice", T0, &store),
        Check::Allowed { remaining: 0, .. }
    ));
    assert!(matches!(
        quota(1, 3).check("alice", T0, &store),
        Check::Limited { .. }
    ));
}

/// A store that always loses the race, counting the writes tried (and failing the test rather
/// than looping for ever).
struct AlwaysConflicting(MemoryStore, Cell<u32>);

impl SharedStore for AlwaysConflicting {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.get(key)
    }
    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
        self.1.set(self.1.get() + 1);
        assert!(self.1.get() <= 1000, "still retrying after 1000 conflicts");
        Err(StoreError::CasMismatch)
    }
}

#[test]
fn endless_conflicts_are_reported_not_looped_on() {
    let store = AlwaysConflicting(MemoryStore::new(), Cell::new(0));
    assert_eq!(
        quota(1, 3).check("alice", T0, &store),
        Check::StoreFailed(StoreError::CasMismatch)
    );
    // Exactly MAX_CAS_ATTEMPTS writes, then the failure is reported.
    assert_eq!(store.1.get(), super::MAX_CAS_ATTEMPTS);
}

#[test]
fn foreign_values_in_shared_data_count_as_a_fresh_bucket() {
    let store = MemoryStore::new();
    // Fill every bucket alice could use with bytes too short to be a record.
    for index in 0..1024 {
        store
            .set(&format!("modelgate/rl/iris/{index}"), b"garbage", 0)
            .unwrap();
    }
    assert!(matches!(
        quota(1, 3).check("alice", T0, &store),
        Check::Allowed { remaining: 2, .. }
    ));
}

#[test]
fn long_keys_are_truncated_on_a_char_boundary() {
    let store = MemoryStore::new();
    let long = "\u{e9}".repeat(200); // 400 bytes
    assert!(matches!(
        quota(1, 1).check(&long, T0, &store),
        Check::Allowed { .. }
    ));
    assert!(matches!(
        quota(1, 1).check(&long, T0, &store),
        Check::Limited { .. }
    ));
}

#[test]
fn a_key_is_cut_before_a_char_that_straddles_the_limit() {
    // 255 bytes, then a 2-byte char over byte 256: the key is its first 255 bytes, so two
    // keys that differ only from that char on share one limit.
    let head = format!("a{}", "\u{e9}".repeat(127));
    let store = MemoryStore::new();
    let q = quota(1, 1);
    assert!(matches!(
        q.check(&format!("{head}\u{e9}-one"), T0, &store),
        Check::Allowed { .. }
    ));
    assert!(matches!(
        q.check(&format!("{head}\u{e8}-two"), T0, &store),
        Check::Limited { .. }
    ));
    // A key that differs within the first 255 bytes has a limit of its own.
    assert!(matches!(
        q.check(&format!("b{}\u{e9}", &head[1..]), T0, &store),
        Check::Allowed { .. }
    ));
}

proptest::proptest! {
    /// GCRA's promise, whatever the arrival pattern: from the first request on, at most
    /// `burst + rate * elapsed` requests pass, and two VMs sharing the store share that bound.
    #[test]
    fn never_allows_more_than_burst_plus_refill(
        gaps_ms in proptest::collection::vec(0u64..400, 1..200),
        rate in 1u32..20,
        burst in 1u32..10,
    ) {
        let store = MemoryStore::new();
        let q = quota(rate, burst);
        let (mut now, mut allowed) = (T0, 0u64);
        for (i, gap) in gaps_ms.iter().enumerate() {
            now += Duration::from_millis(*gap);
            // Alternate between two "VMs": separate Quota values over one store.
            let vm = if i % 2 == 0 { &q } else { &quota(rate, burst) };
            if matches!(vm.check("k", now, &store), Check::Allowed { .. }) {
                allowed += 1;
            }
            let elapsed = now.saturating_sub(T0).as_secs_f64();
            let bound = f64::from(burst) + f64::from(rate) * elapsed;
            #[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
            let allowed_f = allowed as f64;
            proptest::prop_assert!(allowed_f <= bound + 1e-9, "{allowed} allowed, bound {bound}");
        }
    }
}

fn bounded_quota(per_second: u32, burst: u32, max_keys: u32) -> Quota {
    Quota::new(
        "iris",
        NonZeroU32::new(per_second).unwrap(),
        Duration::from_secs(1),
        NonZeroU32::new(burst).unwrap(),
        NonZeroU32::new(max_keys).unwrap(),
    )
}

/// Resident memory of this process, from `/proc/self/statm` (pages of 4 KiB).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_million_distinct_keys_stay_within_max_keys_and_leave_an_active_limit_unchanged() {
    // 1,000,000 keys, each seen once, 2,000 new ones per second (every one holds its slot
    // for one second: about 2,000 live at a time in a table of 4,096); alice sends 3
    // requests per second throughout against her quota of 1 per second, burst 2.
    const KEYS: u32 = 1_000_000;
    const PER_SECOND: u32 = 2_000;
    let q = bounded_quota(1, 2, 4096);
    let store = MemoryStore::new();
    let alone = MemoryStore::new();
    let rss_before = rss_bytes();
    let (mut alice, mut alice_alone, mut crowded) = (Vec::new(), Vec::new(), 0u32);
    for i in 0..KEYS {
        let now = T0 + Duration::from_micros(u64::from(i) * 1_000_000 / u64::from(PER_SECOND));
        match q.check(&format!("caller-{i}"), now, &store) {
            Check::Allowed { .. } => {}
            Check::Crowded { .. } => crowded += 1,
            other => panic!("caller-{i}: {other:?}"),
        }
        if i % (PER_SECOND / 3) == 0 {
            alice.push(matches!(
                q.check("alice", now, &store),
                Check::Allowed { .. }
            ));
            alice_alone.push(matches!(
                q.check("alice", now, &alone),
                Check::Allowed { .. }
            ));
        }
    }
    // 4,096 keys in buckets of 16: 256 shared-data entries at most.
    assert!(store.len() <= 256, "{} entries", store.len());
    // A new key is refused only when its whole bucket is live: rare at half load.
    assert!(
        crowded < KEYS / 100,
        "{crowded} of {KEYS} keys found no slot"
    );
    // Alice got exactly what she gets with the table to herself, request for request.
    assert_eq!(alice, alice_alone);
    assert!(alice.iter().filter(|a| **a).count() > 400);
    assert!(
        alice.iter().any(|a| !*a),
        "alice was never limited: the test proves nothing"
    );
    // Bounded state, bounded memory: a million entries would be over 100 MB here.
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
}

#[test]
fn a_flood_of_new_keys_cannot_reset_a_limited_caller_or_take_its_slot() {
    let q = bounded_quota(1, 3, 64);
    let store = MemoryStore::new();
    for _ in 0..3 {
        assert!(matches!(
            q.check("alice", T0, &store),
            Check::Allowed { .. }
        ));
    }
    assert!(matches!(
        q.check("alice", T0, &store),
        Check::Limited { .. }
    ));
    // 10,000 new keys at the same instant fill every bucket; then the rest are refused.
    let mut outcomes = (0u32, 0u32);
    for i in 0..10_000 {
        match q.check(&format!("flood-{i}"), T0, &store) {
            Check::Allowed { .. } => outcomes.0 += 1,
            Check::Crowded {
                limit: 3,
                retry_after_secs: 1,
            } => outcomes.1 += 1,
            other => panic!("flood-{i}: {other:?}"),
        }
    }
    assert_eq!(store.len(), 4, "64 keys in buckets of 16");
    assert_eq!(outcomes.0 + outcomes.1, 10_000);
    assert!(outcomes.0 <= 63, "{} new keys got a slot", outcomes.0);
    // Alice is still limited, exactly as before the flood: her state was neither lost nor
    // reset. Her third cell frees 1 s later, as it would have anyway.
    assert_eq!(
        q.check("alice", T0, &store),
        Check::Limited {
            limit: 3,
            retry_after_secs: 1,
            reset_secs: 3
        }
    );
    assert!(matches!(
        q.check("alice", T0 + Duration::from_secs(1), &store),
        Check::Allowed { remaining: 0, .. }
    ));
    // Once the flood's one-second states are past, new keys get room again.
    assert!(matches!(
        q.check("late-comer", T0 + Duration::from_secs(1), &store),
        Check::Allowed { .. }
    ));
    assert_eq!(store.len(), 4);
}
