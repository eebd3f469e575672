//! Keyed state and timers: what a keyed operator keeps per key and namespace.
//!
//! Every keyed operator — windows, the keyed process function, joins, the keyed reduce — keeps
//! its data in [`KeyedTable`]s and its timers in a [`TimerService`], never in a map of its own.
//! A table is a cache of live values (a hash table on the key's stable hash, on the shard that
//! owns the key) in front of the shard's state store (DESIGN.md, "State"; [`crate::state`]):
//! values beyond the job's memory budget are evicted to the store and read back when used.
//! Timers are kept in memory, counted in the same budget; past it, a queue writes its latest
//! timers to the store in sorted runs and reads them back before they are due ([`timers`]).
//! Event-time windows with the default trigger keep one timer per window instead (see the
//! window operator).

pub mod co_process;
pub mod interval_join;
pub mod process;
pub mod timers;

use std::hash::Hash;

use hashbrown::HashTable;

use crate::data::Data;
use crate::error::JobError;
use crate::key::key_hash;
use crate::state::{Backend, StateBackend};

pub use crate::state::kinds::KeyedOpenContext;
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
///
/// A table made [`in_store`](KeyedTable::in_store) is a write-back cache in front of the shard's
/// state store (see [`crate::state`]): its entries carry a referenced bit (set by every access)
/// and a dirty bit (set by every mutable access); when the shard's cached values pass the memory
/// budget, a clock sweep evicts entries not referenced since the hand last passed, writing the
/// dirty ones to the store; a lookup that misses the cache reads the store (only once anything
/// of this table was ever written there). `len` counts cached entries.
pub struct KeyedTable<K, N, V> {
    layout: Layout<K, N, V>,
    /// By namespace: the size the last dropped namespace's table had. A new namespace's table
    /// starts at it (the next window has about as many keys as the last), instead of growing
    /// to it by rehashing.
    size_hint: usize,
    spill: Option<Spill<K, N, V>>,
}

enum Layout<K, N, V> {
    Pairs(PairTable<K, N, V>),
    ByNamespace(Vec<(N, PairTable<K, (), V>)>),
}

impl<K, N, V> Layout<K, N, V> {
    fn len(&self) -> usize {
        match self {
            Layout::Pairs(t) => t.entries.len(),
            Layout::ByNamespace(v) => v.iter().map(|(_, t)| t.entries.len()).sum(),
        }
    }
}

/// The entry was used since the clock hand last passed it.
const REFERENCED: u8 = 1;
/// The cached value differs from the store's.
const DIRTY: u8 = 2;
/// The store may hold a value of this entry (it was read from there or written there).
const STORED: u8 = 4;

struct Cached<K, N, V> {
    key: K,
    namespace: N,
    value: V,
    flags: u8,
}

impl<K, N, V> Cached<K, N, V> {
    #[inline]
    fn parts(&mut self) -> (&mut V, &mut u8) {
        (&mut self.value, &mut self.flags)
    }
}

/// How a table reaches the store: its state id, and the codec (fn pointers made where the
/// types are known to be serializable, so the table's own methods need no such bounds).
struct Spill<K, N, V> {
    backend: StateBackend,
    /// The backend's memory budget, held here: every insert checks it without borrowing the
    /// backend.
    budget: std::rc::Rc<crate::state::MemoryBudget>,
    id: u32,
    put: Put<K, N, V>,
    get: Get<K, N, V>,
    delete: Delete<K, N>,
    take_all: TakeAll<K, N, V>,
    /// The store may hold values this cache does not (one was evicted, or the store was
    /// restored). Until then a miss is a miss and a drain reads no store: values a checkpoint
    /// wrote stay cached, marked stored.
    any_stored: bool,
    /// The estimated bytes of one cached entry: its size, plus what its values have been seen
    /// to take serialized beyond their inline size (their heap parts).
    cost: usize,
    /// Values written and their serialized bytes, for the estimate.
    written: (u64, u64),
    /// The clock hand: where the next sweep starts, as a position in the table's iteration order.
    hand: usize,
    /// Inserts over budget to let pass before sweeping again (after a sweep that freed little).
    sweep_skip: usize,
    /// The operator's counters (values written to and read from the store).
    counters: Option<std::sync::Arc<crate::operator::OperatorCounters>>,
}

type Put<K, N, V> = fn(&mut Backend, u32, &K, &N, &V) -> Result<usize, JobError>;
type Get<K, N, V> = fn(&mut Backend, u32, &K, &N) -> Result<Option<V>, JobError>;
type Delete<K, N> = fn(&mut Backend, u32, &K, &N) -> Result<(), JobError>;
type TakeAll<K, N, V> = fn(&mut Backend, u32, Option<&N>) -> Result<Vec<(K, N, V)>, JobError>;

impl<K, N, V> Default for KeyedTable<K, N, V> {
    fn default() -> Self {
        Self {
            layout: Layout::Pairs(PairTable::default()),
            size_hint: 0,
            spill: None,
        }
    }
}

impl<K, N, V> KeyedTable<K, N, V>
where
    K: Data + Hash + Eq,
    N: Data + Hash + Eq,
    V: Data,
{
    /// Backs this table with the shard's store, as state `name` (unique on the shard).
    pub fn in_store(mut self, backend: &StateBackend, name: String) -> Result<Self, JobError> {
        let id = backend.register(name)?;
        self.spill = Some(Spill {
            backend: backend.clone(),
            budget: backend.inner.borrow().budget.clone(),
            id,
            put: Backend::put::<K, N, V>,
            get: Backend::get::<K, N, V>,
            delete: Backend::delete::<K, N>,
            take_all: Backend::take_all::<K, N, V>,
            any_stored: backend.is_restored(),
            cost: std::mem::size_of::<Cached<K, N, V>>() + 1,
            written: (0, 0),
            hand: 0,
            sweep_skip: 0,
            counters: None,
        });
        Ok(self)
    }
}

impl<K, N, V> KeyedTable<K, N, V> {
    /// Says that the store may hold values of this table already (it was restored from a
    /// checkpoint): a miss asks the store from the first lookup.
    pub fn restored(mut self) -> Self {
        if let Some(s) = &mut self.spill {
            s.any_stored = true;
        }
        self
    }

    /// Counts the values this table writes to and reads from the store in `counters`.
    pub fn counted(mut self, counters: std::sync::Arc<crate::operator::OperatorCounters>) -> Self {
        if let Some(s) = &mut self.spill {
            s.counters = Some(counters);
        }
        self
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
            spill: None,
        }
    }

    /// The number of cached (key, namespace) entries.
    pub fn len(&self) -> usize {
        self.layout.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached entry of (key, namespace), marked referenced (and dirty, if `dirty`).
    #[inline]
    fn cached(&mut self, key: &K, namespace: &N, dirty: bool) -> Option<&mut V> {
        let mark = REFERENCED | if dirty { DIRTY } else { 0 };
        let (value, flags) = match &mut self.layout {
            Layout::Pairs(t) => t.find_mut(key, namespace)?.parts(),
            Layout::ByNamespace(v) => {
                let (_, t) = v.iter_mut().find(|(n, _)| n == namespace)?;
                t.find_mut(key, &())?.parts()
            }
        };
        *flags |= mark;
        Some(value)
    }

    /// Whether a miss must ask the store.
    #[inline]
    fn may_be_stored(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| s.any_stored)
    }

    /// Reads (key, namespace) from the store (a store error is kept for the operator's check,
    /// and reads as absent: the job fails at the end of the batch).
    fn load(&mut self, key: &K, namespace: &N) -> Option<V> {
        let s = self.spill.as_ref()?;
        let mut b = s.backend.inner.borrow_mut();
        match (s.get)(&mut b, s.id, key, namespace) {
            Ok(v) => {
                if v.is_some()
                    && let Some(c) = &s.counters
                {
                    c.state_reads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                v
            }
            Err(e) => {
                b.fail(e);
                None
            }
        }
    }

    /// Caches (key, namespace) → value with `flags`, sweeping first if the budget is spent.
    /// The entry must not be cached.
    fn insert_new(&mut self, key: &K, namespace: &N, value: V, flags: u8) -> &mut V {
        if let Some(s) = &mut self.spill {
            if s.budget.used() + s.cost > s.budget.limit() {
                if s.sweep_skip == 0 {
                    self.sweep();
                } else {
                    s.sweep_skip -= 1;
                }
            }
            // Charged after the sweep: a sweep may learn a new cost per entry and charge the
            // cached entries at it; this one is charged at the same.
            let s = self.spill.as_ref().expect("backed");
            s.budget.add(s.cost);
        }
        let e = Cached {
            key: key.clone(),
            namespace: (),
            value,
            flags,
        };
        match &mut self.layout {
            Layout::Pairs(t) => {
                let e = Cached {
                    key: e.key,
                    namespace: namespace.clone(),
                    value: e.value,
                    flags: e.flags,
                };
                &mut t.insert_unique(e).value
            }
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
                &mut v[i].1.insert_unique(e).value
            }
        }
    }

    /// The value of (key, namespace), if it has one.
    #[inline]
    pub fn get(&mut self, key: &K, namespace: &N) -> Option<&V> {
        self.get_or_load(key, namespace, false).map(|v| &*v)
    }

    /// The value of (key, namespace) for changing in place (it is marked dirty).
    #[inline]
    pub fn get_mut(&mut self, key: &K, namespace: &N) -> Option<&mut V> {
        self.get_or_load(key, namespace, true)
    }

    #[inline]
    fn get_or_load(&mut self, key: &K, namespace: &N, dirty: bool) -> Option<&mut V> {
        if let Some(v) = self.cached(key, namespace, dirty) {
            let v: *mut V = v;
            // SAFETY: `v` points into `self`, borrowed mutably for the returned lifetime; the
            // borrow checker (before Polonius) rejects returning a borrow from one branch and
            // using `self` in the other, though nothing else touches `self` here.
            return Some(unsafe { &mut *v });
        }
        if !self.may_be_stored() {
            return None;
        }
        let value = self.load(key, namespace)?;
        let flags = REFERENCED | STORED | if dirty { DIRTY } else { 0 };
        Some(self.insert_new(key, namespace, value, flags))
    }

    /// The value of (key, namespace), made by `make` if there is none; and whether it was made.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        namespace: &N,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        if let Some(v) = self.cached(key, namespace, true) {
            let v: *mut V = v;
            // SAFETY: as in `get_or_load`.
            return (unsafe { &mut *v }, false);
        }
        if self.may_be_stored()
            && let Some(value) = self.load(key, namespace)
        {
            let flags = REFERENCED | STORED | DIRTY;
            return (self.insert_new(key, namespace, value, flags), false);
        }
        (
            self.insert_new(key, namespace, make(), REFERENCED | DIRTY),
            true,
        )
    }

    /// Sets the value of (key, namespace).
    pub fn insert(&mut self, key: &K, namespace: &N, value: V) {
        if let Some(slot) = self.cached(key, namespace, true) {
            *slot = value;
            return;
        }
        // A blind write: the store may hold an older value, which this one shadows.
        let stored = if self.may_be_stored() { STORED } else { 0 };
        self.insert_new(key, namespace, value, REFERENCED | DIRTY | stored);
    }

    /// Removes (key, namespace); returns its value.
    pub fn remove(&mut self, key: &K, namespace: &N) -> Option<V> {
        let removed = match &mut self.layout {
            Layout::Pairs(t) => t.remove(key, namespace).map(|e| (e.value, e.flags)),
            Layout::ByNamespace(v) => {
                let i = v.iter().position(|(n, _)| n == namespace);
                i.and_then(|i| {
                    let removed = v[i].1.remove(key, &()).map(|e| (e.value, e.flags));
                    if v[i].1.entries.is_empty() {
                        let (_, table) = v.swap_remove(i);
                        self.size_hint = table.entries.capacity();
                    }
                    removed
                })
            }
        };
        let Some(s) = &self.spill else {
            return removed.map(|(v, _)| v);
        };
        let (value, stored) = match removed {
            Some((v, flags)) => {
                s.budget.sub(s.cost);
                (Some(v), flags & STORED != 0)
            }
            None if s.any_stored => {
                let v = self.load(key, namespace);
                let stored = v.is_some();
                (v, stored)
            }
            None => (None, false),
        };
        if stored {
            let s = self.spill.as_ref().expect("backed");
            let mut b = s.backend.inner.borrow_mut();
            if let Err(e) = (s.delete)(&mut b, s.id, key, namespace) {
                b.fail(e);
            }
        }
        value
    }

    /// Writes every changed cached value to the store and marks it clean (it stays cached): the
    /// store then holds the table's whole contents, as a checkpoint needs. Costs what changed
    /// since the last flush or eviction. A store error is kept for the operator's check.
    pub fn flush_dirty(&mut self) {
        let Some(s) = &mut self.spill else { return };
        let backend = s.backend.clone();
        let mut b = backend.inner.borrow_mut();
        let mut write = |key: &K, namespace: &N, value: &V, flags: &mut u8| {
            if *flags & DIRTY == 0 {
                return;
            }
            match (s.put)(&mut b, s.id, key, namespace, value) {
                Ok(bytes) => {
                    *flags = (*flags & !DIRTY) | STORED;
                    s.written.0 += 1;
                    s.written.1 += bytes as u64;
                }
                Err(e) => b.fail(e),
            }
        };
        match &mut self.layout {
            Layout::Pairs(t) => {
                for e in t.entries.iter_mut() {
                    write(&e.key, &e.namespace, &e.value, &mut e.flags);
                }
            }
            Layout::ByNamespace(v) => {
                for (ns, t) in v.iter_mut() {
                    for e in t.entries.iter_mut() {
                        write(&e.key, ns, &e.value, &mut e.flags);
                    }
                }
            }
        }
    }

    /// The namespaces that have cached entries (in no particular order). Only for tables not
    /// backed by the store (a pre-aggregation buffer, say).
    pub fn namespaces(&self) -> Vec<N> {
        debug_assert!(self.spill.is_none(), "namespaces() of a table in the store");
        match &self.layout {
            Layout::Pairs(t) => {
                let mut ns: Vec<N> = Vec::new();
                for e in t.entries.iter() {
                    if !ns.contains(&e.namespace) {
                        ns.push(e.namespace.clone());
                    }
                }
                ns
            }
            Layout::ByNamespace(v) => v.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// Hands every cached (key, namespace, value) to `f`, in no particular order, leaving them
    /// in place. Only for tables not backed by the store (a pre-aggregation buffer, say).
    pub fn for_each(&self, mut f: impl FnMut(&K, &N, &V)) {
        debug_assert!(self.spill.is_none(), "for_each() of a table in the store");
        match &self.layout {
            Layout::Pairs(t) => t
                .entries
                .iter()
                .for_each(|e| f(&e.key, &e.namespace, &e.value)),
            Layout::ByNamespace(v) => {
                for (ns, t) in v {
                    t.entries.iter().for_each(|e| f(&e.key, ns, &e.value));
                }
            }
        }
    }

    /// Removes every entry of `namespace`, cached or stored, handing each (key, value) to `f`.
    pub fn drain_namespace(&mut self, namespace: &N, mut f: impl FnMut(K, V)) {
        self.drain(Some(namespace), |k, _, v| f(k, v));
    }

    /// Removes every entry, cached or stored, handing each (key, namespace, value) to `f`.
    pub fn drain_all(&mut self, f: impl FnMut(K, N, V)) {
        self.drain(None, f);
    }

    fn drain(&mut self, namespace: Option<&N>, mut f: impl FnMut(K, N, V)) {
        let spill = self.spill.as_ref();
        let mut b = spill.map(|s| s.backend.inner.borrow_mut());
        // A cached entry the store also holds: the cached value is the newer; the stored one
        // goes.
        let mut n = 0;
        let mut take = |key: K, ns: N, v: V, flags: u8| {
            n += 1;
            if flags & STORED != 0
                && let (Some(s), Some(b)) = (spill, b.as_deref_mut())
                && let Err(e) = (s.delete)(b, s.id, &key, &ns)
            {
                b.fail(e);
            }
            f(key, ns, v);
        };
        match &mut self.layout {
            Layout::Pairs(t) => {
                let all = namespace.is_none();
                for e in t
                    .entries
                    .extract_if(|e| all || Some(&e.namespace) == namespace)
                {
                    take(e.key, e.namespace, e.value, e.flags);
                }
            }
            Layout::ByNamespace(v) => {
                while let Some(i) = v
                    .iter()
                    .position(|(ns, _)| namespace.is_none_or(|n| n == ns))
                {
                    let (ns, table) = v.swap_remove(i);
                    self.size_hint = table.entries.len();
                    for e in table.entries {
                        take(e.key, ns.clone(), e.value, e.flags);
                    }
                }
            }
        }
        let (Some(s), Some(mut b)) = (spill, b) else {
            return;
        };
        b.budget.sub(n * s.cost);
        if s.any_stored {
            match (s.take_all)(&mut b, s.id, namespace) {
                Ok(stored) => {
                    for (k, ns, v) in stored {
                        f(k, ns, v);
                    }
                }
                Err(e) => b.fail(e),
            }
        }
    }

    /// Evicts entries until the shard's cached values are an eighth below the budget (or this
    /// table has nothing left that was not referenced since the hand last passed).
    #[cold]
    fn sweep(&mut self) {
        let Some(s) = &mut self.spill else { return };
        let backend = s.backend.clone();
        let mut b = backend.inner.borrow_mut();
        let limit = b.budget.limit();
        let target = limit - limit / 8;
        let want = b
            .budget
            .used()
            .saturating_sub(target)
            .div_ceil(s.cost.max(1));
        let mut evicted = 0usize;
        let hand = s.hand;
        // Two passes: from the hand to the end, then from the start to the hand.
        for pass in 0..2 {
            let mut pos = 0usize;
            let in_pass = |p: usize| if pass == 0 { p >= hand } else { p < hand };
            match &mut self.layout {
                Layout::Pairs(t) => t.entries.retain(|e| {
                    let p = pos;
                    pos += 1;
                    if evicted >= want || !in_pass(p) {
                        return true;
                    }
                    let Cached {
                        key,
                        namespace,
                        value,
                        flags,
                    } = e;
                    let keep = evict(s, &mut b, key, namespace, value, flags);
                    if !keep {
                        evicted += 1;
                        s.hand = p;
                    }
                    keep
                }),
                Layout::ByNamespace(v) => {
                    for (ns, t) in v.iter_mut() {
                        t.entries.retain(|e| {
                            let p = pos;
                            pos += 1;
                            if evicted >= want || !in_pass(p) {
                                return true;
                            }
                            let keep = evict(s, &mut b, &e.key, ns, &e.value, &mut e.flags);
                            if !keep {
                                evicted += 1;
                                s.hand = p;
                            }
                            keep
                        });
                    }
                    v.retain(|(_, t)| !t.entries.is_empty());
                }
            }
            if evicted >= want {
                break;
            }
        }
        b.budget.sub(evicted * s.cost);
        // When the budget is held elsewhere (other tables of the shard) and this table is too
        // small to give back what is wanted, sweeping it whole again on every insert would cost
        // O(n) each: it waits for an eighth of its size in inserts before the next try. (A
        // sweep that only cleared referenced bits is not that: the next one evicts.)
        let cached = self.layout.len();
        if evicted < want / 2 && cached < want {
            s.sweep_skip = cached / 8;
        }
        // Learn what values take beyond their inline size, every few thousand writes.
        if s.written.0 >= 4096 {
            let inline = std::mem::size_of::<Cached<K, N, V>>() + 1;
            let heap = (s.written.1 / s.written.0) as usize;
            let cost = inline + heap.saturating_sub(std::mem::size_of::<V>());
            b.budget
                .set(b.budget.used().saturating_sub(cached * s.cost) + cached * cost);
            s.cost = cost;
            s.written = (0, 0);
        }
    }
}

/// The clock's verdict on one entry: keep it (referenced since the hand last passed: its bit is
/// cleared; or it could not be written) or evict it (written first if dirty).
#[inline]
fn evict<K, N, V>(
    s: &mut Spill<K, N, V>,
    b: &mut Backend,
    key: &K,
    namespace: &N,
    value: &V,
    flags: &mut u8,
) -> bool {
    if *flags & REFERENCED != 0 {
        *flags &= !REFERENCED;
        return true;
    }
    // Leaving the cache: the store keeps its value (written now, or before).
    if *flags & (DIRTY | STORED) != 0 {
        s.any_stored = true;
    }
    if *flags & DIRTY != 0 {
        match (s.put)(b, s.id, key, namespace, value) {
            Ok(bytes) => {
                if let Some(c) = &s.counters {
                    c.state_writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                s.any_stored = true;
                s.written.0 += 1;
                s.written.1 += bytes as u64;
            }
            Err(err) => {
                b.fail(err);
                return true;
            }
        }
    }
    false
}

/// One hash-table entry per (key, namespace).
struct PairTable<K, N, V> {
    entries: HashTable<Cached<K, N, V>>,
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

impl<K: Hash + Eq, N: Hash + Eq, V> PairTable<K, N, V> {
    #[inline]
    fn find_mut(&mut self, key: &K, namespace: &N) -> Option<&mut Cached<K, N, V>> {
        self.entries.find_mut(entry_hash(key, namespace), |e| {
            e.key == *key && e.namespace == *namespace
        })
    }

    #[inline]
    fn insert_unique(&mut self, e: Cached<K, N, V>) -> &mut Cached<K, N, V> {
        let hash = entry_hash(&e.key, &e.namespace);
        self.entries
            .insert_unique(hash, e, |e| entry_hash(&e.key, &e.namespace))
            .into_mut()
    }

    fn remove(&mut self, key: &K, namespace: &N) -> Option<Cached<K, N, V>> {
        match self.entries.find_entry(entry_hash(key, namespace), |e| {
            e.key == *key && e.namespace == *namespace
        }) {
            Ok(o) => Some(o.remove().0),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::collections::HashMap;

    /// Random gets, inserts, removes and drains against a std map of (key, namespace): in
    /// memory, and backed by a store with a budget of a few entries (most operations then
    /// evict, write, read back and delete through the store).
    #[test]
    fn the_table_behaves_as_a_map_of_pairs() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..12 {
            let mut rng = SplitMix64::new(seed);
            let t: KeyedTable<u32, u8, Vec<u64>> = if seed % 2 == 0 {
                KeyedTable::new()
            } else {
                KeyedTable::by_namespace()
            };
            let backend = StateBackend::new(
                dir.path().join(format!("s{seed}")),
                2_000,
                0,
                128,
                crate::time::ProcessingClock::System,
            );
            let mut t = if seed % 4 >= 2 {
                t.in_store(&backend, "op/t".into()).unwrap()
            } else {
                t
            };
            let mut m: HashMap<(u32, u8), Vec<u64>> = HashMap::new();
            for step in 0..5_000u64 {
                let (k, n) = (rng.below(60) as u32, rng.below(4) as u8);
                match rng.below(7) {
                    0 => {
                        t.insert(&k, &n, vec![step]);
                        m.insert((k, n), vec![step]);
                    }
                    1 => assert_eq!(t.remove(&k, &n), m.remove(&(k, n))),
                    2 => {
                        let (v, made) = t.get_or_insert_with(&k, &n, Vec::new);
                        assert_eq!(made, !m.contains_key(&(k, n)));
                        v.push(step);
                        m.entry((k, n)).or_default().push(step);
                    }
                    3 => {
                        if let Some(v) = t.get_mut(&k, &n) {
                            v.push(step);
                        }
                        if let Some(v) = m.get_mut(&(k, n)) {
                            v.push(step);
                        }
                    }
                    4 if rng.below(50) == 0 => {
                        let mut got = Vec::new();
                        t.drain_namespace(&n, |k, v| got.push((k, v)));
                        got.sort();
                        let mut want: Vec<_> = m
                            .iter()
                            .filter(|e| e.0.1 == n)
                            .map(|(&(k, _), v)| (k, v.clone()))
                            .collect();
                        want.sort();
                        m.retain(|e, _| e.1 != n);
                        assert_eq!(got, want);
                    }
                    _ => assert_eq!(t.get(&k, &n), m.get(&(k, n))),
                }
                backend.check().unwrap();
                // The budget holds (give or take the sweep's slack and one entry).
                let (used, budget) = backend.memory();
                assert!(
                    seed % 4 < 2 || used <= budget + budget / 2,
                    "{used} of {budget}"
                );
            }
            if seed % 4 >= 2 {
                let (spilled, loaded) = backend.spill_counts();
                assert!(spilled > 200 && loaded > 200, "{spilled} {loaded}");
            }
            let mut all = Vec::new();
            t.drain_all(|k, n, v| all.push((k, n, v)));
            all.sort();
            let mut want: Vec<_> = m.into_iter().map(|((k, n), v)| (k, n, v)).collect();
            want.sort();
            assert_eq!(all, want);
            assert_eq!(backend.stored_keys(), 0);
        }
    }
}
