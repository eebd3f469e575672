//! Built-in sources.

pub mod generated;
pub mod socket;
pub mod text_file;

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;

/// Takes a shard's position in `[start, end)` back from a checkpoint's `position` list state
/// (`(start, end, next)` per shard): `next`, or an error if the checkpoint split the input
/// differently (a rescaled in-memory source cannot find its share).
pub(crate) fn restored_position(
    state: &mut OperatorStateStore,
    what: &str,
    start: u64,
    end: u64,
) -> Result<Option<u64>, JobError> {
    if !state.is_restored() {
        return Ok(None);
    }
    let positions = state.list_state::<(u64, u64, u64)>("position")?;
    match positions.iter().find(|p| (p.0, p.1) == (start, end)) {
        Some(p) => Ok(Some(p.2)),
        None if positions.is_empty() => Ok(None),
        None => Err(JobError::Config(format!(
            "{what}: the checkpoint holds positions in {:?}, none for this shard's              [{start}, {end})",
            positions.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
        ))),
    }
}

/// Saves a shard's position in `[start, end)` as its `position` list state.
pub(crate) fn save_position(
    state: &mut OperatorStateStore,
    start: u64,
    end: u64,
    next: u64,
) -> Result<(), JobError> {
    let positions = state.list_state::<(u64, u64, u64)>("position")?;
    positions.clear();
    positions.push((start, end, next));
    Ok(())
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
    start: usize,
    next: usize,
    end: usize,
}

impl<T> IterSource<T> {
    pub fn new(records: Arc<Vec<T>>, range: Range<usize>) -> Self {
        Self {
            records,
            start: range.start,
            next: range.start,
            end: range.end,
        }
    }
}

impl<T: Clone + 'static> Source<T> for IterSource<T> {
    async fn next_batch(
        &mut self,
        out: &mut Vec<T>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let upto = (self.next + max_records).min(self.end);
        out.extend_from_slice(&self.records[self.next..upto]);
        self.next = upto;
        Ok(if self.next == self.end {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }

    /// A checkpoint records how far the shard got in its share; a restore goes on from there.
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let (start, end) = (self.start as u64, self.end as u64);
        if let Some(next) = restored_position(state, "from_iter", start, end)? {
            self.next = (next as usize).clamp(self.start, self.end);
        }
        Ok(())
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        save_position(state, self.start as u64, self.end as u64, self.next as u64)
    }
}

/// A shard's share of `from..=to`.
pub struct SequenceSource {
    start: i64,
    next: i64,
    /// One past the last number of this shard (as i128: `to` may be `i64::MAX`).
    end: i128,
}

impl SequenceSource {
    pub fn new(from: i64, to: i64, shard: u32, parallelism: u32) -> Self {
        if to < from {
            return Self {
                start: 0,
                next: 0,
                end: 0,
            };
        }
        let n = (to as i128 - from as i128 + 1) as u128;
        let (s, p) = (shard as u128, parallelism as u128);
        let start = from as i128 + (n * s / p) as i128;
        let end = from as i128 + (n * (s + 1) / p) as i128;
        Self {
            start: start as i64,
            next: start as i64,
            end,
        }
    }
}

impl Source<i64> for SequenceSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<i64>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let upto = (self.next as i128 + max_records as i128).min(self.end);
        let mut x = self.next as i128;
        while x < upto {
            out.push(x as i64);
            x += 1;
        }
        if upto >= self.end {
            self.next = self.end.min(i64::MAX as i128) as i64;
            return Ok(SourceStatus::End);
        }
        self.next = upto as i64;
        Ok(SourceStatus::More)
    }

    /// Positions are kept as offsets from `i64::MIN` (u64), so every `i64` fits.
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let off = |x: i128| (x - i64::MIN as i128) as u64;
        let (start, end) = (off(self.start as i128), off(self.end));
        if let Some(next) = restored_position(state, "sequence", start, end)? {
            self.next = (next as i128 + i64::MIN as i128) as i64;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let off = |x: i128| (x - i64::MIN as i128) as u64;
        save_position(
            state,
            off(self.start as i128),
            off(self.end),
            off(self.next as i128),
        )
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
