//! A fixed table of shared-data buckets per quota, so rate-limit state stays bounded however
//! many distinct keys callers bring, and a request costs one read and one compare-and-swap
//! write whatever the table holds.
//!
//! Shared data has no expiry and no delete: one entry per caller key would grow for the life
//! of the VM id, and a caller who rotates keys (client addresses, subjects, header values)
//! would grow the proxy's memory without bound. Instead a quota of `capacity` slots owns
//! `capacity / BUCKET_SLOTS` (rounded up) entries, `modelgate/rl/<model>/<index>`, and a key
//! lives in the bucket `fnv1a(key) % buckets`. A bucket's value is its records, each a
//! caller's TAT (8 little-endian bytes), its key's length (2 little-endian bytes) and the key;
//! the buckets share out `capacity` exactly (some hold one record fewer than [`BUCKET_SLOTS`]).
//!
//! Holding a window of slots in one entry is what keeps a request at one host read: with
//! one entry per slot, a new caller in a full table read every slot of its window (8 host
//! calls, each copying an entry) before it could claim one, which made a first request
//! about 1.2 to 1.3 times the CPU of a returning one (docs/scale.md). A bucket is read and
//! written whole, with the entry's CAS token, so concurrent writers of different keys in one
//! bucket retry as writers of one key do.
//!
//! A record is dropped (its slot reclaimed) only once its TAT is in the past. A TAT in the
//! past means the full burst is available again, exactly the state of a key never seen: so
//! reclaiming never weakens anyone's limit, and flooding the table with other keys cannot
//! reset a caller's own state while it is still owed. When a key's bucket holds its share of
//! other callers' live state, the key gets no state and is refused until the earliest of them
//! frees (`Probe::Full`): stricter, never looser. Keeping a slot live costs its owner admitted
//! requests (one request holds it for one emission interval, `period / rate`), so holding
//! `capacity` slots takes `capacity × rate` admitted requests per period.
//!
//! Why 16 records a bucket: buckets are disjoint, so they fill unevenly. With 2,000 live
//! keys in a table of 4,096, a simulation of one-second states found no slot for 2.7 % of new
//! keys with buckets of 8 and 0.4 % with buckets of 16 (the test
//! `a_million_distinct_keys_stay_within_max_keys_and_leave_an_active_limit_unchanged` holds
//! it under 1 %); a bucket of 16 keys of 40 bytes is about 800 bytes to copy, and at most
//! 16 × 266 bytes with keys of the longest (`MAX_KEY_BYTES`).

use std::fmt::Write as _;

use governor::nanos::Nanos;

use crate::store::{SharedStore, StoreError};

/// How many keys one bucket (one shared-data entry) holds at most.
pub(crate) const BUCKET_SLOTS: u32 = 16;

/// A record's fixed part: the TAT and the key's length.
const RECORD_HEAD: usize = 8 + 2;

/// The buckets of one quota.
#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    /// `modelgate/rl/<model>/`; a bucket's shared-data key is the prefix and its index.
    prefix: String,
    buckets: u32,
    /// Every bucket holds `per_bucket` keys, and the first `extra` buckets one more.
    per_bucket: u32,
    extra: u32,
}

/// A bucket as read: its value and the CAS token to write it back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    index: u32,
    /// 0 for a bucket never written.
    cas: u32,
    /// The records, or empty when the entry is absent or not a bucket at all.
    value: Vec<u8>,
}

/// Where a key's state is, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key's bucket, with room for it. `tat` is the key's state, `None` when it has none
    /// (never seen, or its state is past and may have been dropped).
    Slot { bucket: Bucket, tat: Option<Nanos> },
    /// The bucket holds its share of other keys' live state; the first frees at `frees_at`.
    Full { frees_at: Nanos },
}

impl SlotTable {
    pub(crate) fn new(model: &str, capacity: u32) -> Self {
        Self::with_prefix(format!("modelgate/rl/{model}/"), capacity)
    }

    /// A table whose buckets are `<prefix><index>` (token budgets keep one table per window).
    pub(crate) fn with_prefix(prefix: String, capacity: u32) -> Self {
        let capacity = capacity.max(1);
        let buckets = capacity.div_ceil(BUCKET_SLOTS);
        Self {
            prefix,
            buckets,
            per_bucket: capacity / buckets,
            extra: capacity % buckets,
        }
    }

    /// How many shared-data entries the table uses at most.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> u32 {
        self.buckets
    }

    fn bucket_of(&self, key: &[u8]) -> u32 {
        // The remainder is below `buckets`, a u32.
        u32::try_from(fnv1a(key) % u64::from(self.buckets)).unwrap_or_default()
    }

    /// How many keys bucket `index` may hold.
    fn room(&self, index: u32) -> usize {
        (self.per_bucket + u32::from(index < self.extra)) as usize
    }

    fn bucket_key(&self, index: u32) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 10);
        key.push_str(&self.prefix);
        // Writing to a String cannot fail.
        let _ = write!(key, "{index}");
        key
    }

    /// Read `key`'s bucket at `now`: the key's state, or whether it may have some.
    pub(crate) fn probe(&self, key: &[u8], now: Nanos, store: &dyn SharedStore) -> Probe {
        let index = self.bucket_of(key);
        let (mut value, cas) = store.get(&self.bucket_key(index)).unwrap_or_default();
        let mut live_others = 0;
        let mut frees_at: Option<Nanos> = None;
        let mut tat = None;
        let Some(list) = records(&value) else {
            // Not a bucket (foreign bytes): as good as empty, and overwritten whole.
            value.clear();
            return Probe::Slot {
                bucket: Bucket { index, cas, value },
                tat: None,
            };
        };
        for (record_tat, owner) in list {
            if owner == key {
                tat = Some(record_tat);
            } else if record_tat > now {
                live_others += 1;
                frees_at = Some(frees_at.map_or(record_tat, |f| f.min(record_tat)));
            }
        }
        if tat.is_none() && live_others >= self.room(index) {
            return Probe::Full {
                frees_at: frees_at.unwrap_or(now),
            };
        }
        Probe::Slot {
            bucket: Bucket { index, cas, value },
            tat,
        }
    }

    /// Write `key`'s new state `tat` into `bucket` (as `probe` read it at `now`), dropping
    /// the records whose state is past. `CasMismatch` means another writer changed the bucket
    /// since: probe again.
    pub(crate) fn write(
        &self,
        bucket: &Bucket,
        key: &[u8],
        tat: Nanos,
        now: Nanos,
        store: &dyn SharedStore,
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(bucket.value.len() + RECORD_HEAD + key.len());
        push_record(&mut value, tat, key);
        for (record_tat, owner) in records(&bucket.value).into_iter().flatten() {
            if owner != key && record_tat > now {
                push_record(&mut value, record_tat, owner);
            }
        }
        // A bucket never written has CAS 0, which writes unconditionally: two VMs creating one
        // bucket at the same instant may each write, and the later loses the earlier's record
        // (at most one uncounted request per VM, once per bucket).
        store.set(&self.bucket_key(bucket.index), &value, bucket.cas)
    }
}

/// Append one record; keys are at most `MAX_KEY_BYTES` (256), so the length fits 2 bytes.
fn push_record(value: &mut Vec<u8>, tat: Nanos, key: &[u8]) {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    value.extend_from_slice(&tat.as_u64().to_le_bytes());
    value.extend_from_slice(&len.to_le_bytes());
    value.extend_from_slice(&key[..usize::from(len)]);
}

/// A bucket's records (TAT, key), or `None` when the bytes are not a sequence of records.
fn records(mut value: &[u8]) -> Option<Vec<(Nanos, &[u8])>> {
    let mut records = Vec::new();
    while !value.is_empty() {
        let (tat, rest) = value.split_first_chunk::<8>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len {
            return None;
        }
        let (key, rest) = rest.split_at(len);
        records.push((Nanos::from(u64::from_le_bytes(*tat)), key));
        value = rest;
    }
    Some(records)
}

/// FNV-1a, 64 bits: the same bucket for the same key in every worker VM and every process
/// restart, with no dependency. It is not keyed, so a caller who may choose its own key
/// (`rateLimit.key.header`) can aim at another key's bucket; such a caller can already evade
/// its limit by changing keys, and the worst it can do to another is described in the
/// module docs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
