//! Bounded, process-local memo tables for facts that cannot change once
//! established: a token that verified under a given key, the resident a
//! partner's pseudonym stands for. Never a cache of state that can change
//! (consents, mandates, whether a partner is active): that is read afresh
//! on every request, so several processes sharing a database never
//! disagree.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub struct Memo<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, V>> {
        // A panic elsewhere cannot leave a half-written fact: inserts are
        // single map operations.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.map().get(key).cloned()
    }

    /// Remembers `value`. When full, first forgets what `still_useful`
    /// rejects, and everything if that was not enough: the table stays
    /// within its capacity whatever is inserted.
    pub fn insert(&self, key: K, value: V, still_useful: impl Fn(&V) -> bool) {
        let mut map = self.map();
        if map.len() >= self.capacity {
            map.retain(|_, v| still_useful(v));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::Memo;

    #[test]
    fn stays_within_capacity_and_forgets_the_useless_first() {
        let memo: Memo<u32, u32> = Memo::new(3);
        memo.insert(1, 10, |_| true);
        memo.insert(2, 20, |_| true);
        memo.insert(3, 30, |_| true);
        // Full: the odd values are dropped to make room.
        memo.insert(4, 40, |v| v % 20 == 0);
        assert_eq!(memo.get(&1), None);
        assert_eq!(memo.get(&2), Some(20));
        assert_eq!(memo.get(&3), None);
        assert_eq!(memo.get(&4), Some(40));
        // Full with nothing to drop: start again.
        memo.insert(5, 50, |_| true);
        memo.insert(6, 60, |_| true);
        assert_eq!(memo.get(&2), None);
        assert_eq!(memo.get(&6), Some(60));
    }
}
