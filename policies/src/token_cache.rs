//! A bounded cache of verified tokens, each valid until its expiry.
//!
//! Signature checks are the expensive part of a request (an RS256 verification costs tens of
//! microseconds); a client reuses its token for many requests. A hit is exactly the token that
//! was verified: every entry keeps its full token and a lookup compares all of it.
//!
//! A lookup is on every authenticated request, so it is kept cheap for wasm32, where the filter
//! runs: measured in `modelgate.wasm` with a 540-byte RS256 token, hashing the whole token with
//! `SipHash` and comparing it with the generic `memcmp` (one byte per loop turn) cost about
//! 19,000 of the 85,000 guest instructions of a request. So the map is keyed by a keyed hash of
//! the token's length and last [`TAIL_BYTES`] bytes (signature bytes, which differ between any
//! two tokens a verifier accepted), and the full comparison goes eight bytes at a time.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How much of a token's end its key hashes: 192 bits of signature, more than enough to keep
/// verified tokens apart. Tokens that share a key are still told apart by the full comparison.
const TAIL_BYTES: usize = 32;

/// Verified tokens and what was derived from them (`V`, an `Arc<Identity>` in production).
#[derive(Debug)]
pub(crate) struct TokenCache<V> {
    capacity: usize,
    /// Keys the hash of each token's tail, so a client cannot aim tokens at one slot.
    hasher: RandomState,
    inner: Mutex<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    /// Key (see [`TokenCache::key`]) -> entry.
    entries: HashMap<u64, Entry<V>>,
    /// Insertion order with each insertion's number, for first-in-first-out eviction.
    /// Holds stale pairs (removed or re-inserted tokens): only a pair whose number matches
    /// the entry's evicts it.
    order: VecDeque<(u64, u64)>,
    next: u64,
}

#[derive(Debug)]
struct Entry<V> {
    token: Box<str>,
    value: V,
    /// The last second the value may be used.
    until: u64,
    /// Which insertion made this entry.
    number: u64,
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            hasher: RandomState::new(),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // The map stays consistent even if a holder panicked; ignore poisoning.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The map key of `token`: a keyed hash of its length and tail.
    fn key(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        let mut hasher = self.hasher.build_hasher();
        hasher.write_usize(bytes.len());
        hasher.write(&bytes[bytes.len().saturating_sub(TAIL_BYTES)..]);
        hasher.finish()
    }

    /// The cached value for `token` with the last second it may be used.
    pub(crate) fn get(&self, token: &str) -> Option<(V, u64)> {
        if self.capacity == 0 {
            return None;
        }
        let key = self.key(token);
        self.lock()
            .entries
            .get(&key)
            .filter(|e| same_bytes(e.token.as_bytes(), token.as_bytes()))
            .map(|e| (e.value.clone(), e.until))
    }

    /// Forget every token (the keys they were verified with changed).
    pub(crate) fn clear(&self) {
        let mut guard = self.lock();
        guard.entries.clear();
        guard.order.clear();
    }

    pub(crate) fn remove(&self, token: &str) {
        let key = self.key(token);
        let mut guard = self.lock();
        if guard
            .entries
            .get(&key)
            .is_some_and(|e| same_bytes(e.token.as_bytes(), token.as_bytes()))
        {
            guard.entries.remove(&key);
        }
    }

    /// Remember `value` for `token` until `valid_until` (Unix seconds). A different token
    /// with the same key (not seen in practice) is replaced: it is only a cache.
    pub(crate) fn insert(&self, token: &str, value: V, valid_until: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let key = self.key(token);
        let mut guard = self.lock();
        let Inner {
            entries,
            order,
            next,
        } = &mut *guard;
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.until >= now);
        }
        while entries.len() >= self.capacity {
            let Some((oldest, number)) = order.pop_front() else {
                break;
            };
            if entries.get(&oldest).is_some_and(|e| e.number == number) {
                entries.remove(&oldest);
            }
        }
        let number = *next;
        *next += 1;
        entries.insert(
            key,
            Entry {
                token: Box::from(token),
                value,
                until: valid_until,
                number,
            },
        );
        order.push_back((key, number));
        // Stale pairs would otherwise pile up; compact so `order` stays bounded.
        if order.len() > self.capacity.saturating_mul(2) {
            order.retain(|(k, n)| entries.get(k).is_some_and(|e| e.number == *n));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Byte equality eight bytes at a time. On wasm32 `==` on slices calls the generic `memcmp`,
/// which compares one byte per loop turn (about 23 instructions a byte in `modelgate.wasm`).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    a.len() == b.len()
        && a_words
            .iter()
            .zip(b_words)
            .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_rest == b_rest
}

#[cfg(test)]
mod tests {
    use super::{TAIL_BYTES, TokenCache, same_bytes};

    #[test]
    fn returns_what_was_inserted_until_removed() {
        let cache = TokenCache::new(4);
        cache.insert("a", 1, 100, 0);
        assert_eq!(cache.get("a"), Some((1, 100)));
        assert_eq!(cache.get("b"), None);
        cache.remove("a");
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let cache = TokenCache::new(3);
        for (i, token) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            cache.insert(token, i, 1_000, 0);
            assert!(cache.len() <= 3);
        }
        // First in, first out: the oldest two are gone, the newest three remain.
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("e"), Some((4, 1_000)));
    }

    #[test]
    fn evicts_expired_entries_before_live_ones() {
        let cache = TokenCache::new(2);
        cache.insert("old", 0, 10, 0);
        cache.insert("live", 1, 1_000, 0);
        cache.insert("new", 2, 1_000, 500);
        assert_eq!(cache.get("old"), None);
        assert_eq!(cache.get("live"), Some((1, 1_000)));
        assert_eq!(cache.get("new"), Some((2, 1_000)));
    }

    #[test]
    fn a_reinserted_token_is_not_evicted_by_its_older_insertion() {
        let cache = TokenCache::new(2);
        cache.insert("a", 1, 1_000, 0);
        cache.remove("a");
        cache.insert("b", 2, 1_000, 0);
        cache.insert("a", 3, 1_000, 0);
        // Full: the oldest live insertion ("b") goes, not the re-inserted "a".
        cache.insert("c", 4, 1_000, 0);
        assert_eq!(cache.get("a"), Some((3, 1_000)));
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("c"), Some((4, 1_000)));
    }

    #[test]
    fn tokens_with_the_same_length_and_tail_are_told_apart() {
        let cache = TokenCache::new(4);
        let tail = "s".repeat(TAIL_BYTES);
        let (a, b) = (format!("header.a.{tail}"), format!("header.b.{tail}"));
        cache.insert(&a, 1, 1_000, 0);
        assert_eq!(cache.get(&b), None);
        cache.remove(&b);
        assert_eq!(cache.get(&a), Some((1, 1_000)));
        // The later of two colliding tokens takes the slot; the earlier is verified again.
        cache.insert(&b, 2, 1_000, 0);
        assert_eq!(cache.get(&b), Some((2, 1_000)));
        assert_eq!(cache.get(&a), None);
    }

    #[test]
    fn same_bytes_compares_every_byte_and_the_length() {
        let token = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        assert!(same_bytes(token, token));
        for i in 0..token.len() {
            let mut other = token.to_vec();
            other[i] ^= 1;
            assert!(!same_bytes(token, &other), "byte {i}");
        }
        assert!(!same_bytes(token, &token[..token.len() - 1]));
        assert!(!same_bytes(&token[..16], &token[..17]));
        assert!(same_bytes(b"", b""));
    }

    #[test]
    fn capacity_zero_disables_caching() {
        let cache = TokenCache::new(0);
        cache.insert("a", 1, 100, 0);
        assert_eq!(cache.get("a"), None);
    }
}
