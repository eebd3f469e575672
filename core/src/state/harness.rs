//! Keyed state outside a job: a function's states on a backend, for unit tests of keyed
//! functions and for benchmarks of the state itself (Flink's keyed operator test harness).

use std::hash::Hash;
use std::sync::Arc;

use super::StateBackend;
use super::kinds::{KeyedOpenContext, StateRegistry};
use crate::config::JobConfig;
use crate::data::Data;
use crate::key::{KeyGroupRange, MAX_PARALLELISM_DEFAULT};
use crate::keyed::{KeyedContext, KeyedTable, TimerService};
use crate::operator::{OperatorContext, OperatorCounters, RuntimeContext};
use crate::time::ProcessingClock;

/// One operator's keyed states on `backend`, as shard 0 of 1 sees them.
pub struct KeyedStateHarness<K> {
    runtime: RuntimeContext,
    clock: ProcessingClock,
    states: StateRegistry<K>,
    state: KeyedTable<K, (), ()>,
    timers: TimerService<K, ()>,
    counters: Arc<OperatorCounters>,
}

impl<K: Data + Hash + Eq> KeyedStateHarness<K> {
    pub fn new(backend: &StateBackend, clock: ProcessingClock) -> Self {
        let runtime = RuntimeContext {
            shard: 0,
            parallelism: 1,
            max_parallelism: MAX_PARALLELISM_DEFAULT,
            key_groups: KeyGroupRange {
                start: 0,
                end: MAX_PARALLELISM_DEFAULT,
            },
            operator: "harness".into(),
        };
        let counters = Arc::new(OperatorCounters::default());
        let ctx = OperatorContext {
            runtime: runtime.clone(),
            config: Arc::new(JobConfig::default()),
            counters: counters.clone(),
            tick_resolution: None,
            state: backend.clone(),
            checkpoints: None,
            restored: None,
            restored_from: None,
            rescaled: None,
            uid: "harness#0".into(),
            node: 0,
        };
        Self {
            runtime,
            clock,
            states: StateRegistry::new(Some(ctx)),
            state: KeyedTable::new(),
            timers: TimerService::default(),
            counters,
        }
    }

    /// Declares states, as a function's `open` does.
    pub fn open<R>(&mut self, f: impl FnOnce(&mut KeyedOpenContext<'_, K>) -> R) -> R {
        f(&mut KeyedOpenContext {
            runtime: &self.runtime,
            states: &mut self.states,
        })
    }

    /// Runs `f` with `key` as the current key.
    #[inline]
    pub fn with_key<R>(&mut self, key: &K, f: impl FnOnce(&mut KeyedContext<'_, K, ()>) -> R) -> R {
        let mut ctx = KeyedContext {
            key,
            timestamp: None,
            watermark: i64::MIN,
            clock: &self.clock,
            state: &mut self.state,
            timers: &mut self.timers,
            runtime: &self.runtime,
            domain: None,
            states: &mut self.states,
        };
        f(&mut ctx)
    }

    /// Values the states wrote to the store and read back from it.
    pub fn store_traffic(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counters.state_writes.load(Relaxed),
            self.counters.state_reads.load(Relaxed),
        )
    }
}
