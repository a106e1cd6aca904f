use std::cell::Cell;

use super::*;
use crate::store::MemoryStore;

const NOW: Nanos = Nanos::new(1_000_000_000_000);

fn later(nanos: u64) -> Nanos {
    Nanos::new(NOW.as_u64() + nanos)
}

/// A store that counts the host calls a probe and a write make.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    gets: Cell<u32>,
    sets: Cell<u32>,
}

impl SharedStore for Counting {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.sets.set(self.sets.get() + 1);
        self.inner.set(key, value, cas)
    }
}

/// Probe `key` and write `tat` for it: one admission.
fn admit(table: &SlotTable, key: &[u8], tat: Nanos, now: Nanos, store: &dyn SharedStore) {
    let Probe::Slot { bucket, .. } = table.probe(key, now, store) else {
        panic!("{} found no room", String::from_utf8_lossy(key));
    };
    table.write(&bucket, key, tat, now, store).unwrap();
}

#[test]
fn fnv1a_matches_the_reference_values() {
    // From the FNV reference test suite (draft-eastlake-fnv).
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn the_buckets_share_out_exactly_the_capacity() {
    for capacity in [1_u32, 2, 15, 16, 17, 100, 4096, 16_383, 16_384, 1_000_003] {
        let table = SlotTable::with_prefix(String::new(), capacity);
        let rooms: Vec<usize> = (0..table.buckets()).map(|i| table.room(i)).collect();
        assert_eq!(rooms.iter().sum::<usize>(), capacity as usize, "{capacity}");
        assert!(
            rooms
                .iter()
                .all(|r| (1..=BUCKET_SLOTS as usize).contains(r))
        );
        assert_eq!(table.buckets(), capacity.div_ceil(BUCKET_SLOTS));
    }
}

#[test]
fn a_new_key_gets_room_in_its_bucket_and_no_state() {
    let table = SlotTable::new("m", 64);
    let store = MemoryStore::new();
    let Probe::Slot { bucket, tat } = table.probe(b"alice", NOW, &store) else {
        panic!("an empty table is not full");
    };
    assert_eq!(tat, None);
    assert_eq!(u64::from(bucket.index), fnv1a(b"alice") % 4);
    assert_eq!((bucket.cas, bucket.value.len()), (0, 0));
}

#[test]
fn an_admission_is_one_read_and_one_write_however_full_the_table() {
    // One bucket of 16, every record another caller's past state: the old one-entry-per-slot
    // table read all of a new key's window here.
    let table = SlotTable::new("m", 16);
    let store = Counting::default();
    for i in 0..16 {
        admit(&table, format!("old-{i}").as_bytes(), later(1), NOW, &store);
    }
    store.gets.set(0);
    store.sets.set(0);
    admit(&table, b"new", later(10), later(5), &store);
    assert_eq!((store.gets.get(), store.sets.get()), (1, 1));
    assert_eq!(store.inner.len(), 1);
}

#[test]
fn a_stored_key_is_found_with_its_state_beside_others() {
    let table = SlotTable::new("m", 16);
    let store = MemoryStore::new();
    admit(&table, b"bob", later(5), NOW, &store);
    admit(&table, b"alice", later(7), NOW, &store);
    admit(&table, b"carol", later(9), NOW, &store);
    let Probe::Slot { bucket, tat } = table.probe(b"alice", NOW, &store) else {
        panic!("alice has a record");
    };
    assert_eq!(tat, Some(later(7)));
    assert_eq!(bucket.cas, 3, "three writes to one entry");
    // Her next state replaces her record; the others' stay.
    table
        .write(&bucket, b"alice", later(8), NOW, &store)
        .unwrap();
    for (key, want) in [
        (&b"alice"[..], later(8)),
        (b"bob", later(5)),
        (b"carol", later(9)),
    ] {
        assert!(
            matches!(table.probe(key, NOW, &store), Probe::Slot { tat: Some(t), .. } if t == want)
        );
    }
}

#[test]
fn a_full_bucket_refuses_a_new_key_until_a_record_is_past() {
    let table = SlotTable::new("m", 2);
    let store = MemoryStore::new();
    admit(&table, b"x", later(5), NOW, &store);
    admit(&table, b"y", later(9), NOW, &store);
    // Both live: full, and the earliest frees in 5 ns.
    assert_eq!(
        table.probe(b"alice", NOW, &store),
        Probe::Full { frees_at: later(5) }
    );
    // A key already in the bucket is found, full or not.
    assert!(matches!(
        table.probe(b"y", NOW, &store),
        Probe::Slot { tat: Some(_), .. }
    ));
    // Once x's state is past, alice has room, and writing drops x's record; y's stays.
    admit(&table, b"alice", later(20), later(5), &store);
    let (value, _) = store.get("modelgate/rl/m/0").unwrap();
    assert_eq!(
        records(&value).unwrap(),
        vec![(later(20), &b"alice"[..]), (later(9), &b"y"[..])]
    );
    // x, back with its full burst, waits for y's state to pass like any new key.
    assert_eq!(
        table.probe(b"x", later(5), &store),
        Probe::Full { frees_at: later(9) }
    );
}

#[test]
fn a_write_over_a_stale_read_is_refused() {
    let table = SlotTable::new("m", 16);
    let store = MemoryStore::new();
    admit(&table, b"alice", later(5), NOW, &store);
    let Probe::Slot { bucket, .. } = table.probe(b"bob", NOW, &store) else {
        panic!("room for bob");
    };
    // Another VM writes the bucket between bob's read and his write.
    admit(&table, b"carol", later(5), NOW, &store);
    assert_eq!(
        table.write(&bucket, b"bob", later(5), NOW, &store),
        Err(StoreError::CasMismatch)
    );
}

#[test]
fn bytes_that_are_not_a_bucket_count_as_empty() {
    let table = SlotTable::new("m", 16);
    let store = MemoryStore::new();
    // A record that claims a 300-byte key with 3 bytes behind it.
    let mut garbage = later(5).as_u64().to_le_bytes().to_vec();
    garbage.extend_from_slice(&300_u16.to_le_bytes());
    garbage.extend_from_slice(b"abc");
    store.set("modelgate/rl/m/0", &garbage, 0).unwrap();
    admit(&table, b"alice", later(5), NOW, &store);
    let (value, _) = store.get("modelgate/rl/m/0").unwrap();
    assert_eq!(
        records(&value).unwrap(),
        vec![(later(5), &b"alice"[..])],
        "the garbage was overwritten"
    );
}
