//! `process`: the general operator. A user function sees each record with its runtime context
//! and emits any number of records through a [`Collector`]; it is told when its input ends.

use super::side::{OutputTag, SideOutputSet};
use super::{Batch, BoxPush, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push, RuntimeContext};
use crate::error::JobError;
use crate::state::OperatorStateStore;
use crate::state::operator::OperatorStateSnapshot;

/// An error a user function returns: it fails the job, naming the operator and the shard.
pub type UserError = Box<dyn std::error::Error + Send + Sync>;

/// Where a user function puts its output. Records it emits carry the timestamp of the record
/// being processed (or of the timer or window that fired), if there is one.
pub struct Collector<'a, U> {
    out: &'a mut Batch<U>,
    timestamp: Option<i64>,
    side: Option<&'a mut SideOutputSet>,
}

impl<'a, U> Collector<'a, U> {
    pub fn new(out: &'a mut Batch<U>, timestamp: Option<i64>) -> Self {
        Self {
            out,
            timestamp,
            side: None,
        }
    }

    /// A collector that can also emit to the operator's side outputs.
    pub fn with_side_outputs(
        out: &'a mut Batch<U>,
        timestamp: Option<i64>,
        side: &'a mut SideOutputSet,
    ) -> Self {
        Self {
            out,
            timestamp,
            side: Some(side),
        }
    }

    /// Emits a record to the side output `tag` (with the timestamp main output records get).
    /// Dropped if no stream reads that side output, as in Flink.
    pub fn output<X: 'static>(&mut self, tag: &OutputTag<X>, value: X) {
        if let Some(side) = self.side.as_deref_mut() {
            side.output(tag, value, self.timestamp);
        }
    }

    /// Emits one record.
    #[inline(always)]
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

    /// Runs `f` with this collector giving its records the timestamp `timestamp`.
    pub fn collect_with_timestamp_of<R>(
        &mut self,
        timestamp: i64,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let saved = self.timestamp.replace(timestamp);
        let r = f(self);
        self.timestamp = saved;
        r
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

    /// Before `open`: takes back the operator state the function saved, if the job resumed
    /// (Flink's `CheckpointedFunction.initializeState`; see [`crate::state::operator`]).
    fn initialize_state(&mut self, _state: &mut OperatorStateStore) -> Result<(), UserError> {
        Ok(())
    }

    /// Saves what the function keeps in its fields into `state` (a checkpoint asks for it).
    fn snapshot_state(&mut self, _state: &mut OperatorStateStore) -> Result<(), UserError> {
        Ok(())
    }
}

pub struct Process<I, O, P> {
    f: P,
    opened: bool,
    out: Batch<O>,
    down: BoxPush<O>,
    side: SideOutputSet,
    ctx: OperatorContext,
    /// The function's operator state (empty on a fresh run).
    op_state: OperatorStateStore,
    _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O: 'static, P: ProcessFunction<I, O>> Process<I, O, P> {
    pub fn new(f: P, down: BoxPush<O>, ctx: OperatorContext) -> Self {
        Self::with_side_outputs(f, down, SideOutputSet::default(), ctx)
    }

    pub fn with_side_outputs(
        f: P,
        down: BoxPush<O>,
        side: SideOutputSet,
        ctx: OperatorContext,
    ) -> Self {
        ctx.expect_checkpoints();
        Self {
            f,
            opened: false,
            out: Batch::new(),
            down,
            side,
            ctx,
            op_state: OperatorStateStore::default(),
            _in: std::marker::PhantomData,
        }
    }

    fn open(&mut self) -> Result<(), JobError> {
        if !self.opened {
            self.opened = true;
            self.op_state = crate::checkpoint::restored_operator_state(&self.ctx)?;
            self.f
                .initialize_state(&mut self.op_state)
                .and_then(|()| self.f.open(&self.ctx.runtime))
                .map_err(|e| self.ctx.error(e))?;
        }
        Ok(())
    }

    /// The function's operator state, as bytes (for a checkpoint).
    pub fn snapshot_state(&mut self) -> Result<OperatorStateSnapshot, JobError> {
        self.f
            .snapshot_state(&mut self.op_state)
            .map_err(|e| self.ctx.error(e))?;
        self.op_state.snapshot()
    }

    /// The function's operator state, archived.
    fn state_bytes(&mut self) -> Result<Vec<u8>, JobError> {
        self.f
            .snapshot_state(&mut self.op_state)
            .map_err(|e| self.ctx.error(e))?;
        self.op_state.to_bytes().map_err(|e| self.ctx.error(e))
    }

    fn emit(&mut self) -> Result<(), JobError> {
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)?;
        self.side.push_buffered()
    }
}

impl<I: 'static, O: 'static, P: ProcessFunction<I, O>> Push<I> for Process<I, O, P> {
    fn push(&mut self, batch: &mut Batch<I>) -> Result<(), JobError> {
        self.open()?;
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        for (x, ts) in batch.drain() {
            self.f
                .process_element(
                    x,
                    &self.ctx.runtime,
                    &mut Collector::with_side_outputs(&mut self.out, ts, &mut self.side),
                )
                .map_err(|e| self.ctx.error(e))?;
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
                // Downstream operators ran user code: this operator runs it again now.
                self.ctx.enter();
            }
        }
        self.emit()
    }
    forward_flow_control_with_side!(except_barrier);
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.open()?;
        self.ctx.enter();
        // A function that cannot snapshot aborts the checkpoint, not the job.
        match self.state_bytes() {
            Ok(bytes) => self.ctx.snapshot(barrier, bytes)?,
            Err(e) => self.ctx.decline(barrier, e.to_string()),
        }
        self.side.barrier(barrier)?;
        self.down.barrier(barrier)
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.ctx.enter();
        self.open()?;
        self.f
            .finish(
                &self.ctx.runtime,
                &mut Collector::with_side_outputs(&mut self.out, None, &mut self.side),
            )
            .map_err(|e| self.ctx.error(e))?;
        self.emit()?;
        if self.ctx.checkpoints.is_some() {
            let bytes = self.state_bytes()?;
            self.ctx.final_snapshot(bytes)?;
        }
        self.side.finish()?;
        self.down.finish()
    }
}
