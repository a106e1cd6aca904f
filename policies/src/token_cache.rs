//! A bounded cache of verified tokens, each valid until its expiry.
//!
//! Signature checks are the expensive part of a request (an RS256 verification costs tens of
//! microseconds); a client reuses its token for many requests. The cache is keyed by the full
//! token string, so a hit is exactly the token that was verified.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::jwt::Identity;

#[derive(Debug)]
pub(crate) struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Token -> (identity, last second it may be used).
    entries: HashMap<Arc<str>, (Arc<Identity>, u64)>,
    /// Insertion order, for first-in-first-out eviction. May hold keys already removed.
    order: VecDeque<Arc<str>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked; ignore poisoning.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Identity>> {
        if self.capacity == 0 {
            return None;
        }
        self.lock().entries.get(token).map(|(id, _)| Arc::clone(id))
    }

    pub(crate) fn remove(&self, token: &str) {
        self.lock().entries.remove(token);
    }

    /// Remember `identity` for `token` until `valid_until` (Unix seconds).
    pub(crate) fn insert(&self, token: &str, identity: Arc<Identity>, valid_until: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity {
            inner.entries.retain(|_, (_, until)| *until >= now);
        }
        while inner.entries.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        let key: Arc<str> = Arc::from(token);
        inner
            .entries
            .insert(Arc::clone(&key), (identity, valid_until));
        inner.order.push_back(key);
        // Keys removed on expiry stay in `order`; compact it so it stays bounded.
        if inner.order.len() > self.capacity.saturating_mul(2) {
            let Inner { entries, order } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}
