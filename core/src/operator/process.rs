//! `process`: the general operator. A user function sees each record with its runtime context
//! and emits any number of records through a [`Collector`]; it is told when its input ends.

use super::{Batch, BoxPush, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push, RuntimeContext};
use crate::error::JobError;

/// An error a user function returns: it fails the job, naming the operator and the shard.
pub type UserError = Box<dyn std::error::Error + Send + Sync>;

/// Where a user function puts its output. Records it emits carry the timestamp of the record
/// being processed (or of the timer or window that fired), if there is one.
pub struct Collector<'a, U> {
    out: &'a mut Batch<U>,
    timestamp: Option<i64>,
}

impl<'a, U> Collector<'a, U> {
    pub fn new(out: &'a mut Batch<U>, timestamp: Option<i64>) -> Self {
        Self { out, timestamp }
    }

    /// Emits one record.
    #[inline]
    pub fn collect(&mut self, value: U) {
        self.out.push(value, self.timestamp);
    }

    /// Emits one record with a timestamp of its own.
    #[inline]
    pub fn collect_with_timestamp(&mut self, value: U, timestamp: i64) {
        self.out.push(value, Some(timestamp));
    }

    /// The timestamp emitted records get.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }
}

impl<U> Extend<U> for Collector<'_, U> {
    fn extend<I: IntoIterator<Item = U>>(&mut self, iter: I) {
        for x in iter {
            self.collect(x);
        }
    }
}

/// A process function: one instance per shard, cloned from the one the job was built with.
///
/// ```
/// use shardflow_core::operator::{Collector, ProcessFunction, RuntimeContext, process::UserError};
///
/// /// Emits each number with the shard that saw it.
/// #[derive(Clone)]
/// struct Tag;
///
/// impl ProcessFunction<u64, (u32, u64)> for Tag {
///     fn process_element(&mut self, x: u64, ctx: &RuntimeContext, out: &mut Collector<(u32, u64)>) -> Result<(), UserError> {
///         out.collect((ctx.shard, x));
///         Ok(())
///     }
/// }
/// ```
pub trait ProcessFunction<I, O>: Clone + Send + Sync + 'static {
    /// Called once on each shard before the first record.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), UserError> {
        Ok(())
    }

    /// Called for every record.
    fn process_element(
        &mut self,
        value: I,
        ctx: &RuntimeContext,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;

    /// Called once when the input ends (bounded input): emit final results here.
    fn finish(&mut self, _ctx: &RuntimeContext, _out: &mut Collector<O>) -> Result<(), UserError> {
        Ok(())
    }
}

pub struct Process<I, O, P> {
    f: P,
    opened: bool,
    out: Batch<O>,
    down: BoxPush<O>,
    ctx: OperatorContext,
    _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O: 'static, P: ProcessFunction<I, O>> Process<I, O, P> {
    pub fn new(f: P, down: BoxPush<O>, ctx: OperatorContext) -> Self {
        Self {
            f,
            opened: false,
            out: Batch::new(),
            down,
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
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
}

impl<I: 'static, O: 'static, P: ProcessFunction<I, O>> Push<I> for Process<I, O, P> {
    fn push(&mut self, batch: &mut Batch<I>) -> Result<(), JobError> {
        self.open()?;
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        for (x, ts) in batch.drain() {
            self.f
                .process_element(x, &self.ctx.runtime, &mut Collector::new(&mut self.out, ts))
                .map_err(|e| self.ctx.error(e))?;
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
                // Downstream operators ran user code: this operator runs it again now.
                self.ctx.enter();
            }
        }
        self.emit()
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.ctx.enter();
        self.open()?;
        self.f
            .finish(&self.ctx.runtime, &mut Collector::new(&mut self.out, None))
            .map_err(|e| self.ctx.error(e))?;
        self.emit()?;
        self.down.finish()
    }
}
