//! Keyed state on the state store: the shard's backend, and the typed states functions declare.
//!
//! Every keyed operator keeps its data in [`crate::keyed::KeyedTable`]s: a cache of
//! deserialized values in front of the shard's [`Store`] (DESIGN.md, "State"). The hot path
//! reads and writes values in the cache and serializes nothing. When the shard's values outgrow
//! the job's memory budget ([`crate::JobConfig::state_memory_bytes`]), a table evicts values
//! with a clock sweep (a value used since the hand last passed gets a second chance), writing
//! the dirty ones to the store; a value that is not cached is read from the store (a point get,
//! from the active segment or a mapped sealed one) and deserialized.
//!
//! - [`StateBackend`]: the shard's store, its memory budget, and the names of its states.
//! - [`kinds`]: `ValueState`, `ListState`, `MapState`, `ReducingState`, `AggregatingState`
//!   with their descriptors and time-to-live, as Flink's.
//! - [`operator`]: operator (non-keyed) state — list, union list and broadcast state — with
//!   its redistribution when the parallelism changes.
//!
//! A store entry of a table is `(key group, state id ‖ rkyv(namespace), rkyv(key)) →
//! rkyv(value)`; the state id is the table's index among the shard's states, whose names are
//! `operator/state`.

pub mod harness;
pub mod kinds;
pub mod operator;

use std::cell::RefCell;
use std::hash::Hash;
use std::path::PathBuf;
use std::rc::Rc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use shardflow_state::{Store, StoreError, StoreOptions};

use crate::data::Data;
use crate::error::JobError;
use crate::key::{key_group_of_hash, key_hash};
use crate::time::ProcessingClock;

pub use harness::KeyedStateHarness;
pub use kinds::{
    AggregatingState, AggregatingStateDescriptor, ListState, ListStateDescriptor, MapState,
    MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateTtlConfig, TtlUpdate,
    TtlVisibility, ValueState, ValueStateDescriptor,
};
pub use operator::{OperatorStateStore, Redistribution, redistribute};

/// The bytes of cached values (and timers) a shard's states may hold together, and hold now
/// (an estimate: see `KeyedTable`). Every operator's backend on the shard shares one.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: std::cell::Cell<usize>,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(Self {
            limit,
            used: std::cell::Cell::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    #[inline]
    pub(crate) fn add(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    /// Takes `n` back (never below zero: the count is an estimate).
    #[inline]
    pub(crate) fn sub(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }

    pub(crate) fn set(&self, n: usize) {
        self.used.set(n);
    }
}

/// One operator's state on one shard: its own store (opened when a value is first written to
/// it), the shard's memory budget, and its states' names. Cloning shares it.
///
/// A store per operator and shard, as Flink keeps a RocksDB instance per keyed operator and
/// subtask: an operator's snapshot at a checkpoint barrier is its store alone, taken when the
/// barrier reaches that operator, whatever the shard's other operators (in other tasks, before
/// or past the barrier) have written since.
#[derive(Clone)]
pub struct StateBackend {
    pub(crate) inner: Rc<RefCell<Backend>>,
}

/// A shard's states: a backend per operator, all sharing the shard's memory budget.
#[derive(Clone)]
pub struct ShardState {
    inner: Rc<ShardStateInner>,
}

struct ShardStateInner {
    /// None: no stores (every value stays cached).
    dir: Option<PathBuf>,
    budget: Rc<MemoryBudget>,
    shard: u32,
    max_parallelism: u32,
    clock: ProcessingClock,
}

impl ShardState {
    /// The states of shard `shard`, with their stores under `dir` and `budget` bytes of cached
    /// values between them.
    pub fn new(
        dir: PathBuf,
        budget: usize,
        shard: u32,
        max_parallelism: u32,
        clock: ProcessingClock,
    ) -> Self {
        Self::make(Some(dir), budget, shard, max_parallelism, clock)
    }

    /// States without stores: every value stays cached.
    pub fn in_memory() -> Self {
        Self::make(
            None,
            usize::MAX,
            0,
            crate::key::MAX_PARALLELISM_DEFAULT,
            ProcessingClock::System,
        )
    }

    fn make(
        dir: Option<PathBuf>,
        budget: usize,
        shard: u32,
        max_parallelism: u32,
        clock: ProcessingClock,
    ) -> Self {
        Self {
            inner: Rc::new(ShardStateInner {
                dir,
                budget: MemoryBudget::new(budget),
                shard,
                max_parallelism,
                clock,
            }),
        }
    }

    /// The backend of operator `node` (named `operator`), its store in a directory of its own.
    pub fn backend(&self, node: u32, operator: &str) -> StateBackend {
        let i = &self.inner;
        let name: String = operator
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = i.dir.as_ref().map(|d| d.join(format!("op-{node}-{name}")));
        StateBackend::make(
            dir,
            i.budget.clone(),
            i.shard,
            i.max_parallelism,
            i.clock.clone(),
        )
    }

    /// The shard's memory budget.
    pub fn budget(&self) -> &Rc<MemoryBudget> {
        &self.inner.budget
    }
}

/// Each earlier shard's checkpointed segments, `(name, file)`, by shard.
type EarlierSegments = Vec<(u32, Vec<(String, PathBuf)>)>;

pub(crate) struct Backend {
    /// Where the shard's store lives (None: nowhere; the budget is then unlimited).
    dir: Option<PathBuf>,
    store: Option<Store>,
    /// The shard's memory budget (shared with its other operators' backends).
    pub(crate) budget: Rc<MemoryBudget>,
    max_parallelism: u32,
    shard: u32,
    names: Vec<String>,
    /// The first store error: tables cannot return errors from their lookups, so the operator
    /// asks after each batch ([`StateBackend::check`]).
    error: Option<JobError>,
    /// Buffers for serializing a namespace, a key and a value, and for aligning bytes read.
    bufs: [AlignedVec<16>; 3],
    aligned: AlignedVec<16>,
    /// Values written to the store and read back from it, for the job's metrics.
    pub(crate) spilled: u64,
    pub(crate) loaded: u64,
    /// Per state id: its time to live and how to find a stored value's stamp, for states with
    /// one (compaction drops their expired values).
    ttls: Vec<Option<(i64, StampOf)>>,
    /// Sealed segments the store had after the last write: a new one may call for compaction.
    segments_seen: usize,
    /// Segments sealed since the last full compaction.
    sealed_since_full: usize,
    /// Processing time, for TTL.
    clock: ProcessingClock,
    /// Values compaction dropped as expired.
    pub(crate) expired: u64,
    /// The store was restored from a checkpoint: it may hold values of every state.
    restored: bool,
    /// Restored from a checkpoint taken at another parallelism: the key groups this store
    /// keeps, and each earlier shard's segments (timer queues read those whole and keep their
    /// timers of these key groups).
    rescaled: Option<(crate::key::KeyGroupRange, EarlierSegments)>,
}

/// Reads the stamp of a stored `(value, stamp)` (None: it does not decode; kept).
type StampOf = fn(&mut AlignedVec<16>, &[u8]) -> Option<i64>;

fn stamp_of<X: Data>(aligned: &mut AlignedVec<16>, bytes: &[u8]) -> Option<i64> {
    decode::<(X, i64)>(aligned, bytes).ok().map(|v| v.1)
}

impl StateBackend {
    /// A backend with its store in `dir` (created when first needed) and `budget` bytes of
    /// cached values.
    pub fn new(
        dir: PathBuf,
        budget: usize,
        shard: u32,
        max_parallelism: u32,
        clock: ProcessingClock,
    ) -> Self {
        Self::make(
            Some(dir),
            MemoryBudget::new(budget),
            shard,
            max_parallelism,
            clock,
        )
    }

    /// A backend without a store: every value stays cached (tests, operators outside a job).
    pub fn in_memory() -> Self {
        Self::make(
            None,
            MemoryBudget::new(usize::MAX),
            0,
            crate::key::MAX_PARALLELISM_DEFAULT,
            ProcessingClock::System,
        )
    }

    fn make(
        dir: Option<PathBuf>,
        budget: Rc<MemoryBudget>,
        shard: u32,
        max_parallelism: u32,
        clock: ProcessingClock,
    ) -> Self {
        Self {
            inner: Rc::new(RefCell::new(Backend {
                dir,
                store: None,
                budget,
                max_parallelism,
                shard,
                names: Vec::new(),
                error: None,
                bufs: Default::default(),
                aligned: AlignedVec::new(),
                spilled: 0,
                loaded: 0,
                ttls: Vec::new(),
                segments_seen: 0,
                sealed_since_full: 0,
                clock,
                expired: 0,
                restored: false,
                rescaled: None,
            })),
        }
    }

    /// Registers a state by name (`operator/state`); returns its id. A name registered twice
    /// is an error: two states of one operator must not share entries.
    pub fn register(&self, name: String) -> Result<u32, JobError> {
        let mut b = self.inner.borrow_mut();
        if b.names.contains(&name) {
            return Err(JobError::Config(format!(
                "state '{name}' is declared twice on shard {}",
                b.shard
            )));
        }
        b.names.push(name);
        Ok(b.names.len() as u32 - 1)
    }

    /// Says that state `name` (registered) keeps `(X, stamp)` values that expire `ttl_ms` after
    /// their stamp: compaction drops them.
    pub fn expire_in_compaction<X: Data>(&self, name: &str, ttl_ms: i64) {
        let mut b = self.inner.borrow_mut();
        if let Some(id) = b.names.iter().position(|n| n == name) {
            if b.ttls.len() <= id {
                b.ttls.resize(id + 1, None);
            }
            b.ttls[id] = Some((ttl_ms, stamp_of::<X>));
        }
    }

    /// Values compaction dropped as expired so far.
    pub fn expired_count(&self) -> u64 {
        self.inner.borrow().expired
    }

    /// Seals the store's active segment and compacts every sealed one, dropping expired values
    /// (the store also compacts by itself after a write that sealed a segment).
    pub fn compact_now(&self) -> Result<(), JobError> {
        let mut b = self.inner.borrow_mut();
        if let Some(store) = b.store.as_mut() {
            let r = store.seal();
            r.map_err(|e| b.state_error("cannot seal the state store", e))?;
            b.compact(true)?;
        }
        Ok(())
    }

    /// The first store error since the last call (the operator fails with it).
    pub fn check(&self) -> Result<(), JobError> {
        match self.inner.borrow_mut().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Bytes of cached values (an estimate) and the budget.
    pub fn memory(&self) -> (usize, usize) {
        let b = self.inner.borrow();
        (b.budget.used(), b.budget.limit())
    }

    /// Values written to the store and values read back from it so far.
    pub fn spill_counts(&self) -> (u64, u64) {
        let b = self.inner.borrow();
        (b.spilled, b.loaded)
    }

    /// The store as immutable files for a checkpoint ([`Store::snapshot`]); none if nothing
    /// was ever written to it.
    pub fn snapshot(&self) -> Result<Vec<shardflow_state::SegmentHandle>, JobError> {
        let mut b = self.inner.borrow_mut();
        let b = &mut *b;
        let Some(store) = b.store.as_mut() else {
            return Ok(Vec::new());
        };
        let r = store.snapshot();
        r.map_err(|e| b.state_error("cannot snapshot the state store", e))
    }

    /// The synchronous half of a snapshot ([`Store::snapshot_async`]): the store's active
    /// segment frozen, the rest to be finished on another thread. None if nothing was ever
    /// written to it.
    pub fn snapshot_async(&self) -> Result<Option<shardflow_state::AsyncSnapshot>, JobError> {
        let mut b = self.inner.borrow_mut();
        let b = &mut *b;
        let Some(store) = b.store.as_mut() else {
            return Ok(None);
        };
        let r = store.snapshot_async();
        r.map(Some)
            .map_err(|e| b.state_error("cannot snapshot the state store", e))
    }

    /// Makes the store the checkpointed `segments` (each `(name, file)`), before any state is
    /// declared: tables and timers then find their values there.
    pub fn restore(&self, segments: &[(String, PathBuf)]) -> Result<(), JobError> {
        let mut b = self.inner.borrow_mut();
        let Some(dir) = b.dir.clone() else {
            return Err(JobError::Config(
                "a state without a store cannot be restored".into(),
            ));
        };
        let store = Store::restore(dir, working_store_options(), segments, &|_| true)
            .map_err(|e| b.state_error("cannot restore the state store", e))?;
        b.segments_seen = store.segments();
        b.store = Some(store);
        b.restored = true;
        Ok(())
    }

    /// Makes the store the segments of the earlier shards whose key groups overlap `keep`, a
    /// checkpoint taken at another parallelism: only entries of `keep`'s key groups are
    /// indexed (rescaling). Before any state is declared.
    pub fn restore_rescaled(
        &self,
        keep: crate::key::KeyGroupRange,
        shards: Vec<(u32, Vec<(String, PathBuf)>)>,
    ) -> Result<(), JobError> {
        let mut b = self.inner.borrow_mut();
        let Some(dir) = b.dir.clone() else {
            return Err(JobError::Config(
                "a state without a store cannot be restored".into(),
            ));
        };
        let all: Vec<(String, PathBuf)> = shards.iter().flat_map(|s| s.1.clone()).collect();
        let store = Store::restore(dir, working_store_options(), &all, &|g| {
            keep.contains(g as u32)
        })
        .map_err(|e| b.state_error("cannot restore the state store", e))?;
        b.segments_seen = store.segments();
        b.store = Some(store);
        b.restored = true;
        b.rescaled = Some((keep, shards));
        Ok(())
    }

    /// For a store restored at another parallelism: each earlier shard's whole store (every
    /// key group), read-only in a directory beside this one, with this store's state names,
    /// and the key groups this store keeps. Empty otherwise.
    pub(crate) fn earlier_shards(
        &self,
    ) -> Result<Option<(crate::key::KeyGroupRange, Vec<StateBackend>)>, JobError> {
        let b = self.inner.borrow();
        let (Some((keep, shards)), Some(dir)) = (&b.rescaled, &b.dir) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(shards.len());
        for (shard, segments) in shards {
            let old = Self::make(
                Some(dir.with_extension(format!("earlier-{shard}"))),
                MemoryBudget::new(usize::MAX),
                *shard,
                b.max_parallelism,
                b.clock.clone(),
            );
            old.restore(segments)?;
            old.inner.borrow_mut().names = b.names.clone();
            out.push(old);
        }
        Ok(Some((*keep, out)))
    }

    /// Removes the directory of an earlier shard's store opened by `earlier_shards`.
    pub(crate) fn remove(self) {
        let dir = self.inner.borrow_mut().dir.take();
        self.inner.borrow_mut().store = None;
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// The key group of `key` in this backend's store.
    pub(crate) fn key_group_of<K: Hash>(&self, key: &K) -> u32 {
        self.inner.borrow().key_group(key) as u32
    }

    /// Whether the store was restored from a checkpoint.
    pub fn is_restored(&self) -> bool {
        self.inner.borrow().restored
    }

    /// Keys in the store (0 if it was never opened).
    pub fn stored_keys(&self) -> usize {
        self.inner.borrow().store.as_ref().map_or(0, Store::len)
    }
}

/// A running job's working store: a crash loses it anyway (the job resumes from a checkpoint,
/// whose snapshot syncs what it keeps), so it keeps no log of its active segment and sealing
/// does not wait for the disk.
fn working_store_options() -> StoreOptions {
    StoreOptions {
        sync: false,
        log: false,
        ..StoreOptions::default()
    }
}

impl Backend {
    fn store(&mut self) -> Result<&mut Store, JobError> {
        if self.store.is_none() {
            let Some(dir) = &self.dir else {
                return Err(JobError::Config(
                    "state outgrew its memory budget, and this backend has no store".into(),
                ));
            };
            let store = Store::open(dir.clone(), working_store_options())
                .map_err(|e| self.state_error("cannot open the state store", e))?;
            self.store = Some(store);
        }
        Ok(self.store.as_mut().expect("opened above"))
    }

    pub(crate) fn state_error(&self, what: &str, e: impl std::fmt::Display) -> JobError {
        JobError::State {
            shard: self.shard,
            message: format!("{what}: {e}"),
        }
    }

    /// Keeps the first error for [`StateBackend::check`].
    pub(crate) fn fail(&mut self, e: JobError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn key_group<K: Hash>(&self, key: &K) -> u16 {
        key_group_of_hash(key_hash(key), self.max_parallelism) as u16
    }

    /// Serializes `x` into buffer `i` (taken out and put back, so its capacity is reused).
    fn serialize<T: Data>(&mut self, i: usize, x: &T) -> Result<(), JobError> {
        let mut buf = std::mem::take(&mut self.bufs[i]);
        buf.clear();
        match rkyv::api::high::to_bytes_in::<_, rancor::Error>(x, buf) {
            Ok(b) => {
                self.bufs[i] = b;
                Ok(())
            }
            Err(e) => Err(self.state_error("cannot serialize a state value", e)),
        }
    }

    /// Serializes the namespace (after the state id) and the key into buffers 0 and 1.
    fn serialize_location<K: Data, N: Data>(
        &mut self,
        id: u32,
        key: &K,
        namespace: &N,
    ) -> Result<(), JobError> {
        self.serialize(0, namespace)?;
        self.serialize(1, key)?;
        let ns = &mut self.bufs[0];
        // The id goes first so that one state's entries share a namespace prefix.
        let len = ns.len();
        ns.extend_from_slice(&[0; 4]);
        ns.copy_within(0..len, 4);
        ns[..4].copy_from_slice(&id.to_be_bytes());
        Ok(())
    }

    /// Runs `f` on the store with the key group, namespace and key bytes of (key, namespace) of
    /// state `id` (and the value buffer); a store error becomes the state error `what`.
    fn at_location<K: Data + Hash, N: Data, R>(
        &mut self,
        id: u32,
        key: &K,
        namespace: &N,
        what: &str,
        f: impl FnOnce(&mut Store, u16, &[u8], &[u8], &[u8]) -> Result<R, StoreError>,
    ) -> Result<R, JobError> {
        self.serialize_location(id, key, namespace)?;
        let kg = self.key_group(key);
        self.store()?;
        let Backend { store, bufs, .. } = self;
        let r = f(
            store.as_mut().expect("opened"),
            kg,
            &bufs[0],
            &bufs[1],
            &bufs[2],
        );
        r.map_err(|e| self.state_error(what, e))
    }

    /// Writes (key, namespace) → value of state `id` to the store; returns the value's bytes.
    pub(crate) fn put<K: Data + Hash, N: Data, V: Data>(
        &mut self,
        id: u32,
        key: &K,
        namespace: &N,
        value: &V,
    ) -> Result<usize, JobError> {
        self.serialize(2, value)?;
        self.at_location(
            id,
            key,
            namespace,
            "cannot write a state value",
            |s, kg, n, k, v| s.put(kg, n, k, v),
        )?;
        self.spilled += 1;
        let segments = self.store.as_ref().map_or(0, Store::segments);
        if segments > self.segments_seen {
            // Every fourth segment, a full compaction: values that expired stay live in the
            // index until rewritten, so segments full of them would never fall below the ratio.
            self.sealed_since_full += 1;
            let full = self.sealed_since_full >= 4 && self.ttls.iter().any(Option::is_some);
            if full {
                self.sealed_since_full = 0;
            }
            self.compact(full)?;
        }
        Ok(self.bufs[2].len())
    }

    /// Rewrites the sealed segments below the live ratio, dropping expired values of states
    /// with a TTL.
    fn compact(&mut self, full: bool) -> Result<(), JobError> {
        let now = self.clock.now_ms();
        let Backend {
            store,
            ttls,
            aligned,
            ..
        } = self;
        let Some(store) = store.as_mut() else {
            return Ok(());
        };
        let r = store.compact_expiring(full, |ns, value| {
            let id = u32::from_be_bytes([ns[0], ns[1], ns[2], ns[3]]) as usize;
            match ttls.get(id) {
                Some(Some((ttl, stamp))) => {
                    stamp(aligned, value).is_some_and(|s| now.saturating_sub(s) >= *ttl)
                }
                _ => false,
            }
        });
        self.segments_seen = store.segments();
        match r {
            Ok((_, expired)) => {
                self.expired += expired;
                Ok(())
            }
            Err(e) => Err(self.state_error("cannot compact the state store", e)),
        }
    }

    /// Reads the value of (key, namespace) of state `id` from the store.
    pub(crate) fn get<K: Data + Hash, N: Data, V: Data>(
        &mut self,
        id: u32,
        key: &K,
        namespace: &N,
    ) -> Result<Option<V>, JobError> {
        self.serialize_location(id, key, namespace)?;
        let kg = self.key_group(key);
        self.store()?;
        let Backend {
            store,
            bufs,
            aligned,
            ..
        } = self;
        let Some(bytes) = store.as_ref().expect("opened").get(kg, &bufs[0], &bufs[1]) else {
            return Ok(None);
        };
        self.loaded += 1;
        decode::<V>(aligned, bytes).map(Some).map_err(|e| {
            let name = &self.names[id as usize];
            self.state_error(
                &format!("state '{name}', key group {kg}: a stored value does not decode"),
                e,
            )
        })
    }

    /// Deletes (key, namespace) of state `id` from the store.
    pub(crate) fn delete<K: Data + Hash, N: Data>(
        &mut self,
        id: u32,
        key: &K,
        namespace: &N,
    ) -> Result<(), JobError> {
        self.at_location(
            id,
            key,
            namespace,
            "cannot delete a state value",
            |s, kg, n, k, _| s.delete(kg, n, k),
        )
    }

    /// Every stored entry of state `id` (of `namespace` only, if given), removed from the store.
    pub(crate) fn take_all<K: Data + Hash, N: Data, V: Data>(
        &mut self,
        id: u32,
        namespace: Option<&N>,
    ) -> Result<Vec<(K, N, V)>, JobError> {
        let prefix = match namespace {
            Some(n) => {
                self.serialize_location(id, &(), n)?;
                self.bufs[0].to_vec()
            }
            None => id.to_be_bytes().to_vec(),
        };
        let exact = namespace.is_some();
        self.store()?;
        let Backend { store, aligned, .. } = self;
        let store = store.as_mut().expect("opened");
        let mut out = Vec::new();
        let mut found = Vec::new();
        let mut failed = None;
        store.scan_namespaces(&prefix, |kg, ns, k, v| {
            if failed.is_some() || (exact && ns != prefix.as_slice()) {
                return;
            }
            let decoded = decode::<K>(aligned, k)
                .map_err(|e| (kg, "key", e))
                .and_then(|key| {
                    let n = decode::<N>(aligned, &ns[4..]).map_err(|e| (kg, "namespace", e))?;
                    let value = decode::<V>(aligned, v).map_err(|e| (kg, "value", e))?;
                    Ok((key, n, value))
                });
            match decoded {
                Ok(x) => {
                    out.push(x);
                    found.push((kg, ns.to_vec(), k.to_vec()));
                }
                Err(e) => failed = Some(e),
            }
        });
        let mut deleted = Ok(());
        for (kg, ns, k) in &found {
            deleted = store.delete(*kg, ns, k);
            if deleted.is_err() {
                break;
            }
        }
        if let Some((kg, what, e)) = failed {
            let name = &self.names[id as usize];
            return Err(self.state_error(
                &format!("state '{name}', key group {kg}: a stored {what} does not decode"),
                e,
            ));
        }
        deleted.map_err(|e| self.state_error("cannot delete a state value", e))?;
        self.loaded += out.len() as u64;
        Ok(out)
    }
}

/// Deserializes `bytes` (copied to an aligned buffer first: entries lie at any offset), with
/// rkyv's full check: they come from a file.
fn decode<T: Data>(aligned: &mut AlignedVec<16>, bytes: &[u8]) -> Result<T, rancor::Error> {
    aligned.clear();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(aligned)
}
