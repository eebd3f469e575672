//! Sinks: the ends of a job's streams.

use super::{Batch, OperatorContext, Push};
use crate::error::JobError;

/// Where a sink writes: one instance per shard.
pub trait SinkFunction<T>: 'static {
    /// Takes every record of `batch`.
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError>;
    /// The input ended: make everything durable or visible.
    fn finish(&mut self) -> Result<(), JobError>;

    /// Two-phase commit, first phase: a checkpoint barrier reached the sink; what it took
    /// since the last one belongs to checkpoint `checkpoint`. A transactional sink stages it
    /// where a restart finds it (not visible yet). The default does nothing: a sink without
    /// transactions writes as it goes, and repeats what a restart replays (at-least-once).
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<(), JobError> {
        Ok(())
    }

    /// Second phase: every checkpoint up to `checkpoint` is complete; make what was staged
    /// for them visible. Never called twice for one checkpoint.
    fn commit(&mut self, _checkpoint: u64) -> Result<(), JobError> {
        Ok(())
    }

    /// The job resumed from `checkpoint`: commit what was staged for it and before (its
    /// completion may not have reached the sink before the failure) and abort what was
    /// staged after it (the restart replays those records).
    fn restore(&mut self, _checkpoint: u64) -> Result<(), JobError> {
        Ok(())
    }
}

/// The operator around a [`SinkFunction`]: it hands barriers and completed checkpoints to
/// the function's two phases.
pub struct Sink<S> {
    sink: S,
    ctx: OperatorContext,
    /// The newest checkpoint committed (or resumed from).
    committed: u64,
    restored: bool,
}

impl<S> Sink<S> {
    pub fn new(sink: S, ctx: OperatorContext) -> Self {
        ctx.expect_checkpoints();
        Self {
            sink,
            committed: ctx.restored_from.unwrap_or(0),
            ctx,
            restored: false,
        }
    }

    /// Hands the function the checkpoint the job resumed from (once, first), and every
    /// checkpoint completed since the last call.
    fn catch_up<T>(&mut self) -> Result<(), JobError>
    where
        S: SinkFunction<T>,
    {
        if !self.restored {
            self.restored = true;
            // A fresh start restores "checkpoint 0": what an earlier attempt staged is
            // aborted (a restart before any checkpoint completed replays everything).
            if self.ctx.checkpoints.is_some() || self.ctx.restored_from.is_some() {
                self.sink.restore(self.ctx.restored_from.unwrap_or(0))?;
            }
        }
        if let Some(c) = &self.ctx.checkpoints {
            let done = c.latest_completed();
            if done > self.committed {
                self.committed = done;
                self.sink.commit(done)?;
            }
        }
        Ok(())
    }
}

impl<T: 'static, S: SinkFunction<T>> Push<T> for Sink<S> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        batch.timestamps.clear();
        self.catch_up()?;
        self.sink.write(&mut batch.records)
    }
    fn watermark(&mut self, _watermark: i64) -> Result<(), JobError> {
        Ok(())
    }
    fn watermark_status(&mut self, _idle: bool) -> Result<(), JobError> {
        Ok(())
    }
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.ctx.enter();
        self.catch_up()?;
        self.sink.pre_commit(barrier.id)?;
        self.ctx.snapshot(barrier, Vec::new())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.ctx.enter();
        self.catch_up()?;
        self.sink.finish()
    }
}
