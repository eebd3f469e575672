//! `connect(...).process(...)` on two keyed streams: a function of both inputs that shares the
//! key's state and timers between them, as Flink's `KeyedCoProcessFunction`.

use super::process::{KeyedContext, KeyedCore, TimeDomain};
use crate::error::JobError;
use crate::key::KeySelector;
use crate::operator::process::UserError;
use crate::operator::two_input::CoOperator;
use crate::operator::{Batch, BoxPush, Collector, OperatorContext, SideOutputSet};
use crate::state::kinds::KeyedOpenContext;

/// A function of two keyed inputs with shared per-key state and timers.
pub trait KeyedCoProcessFunction<K, I1, I2, O>: Clone + Send + Sync + 'static {
    /// What the function keeps per key, for both inputs.
    type State: crate::Data;

    /// Declares the function's states; `ctx` also says where it runs.
    fn open(&mut self, _ctx: &mut KeyedOpenContext<'_, K>) -> Result<(), UserError> {
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
    core: KeyedCore<KS1::Key, F::State, O>,
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
        self.open()?;
        let f = &mut self.f;
        self.core.process_batch(batch, &self.key1, |x, kctx, out| {
            f.process_element1(x, kctx, out)
        })
    }

    fn push2(&mut self, batch: &mut Batch<I2>) -> Result<(), JobError> {
        self.open()?;
        let f = &mut self.f;
        self.core.process_batch(batch, &self.key2, |x, kctx, out| {
            f.process_element2(x, kctx, out)
        })
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        if !self.core.advance(watermark) {
            return Ok(());
        }
        self.fire(TimeDomain::EventTime, watermark)?;
        self.core.forward_watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.core.watermark_status(idle)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.fire(TimeDomain::ProcessingTime, now_ms)?;
        self.core.forward_tick(now_ms)
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
