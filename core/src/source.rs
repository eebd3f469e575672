//! Sources: where a job's records come from.

use crate::error::JobError;

/// One shard's share of a source. `next_batch` appends up to `max_records` records to `out`
/// and says whether more may follow.
///
/// A source whose next records are not there yet (a socket, a queue) awaits inside
/// `next_batch`; the task driving it sees the wait and flushes the partial batches downstream
/// first, so an idle stream never holds a record back.
pub trait Source<T>: 'static {
    fn next_batch(
        &mut self,
        out: &mut Vec<T>,
        max_records: usize,
    ) -> impl std::future::Future<Output = Result<SourceStatus, JobError>>;
}

/// What a source says after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records may follow.
    More,
    /// The input is exhausted (bounded sources): end of input travels downstream.
    End,
}
