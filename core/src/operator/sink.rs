//! Sinks: the ends of a job's streams.

use std::sync::Arc;

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
    /// where a restart finds it (not visible yet) and returns what a restore needs to find it
    /// again (its pending transactions), which goes into the checkpoint as the sink's
    /// operator state. The default stages nothing and returns nothing: a sink without
    /// transactions writes as it goes, and repeats what a restart replays (at-least-once).
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }

    /// Second phase: every checkpoint up to `checkpoint` is complete; make what was staged
    /// for them visible. Never called twice for one checkpoint.
    fn commit(&mut self, _checkpoint: u64) -> Result<(), JobError> {
        Ok(())
    }

    /// After `finish`: what a restore from a checkpoint taken after this point needs (the
    /// input ended: such a checkpoint covers everything the sink took, and its restore must
    /// commit it all). The default: nothing.
    fn finish_state(&mut self) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }

    /// The job (re)started from `checkpoint` (0: from the beginning): commit what was staged
    /// for it and before (its completion may not have reached the sink before the failure)
    /// and abort what was staged after it (the restart replays those records). `states` are
    /// what `pre_commit` returned for `checkpoint` on the shards whose transactions this one
    /// takes over: its own at the same parallelism; after a rescale, those of the earlier
    /// shards that map to it (every earlier shard's go to exactly one new shard).
    fn restore(&mut self, _checkpoint: u64, _states: &[&[u8]]) -> Result<(), JobError> {
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
                let rt = &self.ctx.runtime;
                let owned: Vec<Arc<[u8]>> = match &self.ctx.rescaled {
                    Some(r) => r
                        .owned_states(rt.shard, rt.parallelism)
                        .into_iter()
                        .map(|s| s.1)
                        .collect(),
                    None => self.ctx.restored.iter().cloned().collect(),
                };
                let states: Vec<&[u8]> = owned
                    .iter()
                    .map(|s| &**s)
                    .filter(|s| !s.is_empty())
                    .collect();
                self.sink
                    .restore(self.ctx.restored_from.unwrap_or(0), &states)?;
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
        let state = self.sink.pre_commit(barrier.id)?;
        self.ctx.snapshot(barrier, state)
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.ctx.enter();
        self.catch_up()?;
        self.sink.finish()?;
        if self.ctx.checkpoints.is_some() {
            let state = self.sink.finish_state()?;
            self.ctx.final_snapshot(state)?;
        }
        Ok(())
    }
}
