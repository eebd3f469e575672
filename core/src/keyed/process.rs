//! `KeyedStream::process`: a function of each record with its key's state and timers, as
//! Flink's `KeyedProcessFunction`.
//!
//! Per key, the function keeps a value of its `State` type (a struct of whatever it needs: a
//! count, a list, a map) and may register event-time and processing-time timers; `on_timer` is
//! called with the key's state when a timer fires. Timers fire once each, in timestamp order:
//! event-time timers when the watermark passes them (all of them at end of input),
//! processing-time timers when the job's clock does (those still pending when a bounded input
//! ends do not fire: the job ends with its input, as in Flink).

use super::{KeyedTable, TimerService, VoidNamespace};
use crate::error::JobError;
use crate::key::KeySelector;
use crate::operator::process::UserError;
use crate::operator::{
    Batch, BoxPush, Collector, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push, RuntimeContext,
    SideOutputSet, WATERMARK_MIN,
};
use crate::state::kinds::{KeyedOpenContext, StateRegistry};
use crate::time::ProcessingClock;

/// Which clock a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// What a keyed function sees of its key, its state, time and timers.
pub struct KeyedContext<'a, K, S> {
    pub(crate) key: &'a K,
    pub(crate) timestamp: Option<i64>,
    pub(crate) watermark: i64,
    pub(crate) clock: &'a ProcessingClock,
    pub(crate) state: &'a mut KeyedTable<K, VoidNamespace, S>,
    pub(crate) timers: &'a mut TimerService<K, VoidNamespace>,
    pub(crate) runtime: &'a RuntimeContext,
    pub(crate) domain: Option<TimeDomain>,
    /// The states the function declared in `open` (see [`crate::state::kinds`]).
    pub(crate) states: &'a mut StateRegistry<K>,
}

impl<'a, K: std::hash::Hash + Eq + Clone, S> KeyedContext<'a, K, S> {
    /// The key of the record (or timer) being processed.
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// The record's timestamp (or the firing timer's), if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The operator's watermark: event time as far as it knows.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The job's processing time, in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.clock.now_ms()
    }

    /// In `on_timer`: which clock the firing timer belongs to.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.domain
    }

    pub fn runtime(&self) -> &RuntimeContext {
        self.runtime
    }

    /// The key's state, if it has any.
    pub fn state(&mut self) -> Option<&S> {
        self.state.get(self.key, &())
    }

    /// The key's state, made by `make` if it has none.
    pub fn state_or_insert_with(&mut self, make: impl FnOnce() -> S) -> &mut S {
        self.state.get_or_insert_with(self.key, &(), make).0
    }

    /// The key's state, for changing in place.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        self.state.get_mut(self.key, &())
    }

    /// Sets the key's state.
    pub fn update_state(&mut self, value: S) {
        self.state.insert(self.key, &(), value);
    }

    /// Drops the key's state.
    pub fn clear_state(&mut self) -> Option<S> {
        self.state.remove(self.key, &())
    }

    /// Calls `on_timer` for this key once the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: i64) {
        self.timers.event.register(time, self.key, &());
    }

    /// Calls `on_timer` for this key once processing time reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: i64) {
        self.timers.processing.register(time, self.key, &());
    }

    pub fn delete_event_time_timer(&mut self, time: i64) {
        self.timers.event.delete(time, self.key, &());
    }

    pub fn delete_processing_time_timer(&mut self, time: i64) {
        self.timers.processing.delete(time, self.key, &());
    }
}

/// A keyed process function: one instance per shard, cloned from the one the job was built with.
///
/// ```
/// use shardflow_core::keyed::{KeyedContext, KeyedProcessFunction};
/// use shardflow_core::operator::{Collector, process::UserError};
///
/// /// Emits (key, count) one second of event time after a key's last record.
/// #[derive(Clone)]
/// struct CountThenQuiet;
///
/// impl KeyedProcessFunction<String, (String, i64), (String, u64)> for CountThenQuiet {
///     type State = (u64, i64); // count, time of the last record
///     fn process_element(&mut self, x: (String, i64), ctx: &mut KeyedContext<String, (u64, i64)>,
///                        _out: &mut Collector<(String, u64)>) -> Result<(), UserError> {
///         let ts = ctx.timestamp().ok_or("no timestamp")?;
///         let s = ctx.state_or_insert_with(|| (0, ts));
///         s.0 += 1;
///         s.1 = ts;
///         ctx.register_event_time_timer(ts + 1000);
///         Ok(())
///     }
///     fn on_timer(&mut self, time: i64, ctx: &mut KeyedContext<String, (u64, i64)>,
///                 out: &mut Collector<(String, u64)>) -> Result<(), UserError> {
///         if let Some(&(n, last)) = ctx.state() && time == last + 1000 {
///             out.collect((ctx.current_key().clone(), n));
///             ctx.clear_state();
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction<K, I, O>: Clone + Send + Sync + 'static {
    /// What the function keeps per key: keyed state, in the store (so it is data: derive
    /// rkyv's `Archive`, `Serialize` and `Deserialize`).
    type State: crate::Data;

    /// Called once on each shard before the first record.
    /// Declares the function's states (`ctx.value_state(..)`, …); `ctx` also says where it runs.
    fn open(&mut self, _ctx: &mut KeyedOpenContext<'_, K>) -> Result<(), UserError> {
        Ok(())
    }

    /// Called for every record, with its key's context.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called when a timer of the key fires (`ctx.time_domain()` says which clock).
    fn on_timer(
        &mut self,
        _time: i64,
        _ctx: &mut KeyedContext<'_, K, Self::State>,
        _out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        Ok(())
    }
}

/// What keyed functions' operators (one input or two) share: the key's state and timers, event
/// and processing time, and the outputs.
pub(crate) struct KeyedCore<K, S, O> {
    state: KeyedTable<K, VoidNamespace, S>,
    states: StateRegistry<K>,
    timers: TimerService<K, VoidNamespace>,
    watermark: i64,
    clock: ProcessingClock,
    out: Batch<O>,
    down: BoxPush<O>,
    side: SideOutputSet,
    pub(crate) ctx: OperatorContext,
    /// The user function's `open` ran.
    opened: bool,
}

impl<K: std::hash::Hash + Eq + Clone, S, O: 'static> KeyedCore<K, S, O> {
    pub(crate) fn new(down: BoxPush<O>, side: SideOutputSet, ctx: OperatorContext) -> Self {
        ctx.expect_checkpoints();
        Self {
            state: KeyedTable::new(),
            states: StateRegistry::default(),
            timers: TimerService::default(),
            watermark: WATERMARK_MIN,
            clock: ctx.config.clock.clone(),
            out: Batch::new(),
            down,
            side,
            ctx,
            opened: false,
        }
    }

    /// Runs the user function's `open` once, before anything else reaches it; the keys' state
    /// goes into the shard's store.
    pub(crate) fn open(
        &mut self,
        open: impl FnOnce(&mut KeyedOpenContext<'_, K>) -> Result<(), UserError>,
    ) -> Result<(), JobError>
    where
        K: crate::Data,
        S: crate::Data,
    {
        if !self.opened {
            self.opened = true;
            self.state = self
                .ctx
                .keyed_state("state", std::mem::take(&mut self.state))?;
            self.timers = self.ctx.timer_service()?;
            self.states = StateRegistry::new(Some(self.ctx.clone()));
            let mut octx = KeyedOpenContext {
                runtime: &self.ctx.runtime,
                states: &mut self.states,
            };
            open(&mut octx).map_err(|e| self.ctx.error(e))?;
        }
        Ok(())
    }

    /// Hands every record of `batch` to `f` with its key's context (the key from `key`), then
    /// pushes the output on.
    pub(crate) fn process_batch<I, KS: KeySelector<I, Key = K>>(
        &mut self,
        batch: &mut Batch<I>,
        key: &KS,
        mut f: impl FnMut(I, &mut KeyedContext<'_, K, S>, &mut Collector<O>) -> Result<(), UserError>,
    ) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        for (x, ts) in batch.drain() {
            let k = key.with_key(&x, Clone::clone);
            self.ctx.debug_assert_owns(&k);
            self.with_key(&k, ts, None, |kctx, out| f(x, kctx, out))?;
        }
        self.emit()
    }

    /// Calls `f` with the context of `key` and a collector stamping `timestamp`; pushes the
    /// output on when a batch of it is full.
    #[inline]
    pub(crate) fn with_key(
        &mut self,
        key: &K,
        timestamp: Option<i64>,
        domain: Option<TimeDomain>,
        f: impl FnOnce(&mut KeyedContext<'_, K, S>, &mut Collector<O>) -> Result<(), UserError>,
    ) -> Result<(), JobError> {
        let mut kctx = KeyedContext {
            key,
            timestamp,
            watermark: self.watermark,
            clock: &self.clock,
            state: &mut self.state,
            timers: &mut self.timers,
            runtime: &self.ctx.runtime,
            domain,
            states: &mut self.states,
        };
        f(
            &mut kctx,
            &mut Collector::with_side_outputs(&mut self.out, timestamp, &mut self.side),
        )
        .map_err(|e| self.ctx.error(e))?;
        if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
            self.emit()?;
        }
        Ok(())
    }

    pub(crate) fn emit(&mut self) -> Result<(), JobError> {
        self.ctx.state.check()?;
        if !self.out.is_empty() {
            self.ctx.counters.add_out(self.out.len());
            self.down.push(&mut self.out)?;
        }
        self.side.push_buffered()?;
        self.ctx.enter();
        Ok(())
    }

    /// Fires the timers of `domain` due at `time`, each through `on_timer`.
    pub(crate) fn fire(
        &mut self,
        domain: TimeDomain,
        time: i64,
        mut on_timer: impl FnMut(
            i64,
            &mut KeyedContext<'_, K, S>,
            &mut Collector<O>,
        ) -> Result<(), UserError>,
    ) -> Result<(), JobError> {
        self.ctx.enter();
        loop {
            let queue = match domain {
                TimeDomain::EventTime => &mut self.timers.event,
                TimeDomain::ProcessingTime => &mut self.timers.processing,
            };
            let Some((at, key, ())) = queue.pop_due(time) else {
                break;
            };
            let ts = (domain == TimeDomain::EventTime).then_some(at);
            self.with_key(&key, ts, Some(domain), |kctx, out| on_timer(at, kctx, out))?;
        }
        self.emit()
    }

    /// Whether `watermark` moves event time forward (then it is the core's).
    pub(crate) fn advance(&mut self, watermark: i64) -> bool {
        if watermark <= self.watermark {
            return false;
        }
        self.watermark = watermark;
        true
    }

    /// Hands the watermark on, after the timers it fired.
    pub(crate) fn forward_watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        self.side.watermark(watermark)?;
        self.down.watermark(watermark)
    }

    pub(crate) fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.side.watermark_status(idle)?;
        self.down.watermark_status(idle)
    }

    pub(crate) fn forward_tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.side.tick(now_ms)?;
        self.down.tick(now_ms)
    }

    pub(crate) fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_ready(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_ready(cx),
            other => other,
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), JobError> {
        self.side.flush()?;
        self.down.flush()
    }

    pub(crate) fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_flush(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_flush(cx),
            other => other,
        }
    }

    pub(crate) fn finish(&mut self) -> Result<(), JobError> {
        self.emit()?;
        if self.ctx.checkpoints.is_some() {
            self.state.flush_dirty();
            self.states.flush_dirty();
            self.timers.checkpoint();
            self.ctx.state.check()?;
            self.ctx.final_snapshot(Vec::new())?;
        }
        self.side.finish()?;
        self.down.finish()
    }

    /// A checkpoint barrier: the output so far goes first; the keys' state, typed states and
    /// timers are written to the store, which goes to the checkpoint; then the barrier goes on.
    pub(crate) fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.emit()?;
        self.state.flush_dirty();
        self.states.flush_dirty();
        self.timers.checkpoint();
        self.ctx.state.check()?;
        self.ctx.snapshot(barrier, Vec::new())?;
        self.side.barrier(barrier)?;
        self.down.barrier(barrier)
    }
}

pub struct KeyedProcess<I, O, KS: KeySelector<I>, F: KeyedProcessFunction<KS::Key, I, O>> {
    key: KS,
    f: F,
    core: KeyedCore<KS::Key, F::State, O>,
    _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O, KS, F> KeyedProcess<I, O, KS, F>
where
    I: 'static,
    O: 'static,
    KS: KeySelector<I>,
    F: KeyedProcessFunction<KS::Key, I, O>,
{
    pub fn new(key: KS, f: F, down: BoxPush<O>, ctx: OperatorContext) -> Self {
        Self::with_side_outputs(key, f, down, SideOutputSet::default(), ctx)
    }

    pub fn with_side_outputs(
        key: KS,
        f: F,
        down: BoxPush<O>,
        side: SideOutputSet,
        ctx: OperatorContext,
    ) -> Self {
        Self {
            key,
            f,
            core: KeyedCore::new(down, side, ctx),
            _in: std::marker::PhantomData,
        }
    }

    fn open(&mut self) -> Result<(), JobError> {
        let f = &mut self.f;
        self.core.open(|rt| f.open(rt))
    }

    fn fire(&mut self, domain: TimeDomain, time: i64) -> Result<(), JobError> {
        self.open()?;
        let f = &mut self.f;
        self.core
            .fire(domain, time, |at, kctx, out| f.on_timer(at, kctx, out))
    }
}

impl<I, O, KS, F> Push<I> for KeyedProcess<I, O, KS, F>
where
    I: 'static,
    O: 'static,
    KS: KeySelector<I>,
    F: KeyedProcessFunction<KS::Key, I, O>,
{
    fn push(&mut self, batch: &mut Batch<I>) -> Result<(), JobError> {
        self.open()?;
        let f = &mut self.f;
        self.core.process_batch(batch, &self.key, |x, kctx, out| {
            f.process_element(x, kctx, out)
        })
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        if !self.core.advance(watermark) {
            return Ok(());
        }
        self.fire(TimeDomain::EventTime, watermark)?;
        self.core.forward_watermark(watermark)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.fire(TimeDomain::ProcessingTime, now_ms)?;
        self.core.forward_tick(now_ms)
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.core.watermark_status(idle)
    }

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.core.poll_ready(cx)
    }

    fn flush(&mut self) -> Result<(), JobError> {
        self.core.flush()
    }

    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.core.poll_flush(cx)
    }

    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.open()?;
        self.core.barrier(barrier)
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.open()?;
        self.core.finish()
    }
}
