//! The Nexmark source: each shard generates its blocks of the stream, with event timestamps and
//! a watermark of its own (its events are in time order, so the watermark is the last
//! timestamp emitted, less one).

use shardflow::prelude::*;
use shardflow_core::operator::Batch;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;

use super::generator::{NexmarkConfig, Share};
use super::model::Event;

pub struct NexmarkSource {
    config: NexmarkConfig,
    /// The shares of the stream this shard generates (one, unless a restore at a lower
    /// parallelism dealt it several).
    shares: Vec<Share>,
    /// The block being generated (its share's index in `shares`, the block) and the events of
    /// it left.
    current: Option<(usize, u64, std::ops::Range<u64>)>,
    last: Option<i64>,
}

impl NexmarkSource {
    pub fn new(config: NexmarkConfig, shard: u32, parallelism: u32) -> Self {
        let share = config.share(shard, parallelism);
        Self {
            config,
            shares: vec![share],
            current: None,
            last: None,
        }
    }

    /// The next block: the earliest of the shares', so that a shard holding several stays in
    /// time order.
    fn next_block(&mut self) -> Option<(usize, u64, std::ops::Range<u64>)> {
        let blocks = self.config.blocks();
        self.shares.retain(|s| s.next_block < blocks);
        let (k, s) = self
            .shares
            .iter_mut()
            .enumerate()
            .min_by_key(|(_, s)| s.next_block)?;
        let b = s.next_block;
        let mut range = self.config.block_range(b);
        range.start = (range.start + s.skip).min(range.end);
        s.next_block += s.stride;
        s.skip = 0;
        Some((k, b, range))
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
        let mut room = max_records.max(1) as u64;
        while room > 0 {
            let (_, _, range) = match &mut self.current {
                Some(c) if !c.2.is_empty() => c,
                _ => match self.next_block() {
                    Some(next) => self.current.insert(next),
                    None => {
                        self.current = None;
                        return Ok(SourceStatus::End);
                    }
                },
            };
            let end = range.end.min(range.start + room);
            for i in range.start..end {
                let e = self.config.event(i);
                let ts = e.date_time();
                out.push(e, Some(ts));
                self.last = Some(ts);
            }
            room -= end - range.start;
            range.start = end;
        }
        Ok(SourceStatus::More)
    }

    fn current_watermark(&self) -> Option<i64> {
        self.last.map(|t| t - 1)
    }

    /// A restore takes up the shares a checkpoint recorded, from the first event not emitted.
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        if state.is_restored() {
            self.shares = state.list_state::<Share>("nexmark-shares")?.clone();
            self.current = None;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let saved = state.list_state::<Share>("nexmark-shares")?;
        saved.clear();
        saved.extend(self.shares.iter().copied());
        // The block under way is not finished: its share goes on from its next event.
        if let Some((k, b, range)) = &self.current
            && !range.is_empty()
        {
            let s = &mut saved[*k];
            s.next_block = *b;
            s.skip = range.start - self.config.block_range(*b).start;
        }
        Ok(())
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
