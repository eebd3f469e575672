//! Keyed `reduce` (and `sum`, `min`, `max`, `min_by`, `max_by`, built on it): one accumulator
//! per key, folded in place.
//!
//! In streaming mode every update is emitted (Flink's rolling aggregation). In batch mode only
//! the final accumulator of each key is emitted, when the input ends. The same operator, in batch
//! mode and with a bound on its keys, is the combiner that pre-aggregates before an exchange.
//!
//! The accumulators are keyed state (a [`KeyedTable`] in the shard's store) on the shard that owns
//! the key; the combiner's are a pre-aggregation buffer in memory, bounded by its key limit.

use super::{Batch, BoxPush, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push};
use crate::data::Data;
use crate::error::JobError;
use crate::key::KeySelector;
use crate::keyed::KeyedTable;

/// When the accumulators are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// After every update (streaming).
    EveryUpdate,
    /// At the end of input (batch).
    AtEnd,
    /// At the end of input, and whenever the map holds this many keys (a combiner: emitting
    /// early is correct because the final reduce after the exchange folds partial results).
    AtEndOrKeys(usize),
}

pub struct KeyedReduce<T, KS: KeySelector<T>, R> {
    key: KS,
    reduce: R,
    emit: Emit,
    /// The owner's reduce (behind the exchange), not the combiner before it.
    owner: bool,
    state: KeyedTable<KS::Key, (), T>,
    out: Batch<T>,
    down: BoxPush<T>,
    ctx: OperatorContext,
}

impl<T, KS, R> KeyedReduce<T, KS, R>
where
    T: Data,
    KS: KeySelector<T>,
    R: FnMut(&mut T, T) + 'static,
{
    /// `owner`: the reduce behind the exchange, whose accumulators are keyed state in the
    /// shard's store (and whose keys must be the shard's); otherwise the combiner before it.
    pub fn new(
        key: KS,
        reduce: R,
        emit: Emit,
        owner: bool,
        down: BoxPush<T>,
        ctx: OperatorContext,
    ) -> Result<Self, JobError> {
        let state = if owner {
            ctx.keyed_state("accumulators", KeyedTable::new())?
        } else {
            KeyedTable::new()
        };
        Ok(Self {
            key,
            reduce,
            emit,
            owner,
            state,
            out: Batch::new(),
            down,
            ctx,
        })
    }

    fn emit_all(&mut self) -> Result<(), JobError> {
        let mut failed = Ok(());
        let Self {
            state,
            out,
            down,
            ctx,
            ..
        } = self;
        state.drain_all(|_, (), v| {
            out.push(v, None);
            if out.len() >= OUTPUT_BATCH_RECORDS_MAX && failed.is_ok() {
                ctx.counters.add_out(out.len());
                failed = down.push(out);
                ctx.enter();
            }
        });
        failed?;
        self.ctx.state.check()?;
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
}

impl<T, KS, R> Push<T> for KeyedReduce<T, KS, R>
where
    T: Data,
    KS: KeySelector<T>,
    R: FnMut(&mut T, T) + 'static,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        let every_update = self.emit == Emit::EveryUpdate;
        let key = &self.key;
        for (x, ts) in batch.drain() {
            if self.owner {
                key.with_key(&x, |k| self.ctx.debug_assert_owns(k));
            }
            let state = &mut self.state;
            match key.with_key(&x, |k| state.get_mut(k, &())) {
                Some(acc) => {
                    (self.reduce)(acc, x);
                    if every_update {
                        self.out.push(acc.clone(), ts);
                    }
                }
                None => {
                    if every_update {
                        self.out.push(x.clone(), ts);
                    }
                    let k = key.with_key(&x, Clone::clone);
                    self.state.insert(&k, &(), x);
                }
            }
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.ctx.counters.add_out(self.out.len());
                self.down.push(&mut self.out)?;
                self.ctx.enter();
            }
        }
        self.ctx.state.check()?;
        if let Emit::AtEndOrKeys(max) = self.emit
            && self.state.len() >= max
        {
            return self.emit_all();
        }
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        if self.emit != Emit::EveryUpdate {
            self.emit_all()?;
        }
        self.down.finish()
    }
}
