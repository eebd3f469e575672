//! Keyed `reduce` (and `sum`, `min`, `max`, `min_by`, `max_by`, built on it): one accumulator
//! per key, folded in place.
//!
//! In streaming mode every update is emitted (Flink's rolling aggregation). In batch mode only
//! the final accumulator of each key is emitted, when the input ends. The same operator, in batch
//! mode and with a bound on its keys, is the combiner that pre-aggregates before an exchange.
//!
//! Until the state store lands, accumulators live in a hash map on the shard that owns the key.

use hashbrown::HashTable;

use super::{Batch, BoxPush, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push};
use crate::error::JobError;
use crate::key::{KeySelector, key_hash, state_hash};

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
    /// Check (in debug builds) that every key belongs to this shard: true after a key_by
    /// exchange, false for a combiner before it.
    check_ownership: bool,
    /// One accumulator per key, found by the key's stable hash and the key inside the record:
    /// the key is not stored (nor cloned) a second time.
    state: HashTable<T>,
    out: Batch<T>,
    down: BoxPush<T>,
    ctx: OperatorContext,
}

impl<T, KS, R> KeyedReduce<T, KS, R>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    R: FnMut(&mut T, T) + 'static,
{
    pub fn new(
        key: KS,
        reduce: R,
        emit: Emit,
        check_ownership: bool,
        down: BoxPush<T>,
        ctx: OperatorContext,
    ) -> Self {
        Self {
            key,
            reduce,
            emit,
            check_ownership,
            state: HashTable::new(),
            out: Batch::new(),
            down,
            ctx,
        }
    }

    fn emit_all(&mut self) -> Result<(), JobError> {
        for v in self.state.drain() {
            self.out.push(v, None);
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.ctx.counters.add_out(self.out.len());
                self.down.push(&mut self.out)?;
                // Downstream operators ran user code: this operator runs it again now.
                self.ctx.enter();
            }
        }
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
}

impl<T, KS, R> Push<T> for KeyedReduce<T, KS, R>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    R: FnMut(&mut T, T) + 'static,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        let every_update = self.emit == Emit::EveryUpdate;
        let key = &self.key;
        for (x, ts) in batch.drain() {
            // One key computation per record: hash and probe share it (an owned key, say a
            // cloned string, is made once, not twice).
            let state = &mut self.state;
            let (hash, found) = key.with_key(&x, |k| {
                let hash = key_hash(k);
                (
                    hash,
                    state.find_mut(state_hash(hash), |acc| key.with_key(acc, |ak| ak == k)),
                )
            });
            if self.check_ownership {
                self.ctx.debug_assert_owns_hash(hash);
            }
            match found {
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
                    self.state.insert_unique(state_hash(hash), x, |acc| {
                        key.with_key(acc, |k| state_hash(key_hash(k)))
                    });
                }
            }
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.ctx.counters.add_out(self.out.len());
                self.down.push(&mut self.out)?;
                // Downstream operators ran user code: this operator runs it again now.
                self.ctx.enter();
            }
        }
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
