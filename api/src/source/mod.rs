//! Built-in sources.

pub mod generated;
pub mod socket;
pub mod text_file;

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};

/// Shard `shard`'s contiguous share of `[start, end)`.
pub fn split_range(start: u64, end: u64, shard: u32, parallelism: u32) -> Range<u64> {
    let n = (end - start) as u128;
    let (s, p) = (shard as u128, parallelism as u128);
    start + (n * s / p) as u64..start + (n * (s + 1) / p) as u64
}

/// A shard's share of an in-memory collection.
pub struct IterSource<T> {
    records: Arc<Vec<T>>,
    next: usize,
    end: usize,
}

impl<T> IterSource<T> {
    pub fn new(records: Arc<Vec<T>>, range: Range<usize>) -> Self {
        Self {
            records,
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
}

/// A shard's share of `from..=to`.
pub struct SequenceSource {
    next: i64,
    /// One past the last number of this shard (as i128: `to` may be `i64::MAX`).
    end: i128,
}

impl SequenceSource {
    pub fn new(from: i64, to: i64, shard: u32, parallelism: u32) -> Self {
        if to < from {
            return Self { next: 0, end: 0 };
        }
        let n = (to as i128 - from as i128 + 1) as u128;
        let (s, p) = (shard as u128, parallelism as u128);
        let start = from as i128 + (n * s / p) as i128;
        let end = from as i128 + (n * (s + 1) / p) as i128;
        Self {
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
            return Ok(SourceStatus::End);
        }
        self.next = upto as i64;
        Ok(SourceStatus::More)
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
