//! Operators and the interface that chains them.
//!
//! Inside a chain, operators hand each other batches of plain Rust values: `push(&mut Batch<T>)`.
//! The call is dynamic once per batch (about a thousand records), and the loop over the batch
//! inside each operator is monomorphic, so the per-record cost is the user's function and a move.
//! A chain ends in a sink, an exchange writer, or a fan-out to several of them.
//!
//! Event time rides beside the records: a batch carries one timestamp per record in a parallel
//! vector, or none at all for a stream that has no timestamps (then the lane costs nothing).
//! Watermarks travel down the chain between batches (`watermark`), in order with the data.
//!
//! Flow control follows the shape of a futures `Sink`: `poll_ready` (may I push more?),
//! `push`, `flush` (my input is idle: ship partial batches), `poll_flush` (has everything been
//! shipped?), and `finish` (end of input: emit final results, then end-of-input downstream).
//! Only exchanges ever say "not ready"; every other operator forwards the question.

/// The flow-control methods of an operator that has nothing of its own to ship: it forwards
/// `poll_ready`, `flush` and `poll_flush` to `self.down`.
macro_rules! forward_flow_control {
    () => {
        forward_flow_control!(except_barrier);
        fn barrier(
            &mut self,
            barrier: crate::checkpoint::Barrier,
        ) -> Result<(), crate::error::JobError> {
            self.down.barrier(barrier)
        }
    };
    (except_barrier) => {
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), crate::error::JobError>> {
            self.down.poll_ready(cx)
        }
        fn flush(&mut self) -> Result<(), crate::error::JobError> {
            self.down.flush()
        }
        fn poll_flush(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), crate::error::JobError>> {
            self.down.poll_flush(cx)
        }
        fn watermark(&mut self, watermark: i64) -> Result<(), crate::error::JobError> {
            self.down.watermark(watermark)
        }
        fn tick(&mut self, now_ms: i64) -> Result<(), crate::error::JobError> {
            self.down.tick(now_ms)
        }
        fn watermark_status(&mut self, idle: bool) -> Result<(), crate::error::JobError> {
            self.down.watermark_status(idle)
        }
    };
}

/// The flow-control methods of an operator with side outputs (`self.side`, a
/// [`SideOutputSet`]) and nothing of its own to ship: every question goes to the main output and
/// to each side output.
macro_rules! forward_flow_control_with_side {
    () => {
        forward_flow_control_with_side!(except_barrier);
        fn barrier(
            &mut self,
            barrier: crate::checkpoint::Barrier,
        ) -> Result<(), crate::error::JobError> {
            self.side.barrier(barrier)?;
            self.down.barrier(barrier)
        }
    };
    (except_barrier) => {
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), crate::error::JobError>> {
            match self.side.poll_ready(cx) {
                std::task::Poll::Ready(Ok(())) => self.down.poll_ready(cx),
                other => other,
            }
        }
        fn flush(&mut self) -> Result<(), crate::error::JobError> {
            self.side.flush()?;
            self.down.flush()
        }
        fn poll_flush(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), crate::error::JobError>> {
            match self.side.poll_flush(cx) {
                std::task::Poll::Ready(Ok(())) => self.down.poll_flush(cx),
                other => other,
            }
        }
        fn watermark(&mut self, watermark: i64) -> Result<(), crate::error::JobError> {
            self.side.watermark(watermark)?;
            self.down.watermark(watermark)
        }
        fn tick(&mut self, now_ms: i64) -> Result<(), crate::error::JobError> {
            self.side.tick(now_ms)?;
            self.down.tick(now_ms)
        }
        fn watermark_status(&mut self, idle: bool) -> Result<(), crate::error::JobError> {
            self.side.watermark_status(idle)?;
            self.down.watermark_status(idle)
        }
    };
}

pub mod fan_out;
pub mod filter;
pub mod flat_map;
pub mod map;
pub mod process;
pub mod reduce;
pub mod side;
pub mod sink;
pub mod two_input;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::config::{JobConfig, SchedulingMode};
use crate::error::JobError;
use crate::key::KeyGroupRange;

pub use fan_out::{Discard, FanOut, Forward, Shared};

/// The lowest watermark: nothing is known about event time yet.
pub const WATERMARK_MIN: i64 = i64::MIN;
/// The end of event time: every window and timer fires. Sent once, at the end of input.
pub const WATERMARK_MAX: i64 = i64::MAX;
pub use process::{Collector, ProcessFunction};
pub use side::{OutputTag, SideOutputSet};

/// The most records an operator collects before it pushes them on, whatever its input batch
/// expanded to (a `flat_map` of one line into a million words pushes many bounded batches).
pub const OUTPUT_BATCH_RECORDS_MAX: usize = 256;

/// A batch of records and, for a stream with event time, their timestamps.
///
/// `timestamps` is either empty (the stream has no timestamps) or exactly as long as `records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    pub records: Vec<T>,
    pub timestamps: Vec<i64>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Batch<T> {
    pub const fn new() -> Self {
        Self {
            records: Vec::new(),
            timestamps: Vec::new(),
        }
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            records: Vec::with_capacity(n),
            timestamps: Vec::new(),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the records carry timestamps (an empty batch says no).
    #[inline]
    pub fn is_timed(&self) -> bool {
        !self.timestamps.is_empty()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.timestamps.clear();
    }

    /// Appends a record with the timestamp it has (None: the stream has none). A batch that
    /// mixes the two gives the untimed records `i64::MIN`, as Flink gives a record with no
    /// timestamp `Long.MIN_VALUE`.
    #[inline(always)]
    pub fn push(&mut self, record: T, timestamp: Option<i64>) {
        match timestamp {
            None if self.timestamps.is_empty() => self.records.push(record),
            Some(ts) if self.timestamps.len() == self.records.len() => {
                self.records.push(record);
                self.timestamps.push(ts);
            }
            _ => self.push_mixed(record, timestamp),
        }
    }

    /// A record with a timestamp into a batch without, or the other way round.
    #[cold]
    fn push_mixed(&mut self, record: T, timestamp: Option<i64>) {
        self.timestamps.resize(self.records.len(), i64::MIN);
        self.timestamps.push(timestamp.unwrap_or(i64::MIN));
        self.records.push(record);
    }

    /// Whether records with timestamps (`timed`) or without can be appended with plain pushes
    /// to both lanes (or to the records alone).
    #[inline]
    pub fn takes(&self, timed: bool) -> bool {
        if timed {
            self.timestamps.len() == self.records.len()
        } else {
            self.timestamps.is_empty()
        }
    }

    /// Moves every record of `other` to the end of this batch, keeping both lanes aligned.
    pub fn append(&mut self, other: &mut Batch<T>) {
        if other.is_timed() || self.is_timed() {
            self.timestamps.resize(self.records.len(), i64::MIN);
            if other.is_timed() {
                self.timestamps.append(&mut other.timestamps);
            } else {
                self.timestamps
                    .resize(self.records.len() + other.records.len(), i64::MIN);
            }
        }
        self.records.append(&mut other.records);
        other.timestamps.clear();
    }

    /// Keeps the records `keep` accepts, with their timestamps, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        if !self.is_timed() {
            self.records.retain(keep);
            return;
        }
        let ts = &mut self.timestamps;
        let (mut read, mut write) = (0, 0);
        self.records.retain(|x| {
            let k = keep(x);
            if k {
                ts[write] = ts[read];
                write += 1;
            }
            read += 1;
            k
        });
        ts.truncate(write);
    }

    /// Takes every record and timestamp out, leaving the batch empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (T, Option<i64>)> + '_ {
        let timed = self.is_timed();
        let mut ts = self.timestamps.drain(..);
        self.records
            .drain(..)
            .map(move |x| (x, if timed { ts.next() } else { None }))
    }
}

/// The receiving end of a chain link.
pub trait Push<T> {
    /// Takes every record of `batch` (leaving it empty, its capacity kept for reuse).
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError>;

    /// Event time has reached `watermark`: no record with a timestamp at or below it follows
    /// (one that does is late). Watermarks only go forward; `i64::MAX` is the end of event time
    /// and comes before `finish`.
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError>;

    /// The input went idle (`true`: its watermark no longer holds event time back, as Flink's
    /// `WatermarkStatus.IDLE`) or became active again (`false`). Operators pass it on; unions and
    /// exchange readers leave idle inputs out of their minimum.
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError>;

    /// Processing time has reached `now_ms` (the job's clock): fire due processing-time timers.
    /// Called by the driving task at most once per timer resolution, only in jobs that have an
    /// operator acting on processing time.
    fn tick(&mut self, _now_ms: i64) -> Result<(), JobError> {
        Ok(())
    }

    /// Whether more may be pushed now. Pending registers the task to be woken when it may.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    /// The driving task's input is idle: hand on partial batches so no record waits.
    fn flush(&mut self) -> Result<(), JobError> {
        Ok(())
    }

    /// Ready once everything pushed so far has been shipped.
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    /// Checkpoint barrier: everything pushed before it belongs to checkpoint `barrier.id`,
    /// nothing after it. An operator emits what it holds back for output, hands its snapshot
    /// to the checkpoint if it keeps state ([`OperatorContext::snapshot`]), and passes the
    /// barrier on; one with several inputs passes it on once every input has delivered it.
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError>;

    /// End of input: emit final results and pass the end on. Nothing is pushed after this.
    fn finish(&mut self) -> Result<(), JobError>;
}

/// A boxed chain link.
pub type BoxPush<T> = Box<dyn Push<T>>;

/// Record counters of one operator on one shard, on their own cache lines so shards never share.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct OperatorCounters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Malformed records skipped (counted, never silently dropped).
    pub records_skipped: AtomicU64,
    /// Records that came after the watermark had closed their windows (dropped, or sent to a
    /// late side output; counted either way).
    pub records_late: AtomicU64,
    /// Keyed-state values evicted to the shard's store, and read back from it (a job whose
    /// state fits its memory budget has none).
    pub state_writes: AtomicU64,
    pub state_reads: AtomicU64,
    /// Timer records written to the store (timers beyond the memory budget).
    pub timers_spilled: AtomicU64,
}

impl OperatorCounters {
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    #[inline]
    pub fn add_late(&self, n: usize) {
        self.records_late.fetch_add(n as u64, Ordering::Relaxed);
    }
    #[inline]
    pub fn add_skipped(&self, n: usize) {
        self.records_skipped.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What a user function may know about where it runs.
#[derive(Debug, Clone)]
pub struct RuntimeContext {
    /// This shard's index, `0..parallelism`.
    pub shard: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// The key groups this shard owns.
    pub key_groups: KeyGroupRange,
    /// The operator's name in the job graph.
    pub operator: Arc<str>,
}

/// What an operator is built with on a shard.
#[derive(Clone)]
pub struct OperatorContext {
    pub runtime: RuntimeContext,
    pub config: Arc<JobConfig>,
    pub counters: Arc<OperatorCounters>,
    /// How often the driving task ticks the chain with processing time (None: never; the job
    /// has no operator acting on it).
    pub tick_resolution: Option<std::time::Duration>,
    /// This operator's keyed state on the shard (its own store; the shard's memory budget).
    pub state: crate::state::StateBackend,
    /// The operator's place in the job graph (names need not be unique; state names must).
    pub node: u32,
    /// The job's checkpoint coordinator, if it takes checkpoints.
    pub checkpoints: Option<Arc<crate::checkpoint::Coordinator>>,
    /// The operator state this operator handed to the checkpoint the job resumed from (its
    /// keyed state is in its restored store already).
    pub restored: Option<Arc<[u8]>>,
    /// The checkpoint the job resumed from, if it did.
    pub restored_from: Option<u64>,
    /// The checkpoint resumed from was taken at another parallelism: every earlier shard's
    /// state of this operator (`restored` is then None; its keyed state is in its store,
    /// re-split by key group).
    pub rescaled: Option<Arc<crate::checkpoint::Rescaled>>,
    /// The id its state is checkpointed under (its uid, or `name#k`; see
    /// `JobGraph::node_uids`).
    pub uid: Arc<str>,
}

thread_local! {
    /// The operator whose code this thread runs: named in the error if a user function panics.
    static CURRENT_OPERATOR: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// The operator that last entered user code on this thread (see [`OperatorContext::enter`]).
pub fn current_operator() -> Option<Arc<str>> {
    CURRENT_OPERATOR.with(|c| c.borrow().clone())
}

impl OperatorContext {
    /// Marks this operator as the one running user code on this thread, so that a panic is
    /// blamed on it. Called once per batch (two atomic reference-count updates).
    #[inline]
    pub fn enter(&self) {
        CURRENT_OPERATOR.with(|c| {
            let mut c = c.borrow_mut();
            if !c
                .as_ref()
                .is_some_and(|cur| Arc::ptr_eq(cur, &self.runtime.operator))
            {
                *c = Some(self.runtime.operator.clone());
            }
        });
    }

    /// Checks (in debug builds) that `key` belongs to a key group this shard owns: a keyed
    /// operator behind a `key_by` must never see another shard's key.
    #[inline]
    pub fn debug_assert_owns<K: std::hash::Hash + ?Sized>(&self, key: &K) {
        if cfg!(debug_assertions) {
            self.debug_assert_owns_hash(crate::key::key_hash(key));
        }
    }

    /// As [`debug_assert_owns`](Self::debug_assert_owns), from the key's stable hash.
    #[inline]
    pub fn debug_assert_owns_hash(&self, hash: u64) {
        if cfg!(debug_assertions) {
            let kg = crate::key::key_group_of_hash(hash, self.runtime.max_parallelism);
            assert!(
                self.runtime.key_groups.contains(kg),
                "operator '{}': key group {kg} reached shard {}, which owns {}",
                self.runtime.operator,
                self.runtime.shard,
                self.runtime.key_groups,
            );
        }
    }

    /// State `name` of this operator, backed by the shard's store: `table` with its entries
    /// under `<node>:<operator>/<name>`.
    pub fn keyed_state<K, N, V>(
        &self,
        name: &str,
        table: crate::keyed::KeyedTable<K, N, V>,
    ) -> Result<crate::keyed::KeyedTable<K, N, V>, JobError>
    where
        K: crate::Data + std::hash::Hash + Eq,
        N: crate::Data + std::hash::Hash + Eq,
        V: crate::Data,
    {
        let name = self.state_name(name);
        Ok(table
            .in_store(&self.state, name)?
            .counted(self.counters.clone()))
    }

    /// Timers of this operator, backed by the shard's store (under `<node>:<operator>/timers`).
    pub fn timer_service<K, N>(&self) -> Result<crate::keyed::TimerService<K, N>, JobError>
    where
        K: crate::Data + std::hash::Hash + Eq,
        N: crate::Data + std::hash::Hash + Eq,
    {
        Ok(crate::keyed::TimerService::default()
            .in_store(&self.state, &self.state_name("timers"))?
            .counted(self.counters.clone()))
    }

    /// Says that this operator hands a snapshot to every checkpoint (call it when built: the
    /// coordinator counts the acks it waits for).
    pub fn expect_checkpoints(&self) {
        if let Some(c) = &self.checkpoints {
            c.expect_ack();
        }
    }

    /// Hands this operator's snapshot for `barrier` to the checkpoint: its store sealed,
    /// synced and uploaded (the caller has written its cached changes to it first), and
    /// `state`, the bytes of its operator state. Nothing without checkpoints.
    pub fn snapshot(
        &self,
        barrier: crate::checkpoint::Barrier,
        state: Vec<u8>,
    ) -> Result<(), JobError> {
        let Some(c) = &self.checkpoints else {
            return Ok(());
        };
        c.note_alignment(barrier.id, barrier.alignment_us);
        // On the shard: the store's active segment is frozen (no sort, no copy, no write).
        // Off it: the frozen segment written and synced, the segments uploaded, the ack. A
        // snapshot that cannot be taken aborts its checkpoint, not the job.
        let frozen = match self.freeze(c) {
            Ok(f) => f,
            Err(e) => {
                self.decline(barrier, e.to_string());
                return Ok(());
            }
        };
        let c = c.clone();
        let what = self.describe();
        let snapshot = self.snapshot_of(state);
        crate::checkpoint::run_off_shard(Box::new(move || {
            let done = finish_snapshot(&c, frozen, snapshot, &format!("checkpoint {}", barrier.id))
                .and_then(|(snapshot, added, total)| c.ack(barrier.id, snapshot, added, total));
            if let Err(e) = done {
                c.decline(barrier.id, format!("{what}: {e}"));
            }
        }));
        Ok(())
    }

    /// This operator's input ended and it emitted all it will: its snapshot now (store and
    /// `state`) stands as its ack of every checkpoint it has not acked, so checkpoints go on
    /// while other shards or operators still run (Flink's checkpoints after tasks finished).
    /// Nothing without checkpoints; an error here fails the job (no later checkpoint could
    /// complete without it). It waits for the snapshot's file work (after any earlier
    /// snapshot's of the same store).
    pub fn final_snapshot(&self, state: Vec<u8>) -> Result<(), JobError> {
        let Some(c) = &self.checkpoints else {
            return Ok(());
        };
        let frozen = self.freeze(c)?;
        let snapshot = self.snapshot_of(state);
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        crate::checkpoint::run_off_shard(Box::new(move || {
            let _ = tx.send(finish_snapshot(&c2, frozen, snapshot, "the final snapshot"));
        }));
        let (snapshot, added, total) = rx
            .recv()
            .map_err(|_| self.error("the final snapshot was dropped"))??;
        c.finished(snapshot, added, total)
    }

    /// Freezes this operator's store for a snapshot, its segments kept from retention until
    /// the snapshot is acked or given up; None if it holds no live key (a store with none is
    /// empty whatever its segments hold: an operator whose windows all fired at the end
    /// deleted everything) or was never written.
    fn freeze(
        &self,
        c: &crate::checkpoint::Coordinator,
    ) -> Result<Option<shardflow_state::AsyncSnapshot>, JobError> {
        if self.state.stored_keys() == 0 {
            return Ok(None);
        }
        let frozen = self.state.snapshot_async()?;
        if let Some(f) = &frozen {
            c.protect(&f.names());
        }
        Ok(frozen)
    }

    /// This operator's snapshot with operator state `state` (its segments named later).
    fn snapshot_of(&self, state: Vec<u8>) -> crate::checkpoint::OperatorSnapshot {
        crate::checkpoint::OperatorSnapshot {
            node: self.node,
            operator: self.runtime.operator.to_string(),
            uid: self.uid.to_string(),
            shard: self.runtime.shard,
            segments: Vec::new(),
            state,
        }
    }

    fn describe(&self) -> String {
        format!(
            "operator '{}' on shard {}",
            self.runtime.operator, self.runtime.shard
        )
    }

    /// Aborts checkpoint `barrier` for a reason of this operator's (its snapshot failed).
    pub fn decline(&self, barrier: crate::checkpoint::Barrier, reason: String) {
        if let Some(c) = &self.checkpoints {
            let who = self.describe();
            // An operator error names the operator already.
            let reason = if reason.starts_with(&who) {
                reason
            } else {
                format!("{who}: {reason}")
            };
            c.decline(barrier.id, reason);
        }
    }

    /// The name state `name` of this operator has in the shard's store.
    pub fn state_name(&self, name: &str) -> String {
        format!("{}:{}/{name}", self.node, self.runtime.operator)
    }

    /// An error of this operator on this shard.
    pub fn error(&self, message: impl std::fmt::Display) -> JobError {
        JobError::Operator {
            operator: self.runtime.operator.to_string(),
            shard: self.runtime.shard,
            message: message.to_string(),
        }
    }
}

/// A snapshot's file work, off the shard: its frozen segment written, every segment synced,
/// opened and uploaded into the checkpoint storage; the snapshot with their names, the bytes
/// uploaded anew and the bytes of all of them.
fn finish_snapshot(
    c: &crate::checkpoint::Coordinator,
    frozen: Option<shardflow_state::AsyncSnapshot>,
    mut snapshot: crate::checkpoint::OperatorSnapshot,
    what: &str,
) -> Result<(crate::checkpoint::OperatorSnapshot, u64, u64), JobError> {
    let fail = |e: String| JobError::Operator {
        operator: snapshot.operator.clone(),
        shard: snapshot.shard,
        message: format!("{what}: {e}"),
    };
    let Some(frozen) = frozen else {
        return Ok((snapshot, 0, 0));
    };
    let names = frozen.names();
    let uploaded = frozen
        .finish()
        .map_err(|e| e.to_string())
        .and_then(|handles| {
            let (mut added, mut total) = (0, 0);
            for h in &handles {
                added += c.storage().upload(h).map_err(|e| e.to_string())?;
                total += h.bytes;
            }
            Ok((added, total))
        });
    match uploaded {
        Ok((added, total)) => {
            snapshot.segments = names;
            Ok((snapshot, added, total))
        }
        Err(e) => {
            // Given up: retention may take them again (an ack would have released them).
            c.unprotect(&names);
            Err(fail(e))
        }
    }
}

/// How long a task runs before it yields to the other tasks of its shard.
pub const TASK_SLICE: std::time::Duration = std::time::Duration::from_micros(500);

/// Cooperative yielding for long loops: a task that has run for [`TASK_SLICE`] yields once.
///
/// glommio's own `yield_if_needed` yields only when its preempt timer fires (every 100 ms by
/// default): a source that never waits would keep the reader beside it on the same shard waiting
/// that long. shardflow yields the task on its own clock instead, so every task of a shard gets
/// a turn at least every 500 µs. The clock is read every 8th batch.
pub struct Cooperate {
    since: std::time::Instant,
    ticks: u32,
}

impl Default for Cooperate {
    fn default() -> Self {
        Self::new()
    }
}

impl Cooperate {
    pub fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            ticks: 0,
        }
    }

    /// Yields if this task's slice is used up. The clock is read every 8th batch only (a
    /// batch takes microseconds; `clock_gettime` was 4% of a receiving shard's time when read
    /// on every one).
    pub async fn tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if !self.ticks.is_multiple_of(8) {
            return;
        }
        let now = std::time::Instant::now();
        if now.duration_since(self.since) >= TASK_SLICE {
            futures_lite::future::yield_now().await;
            self.since = std::time::Instant::now();
        }
    }
}

/// Waits until `poll` is ready, as the scheduling mode says: parked until woken (throughput),
/// or polling again after every cooperative yield (latency: no wake from another core is ever
/// needed, and the executor never parks).
pub async fn wait<R>(mode: SchedulingMode, mut poll: impl FnMut(&mut Context<'_>) -> Poll<R>) -> R {
    match mode {
        SchedulingMode::Throughput => std::future::poll_fn(poll).await,
        SchedulingMode::Latency => loop {
            if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(poll(cx))).await {
                return r;
            }
            futures_lite::future::yield_now().await;
        },
    }
}

/// Waits until `chain` may take more input: every task that drives a chain waits here before
/// each batch.
pub async fn ready<T>(chain: &mut dyn Push<T>, mode: SchedulingMode) -> Result<(), JobError> {
    wait(mode, |cx| chain.poll_ready(cx)).await
}

/// Waits until everything `chain` was given has been shipped.
pub async fn flushed<T>(chain: &mut dyn Push<T>, mode: SchedulingMode) -> Result<(), JobError> {
    wait(mode, |cx| chain.poll_flush(cx)).await
}

/// What a [`WatermarkValve`] hands downstream after an input's watermark or status changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ValveOutput {
    /// A new, higher watermark.
    pub watermark: Option<i64>,
    /// A new status: every input idle (`true`), or one active again after all were (`false`).
    pub status: Option<bool>,
}

/// The watermark of an operator with several inputs (a union, an exchange reader): the minimum
/// over its active inputs, never going back, as Flink's `StatusWatermarkValve`.
///
/// An idle input is left out of the minimum. When every input is idle the operator is idle too,
/// and its watermark moves to the highest of its inputs'.
/// An input active again whose watermark is behind the operator's joins the minimum only once it
/// has caught up, so the operator's watermark never goes back.
#[derive(Debug, Clone)]
pub struct WatermarkValve {
    watermarks: Vec<i64>,
    idle: Vec<bool>,
    /// The watermark handed down.
    current: i64,
    all_idle: bool,
}

impl WatermarkValve {
    pub fn new(inputs: usize) -> Self {
        Self {
            watermarks: vec![WATERMARK_MIN; inputs],
            idle: vec![false; inputs],
            current: WATERMARK_MIN,
            all_idle: false,
        }
    }

    /// The watermark handed down so far.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Input `i`'s watermark moved to `watermark`; a watermark also makes an idle input active.
    pub fn watermark(&mut self, i: usize, watermark: i64) -> ValveOutput {
        let mut out = ValveOutput::default();
        if self.idle[i] {
            out = self.status(i, false);
        }
        self.watermarks[i] = self.watermarks[i].max(watermark);
        out.watermark = self.advance();
        out
    }

    /// Input `i` went idle or became active.
    pub fn status(&mut self, i: usize, idle: bool) -> ValveOutput {
        let mut out = ValveOutput::default();
        if self.idle[i] == idle {
            return out;
        }
        self.idle[i] = idle;
        let all_idle = self.idle.iter().all(|&x| x);
        if all_idle != self.all_idle {
            self.all_idle = all_idle;
            out.status = Some(all_idle);
        }
        if all_idle {
            // Everything went quiet: event time is as far as the furthest input got (as
            // Flink's valve does), else the last input to go idle would take its progress with
            // it when the others went idle first.
            let max = self
                .watermarks
                .iter()
                .copied()
                .max()
                .unwrap_or(WATERMARK_MIN);
            if max > self.current {
                self.current = max;
                out.watermark = Some(max);
            }
        } else if idle {
            out.watermark = self.advance();
        }
        out
    }

    /// Input `i` is gone (end of input): it holds nothing back any more.
    pub fn remove(&mut self, i: usize) -> ValveOutput {
        self.watermark(i, WATERMARK_MAX)
    }

    fn advance(&mut self) -> Option<i64> {
        // Active inputs behind the current watermark (just active again) wait to catch up.
        let min = self
            .watermarks
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(&w, _)| w.max(self.current))
            .min()?;
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }
}

#[cfg(test)]
mod valve_tests {
    use super::*;

    #[test]
    fn the_valve_takes_the_minimum_of_active_inputs_and_never_goes_back() {
        let mut v = WatermarkValve::new(3);
        assert_eq!(v.watermark(0, 10).watermark, None);
        assert_eq!(v.watermark(1, 20).watermark, None);
        assert_eq!(v.watermark(2, 5).watermark, Some(5));
        // Input 2 goes idle: the minimum of the others.
        assert_eq!(
            v.status(2, true),
            ValveOutput {
                watermark: Some(10),
                status: None
            }
        );
        // Back, behind: it does not pull the watermark back, and holds it until it catches up.
        let out = v.watermark(2, 7);
        assert_eq!(
            out,
            ValveOutput {
                watermark: None,
                status: None
            }
        );
        assert_eq!(v.watermark(0, 30).watermark, None);
        assert_eq!(v.watermark(2, 25).watermark, Some(20));
        // All idle: the operator is idle, at the highest input's watermark; one back: active.
        assert_eq!(v.status(0, true).status, None);
        assert_eq!(v.status(1, true).status, None);
        assert_eq!(
            v.status(2, true),
            ValveOutput {
                watermark: Some(30),
                status: Some(true)
            }
        );
        assert_eq!(v.status(1, false).status, Some(false));
        assert_eq!(v.current(), 30);
        // An end counts as +inf: with the other inputs idle, event time is over (as in Flink, an
        // idle input that comes back now is all late).
        assert_eq!(v.remove(1).watermark, Some(WATERMARK_MAX));
        assert_eq!(v.status(0, false), ValveOutput::default());
        assert_eq!(v.remove(0), ValveOutput::default());
        // With every input active, the minimum waits for the last one.
        let mut v = WatermarkValve::new(2);
        assert_eq!(v.remove(0).watermark, None);
        assert_eq!(v.watermark(1, 3).watermark, Some(3));
        assert_eq!(v.remove(1).watermark, Some(WATERMARK_MAX));
    }
}
