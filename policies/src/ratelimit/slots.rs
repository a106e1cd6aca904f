//! A fixed table of shared-data slots per quota, so rate-limit state stays bounded however
//! many distinct keys callers bring.
//!
//! Shared data has no expiry and no delete: one entry per caller key would grow for the life
//! of the VM id, and a caller who rotates keys (client addresses, subjects, header values)
//! would grow the proxy's memory without bound. Instead a quota owns `capacity` entries,
//! `modelgate/rl/<model>/<index>`, each holding one caller's key and its TAT
//! (8 little-endian bytes, then the key). A key lives in the first usable slot of its
//! window: [`PROBES`] slots chosen by double hashing (start and stride from `fnv1a(key)`),
//! so keys whose windows start close together do not crowd each other out as consecutive
//! windows would (measured: 1.3% of new keys found no slot at half load with consecutive
//! slots, under 1% with strides).
//!
//! A slot is reclaimed only once its TAT is in the past. A TAT in the past means the full
//! burst is available again, exactly the state of a key never seen: so reclaiming never
//! weakens anyone's limit, and flooding the table with other keys cannot reset a caller's
//! own state while it is still owed. When every slot of a key's window holds another
//! caller's live state, the key gets no state and is refused until the earliest of them
//! frees (`Probe::Full`): stricter, never looser. Keeping a slot live costs its owner
//! admitted requests (one request holds it for one emission interval, `period / rate`),
//! so holding `capacity` slots takes `capacity × rate` admitted requests per period.

use std::fmt::Write as _;

use governor::nanos::Nanos;

use crate::store::SharedStore;

/// How many slots a key may live in. A key is found in about one read while the table is
/// sparse; a new key reads at most this many slots before it claims one or is refused.
pub(crate) const PROBES: u32 = 8;

/// The slots of one quota.
#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    /// `modelgate/rl/<model>/`; a slot's shared-data key is the prefix and its index.
    prefix: String,
    capacity: u32,
}

/// Where a key's state is, or why it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Read and write the key's state in slot `index`, with compare-and-swap token `cas`
    /// (0 for a slot never written). `tat` is the key's state, `None` when the slot is
    /// claimed afresh (empty, expired, or not a slot value at all).
    Slot {
        index: u32,
        cas: u32,
        tat: Option<Nanos>,
    },
    /// Every slot of the window holds another key's live state; the first frees at `frees_at`.
    Full { frees_at: Nanos },
}

impl SlotTable {
    pub(crate) fn new(model: &str, capacity: u32) -> Self {
        Self::with_prefix(format!("modelgate/rl/{model}/"), capacity)
    }

    /// A table whose slots are `<prefix><index>` (token budgets keep one table per window).
    pub(crate) fn with_prefix(prefix: String, capacity: u32) -> Self {
        Self {
            prefix,
            capacity: capacity.max(1),
        }
    }

    /// The shared-data key of slot `index`, written into `buf` (reused across probes).
    pub(crate) fn slot_key<'b>(&self, index: u32, buf: &'b mut String) -> &'b str {
        buf.clear();
        buf.push_str(&self.prefix);
        // Writing to a String cannot fail.
        let _ = write!(buf, "{index}");
        buf
    }

    /// Find `key`'s slot at `now`, or a slot it may claim.
    pub(crate) fn probe(&self, key: &[u8], now: Nanos, store: &dyn SharedStore) -> Probe {
        let capacity = u64::from(self.capacity);
        let hash = fnv1a(key);
        let start = hash % capacity;
        let stride = stride(hash >> 32, capacity);
        let mut buf = String::with_capacity(self.prefix.len() + 10);
        let mut claimable = None;
        let mut frees_at = None;
        for step in 0..u64::from(PROBES.min(self.capacity)) {
            // Every term is below 2^32, so nothing overflows, and the index fits in a u32.
            let index = u32::try_from((start + step * stride) % capacity).unwrap_or_default();
            let Some((value, cas)) = store.get(self.slot_key(index, &mut buf)) else {
                // Slots are never emptied, so the key was never placed past an empty one.
                claimable.get_or_insert((index, 0));
                break;
            };
            match decode(&value) {
                Some((tat, owner)) if owner == key => {
                    return Probe::Slot {
                        index,
                        cas,
                        tat: Some(tat),
                    };
                }
                Some((tat, _)) if tat > now => {
                    frees_at = Some(frees_at.map_or(tat, |f: Nanos| f.min(tat)));
                }
                // Another key's state that is in the past, or bytes that are not a slot.
                _ => {
                    claimable.get_or_insert((index, cas));
                }
            }
        }
        match claimable {
            Some((index, cas)) => Probe::Slot {
                index,
                cas,
                tat: None,
            },
            None => Probe::Full {
                frees_at: frees_at.unwrap_or(now),
            },
        }
    }
}

/// A stride in `1..capacity` coprime with `capacity`, so a window never visits a slot twice.
fn stride(seed: u64, capacity: u64) -> u64 {
    if capacity <= 2 {
        return 1;
    }
    let mut stride = 1 + seed % (capacity - 1);
    while gcd(stride, capacity) != 1 {
        stride = if stride + 1 == capacity {
            1
        } else {
            stride + 1
        };
    }
    stride
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A slot's value: the TAT, then the key it belongs to.
pub(crate) fn encode(tat: Nanos, key: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + key.len());
    value.extend_from_slice(&tat.as_u64().to_le_bytes());
    value.extend_from_slice(key);
    value
}

/// A slot's TAT and key; `None` for bytes too short to be a slot.
fn decode(value: &[u8]) -> Option<(Nanos, &[u8])> {
    let (tat, key) = value.split_first_chunk::<8>()?;
    Some((Nanos::from(u64::from_le_bytes(*tat)), key))
}

/// FNV-1a, 64 bits: the same slot for the same key in every worker VM and every process
/// restart, with no dependency. It is not keyed, so a caller who may choose its own key
/// (`rateLimit.key.header`) can aim at another key's window; such a caller can already evade
/// its limit by changing keys, and the worst it can do to another is described in the
/// module docs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const NOW: Nanos = Nanos::new(1_000_000_000_000);

    fn later(nanos: u64) -> Nanos {
        Nanos::new(NOW.as_u64() + nanos)
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_window_never_visits_a_slot_twice() {
        for capacity in [3_u64, 8, 12, 64, 4096, 16_384, 1_000_003] {
            for seed in [0, 1, 5, 2047, 2048, 123_456_789] {
                let stride = stride(seed, capacity);
                let slots: std::collections::HashSet<u64> = (0..u64::from(PROBES))
                    .map(|i| (7 + i * stride) % capacity)
                    .collect();
                let want = u64::from(PROBES).min(capacity);
                assert_eq!(
                    slots.len() as u64,
                    want,
                    "capacity {capacity}, stride {stride}"
                );
            }
        }
    }

    #[test]
    fn a_new_key_claims_the_first_empty_slot_of_its_window() {
        let table = SlotTable::new("m", 64);
        let store = MemoryStore::new();
        let Probe::Slot { index, cas, tat } = table.probe(b"alice", NOW, &store) else {
            panic!("an empty table is not full");
        };
        assert_eq!(
            (u64::from(index), cas, tat),
            (fnv1a(b"alice") % 64, 0, None)
        );
    }

    #[test]
    fn a_stored_key_is_found_with_its_state() {
        let table = SlotTable::new("m", 64);
        let store = MemoryStore::new();
        let mut buf = String::new();
        let hash = fnv1a(b"alice");
        let home = u32::try_from(hash % 64).unwrap();
        // Another key's live state sits in alice's first slot; alice lives in her second.
        let next = u32::try_from((hash % 64 + stride(hash >> 32, 64)) % 64).unwrap();
        store
            .set(table.slot_key(home, &mut buf), &encode(later(5), b"bob"), 0)
            .unwrap();
        store
            .set(
                table.slot_key(next, &mut buf),
                &encode(later(7), b"alice"),
                0,
            )
            .unwrap();
        assert_eq!(
            table.probe(b"alice", NOW, &store),
            Probe::Slot {
                index: next,
                cas: 1,
                tat: Some(later(7))
            }
        );
    }

    #[test]
    fn a_slot_whose_state_is_past_is_claimable_and_a_live_one_is_not() {
        let table = SlotTable::new("m", 2);
        let store = MemoryStore::new();
        let mut buf = String::new();
        store
            .set(table.slot_key(0, &mut buf), &encode(later(5), b"x"), 0)
            .unwrap();
        store
            .set(table.slot_key(1, &mut buf), &encode(later(9), b"y"), 0)
            .unwrap();
        // Both live: full, and the earliest frees in 5 ns.
        assert_eq!(
            table.probe(b"alice", NOW, &store),
            Probe::Full { frees_at: later(5) }
        );
        // Once slot 0's state is past, alice may take it (with its CAS token).
        assert_eq!(
            table.probe(b"alice", later(5), &store),
            Probe::Slot {
                index: 0,
                cas: 1,
                tat: None
            }
        );
    }
}
