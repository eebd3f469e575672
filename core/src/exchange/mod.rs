//! Exchanges: where records cross from shard to shard.
//!
//! Every `key_by`, `rebalance` and `broadcast` edge of the job graph becomes an exchange. On each
//! shard the exchange is a [`writer::ExchangeWriter`] at the end of the sending chain and a
//! [`reader`] task at the head of the receiving chain. Between shards `s != r` runs one ring of the
//! shuffle crate per (exchange, s, r), carrying rkyv-archived batches; records that stay on their
//! shard go through a [`local::LocalChannel`] as plain values, never serialized.

pub mod local;
pub mod partition;
pub mod reader;
pub mod writer;

use std::sync::Arc;

pub use partition::{Broadcast, KeyBy, Partition, Rebalance, Route};
use shardflow_shuffle::{RingReceiver, RingSender};

/// The ring ends of one exchange on one shard: `senders[r]` to shard `r`, `receivers[s]` from
/// shard `s`; `None` at this shard's own index (that traffic is local).
pub struct RemoteEnds {
    pub senders: Vec<Option<RingSender>>,
    pub receivers: Vec<Option<RingReceiver>>,
}

/// Names an exchange and its channels in errors.
#[derive(Debug, Clone)]
pub struct ExchangeName {
    pub name: Arc<str>,
    pub index: u32,
    pub parallelism: u32,
}

impl ExchangeName {
    /// The channel id of (sender shard, receiver shard) in this exchange.
    pub fn channel_id(&self, from: u32, to: u32) -> u32 {
        let p = self.parallelism;
        self.index * p * p + from * p + to
    }

    /// "exchange 'key_by → sum' channel 5 (shard 1 → shard 0)"
    pub fn describe(&self, from: u32, to: u32) -> String {
        format!(
            "exchange '{}' channel {} (shard {from} → shard {to})",
            self.name,
            self.channel_id(from, to)
        )
    }
}
