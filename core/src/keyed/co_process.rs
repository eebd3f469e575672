//! `connect(...).process(...)` on two keyed streams: a function of both inputs that shares the
//! key's state and timers between them, as Flink's `KeyedCoProcessFunction`.

use super::process::{KeyedContext, TimeDomain};
use super::{KeyedTable, TimerService, VoidNamespace};
use crate::error::JobError;
use crate::key::KeySelector;
use crate::operator::process::UserError;
use crate::operator::two_input::CoOperator;
use crate::operator::{
    Batch, BoxPush, Collector, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, RuntimeContext,
    SideOutputSet, WATERMARK_MIN,
};
use crate::time::ProcessingClock;

/// A function of two keyed inputs with shared per-key state and timers.
pub trait KeyedCoProcessFunction<K, I1, I2, O>: Clone + Send + Sync + 'static {
    /// What the function keeps per key, for both inputs.
    type State: 'static;

    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), UserError> {
        Ok(())
    }

    /// A record of the first input.
    fn process_element1(
        &mut self,
        value: I1,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// A record of the second input.
    fn process_element2(
        &mut self,
        value: I2,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// A timer of the key fired.
    fn on_timer(
        &mut self,
        _time: i64,
        _ctx: &mut KeyedContext<'_, K, Self::State>,
        _out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        Ok(())
    }
}

pub struct KeyedCoProcess<I1, I2, O, KS1, KS2, F>
where
    KS1: KeySelector<I1>,
    F: KeyedCoProcessFunction<KS1::Key, I1, I2, O>,
{
    key1: KS1,
    key2: KS2,
    f: F,
    opened: bool,
    state: KeyedTable<KS1::Key, VoidNamespace, F::State>,
    timers: TimerService<KS1::Key, VoidNamespace>,
    watermark: i64,
    clock: ProcessingClock,
    out: Batch<O>,
    down: BoxPush<O>,
    side: SideOutputSet,
    ctx: OperatorContext,
    _in: std::marker::PhantomData<fn(I1, I2)>,
}

impl<I1, I2, O, KS1, KS2, F> KeyedCoProcess<I1, I2, O, KS1, KS2, F>
where
    I1: 'static,
    I2: 'static,
    O: 'static,
    KS1: KeySelector<I1>,
    KS2: KeySelector<I2, Key = KS1::Key>,
    F: KeyedCoProcessFunction<KS1::Key, I1, I2, O>,
{
    pub fn new(
        key1: KS1,
        key2: KS2,
        f: F,
        down: BoxPush<O>,
        side: SideOutputSet,
        ctx: OperatorContext,
    ) -> Self {
        Self {
            key1,
            key2,
            f,
            opened: false,
            state: KeyedTable::new(),
            timers: TimerService::default(),
            watermark: WATERMARK_MIN,
            clock: ctx.config.clock.clone(),
            out: Batch::new(),
            down,
            side,
            ctx,
            _in: std::marker::PhantomData,
        }
    }

    fn open(&mut self) -> Result<(), JobError> {
        if !self.opened {
            self.opened = true;
            self.f
                .open(&self.ctx.runtime)
                .map_err(|e| self.ctx.error(e))?;
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<(), JobError> {
        if !self.out.is_empty() {
            self.ctx.counters.add_out(self.out.len());
            self.down.push(&mut self.out)?;
        }
        self.side.push_buffered()?;
        self.ctx.enter();
        Ok(())
    }

    fn fire(&mut self, domain: TimeDomain, time: i64) -> Result<(), JobError> {
        self.open()?;
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
            let mut kctx = KeyedContext {
                key: &key,
                timestamp: ts,
                watermark: self.watermark,
                clock: &self.clock,
                state: &mut self.state,
                timers: &mut self.timers,
                runtime: &self.ctx.runtime,
                domain: Some(domain),
            };
            self.f
                .on_timer(
                    at,
                    &mut kctx,
                    &mut Collector::with_side_outputs(&mut self.out, ts, &mut self.side),
                )
                .map_err(|e| self.ctx.error(e))?;
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
            }
        }
        self.emit()
    }
}

/// The loop of `push1` and `push2`: one record at a time, with its key's context.
macro_rules! co_push {
    ($self:ident, $batch:ident, $key:ident, $process:ident) => {{
        $self.open()?;
        $self.ctx.enter();
        $self.ctx.counters.add_in($batch.len());
        for (x, ts) in $batch.drain() {
            let key = $self.$key.with_key(&x, Clone::clone);
            let mut kctx = KeyedContext {
                key: &key,
                timestamp: ts,
                watermark: $self.watermark,
                clock: &$self.clock,
                state: &mut $self.state,
                timers: &mut $self.timers,
                runtime: &$self.ctx.runtime,
                domain: None,
            };
            $self
                .f
                .$process(
                    x,
                    &mut kctx,
                    &mut Collector::with_side_outputs(&mut $self.out, ts, &mut $self.side),
                )
                .map_err(|e| $self.ctx.error(e))?;
            if $self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                $self.emit()?;
            }
        }
        $self.emit()
    }};
}

impl<I1, I2, O, KS1, KS2, F> CoOperator<I1, I2> for KeyedCoProcess<I1, I2, O, KS1, KS2, F>
where
    I1: 'static,
    I2: 'static,
    O: 'static,
    KS1: KeySelector<I1>,
    KS2: KeySelector<I2, Key = KS1::Key>,
    F: KeyedCoProcessFunction<KS1::Key, I1, I2, O>,
{
    fn push1(&mut self, batch: &mut Batch<I1>) -> Result<(), JobError> {
        co_push!(self, batch, key1, process_element1)
    }

    fn push2(&mut self, batch: &mut Batch<I2>) -> Result<(), JobError> {
        co_push!(self, batch, key2, process_element2)
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark)?;
        self.side.watermark(watermark)?;
        self.down.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.side.watermark_status(idle)?;
        self.down.watermark_status(idle)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.fire(TimeDomain::ProcessingTime, now_ms)?;
        self.side.tick(now_ms)?;
        self.down.tick(now_ms)
    }

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_ready(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_ready(cx),
            other => other,
        }
    }

    fn flush(&mut self) -> Result<(), JobError> {
        self.side.flush()?;
        self.down.flush()
    }

    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_flush(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_flush(cx),
            other => other,
        }
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.open()?;
        self.side.finish()?;
        self.down.finish()
    }
}
