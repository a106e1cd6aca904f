//! Shared key-value state with compare-and-swap: what rate limits keep in host shared data.
//!
//! The adapter implements [`SharedStore`] over `proxy_get_shared_data`/`proxy_set_shared_data`,
//! which every worker VM of one Envoy shares, so all workers enforce one limit together.
//! [`MemoryStore`] has the same semantics in memory, for tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a [`SharedStore::set`] did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the value since it was read (proxy-wasm `CAS_MISMATCH`).
    #[error("compare-and-swap mismatch")]
    CasMismatch,
    /// The host refused the operation for another reason.
    #[error("shared data unavailable")]
    Unavailable,
}

/// Key-value state shared by every VM, with Proxy-Wasm's compare-and-swap semantics:
/// CAS values are non-zero; `set` with `cas == 0` is unconditional; a non-zero `cas` must
/// equal the current one when the key exists.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key is absent.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Store `value` if `cas` still matches.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// An in-memory [`SharedStore`] with the host's semantics (one per "Envoy process"):
/// share one between several `Policies` to model several worker VMs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, u32)>> {
        // A panic while holding the lock cannot leave the map half-updated, so poison is ignored.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some((stored, current)) => {
                if cas != 0 && cas != *current {
                    return Err(StoreError::CasMismatch);
                }
                stored.clear();
                stored.extend_from_slice(value);
                // Like the host, CAS tokens skip 0 when they wrap.
                *current = current.wrapping_add(1).max(1);
            }
            None => {
                entries.insert(key.to_owned(), (value.to_vec(), 1));
            }
        }
        Ok(())
    }
}
