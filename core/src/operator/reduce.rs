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
use hashbrown::HashTable;

use crate::key::{KeySelector, key_hash, state_hash};
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
    accumulators: Accumulators<KS::Key, T>,
    out: Batch<T>,
    down: BoxPush<T>,
    ctx: OperatorContext,
}

/// Where the accumulators live.
enum Accumulators<K, T> {
    /// The owner's reduce (behind the exchange): keyed state in the shard's store.
    Keyed(KeyedTable<K, (), T>),
    /// The combiner before the exchange: a pre-aggregation buffer in memory, bounded by its
    /// key limit, filed by the key inside each accumulator (no copy of the key is kept: for
    /// WordCount, 5–10% faster than a table of (key, accumulator) pairs).
    Buffer(HashTable<T>),
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
        let accumulators = if owner {
            ctx.expect_checkpoints();
            Accumulators::Keyed(ctx.keyed_state("accumulators", KeyedTable::new())?)
        } else {
            Accumulators::Buffer(HashTable::new())
        };
        Ok(Self {
            key,
            reduce,
            emit,
            accumulators,
            out: Batch::new(),
            down,
            ctx,
        })
    }

    fn emit_all(&mut self) -> Result<(), JobError> {
        let mut failed = Ok(());
        let Self {
            accumulators,
            out,
            down,
            ctx,
            ..
        } = self;
        let mut emit = |v: T| {
            out.push(v, None);
            if out.len() >= OUTPUT_BATCH_RECORDS_MAX && failed.is_ok() {
                ctx.counters.add_out(out.len());
                failed = down.push(out);
                ctx.enter();
            }
        };
        match accumulators {
            Accumulators::Keyed(t) => t.drain_all(|_, (), v| emit(v)),
            Accumulators::Buffer(t) => t.drain().for_each(emit),
        }
        failed?;
        self.ctx.state.check()?;
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }

    fn len(&self) -> usize {
        match &self.accumulators {
            Accumulators::Keyed(t) => t.len(),
            Accumulators::Buffer(t) => t.len(),
        }
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
        let Self {
            key,
            reduce,
            accumulators,
            out,
            down,
            ctx,
            ..
        } = self;
        // Hands a full output batch on (downstream operators then ran user code: this one
        // runs it again after).
        let mut ship = |out: &mut Batch<T>| -> Result<(), JobError> {
            if out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                ctx.counters.add_out(out.len());
                down.push(out)?;
                ctx.enter();
            }
            Ok(())
        };
        match accumulators {
            Accumulators::Keyed(state) => {
                for (x, ts) in batch.drain() {
                    if cfg!(debug_assertions) {
                        key.with_key(&x, |k| ctx.debug_assert_owns(k));
                    }
                    let found = key.with_key(&x, |k| state.get_mut(k, &()));
                    if let Some(x) = fold(found, x, ts, every_update, reduce, out) {
                        let k = key.with_key(&x, Clone::clone);
                        state.insert(&k, &(), x);
                    }
                    ship(out)?;
                }
            }
            Accumulators::Buffer(table) => {
                for (x, ts) in batch.drain() {
                    // One key computation per record: hash and probe share it.
                    let (hash, found) = key.with_key(&x, |k| {
                        let hash = state_hash(key_hash(k));
                        (
                            hash,
                            table.find_mut(hash, |acc| key.with_key(acc, |ak| ak == k)),
                        )
                    });
                    if let Some(x) = fold(found, x, ts, every_update, reduce, out) {
                        table.insert_unique(hash, x, |acc| {
                            key.with_key(acc, |k| state_hash(key_hash(k)))
                        });
                    }
                    ship(out)?;
                }
            }
        }
        self.ctx.state.check()?;
        if let Emit::AtEndOrKeys(max) = self.emit
            && self.len() >= max
        {
            return self.emit_all();
        }
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
    forward_flow_control!(except_barrier);
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        match &mut self.accumulators {
            // The owner's accumulators go to the checkpoint.
            Accumulators::Keyed(t) => {
                t.flush_dirty();
                self.ctx.state.check()?;
                self.ctx.snapshot(barrier, Vec::new())?;
            }
            // A combiner's partial sums go on before the barrier (the owner folds them in):
            // it keeps nothing a checkpoint needs.
            Accumulators::Buffer(_) => self.emit_all()?,
        }
        self.down.barrier(barrier)
    }
    fn finish(&mut self) -> Result<(), JobError> {
        if self.emit != Emit::EveryUpdate {
            self.emit_all()?;
        }
        if let Accumulators::Keyed(t) = &mut self.accumulators
            && self.ctx.checkpoints.is_some()
        {
            t.flush_dirty();
            self.ctx.state.check()?;
            self.ctx.final_snapshot(Vec::new())?;
        }
        self.down.finish()
    }
}

/// Folds `x` into its key's accumulator, if it has one; otherwise hands `x` back to become it.
/// With `every_update`, the updated accumulator (or `x`) goes to `out`.
#[inline]
fn fold<T: Clone>(
    found: Option<&mut T>,
    x: T,
    ts: Option<i64>,
    every_update: bool,
    reduce: &mut impl FnMut(&mut T, T),
    out: &mut Batch<T>,
) -> Option<T> {
    match found {
        Some(acc) => {
            reduce(acc, x);
            if every_update {
                out.push(acc.clone(), ts);
            }
            None
        }
        None => {
            if every_update {
                out.push(x.clone(), ts);
            }
            Some(x)
        }
    }
}
