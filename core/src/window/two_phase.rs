//! Two-phase window aggregation (Flink SQL's local-global aggregation): each shard folds its
//! own records into partial accumulators per (key, window) before the exchange, and ships one
//! partial per (key, window) when its watermark passes the window's end; the shard that owns the
//! key merges the partials in the window operator.
//!
//! The exchange then carries partials instead of records: on the windows benchmark, a few
//! thousand per window instead of a million. The result is the same as one-phase aggregation:
//! the aggregate function's `merge` is associative, a window's partials all reach the window
//! before it fires (they travel in order ahead of the watermark that fires it), and a record that
//! comes after its shard shipped the window's partial becomes a partial of its own, which the
//! window operator treats as it would have treated the record (late or not, by its window).
//!
//! At a checkpoint barrier the first phase keeps its partials and snapshots them as operator
//! state (a list, split among the shards on a rescale: any shard may hold any partial, since
//! the exchange takes it to its key's owner when its window ends). Shipping them ahead of the
//! barrier instead (as Flink's local aggregation does before a snapshot) sends every open
//! window of every key across the exchange at each checkpoint and makes the second phase store
//! and later delete them; when event time runs far ahead of the watermark (a replay) that is
//! tens of windows per key, and the barrier queues behind them on the way to the other shards
//! (measured: alignment 100-200 ms of every checkpoint a second on the windows benchmark).
//!
//! For event-time, non-merging windows with the default trigger and no late output.

use std::hash::Hash;

use super::Window;
use super::assigners::{SingleWindow, WindowAssigner};
use super::functions::{AggregateFunction, WindowContext, WindowFunction};
use super::triggers::TimeTrigger;
use crate::data::Data;
use crate::error::JobError;
use crate::key::KeySelector;
use crate::keyed::KeyedTable;
use crate::operator::process::UserError;
use crate::operator::{
    Batch, BoxPush, Collector, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push, WATERMARK_MIN,
};

/// A partial aggregate: key, window, accumulator.
pub type Partial<K, W, A> = (K, W, A);

/// The first phase: partial accumulators per (key, window), shipped when the window ends.
pub struct WindowCombiner<T, KS: KeySelector<T>, WA: WindowAssigner<T>, A: AggregateFunction<T>> {
    key: KS,
    assigner: WA,
    agg: A,
    table: KeyedTable<KS::Key, WA::W, A::Acc>,
    watermark: i64,
    windows: Vec<WA::W>,
    single: SingleWindow<WA::W>,
    out: Batch<Partial<KS::Key, WA::W, A::Acc>>,
    down: BoxPush<Partial<KS::Key, WA::W, A::Acc>>,
    ctx: OperatorContext,
    /// The partials a checkpoint restored are in the table.
    opened: bool,
}

/// The operator state the partials are kept in.
const PARTIALS: &str = "partials";
/// Partials per element of the list (a rescale deals whole elements out).
const PARTIALS_PER_ELEMENT: usize = 4_096;

impl<T, KS, WA, A> WindowCombiner<T, KS, WA, A>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    KS::Key: Data,
    WA: WindowAssigner<T>,
    WA::W: Data,
    A: AggregateFunction<T>,
    A::Acc: Data,
{
    pub fn new(
        key: KS,
        assigner: WA,
        agg: A,
        down: BoxPush<Partial<KS::Key, WA::W, A::Acc>>,
        ctx: OperatorContext,
    ) -> Self {
        ctx.expect_checkpoints();
        Self {
            key,
            assigner,
            agg,
            table: KeyedTable::by_namespace(),
            watermark: WATERMARK_MIN,
            windows: Vec::new(),
            single: SingleWindow::default(),
            out: Batch::new(),
            down,
            ctx,
            opened: false,
        }
    }

    /// Takes up the partials a checkpoint kept (after a rescale, a share of every earlier
    /// shard's: two of them may hold the same key and window, and merge).
    fn open(&mut self) -> Result<(), JobError> {
        if self.opened {
            return Ok(());
        }
        self.opened = true;
        let mut state = crate::checkpoint::restored_operator_state(&self.ctx)?;
        if !state.is_restored() {
            return Ok(());
        }
        let agg = &self.agg;
        for chunk in state
            .list_state::<Vec<Partial<KS::Key, WA::W, A::Acc>>>(PARTIALS)?
            .drain(..)
        {
            for (k, w, acc) in chunk {
                let (into, made) = self.table.get_or_insert_with(&k, &w, || acc.clone());
                if !made {
                    agg.merge(into, acc);
                }
            }
        }
        Ok(())
    }

    /// The partials held, as the bytes of the operator state.
    fn snapshot_bytes(&mut self) -> Result<Vec<u8>, JobError> {
        let mut state = crate::state::OperatorStateStore::default();
        let list = state.list_state::<Vec<Partial<KS::Key, WA::W, A::Acc>>>(PARTIALS)?;
        let mut chunk = Vec::new();
        self.table.for_each(|k, w, acc| {
            if chunk.len() == PARTIALS_PER_ELEMENT {
                list.push(std::mem::take(&mut chunk));
            }
            chunk.push((k.clone(), w.clone(), acc.clone()));
        });
        if !chunk.is_empty() {
            list.push(chunk);
        }
        state.to_bytes()
    }

    fn emit(&mut self) -> Result<(), JobError> {
        if !self.out.is_empty() {
            self.ctx.counters.add_out(self.out.len());
            self.down.push(&mut self.out)?;
            self.ctx.enter();
        }
        Ok(())
    }

    #[inline]
    fn add(&mut self, key: &KS::Key, w: &WA::W, x: T) {
        if w.max_timestamp() <= self.watermark {
            // Its window was shipped already: the record goes on as a partial of its own.
            let mut acc = self.agg.create_accumulator();
            self.agg.add(&mut acc, x);
            let ts = w.max_timestamp();
            self.out.push((key.clone(), w.clone(), acc), Some(ts));
            return;
        }
        let agg = &self.agg;
        let (acc, _) = self
            .table
            .get_or_insert_with(key, w, || agg.create_accumulator());
        agg.add(acc, x);
    }
}

impl<T, KS, WA, A> Push<T> for WindowCombiner<T, KS, WA, A>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    KS::Key: Data,
    WA: WindowAssigner<T>,
    WA::W: Data,
    A: AggregateFunction<T>,
    A::Acc: Data,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.open()?;
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        if !batch.is_timed() && !batch.is_empty() {
            batch.clear();
            return Err(self.ctx.error(super::NO_TIMESTAMPS));
        }
        for (x, ts) in batch.drain() {
            let key = self.key.with_key(&x, Clone::clone);
            if let Some(single) = self.single.find(&self.assigner, &x, ts, 0) {
                if let Some(w) = single {
                    self.add(&key, &w, x);
                }
            } else {
                let mut windows = std::mem::take(&mut self.windows);
                windows.clear();
                self.assigner.assign(&x, ts, 0, &mut windows);
                if let Some((last, rest)) = windows.split_last() {
                    for w in rest {
                        self.add(&key, w, x.clone());
                    }
                    self.add(&key, last, x);
                }
                self.windows = windows;
            }
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
            }
        }
        self.emit()
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.open()?;
        self.watermark = watermark;
        // Ship the partials of every window that ended, before the watermark that fires it.
        let mut ended: Vec<WA::W> = self
            .table
            .namespaces()
            .into_iter()
            .filter(|w| w.max_timestamp() <= watermark)
            .collect();
        ended.sort_by_key(|w| w.max_timestamp());
        for w in ended {
            let ts = w.max_timestamp();
            let out = &mut self.out;
            self.table
                .drain_namespace(&w, |k, acc| out.push((k, w.clone(), acc), Some(ts)));
            self.emit()?;
        }
        self.down.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.down.watermark_status(idle)
    }

    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.open()?;
        self.emit()?;
        // Partials that cannot be archived abort the checkpoint, not the job.
        match self.snapshot_bytes() {
            Ok(bytes) => self.ctx.snapshot(barrier, bytes)?,
            Err(e) => self.ctx.decline(barrier, e.to_string()),
        }
        self.down.barrier(barrier)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.down.tick(now_ms)
    }

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.down.poll_ready(cx)
    }

    fn flush(&mut self) -> Result<(), JobError> {
        self.down.flush()
    }

    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.down.poll_flush(cx)
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.open()?;
        // The end of event time came first and shipped every partial.
        debug_assert!(self.table.is_empty());
        if self.ctx.checkpoints.is_some() {
            let bytes = self.snapshot_bytes()?;
            self.ctx.final_snapshot(bytes)?;
        }
        self.down.finish()
    }
}

/// The second phase's assigner: a partial belongs to the window it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartialWindows;

impl<K: 'static, W: Window, A: 'static> WindowAssigner<Partial<K, W, A>> for PartialWindows {
    type W = W;
    type DefaultTrigger = TimeTrigger;

    fn default_trigger(&self) -> TimeTrigger {
        TimeTrigger { event_time: true }
    }

    fn assign(&self, p: &Partial<K, W, A>, _ts: Option<i64>, _now: i64, out: &mut Vec<W>) {
        out.push(p.1.clone());
    }

    #[inline]
    fn assign_single(
        &self,
        p: &Partial<K, W, A>,
        _ts: Option<i64>,
        _now: i64,
    ) -> Option<Option<W>> {
        Some(Some(p.1.clone()))
    }

    fn is_event_time(&self) -> bool {
        true
    }
}

/// The second phase's window function: merges partials, emits the aggregate's result. `T` is
/// the record type the aggregate function was written for.
pub struct MergePartials<A, T>(pub A, pub std::marker::PhantomData<fn(T)>);

impl<A, T> MergePartials<A, T> {
    pub fn new(agg: A) -> Self {
        Self(agg, std::marker::PhantomData)
    }
}

impl<A: Clone, T> Clone for MergePartials<A, T> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<K, T, W, A> WindowFunction<K, Partial<K, W, A::Acc>, W> for MergePartials<A, T>
where
    K: Hash + Eq + Clone + 'static,
    T: 'static,
    W: Window,
    A: AggregateFunction<T>,
{
    type Acc = A::Acc;
    type Out = A::Out;

    fn create(&mut self) -> A::Acc {
        self.0.create_accumulator()
    }
    #[inline]
    fn add(&mut self, acc: &mut A::Acc, p: Partial<K, W, A::Acc>, _ts: Option<i64>) {
        self.0.merge(acc, p.2)
    }
    fn merge(&mut self, into: &mut A::Acc, from: A::Acc) {
        self.0.merge(into, from)
    }
    fn emit(
        &mut self,
        _key: &K,
        _ctx: &WindowContext<W>,
        acc: &mut A::Acc,
        out: &mut Collector<A::Out>,
    ) -> Result<(), UserError> {
        out.collect(self.0.result(acc));
        Ok(())
    }
}
