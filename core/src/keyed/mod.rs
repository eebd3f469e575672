//! Keyed state and timers: what a keyed operator keeps per key and namespace.
//!
//! Every keyed operator — windows, the keyed process function, joins — keeps its data in a
//! [`KeyedTable`] and its timers in a [`TimerService`], never in a map of its own, so that the
//! state store (DESIGN.md, "State") can back both without touching the operators. Today the table
//! lives in memory: a hash table on the key's stable hash, on the shard that owns the key.

pub mod process;
pub mod timers;

use std::hash::Hash;

use hashbrown::HashTable;

use crate::key::key_hash;

pub use process::{KeyedContext, KeyedProcess, KeyedProcessFunction, TimeDomain};
pub use timers::{TimerQueue, TimerService};

/// The namespace of state that belongs to the key alone (not to a window).
pub type VoidNamespace = ();

/// Values of type `V` per (key, namespace): the keyed-state interface every keyed operator uses.
pub struct KeyedTable<K, N, V> {
    entries: HashTable<(K, N, V)>,
}

impl<K, N, V> Default for KeyedTable<K, N, V> {
    fn default() -> Self {
        Self {
            entries: HashTable::new(),
        }
    }
}

/// The hash a (key, namespace) pair is filed under.
#[inline]
pub fn entry_hash<K: Hash, N: Hash>(key: &K, namespace: &N) -> u64 {
    key_hash(&(key, namespace))
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V> KeyedTable<K, N, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[inline]
    pub fn get(&self, key: &K, namespace: &N) -> Option<&V> {
        self.entries
            .find(entry_hash(key, namespace), |e| {
                e.0 == *key && e.1 == *namespace
            })
            .map(|e| &e.2)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K, namespace: &N) -> Option<&mut V> {
        self.entries
            .find_mut(entry_hash(key, namespace), |e| {
                e.0 == *key && e.1 == *namespace
            })
            .map(|e| &mut e.2)
    }

    /// The value of (key, namespace), made by `make` if there is none; and whether it was made.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        namespace: &N,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        let hash = entry_hash(key, namespace);
        match self.entries.entry(
            hash,
            |e| e.0 == *key && e.1 == *namespace,
            |e| entry_hash(&e.0, &e.1),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => (&mut o.into_mut().2, false),
            hashbrown::hash_table::Entry::Vacant(v) => (
                &mut v
                    .insert((key.clone(), namespace.clone(), make()))
                    .into_mut()
                    .2,
                true,
            ),
        }
    }

    /// Sets the value of (key, namespace); returns the one it replaces.
    pub fn insert(&mut self, key: &K, namespace: &N, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(key, namespace) {
            return Some(std::mem::replace(slot, value));
        }
        self.entries.insert_unique(
            entry_hash(key, namespace),
            (key.clone(), namespace.clone(), value),
            |e| entry_hash(&e.0, &e.1),
        );
        None
    }

    pub fn remove(&mut self, key: &K, namespace: &N) -> Option<V> {
        match self.entries.find_entry(entry_hash(key, namespace), |e| {
            e.0 == *key && e.1 == *namespace
        }) {
            Ok(o) => Some(o.remove().0.2),
            Err(_) => None,
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &N, &V)> {
        self.entries.iter().map(|e| (&e.0, &e.1, &e.2))
    }
}
