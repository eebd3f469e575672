//! The Nexmark source: each shard generates its blocks of the stream, with event timestamps and
//! a watermark of its own (its events are in time order, so the watermark is the last
//! timestamp emitted, less one).

use shardflow::prelude::*;
use shardflow_core::operator::Batch;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;

use shardflow::source::DealtBlocks;

use super::generator::NexmarkConfig;
use super::model::Event;

pub struct NexmarkSource {
    config: NexmarkConfig,
    /// The blocks of the stream this shard generates (its own, unless a restore dealt it the
    /// shares of earlier shards).
    blocks: DealtBlocks,
    last: Option<i64>,
}

impl NexmarkSource {
    pub fn new(config: NexmarkConfig, shard: u32, parallelism: u32) -> Self {
        Self {
            blocks: DealtBlocks::new(config.events, config.block, shard, parallelism),
            config,
            last: None,
        }
    }
}

impl Source<Event> for NexmarkSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let mut batch = Batch::new();
        std::mem::swap(&mut batch.records, out);
        let status = self.next_timed_batch(&mut batch, max_records).await;
        std::mem::swap(&mut batch.records, out);
        status
    }

    async fn next_timed_batch(
        &mut self,
        out: &mut Batch<Event>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let (config, last) = (&self.config, &mut self.last);
        self.blocks.take_each(max_records as u64, |i| {
            let e = config.event(i);
            let ts = e.date_time();
            out.push(e, Some(ts));
            *last = Some(ts);
        });
        Ok(self.blocks.status())
    }

    fn current_watermark(&self) -> Option<i64> {
        self.last.map(|t| t - 1)
    }

    /// A restore takes up the shares a checkpoint recorded, from the first event not emitted.
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.blocks.restore(state, "nexmark-blocks")
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.blocks.save(state, "nexmark-blocks")
    }
}

/// The Nexmark event stream, generated on every shard.
pub fn events(env: &StreamExecutionEnvironment, config: &NexmarkConfig) -> DataStream<Event> {
    let config = config.clone();
    env.add_source("nexmark", move |ctx| {
        Ok(NexmarkSource::new(
            config.clone(),
            ctx.runtime.shard,
            ctx.runtime.parallelism,
        ))
    })
}
