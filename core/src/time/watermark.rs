//! Watermark strategies: where a record's timestamp comes from, and how watermarks follow.
//!
//! As in Flink, a [`WatermarkStrategy`] pairs a [`TimestampAssigner`] with a
//! [`WatermarkGenerator`]. The generator sees every record (`on_event`, which may emit a
//! watermark at once: punctuated) and is asked periodically (`on_periodic_emit`, every
//! `auto_watermark_interval` of processing time, and whenever the input goes idle).
//! Everything is generic: the per-record calls are inlined, never dynamic.

use std::time::Duration;

/// Where a generator puts watermarks.
#[derive(Debug, Default)]
pub struct WatermarkOutput {
    pub(crate) watermark: Option<i64>,
    pub(crate) processing_time: i64,
}

impl WatermarkOutput {
    /// Emits a watermark (a lower one than already emitted is ignored downstream).
    #[inline]
    pub fn emit_watermark(&mut self, watermark: i64) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// The job's processing time when the generator was called periodically (milliseconds).
    pub fn processing_time(&self) -> i64 {
        self.processing_time
    }
}

/// Generates watermarks from the records it sees and from the passing of time.
pub trait WatermarkGenerator<T>: Clone + Send + Sync + 'static {
    /// Called for every record, with its timestamp. A punctuated generator emits here.
    fn on_event(&mut self, record: &T, timestamp: i64, out: &mut WatermarkOutput);
    /// Called periodically. A periodic generator emits here.
    fn on_periodic_emit(&mut self, out: &mut WatermarkOutput);
}

/// Watermarks that trail the highest timestamp seen by a fixed bound: a record at most `bound`
/// older than the newest one is never late. Watermark = max timestamp − bound − 1.
#[derive(Debug, Clone, Copy)]
pub struct BoundedOutOfOrderness {
    bound_ms: i64,
    max_timestamp: i64,
}

impl BoundedOutOfOrderness {
    pub fn new(bound: Duration) -> Self {
        Self {
            bound_ms: bound.as_millis() as i64,
            max_timestamp: i64::MIN,
        }
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    #[inline]
    fn on_event(&mut self, _record: &T, timestamp: i64, _out: &mut WatermarkOutput) {
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }
    fn on_periodic_emit(&mut self, out: &mut WatermarkOutput) {
        if self.max_timestamp != i64::MIN {
            out.emit_watermark(
                self.max_timestamp
                    .saturating_sub(self.bound_ms)
                    .saturating_sub(1),
            );
        }
    }
}

/// No watermarks at all (event time advances only at the end of input).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatermarks;

impl<T> WatermarkGenerator<T> for NoWatermarks {
    fn on_event(&mut self, _record: &T, _timestamp: i64, _out: &mut WatermarkOutput) {}
    fn on_periodic_emit(&mut self, _out: &mut WatermarkOutput) {}
}

/// Gives each record its event timestamp.
pub trait TimestampAssigner<T>: Clone + Send + Sync + 'static {
    /// `previous` is the timestamp the record already has (from its source), if any. None: the
    /// record cannot be given one (an error naming the operator).
    fn extract(&self, record: &T, previous: Option<i64>) -> Option<i64>;
}

/// Keeps the timestamp the record already has (set by its source).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordTimestamp;

impl<T> TimestampAssigner<T> for RecordTimestamp {
    #[inline]
    fn extract(&self, _record: &T, previous: Option<i64>) -> Option<i64> {
        previous
    }
}

/// A timestamp assigner from a function of the record.
#[derive(Clone)]
pub struct FnAssigner<F>(pub F);

impl<T, F: Fn(&T) -> i64 + Clone + Send + Sync + 'static> TimestampAssigner<T> for FnAssigner<F> {
    #[inline]
    fn extract(&self, record: &T, _previous: Option<i64>) -> Option<i64> {
        Some((self.0)(record))
    }
}

/// A timestamp assigner and a watermark generator, and how idleness is treated.
///
/// ```
/// use std::time::Duration;
/// use shardflow_core::time::WatermarkStrategy;
/// let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
///     .with_timestamp_assigner(|e: &(u64, i64)| e.1);
/// # let _ = strategy;
/// ```
#[derive(Clone)]
pub struct WatermarkStrategy<G, A> {
    pub generator: G,
    pub assigner: A,
    /// An input that has sent no record for this long stops holding event time back.
    pub idleness: Option<Duration>,
    /// The alignment group and the drift its members may keep (see [`crate::time::align`]).
    pub alignment: Option<(String, Duration)>,
}

impl WatermarkStrategy<BoundedOutOfOrderness, RecordTimestamp> {
    /// Watermarks trailing the highest timestamp by `bound`.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self::for_generator(BoundedOutOfOrderness::new(bound))
    }

    /// Timestamps that never go down: the watermark is the highest timestamp − 1.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO)
    }
}

impl WatermarkStrategy<NoWatermarks, RecordTimestamp> {
    /// Timestamps but no watermarks.
    pub fn no_watermarks() -> Self {
        Self::for_generator(NoWatermarks)
    }
}

impl<G> WatermarkStrategy<G, RecordTimestamp> {
    /// A custom generator, periodic or punctuated.
    pub fn for_generator(generator: G) -> Self {
        Self {
            generator,
            assigner: RecordTimestamp,
            idleness: None,
            alignment: None,
        }
    }
}

impl<G, A> WatermarkStrategy<G, A> {
    /// Takes each record's timestamp from `f`.
    pub fn with_timestamp_assigner<T, F>(self, f: F) -> WatermarkStrategy<G, FnAssigner<F>>
    where
        F: Fn(&T) -> i64 + Clone + Send + Sync + 'static,
    {
        WatermarkStrategy {
            generator: self.generator,
            assigner: FnAssigner(f),
            idleness: self.idleness,
            alignment: self.alignment,
        }
    }

    /// Watermark alignment (Flink's `withWatermarkAlignment`): the inputs of every assigner in
    /// `group` keep within `max_drift` of event time of each other; a shard's input further
    /// ahead than that pauses until the lowest catches up (it holds the records it would read
    /// meanwhile back in their source, not in the windows downstream). A shard's position is
    /// the highest timestamp it has assigned; one that is idle (see
    /// [`with_idleness`](Self::with_idleness)), ended, or has assigned nothing yet holds
    /// nobody back. Within one process (see [`crate::time::align`]).
    pub fn with_watermark_alignment(
        mut self,
        group: impl Into<String>,
        max_drift: Duration,
    ) -> Self {
        self.alignment = Some((group.into(), max_drift));
        self
    }

    /// An input silent for `timeout` (processing time) is idle: it no longer holds back the
    /// watermark of the operators it feeds, until it sends a record again.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(timeout);
        self
    }
}
