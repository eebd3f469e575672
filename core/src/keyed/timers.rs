//! Timers per key and namespace, in event time and in processing time.
//!
//! A timer is (timestamp, key, namespace); registering one that exists does nothing (so a window
//! can register its end on every element), deleting one that does not exist does nothing. Due
//! timers come out in timestamp order, and in registration order among equal timestamps.
//!
//! Timers are kept in runs by time: a sorted map from each distinct time to the timers due then,
//! in registration order, with a hash index over the run for registration and deletion. Windows
//! make many timers at few times (every key's window ends at the same instant), so registering
//! is a hash probe and a push, and firing a run is a walk down a vector, with no hashing at all.
//! (Measured on the windows benchmark: a binary heap entry per timer was 10% of the time; runs
//! with a global set of live timers still spent 5% in that set's lookups when firing.)
//!
//! ## Timers in the store
//!
//! A queue made [`in_store`](TimerQueue::in_store) counts its timers against the shard's memory
//! budget, as keyed tables count their values. When the budget is spent and the queue holds a
//! fair share of it (an eighth), it writes its latest timers — about half of them, whole times
//! only — to the store as a *spilled run*: records `(time, key, namespace, state)` sorted by
//! time, in blocks of about [`BLOCK_RECORDS`] that never split a time, each block one store
//! value. The earliest timers, the ones about to fire, stay in memory. (Flink's RocksDB timer
//! service keeps timers sorted in the store with the head of each key group cached; our store
//! is hash-indexed, so the sort order lives in the runs instead.)
//!
//! Runs are layers, each newer than the runs before it, and memory is newest of all. A register
//! or delete of a time that spilled runs may hold is not looked up there: it is recorded in
//! memory, a delete as a *tombstone*, a register after a tombstone as *reborn* (deleted, then
//! registered anew). Before the queue fires a time, it reads every run's records of that time
//! and resolves each timer newest layer first: a tombstone hides older layers; a reborn timer
//! is registered where it stands; a plain registration found again in an older layer was a
//! repeat, and the older (the first) registration keeps its place. So due timers come out
//! exactly as if nothing had been spilled: once each, in time and then registration order.
//! A block read is deleted from the store.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use hashbrown::HashTable;

use crate::data::Data;
use crate::error::JobError;
use crate::key::key_hash;
use crate::state::{Backend, StateBackend};

/// Records per spilled block (a block holds whole times, so it may hold more).
pub const BLOCK_RECORDS: usize = 1024;
/// The timers due at one time.
struct Run<K, N> {
    /// In registration order; a deleted or fired timer leaves `None`.
    timers: Vec<Option<(K, N)>>,
    /// Positions in `timers`, by the hash of (key, namespace). May hold positions that were
    /// emptied; a lookup checks the timer there.
    index: HashTable<u32>,
    /// Timers before this position have been taken.
    next: usize,
    live: usize,
}

impl<K, N> Default for Run<K, N> {
    fn default() -> Self {
        Self {
            timers: Vec::new(),
            index: HashTable::new(),
            next: 0,
            live: 0,
        }
    }
}

#[inline]
fn timer_hash<K: Hash, N: Hash>(key: &K, namespace: &N) -> u64 {
    crate::key::state_hash(key_hash(&(key, namespace)))
}

/// Runs up to this many timers long are searched without an index: per-key timers at times of
/// their own (sessions, a process function's timeouts) make runs of one, and building a hash
/// table for each cost an allocation per timer.
const LINEAR: usize = 8;

impl<K: Hash + Eq, N: Hash + Eq> Run<K, N> {
    /// The position of the live timer (key, namespace), if there is one.
    fn find(&self, hash: u64, key: &K, namespace: &N) -> Option<usize> {
        let timers = &self.timers;
        if timers.len() <= LINEAR {
            return timers
                .iter()
                .position(|t| t.as_ref().is_some_and(|(k, n)| k == key && n == namespace));
        }
        self.index
            .find(hash, |&p| {
                timers[p as usize]
                    .as_ref()
                    .is_some_and(|(k, n)| k == key && n == namespace)
            })
            .map(|&p| p as usize)
    }

    /// Appends a timer that is not in the run.
    fn push(&mut self, hash: u64, timer: (K, N)) {
        let pos = self.timers.len() as u32;
        self.timers.push(Some(timer));
        self.live += 1;
        let timers = &self.timers;
        // A position emptied by firing stays indexed (firing does not hash); its entry is dead
        // and may go anywhere.
        let rehash = |&p: &u32| {
            timers[p as usize]
                .as_ref()
                .map_or(0, |(k, n)| timer_hash(k, n))
        };
        match timers.len() {
            n if n <= LINEAR => {}
            n if n == LINEAR + 1 => {
                // Past the linear length: index every live timer from now on.
                for (p, t) in timers.iter().enumerate() {
                    if let Some((k, n)) = t {
                        self.index.insert_unique(timer_hash(k, n), p as u32, rehash);
                    }
                }
            }
            _ => {
                self.index.insert_unique(hash, pos, rehash);
            }
        }
    }

    /// Empties position `pos` (a live timer found under `hash`).
    fn take_at(&mut self, hash: u64, pos: usize) -> Option<(K, N)> {
        let t = self.timers[pos].take();
        if self.timers.len() > LINEAR
            && let Ok(o) = self.index.find_entry(hash, |&p| p as usize == pos)
        {
            o.remove();
        }
        self.live -= 1;
        t
    }
}

/// The timers of one time: one alone (no allocation: per-key timers at times of their own),
/// or a run. The map's values stay small, so inserting into its nodes moves little.
enum Slot<K, N> {
    One(K, N),
    Many(Box<Run<K, N>>),
}

impl<K: Hash + Eq, N: Hash + Eq> Slot<K, N> {
    fn contains(&self, hash: u64, key: &K, namespace: &N) -> bool {
        match self {
            Slot::One(k, n) => k == key && n == namespace,
            Slot::Many(r) => r.find(hash, key, namespace).is_some(),
        }
    }

    fn live(&self) -> usize {
        match self {
            Slot::One(..) => 1,
            Slot::Many(r) => r.live,
        }
    }

    /// Adds a timer that is not in the slot (a slot of one becomes a run).
    fn push(&mut self, hash: u64, timer: (K, N)) {
        if let Slot::One(..) = self {
            let Slot::One(k, n) = std::mem::replace(self, Slot::Many(Box::default())) else {
                unreachable!("matched above")
            };
            if let Slot::Many(r) = self {
                r.push(timer_hash(&k, &n), (k, n));
            }
        }
        if let Slot::Many(r) = self {
            r.push(hash, timer);
        }
    }

    /// The slot's timers not yet taken, in order (empty positions included).
    fn into_timers(self) -> Vec<Option<(K, N)>> {
        match self {
            Slot::One(k, n) => vec![Some((k, n))],
            Slot::Many(mut r) => r.timers.split_off(r.next),
        }
    }

    /// The slot of a run's live timers (None: it has none).
    fn of_run(mut run: Run<K, N>) -> Option<Self> {
        match run.live {
            0 => None,
            1 => {
                let (k, n) = run.timers.drain(run.next..).flatten().next()?;
                Some(Slot::One(k, n))
            }
            _ => Some(Slot::Many(Box::new(run))),
        }
    }
}

/// What a spilled record says of its timer in its layer: registered (perhaps again),
/// registered after a delete (older layers do not count), or deleted.
const LIVE: u8 = 0;
const REBORN: u8 = 1;
const DEAD: u8 = 2;

/// A spilled timer: (time, key, namespace, what it says).
type Record<K, N> = (i64, K, N, u8);
/// A spilled block's key in the store: (run, block).
type BlockId = (u32, u32);

type PutBlock<K, N> =
    fn(&mut Backend, u32, &BlockId, &(), &Vec<Record<K, N>>) -> Result<usize, JobError>;
type GetBlock<K, N> =
    fn(&mut Backend, u32, &BlockId, &()) -> Result<Option<Vec<Record<K, N>>>, JobError>;
type DeleteBlock = fn(&mut Backend, u32, &BlockId, &()) -> Result<(), JobError>;
/// What a queue keeps outside its blocks, as a checkpoint stores it: the records of its timers
/// and tombstones in memory; per run its id, blocks' first times, next block and records read
/// but not merged; the next run's id.
type QueueSnapshot<K, N> = (
    Vec<Record<K, N>>,
    Vec<(u32, Vec<i64>, u64, Vec<Record<K, N>>)>,
    u32,
);
type PutSnapshot<K, N> =
    fn(&mut Backend, u32, &u32, &(), &QueueSnapshot<K, N>) -> Result<usize, JobError>;

/// Timers written to the store at one spill, sorted by time.
struct SpilledRun<K, N> {
    id: u32,
    /// The first time of each block (a block holds whole times).
    firsts: Vec<i64>,
    /// The next block to read.
    next: usize,
    /// Records read from a block and not merged yet.
    pending: VecDeque<Record<K, N>>,
}

impl<K, N> SpilledRun<K, N> {
    /// The earliest time this run still holds.
    fn front(&self) -> Option<i64> {
        match self.pending.front() {
            Some(r) => Some(r.0),
            None => self.firsts.get(self.next).copied(),
        }
    }
}

/// A queue's way to the store, and what it keeps there.
struct Spill<K, N> {
    backend: StateBackend,
    /// The backend's memory budget (charged without borrowing the backend).
    budget: std::rc::Rc<crate::state::MemoryBudget>,
    id: u32,
    put: PutBlock<K, N>,
    get: GetBlock<K, N>,
    delete: DeleteBlock,
    put_snapshot: PutSnapshot<K, N>,
    /// Oldest first.
    runs: Vec<SpilledRun<K, N>>,
    next_run: u32,
    /// The earliest time any run holds (meaningless without runs).
    front: i64,
    /// Tombstones: timers deleted at times the runs may hold.
    dead: BTreeMap<i64, HashTable<(K, N)>>,
    dead_count: usize,
    /// Records in the runs, not read back yet.
    stored: usize,
    /// The bytes this queue counts in the backend's budget.
    charged: usize,
    /// Registrations to let pass before trying to spill again (after a spill that could not).
    skip: usize,
    /// Records per block ([`BLOCK_RECORDS`]; fewer in tests).
    block_records: usize,
    /// The operator's counters (timer records written to the store).
    counters: Option<std::sync::Arc<crate::operator::OperatorCounters>>,
}

/// One time domain's timers.
pub struct TimerQueue<K, N> {
    by_time: BTreeMap<i64, Slot<K, N>>,
    live: usize,
    spill: Option<Box<Spill<K, N>>>,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            live: 0,
            spill: None,
        }
    }
}

impl<K: Data + Hash + Eq, N: Data + Hash + Eq> TimerQueue<K, N> {
    /// Counts this queue's timers in the shard's memory budget and writes the latest of them
    /// to the store when it is spent, as state `name` (unique on the shard).
    pub fn in_store(self, backend: &StateBackend, name: String) -> Result<Self, JobError> {
        let id = backend.register(name)?;
        let mut queue = self.attach(backend, id);
        if !backend.is_restored() {
            return Ok(queue);
        }
        let Some((keep, earlier)) = backend.earlier_shards()? else {
            let got = {
                let mut b = backend.inner.borrow_mut();
                Backend::get::<u32, (), QueueSnapshot<K, N>>(&mut b, id, &0, &())?
            };
            if let Some(snapshot) = got {
                queue.restore(snapshot);
            }
            return Ok(queue);
        };
        // Rescaled: each earlier shard's queue is rebuilt from its own whole store, drained in
        // time order, and its timers of this shard's key groups registered here. Its snapshot
        // and blocks in this store (under the key groups of their synthetic keys) are deleted,
        // and this queue's runs are numbered after all of theirs.
        let mut olds = Vec::with_capacity(earlier.len());
        let mut next_run = 0;
        for old in earlier {
            let mut q = TimerQueue::<K, N>::default().attach(&old, id);
            let got = {
                let mut b = old.inner.borrow_mut();
                Backend::get::<u32, (), QueueSnapshot<K, N>>(&mut b, id, &0, &())?
            };
            if let Some(snapshot) = got {
                q.restore(snapshot);
            }
            let s = q.spill.as_ref().expect("in the store");
            next_run = next_run.max(s.next_run);
            let mut b = backend.inner.borrow_mut();
            Backend::delete::<u32, ()>(&mut b, id, &0, &())?;
            for r in &s.runs {
                for block in r.next as u32..r.firsts.len() as u32 {
                    Backend::delete::<BlockId, ()>(&mut b, id, &(r.id, block), &())?;
                }
            }
            drop(b);
            olds.push((old, q));
        }
        // Runs this queue spills from here on never meet the earlier shards' blocks.
        queue.spill.as_mut().expect("in the store").next_run = next_run;
        for (old, mut q) in olds {
            while let Some((t, k, n)) = q.pop_due(i64::MAX) {
                if keep.contains(backend.key_group_of(&k)) {
                    queue.register(t, &k, &n);
                }
            }
            old.check()?;
            drop(q);
            old.remove();
        }
        backend.check()?;
        Ok(queue)
    }

    /// Counts this queue in `backend`'s budget and spills it there as state `id`.
    fn attach(mut self, backend: &StateBackend, id: u32) -> Self {
        self.spill = Some(Box::new(Spill {
            backend: backend.clone(),
            budget: backend.inner.borrow().budget.clone(),
            id,
            put: Backend::put::<BlockId, (), Vec<Record<K, N>>>,
            get: Backend::get::<BlockId, (), Vec<Record<K, N>>>,
            delete: Backend::delete::<BlockId, ()>,
            put_snapshot: Backend::put::<u32, (), QueueSnapshot<K, N>>,
            runs: Vec::new(),
            next_run: 0,
            front: i64::MAX,
            dead: BTreeMap::new(),
            dead_count: 0,
            stored: 0,
            charged: 0,
            skip: 0,
            block_records: BLOCK_RECORDS,
            counters: None,
        }));
        self
    }

    /// Takes back what [`checkpoint`](Self::checkpoint) wrote (the runs' blocks are in the
    /// restored store already).
    fn restore(&mut self, (memory, runs, next_run): QueueSnapshot<K, N>) {
        let s = self.spill.as_mut().expect("in the store");
        for (t, k, n, what) in memory {
            let h = timer_hash(&k, &n);
            if what != LIVE {
                let dead = s.dead.entry(t).or_default();
                dead.insert_unique(h, (k.clone(), n.clone()), |(k, n)| timer_hash(k, n));
                s.dead_count += 1;
            }
            if what == DEAD {
                continue;
            }
            self.live += 1;
            match self.by_time.entry(t) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Slot::One(k, n));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.get_mut().push(h, (k, n));
                }
            }
        }
        s.runs = runs
            .into_iter()
            .map(|(id, firsts, next, pending)| SpilledRun {
                id,
                firsts,
                next: next as usize,
                pending: pending.into(),
            })
            .collect();
        s.stored = s.runs.iter().map(|r| r.pending.len()).sum();
        s.next_run = next_run;
        s.refront();
        self.charge();
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerQueue<K, N> {
    /// Bytes a timer takes in memory (its slot and its index entry).
    const TIMER_BYTES: usize = std::mem::size_of::<Option<(K, N)>>() + 8;
    /// Bytes a distinct time takes (its place in the map; a run of several, a little more).
    const TIME_BYTES: usize = std::mem::size_of::<Slot<K, N>>() + 16;

    /// Live timers; once timers were spilled, an upper bound (records in the store count, some
    /// of which repeat or delete others).
    pub fn len(&self) -> usize {
        self.live + self.spill.as_ref().map_or(0, |s| s.stored)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Timers in memory and timer records in the store.
    pub fn counts(&self) -> (usize, usize) {
        (self.live, self.spill.as_ref().map_or(0, |s| s.stored))
    }

    /// Registers a timer; false if it was there already (true may also mean it is in the
    /// store already: the store is not asked).
    pub fn register(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        let hash = timer_hash(key, namespace);
        match self.by_time.entry(at) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Slot::One(key.clone(), namespace.clone()));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let slot = o.get_mut();
                if slot.contains(hash, key, namespace) {
                    return false;
                }
                slot.push(hash, (key.clone(), namespace.clone()));
            }
        }
        self.live += 1;
        if self.spill.is_some() && self.charge() {
            let s = self.spill.as_mut().expect("checked");
            if s.skip > 0 {
                s.skip -= 1;
            } else {
                self.spill_latest();
            }
        }
        true
    }

    /// Deletes a timer; false if there was none in memory (once timers were spilled, a delete
    /// of a time they may hold is kept as a tombstone, and true or false says nothing about
    /// the store).
    pub fn delete(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        let hash = timer_hash(key, namespace);
        let mut found = false;
        if let std::collections::btree_map::Entry::Occupied(mut o) = self.by_time.entry(at) {
            let empty = match o.get_mut() {
                Slot::One(k, n) => {
                    found = k == key && n == namespace;
                    found
                }
                Slot::Many(run) => {
                    if let Some(pos) = run.find(hash, key, namespace) {
                        run.take_at(hash, pos);
                        found = true;
                    }
                    run.live == 0
                }
            };
            if found {
                self.live -= 1;
            }
            if empty {
                o.remove();
            }
        }
        if let Some(s) = self.spill.as_mut() {
            if !s.runs.is_empty() && at >= s.front {
                let dead = s.dead.entry(at).or_default();
                let there = dead
                    .find(hash, |(k, n)| k == key && n == namespace)
                    .is_some();
                if !there {
                    dead.insert_unique(hash, (key.clone(), namespace.clone()), |(k, n)| {
                        timer_hash(k, n)
                    });
                    s.dead_count += 1;
                }
            }
            self.charge();
        }
        found
    }

    /// Takes the earliest live timer at or before `time`.
    pub fn pop_due(&mut self, time: i64) -> Option<(i64, K, N)> {
        loop {
            if let Some(s) = &self.spill {
                let first = self.by_time.first_key_value().map_or(i64::MAX, |(t, _)| *t);
                if !s.runs.is_empty() && s.front <= time && s.front <= first {
                    self.merge_front();
                    continue;
                }
            }
            let mut entry = self.by_time.first_entry()?;
            let at = *entry.key();
            if at > time {
                return None;
            }
            let mut popped = None;
            if let Slot::Many(run) = entry.get_mut() {
                while run.next < run.timers.len() {
                    let taken = run.timers[run.next].take();
                    run.next += 1;
                    if let Some((key, namespace)) = taken {
                        run.live -= 1;
                        popped = Some((at, key, namespace));
                        break;
                    }
                }
                if run.next == run.timers.len() {
                    entry.remove();
                }
            } else if let Slot::One(key, namespace) = entry.remove() {
                popped = Some((at, key, namespace));
            }
            if let Some(p) = popped {
                self.live -= 1;
                if self.spill.is_some() {
                    self.charge();
                }
                return Some(p);
            }
        }
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<i64> {
        loop {
            let first = self.by_time.first_key_value().map(|(t, r)| (*t, r.live()));
            if let Some(s) = &self.spill
                && !s.runs.is_empty()
                && s.front <= first.map_or(i64::MAX, |f| f.0)
            {
                self.merge_front();
                continue;
            }
            let (at, live) = first?;
            if live > 0 {
                return Some(at);
            }
            self.by_time.remove(&at);
        }
    }

    /// Writes what this queue keeps outside the store (its timers and tombstones in memory,
    /// its runs' descriptions and records read but not merged) to the store as one value,
    /// replaced at every checkpoint: with the runs' blocks, the store then holds the whole
    /// queue. A store error is kept for the operator's check.
    pub fn checkpoint(&mut self) {
        let Some(s) = self.spill.as_ref() else {
            return;
        };
        let mut memory = Vec::with_capacity(self.live + s.dead_count);
        for (t, slot) in &self.by_time {
            let dead = s.dead.get(t);
            let timers: Vec<&(K, N)> = match slot {
                Slot::One(k, n) => {
                    let h = timer_hash(k, n);
                    let reborn =
                        dead.is_some_and(|d| d.find(h, |(dk, dn)| dk == k && dn == n).is_some());
                    memory.push((*t, k.clone(), n.clone(), if reborn { REBORN } else { LIVE }));
                    continue;
                }
                Slot::Many(r) => r.timers[r.next..].iter().flatten().collect(),
            };
            for (k, n) in timers {
                let h = timer_hash(k, n);
                let reborn =
                    dead.is_some_and(|d| d.find(h, |(dk, dn)| dk == k && dn == n).is_some());
                memory.push((*t, k.clone(), n.clone(), if reborn { REBORN } else { LIVE }));
            }
        }
        for (t, dead) in &s.dead {
            let slot = self.by_time.get(t);
            for (k, n) in dead {
                if slot.is_none_or(|sl| !sl.contains(timer_hash(k, n), k, n)) {
                    memory.push((*t, k.clone(), n.clone(), DEAD));
                }
            }
        }
        let runs = s
            .runs
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.firsts.clone(),
                    r.next as u64,
                    r.pending.iter().cloned().collect(),
                )
            })
            .collect();
        let snapshot = (memory, runs, s.next_run);
        let mut b = s.backend.inner.borrow_mut();
        if let Err(e) = (s.put_snapshot)(&mut b, s.id, &0, &(), &snapshot) {
            b.fail(e);
        }
    }

    /// Brings this queue's count in the shard's budget up to date; true if the budget is spent
    /// and this queue holds a share of it worth spilling.
    fn charge(&mut self) -> bool {
        let Some(s) = self.spill.as_mut() else {
            return false;
        };
        let bytes = (self.live + s.dead_count) * Self::TIMER_BYTES
            + (self.by_time.len() + s.dead.len()) * Self::TIME_BYTES;
        let budget = &s.budget;
        budget.set(budget.used().saturating_sub(s.charged) + bytes);
        s.charged = bytes;
        budget.used() > budget.limit() && bytes > budget.limit() / 8
    }

    /// Writes the latest half of the timers in memory (whole times; never the earliest) to
    /// the store as a new run, with the tombstones of those times.
    fn spill_latest(&mut self) {
        let Some(s) = self.spill.as_mut() else {
            return;
        };
        let half = self.live / 2;
        let mut kept = 0;
        let mut cut = None;
        for (i, (t, slot)) in self.by_time.iter().enumerate() {
            if i > 0 && kept >= half {
                cut = Some(*t);
                break;
            }
            kept += slot.live();
        }
        let Some(cut) = cut else {
            // One time holds them all: nothing to give back until more times come.
            s.skip = self.live / 8 + 1;
            return;
        };
        let mut memory = self.by_time.split_off(&cut).into_iter().peekable();
        let mut dead = s.dead.split_off(&cut).into_iter().peekable();
        let mut run = SpilledRun {
            id: s.next_run,
            firsts: Vec::new(),
            next: 0,
            pending: VecDeque::new(),
        };
        s.next_run += 1;
        let mut block: Vec<Record<K, N>> = Vec::with_capacity(s.block_records);
        let mut moved = 0;
        loop {
            let t = match (memory.peek(), dead.peek()) {
                (None, None) => break,
                (Some(m), None) => m.0,
                (None, Some(d)) => d.0,
                (Some(m), Some(d)) => m.0.min(d.0),
            };
            if block.len() >= s.block_records {
                s.write_block(&mut run, &mut block);
            }
            let live = memory.next_if(|m| m.0 == t).map(|m| m.1);
            let deleted = dead.next_if(|d| d.0 == t).map(|d| d.1);
            if let Some(deleted) = &deleted {
                s.dead_count -= deleted.len();
                for (k, n) in deleted {
                    let h = timer_hash(k, n);
                    if live.as_ref().is_none_or(|r| !r.contains(h, k, n)) {
                        block.push((t, k.clone(), n.clone(), DEAD));
                    }
                }
            }
            if let Some(live) = live {
                moved += live.live();
                for (k, n) in live.into_timers().into_iter().flatten() {
                    let h = timer_hash(&k, &n);
                    let reborn = deleted
                        .as_ref()
                        .is_some_and(|d| d.find(h, |(dk, dn)| *dk == k && *dn == n).is_some());
                    block.push((t, k, n, if reborn { REBORN } else { LIVE }));
                }
            }
        }
        if !block.is_empty() {
            s.write_block(&mut run, &mut block);
        }
        s.front = s.front.min(run.front().unwrap_or(i64::MAX));
        s.runs.push(run);
        self.live -= moved;
        self.charge();
    }

    /// Reads every run's records of the earliest spilled time and merges them into memory:
    /// per timer, the newest layer that says anything decides (see the module's notes).
    fn merge_front(&mut self) {
        let s = self.spill.as_mut().expect("spilled");
        let at = s.front;
        // Records of `at`, newest run first; `groups[i]..groups[i + 1]` are one run's.
        let mut recs: Vec<(K, N, u8)> = Vec::new();
        let mut groups = vec![0];
        for r in (0..s.runs.len()).rev() {
            if s.runs[r].front() == Some(at) {
                if s.runs[r].pending.is_empty() {
                    s.read_block(r);
                }
                let run = &mut s.runs[r];
                while let Some((_, k, n, what)) = run.pending.pop_front_if(|x| x.0 == at) {
                    recs.push((k, n, what));
                }
            }
            groups.push(recs.len());
        }
        s.stored -= recs.len().min(s.stored);
        s.runs.retain(|r| r.front().is_some());
        s.refront();
        // Tombstones before the new front hide nothing any more (no run holds their times);
        // those of `at` are the newest layer below.
        let mut stale = s.dead.split_off(&s.front);
        std::mem::swap(&mut stale, &mut s.dead);
        s.dead_count -= stale.values().map(HashTable::len).sum::<usize>();
        let dead = stale.remove(&at);

        // Resolve each timer, newest layer first: `chosen` is the record whose registration
        // counts, `closed` that older layers no longer matter.
        struct Seen {
            first: usize,
            chosen: Option<usize>,
            closed: bool,
            in_memory: bool,
        }
        let memory = self.by_time.get(&at);
        let mut seen: Vec<Seen> = Vec::new();
        let mut index: HashTable<usize> = HashTable::new();
        for (i, (k, n, what)) in recs.iter().enumerate() {
            let h = timer_hash(k, n);
            let j = match index.find(h, |&j| {
                let f = seen[j].first;
                recs[f].0 == *k && recs[f].1 == *n
            }) {
                Some(&j) => j,
                None => {
                    // Memory is the newest layer: a tombstone there (deleted, perhaps
                    // registered again since) leaves the older layers nothing to say.
                    let deleted = dead
                        .as_ref()
                        .is_some_and(|d| d.find(h, |(dk, dn)| dk == k && dn == n).is_some());
                    let in_memory = memory.is_some_and(|r| r.contains(h, k, n));
                    seen.push(Seen {
                        first: i,
                        chosen: None,
                        closed: deleted,
                        in_memory,
                    });
                    index.insert_unique(h, seen.len() - 1, |&j| {
                        let f = seen[j].first;
                        timer_hash(&recs[f].0, &recs[f].1)
                    });
                    seen.len() - 1
                }
            };
            let e = &mut seen[j];
            if e.closed {
                continue;
            }
            match *what {
                DEAD => e.closed = true,
                REBORN => {
                    e.chosen = Some(i);
                    e.closed = true;
                }
                _ => e.chosen = Some(i),
            }
        }
        let mut chosen = vec![false; recs.len()];
        let mut duplicates = Vec::new();
        for e in &seen {
            if let Some(i) = e.chosen {
                chosen[i] = true;
                if e.in_memory {
                    duplicates.push(i);
                }
            }
        }
        let old = self.by_time.remove(&at);
        // Registered in memory again: the stored registration was first and keeps its place.
        let old_live = old.as_ref().map_or(0, Slot::live);
        let mut old_timers = old.map(Slot::into_timers).unwrap_or_default();
        for &i in &duplicates {
            let (k, n, _) = &recs[i];
            if let Some(t) = old_timers
                .iter_mut()
                .find(|t| t.as_ref().is_some_and(|(tk, tn)| tk == k && tn == n))
            {
                *t = None;
            }
        }
        let mut by_run: Vec<Vec<(K, N)>> = vec![Vec::new(); groups.len() - 1];
        let mut g = 0;
        for (i, (k, n, _)) in recs.into_iter().enumerate() {
            while i >= groups[g + 1] {
                g += 1;
            }
            if chosen[i] {
                by_run[g].push((k, n));
            }
        }
        let mut run = Run::default();
        for (k, n) in by_run.into_iter().rev().flatten() {
            run.push(timer_hash(&k, &n), (k, n));
        }
        for (k, n) in old_timers.into_iter().flatten() {
            run.push(timer_hash(&k, &n), (k, n));
        }
        self.live = self.live - old_live + run.live;
        if let Some(slot) = Slot::of_run(run) {
            self.by_time.insert(at, slot);
        }
        self.charge();
    }
}

impl<K: Clone, N: Clone> Spill<K, N> {
    /// Recomputes the earliest time the runs hold.
    fn refront(&mut self) {
        self.front = self
            .runs
            .iter()
            .filter_map(SpilledRun::front)
            .min()
            .unwrap_or(i64::MAX);
    }

    /// Writes `block` (records of whole times, in order) as the next block of `run`.
    fn write_block(&mut self, run: &mut SpilledRun<K, N>, block: &mut Vec<Record<K, N>>) {
        let id = (run.id, run.firsts.len() as u32);
        run.firsts.push(block[0].0);
        self.stored += block.len();
        if let Some(c) = &self.counters {
            c.timers_spilled
                .fetch_add(block.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let mut b = self.backend.inner.borrow_mut();
        if let Err(e) = (self.put)(&mut b, self.id, &id, &(), block) {
            b.fail(e);
        }
        block.clear();
    }

    /// Reads run `r`'s next block into its pending records, and deletes it from the store.
    fn read_block(&mut self, r: usize) {
        let run = &mut self.runs[r];
        let id = (run.id, run.next as u32);
        run.next += 1;
        let mut b = self.backend.inner.borrow_mut();
        match (self.get)(&mut b, self.id, &id, &()) {
            Ok(Some(records)) => {
                run.pending.extend(records);
                if let Err(e) = (self.delete)(&mut b, self.id, &id, &()) {
                    b.fail(e);
                }
            }
            Ok(None) => {
                let e = b.state_error(
                    "timers",
                    format!("block {} of spilled run {} is missing", id.1, id.0),
                );
                b.fail(e);
            }
            Err(e) => b.fail(e),
        }
    }
}

/// Event-time and processing-time timers of one keyed operator on one shard.
pub struct TimerService<K, N> {
    pub event: TimerQueue<K, N>,
    pub processing: TimerQueue<K, N>,
}

impl<K, N> Default for TimerService<K, N> {
    fn default() -> Self {
        Self {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
        }
    }
}

impl<K: Data + Hash + Eq, N: Data + Hash + Eq> TimerService<K, N> {
    /// Both queues in the shard's store, as states `name/event` and `name/processing`.
    pub fn in_store(self, backend: &StateBackend, name: &str) -> Result<Self, JobError> {
        Ok(Self {
            event: self.event.in_store(backend, format!("{name}/event"))?,
            processing: self
                .processing
                .in_store(backend, format!("{name}/processing"))?,
        })
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerService<K, N> {
    /// Both queues' [`TimerQueue::checkpoint`].
    pub fn checkpoint(&mut self) {
        self.event.checkpoint();
        self.processing.checkpoint();
    }
}

impl<K, N> TimerService<K, N> {
    /// Counts the timer records both queues write to the store in `counters`.
    pub fn counted(mut self, counters: std::sync::Arc<crate::operator::OperatorCounters>) -> Self {
        for q in [&mut self.event, &mut self.processing] {
            if let Some(s) = &mut q.spill {
                s.counters = Some(counters.clone());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Timers registered while their time's run is being fired (a callback registering again)
    /// come out after the run's others, once each, even when the run's index grows meanwhile.
    #[test]
    fn timers_registered_during_firing_come_out_once_after_the_others() {
        let mut q: TimerQueue<u32, ()> = TimerQueue::default();
        for k in 0..1_000 {
            assert!(q.register(5, &k, &()));
        }
        let mut fired = Vec::new();
        for _ in 0..500 {
            fired.push(q.pop_due(5).unwrap().1);
        }
        // Re-register fired ones and new ones at the same time: the index grows past its
        // stale entries.
        for k in 0..3_000 {
            q.register(5, &k, &());
        }
        assert_eq!(q.len(), 500 + 3_000 - 500);
        while let Some((at, k, ())) = q.pop_due(5) {
            assert_eq!(at, 5);
            fired.push(k);
        }
        let mut want: Vec<u32> = (0..1_000).collect();
        want.extend(0..500);
        want.extend(1_000..3_000);
        assert_eq!(fired, want);
        assert!(q.is_empty());
        assert_eq!(q.next_time(), None);
    }

    /// A timer deleted and registered again after it was spilled goes after the timers
    /// registered between, even when the first registration is still in an older run; one
    /// registered again without a delete keeps its first place.
    #[test]
    fn spilled_timers_keep_registration_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = StateBackend::new(
            dir.path().to_path_buf(),
            usize::MAX,
            0,
            crate::key::MAX_PARALLELISM_DEFAULT,
            crate::time::ProcessingClock::System,
        );
        let mut q: TimerQueue<u32, ()> = TimerQueue::default()
            .in_store(&backend, "t".into())
            .unwrap();
        for k in [0, 6, 7] {
            q.register(5, &k, &());
        }
        for k in 1..=4 {
            q.register(10, &k, &());
        }
        q.spill_latest(); // run 1: 10 → 1, 2, 3, 4
        assert_eq!(q.counts(), (3, 4));
        q.delete(10, &1, &());
        q.register(10, &1, &()); // reborn: after 2, 3, 4
        q.register(10, &2, &()); // a repeat: keeps its place
        q.register(10, &5, &());
        q.delete(10, &3, &());
        q.spill_latest(); // run 2: 10 → 1 (reborn), 2, 5, 3 (deleted)
        assert_eq!(q.counts().0, 3);
        let mut fired = Vec::new();
        while let Some((at, k, ())) = q.pop_due(10) {
            fired.push((at, k));
        }
        let want = [(5, 0), (5, 6), (5, 7), (10, 2), (10, 4), (10, 1), (10, 5)];
        assert_eq!(fired, want);
        assert_eq!(q.counts(), (0, 0));
        backend.check().unwrap();
    }

    /// Random registrations and deletions against a sorted list: due timers come out once, in
    /// (time, registration) order — in memory, and through the store with a budget of a few
    /// dozen timers and blocks of three records (many runs, tombstones, re-registrations of
    /// stored timers, blocks read part by part).
    #[test]
    fn timers_come_out_once_in_time_order() {
        for seed in 0..20 {
            model_run(seed, None);
        }
        let mut several_runs = 0;
        for seed in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let backend = StateBackend::new(
                dir.path().to_path_buf(),
                200,
                0,
                crate::key::MAX_PARALLELISM_DEFAULT,
                crate::time::ProcessingClock::System,
            );
            let (spilled, read, runs) = model_run(seed, Some(&backend));
            assert!(spilled > 5 && read > 0, "seed {seed}: {spilled} {read}");
            several_runs += usize::from(runs > 1);
            backend.check().unwrap();
        }
        assert!(
            several_runs > 20,
            "{several_runs} seeds had several runs at once"
        );
    }

    /// Runs random operations on a queue (in `backend`'s store if given) against a model;
    /// returns the store's block writes and reads, and the most runs it had at once.
    fn model_run(seed: u64, backend: Option<&StateBackend>) -> (u64, u64, usize) {
        let mut rng = SplitMix64::new(seed);
        let mut q: TimerQueue<u32, u8> = TimerQueue::default();
        if let Some(b) = backend {
            q = q.in_store(b, "t".into()).unwrap();
            q.spill.as_mut().unwrap().block_records = 3;
        }
        let exact = backend.is_none();
        // The model: live timers with the registration number of their live registration.
        let mut model: Vec<(i64, u64, u32, u8)> = Vec::new();
        let mut reg = 0u64;
        let mut fired = Vec::new();
        let mut expected = Vec::new();
        let mut now = 0i64;
        let mut max_runs = 0;
        let mut recent = Vec::new();
        for _ in 0..3000 {
            // Now and then a time already past: due at the next firing. Half the time a timer
            // used lately (deleted and registered again, registered twice).
            let (at, key, ns) = if rng.next_u64().is_multiple_of(2) && !recent.is_empty() {
                recent[(rng.next_u64() % recent.len() as u64) as usize]
            } else {
                let t = (
                    now - 5 + (rng.next_u64() % 30) as i64,
                    (rng.next_u64() % 40) as u32,
                    (rng.next_u64() % 2) as u8,
                );
                if recent.len() == 16 {
                    recent[(rng.next_u64() % 16) as usize] = t;
                } else {
                    recent.push(t);
                }
                t
            };
            match rng.next_u64() % 8 {
                0..=3 => {
                    let new = q.register(at, &key, &ns);
                    let exists = model.iter().any(|m| (m.0, m.2, m.3) == (at, key, ns));
                    if exact {
                        assert_eq!(new, !exists);
                    } else {
                        assert!(new || exists);
                    }
                    if !exists {
                        reg += 1;
                        model.push((at, reg, key, ns));
                    }
                }
                4 | 5 => {
                    let before = model.len();
                    model.retain(|m| (m.0, m.2, m.3) != (at, key, ns));
                    let found = q.delete(at, &key, &ns);
                    if exact {
                        assert_eq!(found, model.len() < before);
                    }
                }
                _ => {
                    now += (rng.next_u64() % 20) as i64;
                    model.sort();
                    let (due, rest): (Vec<(i64, u64, u32, u8)>, Vec<_>) =
                        model.iter().partition(|m| m.0 <= now);
                    expected.extend(due.iter().map(|m| (m.0, m.2, m.3)));
                    model = rest;
                    while let Some(t) = q.pop_due(now) {
                        fired.push(t);
                    }
                    assert_eq!(fired, expected, "seed {seed}");
                    if exact {
                        assert_eq!(q.len(), model.len());
                    } else {
                        assert!(q.len() >= model.len());
                    }
                }
            }
            max_runs = max_runs.max(q.spill.as_ref().map_or(0, |s| s.runs.len()));
        }
        while let Some(t) = q.pop_due(i64::MAX) {
            fired.push(t);
        }
        model.sort();
        expected.extend(model.iter().map(|m| (m.0, m.2, m.3)));
        assert_eq!(fired, expected, "seed {seed}");
        assert_eq!(q.counts(), (0, 0));
        let (written, read) = backend.map_or((0, 0), StateBackend::spill_counts);
        (written, read, max_runs)
    }
}
