//! Keyed state and timers: what a keyed operator keeps per key and namespace.
//!
//! Every keyed operator — windows, the keyed process function, joins — keeps its data in a
//! [`KeyedTable`] and its timers in a [`TimerService`], never in a map of its own, so that the
//! state store (DESIGN.md, "State") can back both without touching the operators. Today the table
//! lives in memory: a hash table on the key's stable hash, on the shard that owns the key.

pub mod co_process;
pub mod interval_join;
pub mod process;
pub mod timers;

use std::hash::Hash;

use hashbrown::HashTable;

use crate::key::key_hash;

pub use co_process::{KeyedCoProcess, KeyedCoProcessFunction};
pub use interval_join::{IntervalJoin, ProcessJoinFunction};
pub use process::{KeyedContext, KeyedProcess, KeyedProcessFunction, TimeDomain};
pub use timers::{TimerQueue, TimerService};

/// The namespace of state that belongs to the key alone (not to a window).
pub type VoidNamespace = ();

/// Values of type `V` per (key, namespace): the keyed-state interface every keyed operator uses.
///
/// Two layouts, chosen by the operator, behind one interface:
/// - [`KeyedTable::new`]: one hash-table entry per (key, namespace), filed under the stable hash
///   of both. For state whose namespaces are as many as its keys (session windows) or none at
///   all (the void namespace of a keyed function).
/// - [`KeyedTable::by_namespace`]: a table of keys per namespace, for state with few live
///   namespaces and many keys (tumbling and sliding windows: a handful of windows live at a
///   time). A lookup finds the namespace among the few, then hashes the key alone; the records of
///   one window touch one compact table, as a hand-written loop's per-window map would.
///
/// Measured on the windows benchmark (10,000 keys, two live windows per key): the per-namespace
/// layout against the per-pair one. Also tried: one entry per key holding its namespaces, the
/// last used inline — 40% slower at P = 2, since out-of-order records near a window boundary
/// alternate between a key's two windows and the one out of line cost a cache miss.
pub struct KeyedTable<K, N, V> {
    layout: Layout<K, N, V>,
    /// By namespace: the size the last dropped namespace's table had. A new namespace's table
    /// starts at it (the next window has about as many keys as the last), instead of growing
    /// to it by rehashing.
    size_hint: usize,
}

enum Layout<K, N, V> {
    Pairs(PairTable<K, N, V>),
    ByNamespace(Vec<(N, PairTable<K, (), V>)>),
}

impl<K, N, V> Default for KeyedTable<K, N, V> {
    fn default() -> Self {
        Self {
            layout: Layout::Pairs(PairTable::default()),
            size_hint: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V> KeyedTable<K, N, V> {
    /// One entry per (key, namespace).
    pub fn new() -> Self {
        Self::default()
    }

    /// A table of keys per namespace (few namespaces live at a time).
    pub fn by_namespace() -> Self {
        Self {
            layout: Layout::ByNamespace(Vec::new()),
            size_hint: 0,
        }
    }

    /// The number of (key, namespace) entries.
    pub fn len(&self) -> usize {
        match &self.layout {
            Layout::Pairs(t) => t.entries.len(),
            Layout::ByNamespace(v) => v.iter().map(|(_, t)| t.entries.len()).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get(&self, key: &K, namespace: &N) -> Option<&V> {
        match &self.layout {
            Layout::Pairs(t) => t.get(key, namespace),
            Layout::ByNamespace(v) => v
                .iter()
                .find(|(n, _)| n == namespace)
                .and_then(|(_, t)| t.get(key, &())),
        }
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K, namespace: &N) -> Option<&mut V> {
        match &mut self.layout {
            Layout::Pairs(t) => t.get_mut(key, namespace),
            Layout::ByNamespace(v) => v
                .iter_mut()
                .find(|(n, _)| n == namespace)
                .and_then(|(_, t)| t.get_mut(key, &())),
        }
    }

    /// The value of (key, namespace), made by `make` if there is none; and whether it was made.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        namespace: &N,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        match &mut self.layout {
            Layout::Pairs(t) => t.get_or_insert_with(key, namespace, make),
            Layout::ByNamespace(v) => {
                let i = match v.iter().position(|(n, _)| n == namespace) {
                    Some(i) => i,
                    None => {
                        let table = PairTable {
                            entries: HashTable::with_capacity(self.size_hint),
                        };
                        v.push((namespace.clone(), table));
                        v.len() - 1
                    }
                };
                v[i].1.get_or_insert_with(key, &(), make)
            }
        }
    }

    /// Sets the value of (key, namespace); returns the one it replaces.
    pub fn insert(&mut self, key: &K, namespace: &N, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(key, namespace) {
            return Some(std::mem::replace(slot, value));
        }
        self.get_or_insert_with(key, namespace, || value);
        None
    }

    pub fn remove(&mut self, key: &K, namespace: &N) -> Option<V> {
        match &mut self.layout {
            Layout::Pairs(t) => t.remove(key, namespace),
            Layout::ByNamespace(v) => {
                let i = v.iter().position(|(n, _)| n == namespace)?;
                let removed = v[i].1.remove(key, &());
                if v[i].1.entries.is_empty() {
                    let (_, table) = v.swap_remove(i);
                    self.size_hint = table.entries.capacity();
                }
                removed
            }
        }
    }

    /// The namespaces that have entries (in no particular order).
    pub fn namespaces(&self) -> Vec<N> {
        match &self.layout {
            Layout::Pairs(t) => {
                let mut ns: Vec<N> = Vec::new();
                for e in t.entries.iter() {
                    if !ns.contains(&e.1) {
                        ns.push(e.1.clone());
                    }
                }
                ns
            }
            Layout::ByNamespace(v) => v.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// Removes every entry of `namespace`, handing each (key, value) to `f`.
    pub fn drain_namespace(&mut self, namespace: &N, mut f: impl FnMut(K, V)) {
        match &mut self.layout {
            Layout::Pairs(t) => {
                for (k, _, v) in t.entries.extract_if(|e| e.1 == *namespace) {
                    f(k, v);
                }
            }
            Layout::ByNamespace(v) => {
                if let Some(i) = v.iter().position(|(n, _)| n == namespace) {
                    let (_, table) = v.swap_remove(i);
                    self.size_hint = table.entries.len();
                    for (k, (), value) in table.entries {
                        f(k, value);
                    }
                }
            }
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&K, &N, &V)> + '_> {
        match &self.layout {
            Layout::Pairs(t) => Box::new(t.entries.iter().map(|e| (&e.0, &e.1, &e.2))),
            Layout::ByNamespace(v) => Box::new(
                v.iter()
                    .flat_map(|(n, t)| t.entries.iter().map(move |e| (&e.0, n, &e.2))),
            ),
        }
    }
}

/// One hash-table entry per (key, namespace).
struct PairTable<K, N, V> {
    entries: HashTable<(K, N, V)>,
}

impl<K, N, V> Default for PairTable<K, N, V> {
    fn default() -> Self {
        Self {
            entries: HashTable::new(),
        }
    }
}

/// The hash a (key, namespace) pair is filed under.
#[inline]
pub fn entry_hash<K: Hash, N: Hash>(key: &K, namespace: &N) -> u64 {
    crate::key::state_hash(key_hash(&(key, namespace)))
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone, V> PairTable<K, N, V> {
    #[inline]
    fn get(&self, key: &K, namespace: &N) -> Option<&V> {
        self.entries
            .find(entry_hash(key, namespace), |e| {
                e.0 == *key && e.1 == *namespace
            })
            .map(|e| &e.2)
    }

    #[inline]
    fn get_mut(&mut self, key: &K, namespace: &N) -> Option<&mut V> {
        self.entries
            .find_mut(entry_hash(key, namespace), |e| {
                e.0 == *key && e.1 == *namespace
            })
            .map(|e| &mut e.2)
    }

    #[inline]
    fn get_or_insert_with(
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

    fn remove(&mut self, key: &K, namespace: &N) -> Option<V> {
        match self.entries.find_entry(entry_hash(key, namespace), |e| {
            e.0 == *key && e.1 == *namespace
        }) {
            Ok(o) => Some(o.remove().0.2),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::collections::HashMap;

    /// Random gets, inserts and removes against a std map of (key, namespace).
    #[test]
    fn the_table_behaves_as_a_map_of_pairs() {
        for seed in 0..10 {
            let mut rng = SplitMix64::new(seed);
            let mut t: KeyedTable<u32, u8, u64> = if seed % 2 == 0 {
                KeyedTable::new()
            } else {
                KeyedTable::by_namespace()
            };
            let mut m: HashMap<(u32, u8), u64> = HashMap::new();
            for step in 0..5_000u64 {
                let (k, n) = (rng.below(30) as u32, rng.below(4) as u8);
                match rng.below(4) {
                    0 => assert_eq!(t.insert(&k, &n, step), m.insert((k, n), step)),
                    1 => assert_eq!(t.remove(&k, &n), m.remove(&(k, n))),
                    2 => {
                        let (v, made) = t.get_or_insert_with(&k, &n, || step);
                        assert_eq!(made, !m.contains_key(&(k, n)));
                        *v += 1;
                        *m.entry((k, n)).or_insert(step) += 1;
                    }
                    _ => assert_eq!(t.get(&k, &n), m.get(&(k, n))),
                }
                assert_eq!(t.len(), m.len());
            }
            let mut all: Vec<_> = t.iter().map(|(k, n, v)| (*k, *n, *v)).collect();
            all.sort();
            let mut want: Vec<_> = m.iter().map(|(&(k, n), &v)| (k, n, v)).collect();
            want.sort();
            assert_eq!(all, want);
        }
    }
}
