//! Window assigners: which windows a record belongs to.

use std::time::Duration;

use super::triggers::{NeverTrigger, TimeTrigger, Trigger};
use super::{GlobalWindow, TimeWindow, Window};

/// Puts each record in zero or more windows.
pub trait WindowAssigner<T>: Clone + Send + Sync + 'static {
    type W: Window;
    /// The trigger windows get unless told otherwise.
    type DefaultTrigger: Trigger<T, Self::W>;

    fn default_trigger(&self) -> Self::DefaultTrigger;

    /// The windows of a record with event timestamp `timestamp` (None: the record has none)
    /// arriving at processing time `now`. Appends to `out`.
    fn assign(&self, record: &T, timestamp: Option<i64>, now: i64, out: &mut Vec<Self::W>);

    /// For an assigner that puts a record in at most one window (tumbling, global): that window
    /// (`Some(None)`: none). `None`: the assigner may give several; call `assign`.
    #[inline]
    fn assign_single(
        &self,
        _record: &T,
        _timestamp: Option<i64>,
        _now: i64,
    ) -> Option<Option<Self::W>> {
        None
    }

    /// For an assigner with `assign_single`: the times `[from, to)` whose records all go to
    /// window `w` and no other (None: do not reuse it).
    #[inline]
    fn span(&self, _w: &Self::W) -> Option<(i64, i64)> {
        None
    }

    /// Whether the windows are in event time (else processing time).
    fn is_event_time(&self) -> bool;

    /// Session windows merge: overlapping windows of a key become one.
    fn is_merging(&self) -> bool {
        false
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// The time a record is windowed by: its timestamp in event time (None if it has none), the
/// processing time otherwise.
#[inline]
fn time_of(event_time: bool, timestamp: Option<i64>, now: i64) -> Option<i64> {
    if event_time { timestamp } else { Some(now) }
}

/// The start of the window of `size` (shifted by `offset`) holding `ts`.
#[inline]
pub fn window_start(ts: i64, offset: i64, size: i64) -> i64 {
    // Timestamps at the ends of the range (a record without one is at i64::MIN) must not
    // overflow: the window is clamped into the range instead.
    match ts.checked_sub(offset) {
        Some(d) => ts.saturating_sub(d.rem_euclid(size)),
        None => ((ts as i128) - (ts as i128 - offset as i128).rem_euclid(size as i128))
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
    }
}

/// Finds the one window of a record, for assigners that give at most one (`assign_single`),
/// remembering the last window's span: the next record in the same span (most of them, since
/// event time moves slowly) needs no division to find its window.
pub struct SingleWindow<W> {
    last: Option<(i64, i64, W)>,
}

impl<W> Default for SingleWindow<W> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl<W: Window> SingleWindow<W> {
    /// `Some(window or none)` if the assigner gives at most one window; `None`: call `assign`.
    #[inline]
    pub fn find<T, WA: WindowAssigner<T, W = W>>(
        &mut self,
        assigner: &WA,
        record: &T,
        timestamp: Option<i64>,
        now: i64,
    ) -> Option<Option<W>> {
        if let (Some(t), Some((from, to, w))) = (timestamp, &self.last)
            && *from <= t
            && t < *to
        {
            return Some(Some(w.clone()));
        }
        let single = assigner.assign_single(record, timestamp, now)?;
        if let Some(w) = &single
            && let Some((from, to)) = assigner.span(w)
        {
            self.last = Some((from, to, w.clone()));
        }
        Some(single)
    }
}

/// Windows of a fixed size that do not overlap.
#[derive(Debug, Clone, Copy)]
pub struct TumblingWindows {
    size: i64,
    offset: i64,
    event_time: bool,
}

impl TumblingWindows {
    /// Tumbling windows in event time.
    pub fn event_time(size: Duration) -> Self {
        assert!(!size.is_zero(), "a window needs a size");
        Self {
            size: ms(size),
            offset: 0,
            event_time: true,
        }
    }

    /// Tumbling windows in processing time.
    pub fn processing_time(size: Duration) -> Self {
        Self {
            event_time: false,
            ..Self::event_time(size)
        }
    }

    /// Shifts the windows' starts (a day in another time zone, say).
    pub fn with_offset(mut self, offset: Duration) -> Self {
        self.offset = ms(offset) % self.size;
        self
    }
}

impl<T> WindowAssigner<T> for TumblingWindows {
    type W = TimeWindow;
    type DefaultTrigger = TimeTrigger;

    fn default_trigger(&self) -> TimeTrigger {
        TimeTrigger {
            event_time: self.event_time,
        }
    }

    #[inline]
    fn assign(&self, _record: &T, timestamp: Option<i64>, now: i64, out: &mut Vec<TimeWindow>) {
        let Some(t) = time_of(self.event_time, timestamp, now) else {
            return;
        };
        let start = window_start(t, self.offset, self.size);
        out.push(TimeWindow::new(start, start.saturating_add(self.size)));
    }

    #[inline]
    fn assign_single(
        &self,
        _record: &T,
        timestamp: Option<i64>,
        now: i64,
    ) -> Option<Option<TimeWindow>> {
        Some(time_of(self.event_time, timestamp, now).map(|t| {
            let start = window_start(t, self.offset, self.size);
            TimeWindow::new(start, start.saturating_add(self.size))
        }))
    }

    #[inline]
    fn span(&self, w: &TimeWindow) -> Option<(i64, i64)> {
        // Only event-time windows are found by a record's own time.
        self.event_time.then_some((w.start, w.end))
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }
}

/// Windows of a fixed size starting every `slide`: a record is in `size / slide` of them.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindows {
    size: i64,
    slide: i64,
    offset: i64,
    event_time: bool,
}

impl SlidingWindows {
    pub fn event_time(size: Duration, slide: Duration) -> Self {
        assert!(
            !size.is_zero() && !slide.is_zero(),
            "a window needs a size and a slide"
        );
        Self {
            size: ms(size),
            slide: ms(slide),
            offset: 0,
            event_time: true,
        }
    }

    pub fn processing_time(size: Duration, slide: Duration) -> Self {
        Self {
            event_time: false,
            ..Self::event_time(size, slide)
        }
    }

    pub fn with_offset(mut self, offset: Duration) -> Self {
        self.offset = ms(offset) % self.slide;
        self
    }
}

impl<T> WindowAssigner<T> for SlidingWindows {
    type W = TimeWindow;
    type DefaultTrigger = TimeTrigger;

    fn default_trigger(&self) -> TimeTrigger {
        TimeTrigger {
            event_time: self.event_time,
        }
    }

    fn assign(&self, _record: &T, timestamp: Option<i64>, now: i64, out: &mut Vec<TimeWindow>) {
        let Some(t) = time_of(self.event_time, timestamp, now) else {
            return;
        };
        let mut start = window_start(t, self.offset, self.slide);
        let first = t.saturating_sub(self.size);
        while start > first {
            out.push(TimeWindow::new(start, start.saturating_add(self.size)));
            match start.checked_sub(self.slide) {
                Some(s) => start = s,
                None => break,
            }
        }
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }
}

/// Sessions: a record opens the window `[ts, ts + gap)`, and windows of a key that overlap or
/// touch merge. The gap may depend on the record.
#[derive(Clone)]
pub struct SessionWindows<G> {
    gap: G,
    event_time: bool,
}

/// A fixed session gap.
#[derive(Debug, Clone, Copy)]
pub struct FixedGap(pub i64);

/// How long a record keeps its session open.
pub trait SessionGap<T>: Clone + Send + Sync + 'static {
    fn gap_ms(&self, record: &T) -> i64;
}

impl<T> SessionGap<T> for FixedGap {
    #[inline]
    fn gap_ms(&self, _record: &T) -> i64 {
        self.0
    }
}

/// A gap computed from each record.
#[derive(Clone)]
pub struct DynamicGap<F>(F);

impl<T, F: Fn(&T) -> Duration + Clone + Send + Sync + 'static> SessionGap<T> for DynamicGap<F> {
    #[inline]
    fn gap_ms(&self, record: &T) -> i64 {
        ms((self.0)(record))
    }
}

impl SessionWindows<FixedGap> {
    pub fn event_time(gap: Duration) -> Self {
        assert!(!gap.is_zero(), "a session needs a gap");
        Self {
            gap: FixedGap(ms(gap)),
            event_time: true,
        }
    }

    pub fn processing_time(gap: Duration) -> Self {
        Self {
            event_time: false,
            ..Self::event_time(gap)
        }
    }
}

impl<F> SessionWindows<DynamicGap<F>> {
    pub fn event_time_dynamic(gap: F) -> Self {
        Self {
            gap: DynamicGap(gap),
            event_time: true,
        }
    }

    pub fn processing_time_dynamic(gap: F) -> Self {
        Self {
            gap: DynamicGap(gap),
            event_time: false,
        }
    }
}

impl<T, G: SessionGap<T>> WindowAssigner<T> for SessionWindows<G> {
    type W = TimeWindow;
    type DefaultTrigger = TimeTrigger;

    fn default_trigger(&self) -> TimeTrigger {
        TimeTrigger {
            event_time: self.event_time,
        }
    }

    fn assign(&self, record: &T, timestamp: Option<i64>, now: i64, out: &mut Vec<TimeWindow>) {
        let Some(t) = time_of(self.event_time, timestamp, now) else {
            return;
        };
        let gap = self.gap.gap_ms(record).max(1);
        out.push(TimeWindow::new(t, t.saturating_add(gap)));
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn is_merging(&self) -> bool {
        true
    }
}

/// One window holding everything: it fires only by a custom trigger (count windows are global
/// windows with a count trigger).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalWindows;

impl<T> WindowAssigner<T> for GlobalWindows {
    type W = GlobalWindow;
    type DefaultTrigger = NeverTrigger;

    fn default_trigger(&self) -> NeverTrigger {
        NeverTrigger
    }

    fn assign(&self, _record: &T, _timestamp: Option<i64>, _now: i64, out: &mut Vec<GlobalWindow>) {
        out.push(GlobalWindow);
    }

    #[inline]
    fn assign_single(
        &self,
        _record: &T,
        _timestamp: Option<i64>,
        _now: i64,
    ) -> Option<Option<GlobalWindow>> {
        Some(Some(GlobalWindow))
    }

    fn is_event_time(&self) -> bool {
        // As Flink's: global windows need no timestamps, and never close.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_at_the_ends_of_the_range_get_windows_without_overflow() {
        for ts in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            for (size, offset) in [(1_000, 0), (7, 3), (1, 0), (i64::MAX, 0)] {
                let start = window_start(ts, offset, size);
                assert!(start <= ts, "ts {ts} size {size}: start {start}");
            }
            let mut out = Vec::new();
            let tumbling = TumblingWindows::event_time(Duration::from_millis(1_000));
            WindowAssigner::<()>::assign(&tumbling, &(), Some(ts), 0, &mut out);
            let sliding = SlidingWindows::event_time(
                Duration::from_millis(1_000),
                Duration::from_millis(300),
            );
            WindowAssigner::<()>::assign(&sliding, &(), Some(ts), 0, &mut out);
            let sessions = SessionWindows::event_time(Duration::from_millis(50));
            WindowAssigner::<()>::assign(&sessions, &(), Some(ts), 0, &mut out);
            assert!(!out.is_empty());
            for w in out {
                assert!(w.start <= ts && ts <= w.end, "{ts} in {w:?}");
            }
        }
        assert_eq!(window_start(1_999, 0, 1_000), 1_000);
        assert_eq!(window_start(-1, 0, 1_000), -1_000);
        assert_eq!(window_start(5, 3, 7), 3);
    }
}
