//! Sinks: the ends of a job's streams.

use super::{Batch, OperatorContext, Push};
use crate::error::JobError;

/// Where a sink writes: one instance per shard.
pub trait SinkFunction<T>: 'static {
    /// Takes every record of `batch`.
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError>;
    /// The input ended: make everything durable or visible.
    fn finish(&mut self) -> Result<(), JobError>;
}

/// The operator around a [`SinkFunction`].
pub struct Sink<S> {
    sink: S,
    ctx: OperatorContext,
}

impl<S> Sink<S> {
    pub fn new(sink: S, ctx: OperatorContext) -> Self {
        Self { sink, ctx }
    }
}

impl<T: 'static, S: SinkFunction<T>> Push<T> for Sink<S> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        batch.timestamps.clear();
        self.sink.write(&mut batch.records)
    }
    fn watermark(&mut self, _watermark: i64) -> Result<(), JobError> {
        Ok(())
    }
    fn watermark_status(&mut self, _idle: bool) -> Result<(), JobError> {
        Ok(())
    }
    fn barrier(&mut self, _barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        // A sink without transactions keeps nothing: what it wrote is written.
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.ctx.enter();
        self.sink.finish()
    }
}
