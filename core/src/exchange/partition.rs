//! Partitioners: which shard a record goes to. Generic, so routing is a static call per record.

use crate::key::{KeyGroupRouter, KeySelector};

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To one shard.
    One(u32),
    /// To every shard (broadcast).
    All,
}

/// Routes records among `parallelism` shards.
pub trait Partition<T>: Clone + Send + Sync + 'static {
    /// Called once per shard before any record, with the sending shard's index and the job's
    /// shape.
    fn open(&mut self, _shard: u32, _parallelism: u32, _max_parallelism: u32) {}
    fn route(&mut self, record: &T, parallelism: u32, max_parallelism: u32) -> Route;
}

/// By key: to the shard that owns the key's group.
#[derive(Clone)]
pub struct KeyBy<KS> {
    key: KS,
    router: Option<KeyGroupRouter>,
}

impl<KS> KeyBy<KS> {
    pub fn new(key: KS) -> Self {
        Self { key, router: None }
    }
}

impl<T, KS: KeySelector<T>> Partition<T> for KeyBy<KS> {
    fn open(&mut self, _shard: u32, parallelism: u32, max_parallelism: u32) {
        self.router = Some(KeyGroupRouter::new(max_parallelism, parallelism));
    }

    #[inline]
    fn route(&mut self, record: &T, _parallelism: u32, _max_parallelism: u32) -> Route {
        let router = self
            .router
            .as_ref()
            .expect("the writer opens its partitioner before routing");
        Route::One(router.shard(self.key.hash(record)))
    }
}

/// Round robin, starting at the sender's own index so the shards do not all start at shard 0.
#[derive(Clone, Default)]
pub struct Rebalance {
    next: u32,
}

impl<T> Partition<T> for Rebalance {
    fn open(&mut self, shard: u32, _parallelism: u32, _max_parallelism: u32) {
        self.next = shard;
    }
    #[inline]
    fn route(&mut self, _record: &T, parallelism: u32, _max_parallelism: u32) -> Route {
        let to = self.next % parallelism;
        self.next = to + 1;
        Route::One(to)
    }
}

/// To every shard.
#[derive(Clone, Default)]
pub struct Broadcast;

impl<T> Partition<T> for Broadcast {
    #[inline]
    fn route(&mut self, _record: &T, _parallelism: u32, _max_parallelism: u32) -> Route {
        Route::All
    }
}
