//! Event time and processing time.
//!
//! Event time is milliseconds since the Unix epoch, carried per record in a batch's timestamp
//! lane and advanced by watermarks (see [`crate::operator::Push::watermark`]). Processing time is
//! the job's clock, in milliseconds too: the system clock, or a [`ManualClock`] a test moves by
//! hand. Operators that act on processing time (timers, processing-time windows, periodic
//! watermarks, idleness) are *ticked* by the task that drives them (`Push::tick`), every
//! [`JobConfig::timer_resolution`](crate::config::JobConfig) while the job has such operators.

pub mod align;
pub mod assign;
pub mod watermark;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use assign::AssignTimestamps;
pub use watermark::{
    BoundedOutOfOrderness, NoWatermarks, RecordTimestamp, TimestampAssigner, WatermarkGenerator,
    WatermarkOutput, WatermarkStrategy,
};

/// A clock a test moves by hand: processing time stands still until it is advanced.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::Release);
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
    }
}

/// Where processing time comes from.
#[derive(Debug, Clone, Default)]
pub enum ProcessingClock {
    /// Wall-clock milliseconds since the Unix epoch.
    #[default]
    System,
    /// A test's clock.
    Manual(ManualClock),
}

impl ProcessingClock {
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Self::Manual(c) => c.now_ms(),
        }
    }
}

/// Ticks a chain with processing time, for the task that drives it: at most once per
/// resolution, and only when the job has operators that want it.
pub struct Ticker {
    clock: ProcessingClock,
    resolution: Option<Duration>,
    last_ms: i64,
}

impl Ticker {
    /// `resolution` None: the job has no processing-time operator, and the ticker never ticks.
    pub fn new(clock: ProcessingClock, resolution: Option<Duration>) -> Self {
        Self {
            clock,
            resolution,
            last_ms: i64::MIN,
        }
    }

    /// The resolution, if ticking.
    pub fn resolution(&self) -> Option<Duration> {
        self.resolution
    }

    /// The current processing time if a tick is due (time moved on since the last tick).
    #[inline]
    pub fn due(&mut self) -> Option<i64> {
        self.resolution?;
        let now = self.clock.now_ms();
        (now > self.last_ms).then(|| {
            self.last_ms = now;
            now
        })
    }
}
