//! Sources: where a job's records come from.

use crate::error::JobError;
use crate::operator::Batch;
use crate::state::OperatorStateStore;

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

    /// As `next_batch`, for a source whose records carry event timestamps: it fills `out`'s
    /// timestamp lane too (one per record). The default reads `next_batch`: no timestamps.
    fn next_timed_batch(
        &mut self,
        out: &mut Batch<T>,
        max_records: usize,
    ) -> impl std::future::Future<Output = Result<SourceStatus, JobError>> {
        self.next_batch(&mut out.records, max_records)
    }

    /// A source that knows event time (a partitioned log, a file of sorted events) says how far
    /// it got: after each batch, a watermark higher than the last one goes downstream. None
    /// (the default): the source emits no watermarks (an `assign_timestamps_and_watermarks`
    /// downstream makes them).
    fn current_watermark(&self) -> Option<i64> {
        None
    }

    /// Before the first batch: takes back the operator state the source saved (its offsets,
    /// its splits), if the job resumed; see [`crate::state::operator`]. The default keeps none.
    fn initialize_state(&mut self, _state: &mut OperatorStateStore) -> Result<(), JobError> {
        Ok(())
    }

    /// Saves the source's position into `state` (a checkpoint asks for it). The default saves
    /// nothing: the source cannot rewind.
    fn snapshot_state(&mut self, _state: &mut OperatorStateStore) -> Result<(), JobError> {
        Ok(())
    }
}

/// What a source says after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records may follow.
    More,
    /// The input is exhausted (bounded sources): end of input travels downstream.
    End,
}
