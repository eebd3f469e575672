//! Built-in sources.

pub mod generated;
pub mod socket;
pub mod text_file;

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;

/// What a shard of an in-memory source has left to emit: ranges of positions, each
/// `(next, remaining)`, emitted in order. A checkpoint stores them as the `remaining` list state,
/// so a restore at another parallelism hands each earlier shard's ranges to exactly one new
/// shard (round robin over the entries; a new shard may get none and end at once).
#[derive(Debug, Clone, Default)]
pub(crate) struct Remaining {
    ranges: std::collections::VecDeque<(u64, u64)>,
}

impl Remaining {
    pub(crate) fn new(start: u64, count: u64) -> Self {
        let mut ranges = std::collections::VecDeque::new();
        if count > 0 {
            ranges.push_back((start, count));
        }
        Self { ranges }
    }

    /// The next run of up to `max` positions: `(first, count)`; None once all are taken.
    pub(crate) fn take(&mut self, max: u64) -> Option<(u64, u64)> {
        let front = self.ranges.front_mut()?;
        let n = front.1.min(max.max(1));
        let first = front.0;
        // Wraps only past the last position (offset 2^64 - 1 of a sequence up to i64::MAX),
        // where the range is done.
        front.0 = front.0.wrapping_add(n);
        front.1 -= n;
        if front.1 == 0 {
            self.ranges.pop_front();
        }
        Some((first, n))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// `End` once every position is taken.
    pub(crate) fn status(&self) -> SourceStatus {
        if self.is_empty() {
            SourceStatus::End
        } else {
            SourceStatus::More
        }
    }

    /// Takes the ranges a checkpoint recorded (none restored: keeps the shard's own share).
    pub(crate) fn restore(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        if state.is_restored() {
            let saved = state.list_state::<(u64, u64)>("remaining")?;
            self.ranges = saved.iter().copied().filter(|r| r.1 > 0).collect();
        }
        Ok(())
    }

    pub(crate) fn save(&self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let saved = state.list_state::<(u64, u64)>("remaining")?;
        saved.clear();
        saved.extend(self.ranges.iter().copied());
        Ok(())
    }
}

/// A shard's share of positions `0..total` dealt in blocks round robin: block `b` (positions
/// `b * block ..`) belongs to shard `b % parallelism`. For generators whose position is event
/// time: every shard moves through the whole span of time together, as the partitions of a live
/// feed do, instead of shard 1 starting where shard 0 will end (a contiguous split holds every
/// window of the later shards open in a downstream window until the earliest shard catches up,
/// and a paced generator's later shards wait idle for their time to come).
///
/// A checkpoint stores the shares as list state; a restore at another parallelism deals the
/// earlier shards' shares out whole (a new shard holding several takes the earliest block
/// first, so it stays in position order; one holding none ends at once).
#[derive(Debug, Clone)]
pub struct DealtBlocks {
    total: u64,
    block: u64,
    shares: Vec<BlockShare>,
}

/// One stride of blocks: `next_block, next_block + stride, ...`, the first `skip` positions of
/// `next_block` already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BlockShare {
    pub next_block: u64,
    pub stride: u64,
    pub skip: u64,
}

impl DealtBlocks {
    /// Shard `shard` of `parallelism`'s blocks of `block` positions (at least one) of `0..total`.
    pub fn new(total: u64, block: u64, shard: u32, parallelism: u32) -> Self {
        let mut d = Self {
            total,
            block: block.max(1),
            shares: vec![BlockShare {
                next_block: shard as u64,
                stride: parallelism.max(1) as u64,
                skip: 0,
            }],
        };
        d.drop_finished();
        d
    }

    fn block_range(&self, b: u64) -> Range<u64> {
        let start = b.saturating_mul(self.block).min(self.total);
        start..start.saturating_add(self.block).min(self.total)
    }

    fn drop_finished(&mut self) {
        let blocks = self.total.div_ceil(self.block);
        self.shares.retain(|s| s.next_block < blocks);
    }

    /// The next run of up to `max` (at least one) positions, within one block; None once all
    /// are taken.
    pub fn take(&mut self, max: u64) -> Option<Range<u64>> {
        let k = (0..self.shares.len()).min_by_key(|&k| self.shares[k].next_block)?;
        let s = self.shares[k];
        let block = self.block_range(s.next_block);
        let start = block.start + s.skip;
        let end = block.end.min(start.saturating_add(max.max(1)));
        let share = &mut self.shares[k];
        if end == block.end {
            share.next_block += share.stride;
            share.skip = 0;
            self.drop_finished();
        } else {
            share.skip = end - block.start;
        }
        Some(start..end)
    }

    /// Takes up to `max` (at least one) positions, across blocks, handing each to `f` in order.
    pub fn take_each(&mut self, max: u64, mut f: impl FnMut(u64)) {
        let mut room = max.max(1);
        while room > 0 {
            let Some(range) = self.take(room) else { break };
            room -= range.end - range.start;
            range.for_each(&mut f);
        }
    }

    /// The next position, if any is left.
    pub fn front(&self) -> Option<u64> {
        let s = self.shares.iter().min_by_key(|s| s.next_block)?;
        Some(self.block_range(s.next_block).start + s.skip)
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// `End` once every position is taken.
    pub fn status(&self) -> SourceStatus {
        if self.is_empty() {
            SourceStatus::End
        } else {
            SourceStatus::More
        }
    }

    /// Takes the shares a checkpoint recorded as list state `name` (none restored: keeps the
    /// shard's own).
    pub fn restore(&mut self, state: &mut OperatorStateStore, name: &str) -> Result<(), JobError> {
        if state.is_restored() {
            self.shares = state.list_state::<BlockShare>(name)?.clone();
            self.drop_finished();
        }
        Ok(())
    }

    /// Records the shares as list state `name`.
    pub fn save(&self, state: &mut OperatorStateStore, name: &str) -> Result<(), JobError> {
        let saved = state.list_state::<BlockShare>(name)?;
        saved.clear();
        saved.extend(self.shares.iter().copied());
        Ok(())
    }
}

/// Shard `shard`'s contiguous share of `[start, end)`.
pub fn split_range(start: u64, end: u64, shard: u32, parallelism: u32) -> Range<u64> {
    let n = (end - start) as u128;
    let (s, p) = (shard as u128, parallelism as u128);
    start + (n * s / p) as u64..start + (n * (s + 1) / p) as u64
}

/// A shard's share of an in-memory collection.
pub struct IterSource<T> {
    records: Arc<Vec<T>>,
    remaining: Remaining,
}

impl<T> IterSource<T> {
    pub fn new(records: Arc<Vec<T>>, range: Range<usize>) -> Self {
        Self {
            records,
            remaining: Remaining::new(range.start as u64, range.len() as u64),
        }
    }
}

impl<T: Clone + 'static> Source<T> for IterSource<T> {
    async fn next_batch(
        &mut self,
        out: &mut Vec<T>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if let Some((first, n)) = self.remaining.take(max_records as u64) {
            let (first, n) = (first as usize, n as usize);
            let Some(records) = self.records.get(first..first + n) else {
                return Err(JobError::Config(format!(
                    "from_iter: the checkpoint resumes at records {first}..{}, but the \
                     collection has {}",
                    first + n,
                    self.records.len()
                )));
            };
            out.extend_from_slice(records);
        }
        Ok(self.remaining.status())
    }

    /// A checkpoint records the ranges of the collection the shard has left; a restore goes on
    /// with them (after a rescale, with its share of every earlier shard's).
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.remaining.restore(state)
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.remaining.save(state)
    }
}

/// A shard's share of `from..=to`. Positions are offsets from `i64::MIN`, so every `i64` fits.
pub struct SequenceSource {
    remaining: Remaining,
}

impl SequenceSource {
    pub fn new(from: i64, to: i64, shard: u32, parallelism: u32) -> Self {
        if to < from {
            return Self {
                remaining: Remaining::default(),
            };
        }
        let n = (to as i128 - from as i128 + 1) as u128;
        let (s, p) = (shard as u128, parallelism as u128);
        let start = from as i128 + (n * s / p) as i128;
        let end = from as i128 + (n * (s + 1) / p) as i128;
        // A share of all 2^64 numbers has one too many to count in a u64: it ends one short
        // (after 2^64 - 1 numbers, which no job lives to see).
        let count = (end - start).min(u64::MAX as i128) as u64;
        Self {
            remaining: Remaining::new((start - i64::MIN as i128) as u64, count),
        }
    }
}

impl Source<i64> for SequenceSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<i64>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if let Some((first, n)) = self.remaining.take(max_records as u64) {
            let first = first as i128 + i64::MIN as i128;
            out.extend((first..first + n as i128).map(|x| x as i64));
        }
        Ok(self.remaining.status())
    }

    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.remaining.restore(state)
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        self.remaining.save(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_exactly_once() {
        for n in [0u64, 1, 5, 1000, 1001] {
            for p in 1..=9 {
                let mut next = 10;
                for s in 0..p {
                    let r = split_range(10, 10 + n, s, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, 10 + n);
            }
        }
    }

    /// Takes up to `n` runs of `chunk` positions from every shard in turn, recording them.
    fn drain_some(shards: &mut [DealtBlocks], chunk: u64, n: usize, seen: &mut [Vec<u64>]) {
        for (d, seen) in shards.iter_mut().zip(seen.iter_mut()) {
            for _ in 0..n {
                let Some(r) = d.take(chunk) else { break };
                assert!(!r.is_empty() && r.end - r.start <= chunk.max(1));
                seen.extend(r);
            }
        }
    }

    #[test]
    fn dealt_blocks_cover_every_position_once_in_order_across_rescales() {
        use shardflow_core::state::{OperatorStateStore, redistribute};
        for (total, block) in [
            (0u64, 4u64),
            (1, 4),
            (37, 4),
            (1000, 7),
            (1024, 1024),
            (50, 1),
        ] {
            for (p, q) in [(1u32, 1u32), (2, 1), (2, 3), (3, 2), (4, 2), (1, 4)] {
                for chunk in [1u64, 3, 100] {
                    let mut shards: Vec<_> = (0..p)
                        .map(|s| DealtBlocks::new(total, block, s, p))
                        .collect();
                    // Block b is shard b % p's.
                    for (s, d) in shards.iter().enumerate() {
                        let first = d.front();
                        let expect = (s as u64 * block < total).then_some(s as u64 * block);
                        assert_eq!(first, expect, "total {total} block {block} shard {s}");
                    }
                    let mut before = vec![Vec::new(); p as usize];
                    drain_some(&mut shards, chunk, 3, &mut before);
                    let snapshots: Vec<_> = shards
                        .iter()
                        .map(|d| {
                            let mut st = OperatorStateStore::default();
                            d.save(&mut st, "blocks").unwrap();
                            st.snapshot().unwrap()
                        })
                        .collect();
                    let mut resumed: Vec<_> = redistribute(&snapshots, q)
                        .into_iter()
                        .enumerate()
                        .map(|(s, snap)| {
                            // A fresh shard's own share is replaced by what was dealt to it.
                            let mut d = DealtBlocks::new(total, block, s as u32, q);
                            let mut st = OperatorStateStore::restored(snap);
                            d.restore(&mut st, "blocks").unwrap();
                            d
                        })
                        .collect();
                    let mut after = vec![Vec::new(); q as usize];
                    drain_some(&mut resumed, chunk, usize::MAX, &mut after);
                    assert!(
                        resumed
                            .iter_mut()
                            .all(|d| d.is_empty() && d.take(1).is_none())
                    );
                    for run in before.iter().chain(&after) {
                        assert!(run.windows(2).all(|w| w[0] < w[1]), "out of order: {run:?}");
                    }
                    let mut all: Vec<u64> = before.into_iter().chain(after).flatten().collect();
                    all.sort_unstable();
                    assert_eq!(
                        all,
                        (0..total).collect::<Vec<_>>(),
                        "{total} {block} {p}->{q}"
                    );
                }
            }
        }
    }

    #[test]
    fn sequence_covers_extremes() {
        let mut all = Vec::new();
        for s in 0..3 {
            let mut src = SequenceSource::new(i64::MAX - 4, i64::MAX, s, 3);
            let mut out = Vec::new();
            futures_lite::future::block_on(src.next_batch(&mut out, 100)).unwrap();
            all.extend(out);
        }
        assert_eq!(all, (i64::MAX - 4..=i64::MAX).collect::<Vec<_>>());
        let mut empty = SequenceSource::new(5, 4, 0, 1);
        let mut out = Vec::new();
        assert_eq!(
            futures_lite::future::block_on(empty.next_batch(&mut out, 10)).unwrap(),
            SourceStatus::End
        );
        assert!(out.is_empty());
    }
}
