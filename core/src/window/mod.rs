//! Windows on keyed streams, as in Flink: an assigner puts each record in windows, a trigger
//! says when a window's contents are emitted, a window function makes the output, an evictor may
//! drop contents first; allowed lateness keeps windows open after their end and late records go
//! to a side output.
//!
//! A window's contents and its trigger's state are keyed state with the window as namespace
//! ([`crate::keyed::KeyedTable`]); its timers are keyed timers ([`crate::keyed::TimerService`]).

pub mod assigners;
pub mod evictors;
pub mod functions;
pub mod operator;
pub mod triggers;
pub mod two_phase;

use std::fmt::Debug;
use std::hash::Hash;

pub use assigners::{
    GlobalWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowAssigner,
};
pub use evictors::{CountEvictor, Evictor, NoEvictor, TimeEvictor};
pub use functions::{
    AggregateFunction, Count, ProcessWindowFunction, WindowContext, WindowFunction,
};
pub use operator::{WindowOperator, WindowSettings};
pub use triggers::{
    ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger, CountTrigger, EventTimeTrigger,
    NeverTrigger, ProcessingTimeTrigger, PurgingTrigger, TimeTrigger, Trigger, TriggerContext,
    TriggerResult,
};

/// The error of an event-time window operator given records without timestamps.
pub(crate) const NO_TIMESTAMPS: &str = "event-time windows got records without timestamps: call \
     assign_timestamps_and_watermarks upstream (or use processing-time windows)";

/// A window: a namespace for keyed state, with a last timestamp.
pub trait Window: crate::Data + Eq + Hash + Debug + Sync {
    /// The last timestamp that belongs to the window.
    fn max_timestamp(&self) -> i64;

    /// Whether two windows of a merging assigner merge.
    fn intersects(&self, other: &Self) -> bool {
        self == other
    }

    /// The window two merging windows become.
    fn cover(&self, _other: &Self) -> Self {
        self.clone()
    }
}

/// The time window `[start, end)` (milliseconds).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct TimeWindow {
    pub start: i64,
    pub end: i64,
}

impl TimeWindow {
    pub fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }
}

impl Window for TimeWindow {
    #[inline]
    fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Windows that overlap or touch (sessions that do are merged).
    fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window holding both.
    fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// The one window of [`GlobalWindows`]: everything, forever.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct GlobalWindow;

impl Window for GlobalWindow {
    fn max_timestamp(&self) -> i64 {
        i64::MAX
    }
}
