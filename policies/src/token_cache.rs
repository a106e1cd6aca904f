//! A bounded cache of verified tokens, each valid until its expiry.
//!
//! Signature checks are the expensive part of a request (an RS256 verification costs tens of
//! microseconds); a client reuses its token for many requests. The cache is keyed by the full
//! token string, so a hit is exactly the token that was verified.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Verified tokens and what was derived from them (`V`, an `Arc<Identity>` in production).
#[derive(Debug)]
pub(crate) struct TokenCache<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    /// Token -> entry.
    entries: HashMap<Arc<str>, Entry<V>>,
    /// Insertion order with each insertion's number, for first-in-first-out eviction.
    /// Holds stale pairs (removed or re-inserted tokens): only a pair whose number matches
    /// the entry's evicts it.
    order: VecDeque<(Arc<str>, u64)>,
    next: u64,
}

#[derive(Debug)]
struct Entry<V> {
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

    /// The cached value for `token` with the last second it may be used.
    pub(crate) fn get(&self, token: &str) -> Option<(V, u64)> {
        if self.capacity == 0 {
            return None;
        }
        self.lock()
            .entries
            .get(token)
            .map(|e| (e.value.clone(), e.until))
    }

    pub(crate) fn remove(&self, token: &str) {
        self.lock().entries.remove(token);
    }

    /// Remember `value` for `token` until `valid_until` (Unix seconds).
    pub(crate) fn insert(&self, token: &str, value: V, valid_until: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
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
        let key: Arc<str> = Arc::from(token);
        let number = *next;
        *next += 1;
        entries.insert(
            Arc::clone(&key),
            Entry {
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

#[cfg(test)]
mod tests {
    use super::TokenCache;

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
    fn capacity_zero_disables_caching() {
        let cache = TokenCache::new(0);
        cache.insert("a", 1, 100, 0);
        assert_eq!(cache.get("a"), None);
    }
}
