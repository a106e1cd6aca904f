//! Process-wide shared data and shared queues, one namespace per `vm_id`, seen by every VM of
//! every plugin with that `vm_id` (as Envoy shares them across worker threads).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::status::Status;

type Space = HashMap<Vec<u8>, (Vec<u8>, u32)>;

/// Key-value store with compare-and-swap versions.
#[derive(Default)]
pub(crate) struct SharedData {
    inner: Mutex<SharedDataInner>,
}

#[derive(Default)]
struct SharedDataInner {
    spaces: HashMap<String, Space>,
    last_cas: u32,
}

impl SharedData {
    /// The value and its CAS version.
    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.spaces.get(vm_id)?.get(key).cloned()
    }

    /// How many keys `vm_id`'s space holds (Envoy keeps every key until the process ends).
    pub(crate) fn len(&self, vm_id: &str) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.spaces.get(vm_id).map_or(0, HashMap::len)
    }

    /// Store `value`. A non-zero `cas` must match the current version of an existing key.
    /// Versions start at 1 and are never 0, so 0 always means "unconditional".
    pub(crate) fn set(
        &self,
        vm_id: &str,
        key: &[u8],
        value: Vec<u8>,
        cas: u32,
    ) -> Result<(), Status> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last_cas = inner.last_cas.checked_add(1).unwrap_or(1);
        let next = inner.last_cas;
        let space = inner.spaces.entry(vm_id.to_owned()).or_default();
        match space.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(Status::CasMismatch);
                }
                *entry = (value, next);
            }
            None => {
                space.insert(key.to_vec(), (value, next));
            }
        }
        Ok(())
    }
}

/// Shared queues: the VM that registers a queue owns it and hears `on_queue_ready`.
#[derive(Default)]
pub(crate) struct Queues {
    inner: Mutex<QueueTable>,
}

#[derive(Default)]
struct QueueTable {
    tokens: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    last_token: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    owner: Weak<dyn QueueReady>,
    owner_generation: u64,
}

/// What a queue's owner is told when the queue has data: the owning VM's slot, which runs
/// `on_queue_ready` if the VM of `generation` still lives. A trait so shared state knows
/// nothing of VMs.
pub(crate) trait QueueReady: Send + Sync {
    fn queue_ready(self: Arc<Self>, generation: u64, token: u32);
}

/// Who to tell that a queue has data.
pub(crate) struct QueueOwner {
    pub(crate) cell: Weak<dyn QueueReady>,
    pub(crate) generation: u64,
}

impl Queues {
    /// Register (or re-register) `name`; tokens are non-zero and stable per `(vm_id, name)`.
    /// The first live registrant owns the queue; a rebuilt owner VM takes it back.
    pub(crate) fn register(&self, vm_id: &str, name: &str, owner: QueueOwner) -> u32 {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&token) = table.tokens.get(&key) {
            if let Some(queue) = table.queues.get_mut(&token) {
                let same_cell = queue.owner.ptr_eq(&owner.cell);
                if same_cell || queue.owner.strong_count() == 0 {
                    queue.owner = owner.cell;
                    queue.owner_generation = owner.generation;
                }
            }
            return token;
        }
        table.last_token += 1;
        let token = table.last_token;
        table.tokens.insert(key, token);
        table.queues.insert(
            token,
            Queue {
                items: VecDeque::new(),
                owner: owner.cell,
                owner_generation: owner.generation,
            },
        );
        token
    }

    pub(crate) fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        let table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .tokens
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    pub(crate) fn enqueue(&self, token: u32, value: Vec<u8>) -> Result<QueueOwner, Status> {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = table.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.push_back(value);
        Ok(QueueOwner {
            cell: queue.owner.clone(),
            generation: queue.owner_generation,
        })
    }

    pub(crate) fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = table.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_versions_start_at_one_and_stale_ones_are_refused() {
        let data = SharedData::default();
        assert_eq!(data.get("vm", b"k"), None);
        // A non-zero CAS on a missing key is no conflict: there is nothing to compare with.
        data.set("vm", b"k", b"1".to_vec(), 99).unwrap();
        let (_, first) = data.get("vm", b"k").unwrap();
        assert_eq!(first, 1);
        data.set("vm", b"k", b"2".to_vec(), first).unwrap();
        assert_eq!(
            data.set("vm", b"k", b"3".to_vec(), first),
            Err(Status::CasMismatch)
        );
        data.set("vm", b"k", b"4".to_vec(), 0).unwrap();
        assert_eq!(data.get("vm", b"k").unwrap().0, b"4");
        assert_eq!(data.get("other-vm", b"k"), None, "one namespace per vm_id");
    }

    #[test]
    fn queues_resolve_by_vm_id_and_name_and_report_empty() {
        /// An owner that is gone: these queues are never read by a VM.
        struct Gone;
        impl QueueReady for Gone {
            fn queue_ready(self: Arc<Self>, _: u64, _: u32) {}
        }
        let queues = Queues::default();
        let owner = || QueueOwner {
            cell: Weak::<Gone>::new(),
            generation: 0,
        };
        let token = queues.register("vm", "q", owner());
        assert_ne!(token, 0);
        assert_eq!(queues.register("vm", "q", owner()), token);
        assert_eq!(queues.resolve("vm", "q"), Some(token));
        assert_eq!(queues.resolve("vm", "other"), None);
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        queues.enqueue(token, b"x".to_vec()).unwrap();
        assert_eq!(queues.dequeue(token), Ok(b"x".to_vec()));
        assert_eq!(queues.dequeue(token + 1), Err(Status::NotFound));
    }
}
