//! Triggers: when a window's contents are emitted (fired) and when they are dropped (purged).
//!
//! A trigger sees each record as it enters a window and each timer of the window, and may keep
//! state per (key, window) — its `State` type, kept with the window's contents. Timers it
//! registers are the window's keyed timers.

use std::hash::Hash;
use std::time::Duration;

use super::Window;
use crate::keyed::TimerService;

/// What a trigger decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    Continue,
    /// Emit the window's contents; keep them.
    Fire,
    /// Drop the window's contents.
    Purge,
    /// Emit the window's contents, then drop them.
    FireAndPurge,
}

impl TriggerResult {
    #[inline]
    pub fn is_fire(self) -> bool {
        matches!(self, Self::Fire | Self::FireAndPurge)
    }
    #[inline]
    pub fn is_purge(self) -> bool {
        matches!(self, Self::Purge | Self::FireAndPurge)
    }
}

/// What a trigger may see and do for one key and window.
pub struct TriggerContext<'a, K, W, S> {
    pub(crate) key: &'a K,
    pub(crate) window: &'a W,
    pub(crate) timers: &'a mut TimerService<K, W>,
    pub(crate) watermark: i64,
    pub(crate) now: i64,
    pub(crate) state: &'a mut S,
    pub(crate) new_window: bool,
    /// The operator keeps one timer per window at its end, shared by every key: the trigger's
    /// event-time timer at the window's end is that one (see
    /// [`Trigger::timers_at_window_end_only`]).
    pub(crate) shared_end_timer: bool,
}

impl<K: Hash + Eq + Clone, W: Window, S> TriggerContext<'_, K, W, S> {
    pub fn register_event_time_timer(&mut self, time: i64) {
        if self.shared_end_timer && time == self.window.max_timestamp() {
            return;
        }
        self.timers.event.register(time, self.key, self.window);
    }
    pub fn register_processing_time_timer(&mut self, time: i64) {
        self.timers.processing.register(time, self.key, self.window);
    }
    pub fn delete_event_time_timer(&mut self, time: i64) {
        if self.shared_end_timer && time == self.window.max_timestamp() {
            return;
        }
        self.timers.event.delete(time, self.key, self.window);
    }
    pub fn delete_processing_time_timer(&mut self, time: i64) {
        self.timers.processing.delete(time, self.key, self.window);
    }
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }
    pub fn current_processing_time(&self) -> i64 {
        self.now
    }
    /// The trigger's state for this key and window.
    pub fn state(&mut self) -> &mut S {
        self.state
    }
    /// Whether this window's state was made by the record being added (its timers, if the
    /// trigger registers the same ones for every record, are then not registered yet).
    pub fn is_new_window(&self) -> bool {
        self.new_window
    }
}

/// Decides when a window fires.
pub trait Trigger<T, W: Window>: Clone + Send + Sync + 'static {
    /// What the trigger keeps per key and window.
    type State: Default + crate::Data;

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        record: &T,
        timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult;

    /// Whether the only timer this trigger ever registers is an event-time timer at the
    /// window's end (`max_timestamp`), and it keeps no state: then every key of a window has
    /// the same one, and a window operator without allowed lateness keeps one timer per window
    /// instead of one per key and window (it calls `on_event_time` for each of the window's keys
    /// when the time comes). Default: false.
    fn timers_at_window_end_only(&self) -> bool {
        false
    }

    /// An event-time timer of the window fired. (Default: nothing to do.)
    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    /// A processing-time timer of the window fired. (Default: nothing to do.)
    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    /// Windows merged into `window` (sessions): `ctx.state()` already holds the merged state.
    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) {
    }

    /// Folds the state of a window merged away into the state of the window it merged into.
    fn merge_state(&self, _into: &mut Self::State, _from: &Self::State) {}

    /// The window is gone: delete the timers this trigger registered for it. (Default: it
    /// registered none.)
    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) {
    }
}

/// Fires once the watermark passes the window's end, and again for every late record within the
/// allowed lateness. The default trigger of event-time windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTimeTrigger;

impl<T, W: Window> Trigger<T, W> for EventTimeTrigger {
    type State = ();

    fn timers_at_window_end_only(&self) -> bool {
        true
    }

    #[inline]
    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        _timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if window.max_timestamp() <= ctx.watermark {
            // A late record within the allowed lateness: fire again at once.
            return TriggerResult::Fire;
        }
        // Registering the same timer for every record would find it there: only the first
        // record of the window registers it.
        if ctx.new_window {
            ctx.register_event_time_timer(window.max_timestamp());
        }
        TriggerResult::Continue
    }

    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        _ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) {
        if window.max_timestamp() > ctx.watermark {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    fn clear<K: Hash + Eq + Clone>(&mut self, window: &W, ctx: &mut TriggerContext<'_, K, W, ()>) {
        ctx.delete_event_time_timer(window.max_timestamp());
    }
}

/// Fires when processing time passes the window's end. The default trigger of processing-time
/// windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeTrigger;

impl<T, W: Window> Trigger<T, W> for ProcessingTimeTrigger {
    type State = ();

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        _timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if ctx.new_window {
            ctx.register_processing_time_timer(window.max_timestamp());
        }
        TriggerResult::Continue
    }

    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        _ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) {
        ctx.register_processing_time_timer(window.max_timestamp());
    }

    fn clear<K: Hash + Eq + Clone>(&mut self, window: &W, ctx: &mut TriggerContext<'_, K, W, ()>) {
        ctx.delete_processing_time_timer(window.max_timestamp());
    }
}

/// Fires every `count` records of the window.
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger {
    count: u64,
}

impl CountTrigger {
    pub fn of(count: u64) -> Self {
        assert!(count > 0, "a count trigger needs a count");
        Self { count }
    }
}

impl<T, W: Window> Trigger<T, W> for CountTrigger {
    type State = u64;

    #[inline]
    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        _timestamp: Option<i64>,
        _window: &W,
        ctx: &mut TriggerContext<'_, K, W, u64>,
    ) -> TriggerResult {
        *ctx.state += 1;
        if *ctx.state >= self.count {
            *ctx.state = 0;
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn merge_state(&self, into: &mut u64, from: &u64) {
        *into += *from;
    }

    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, u64>,
    ) {
    }
}

/// Never fires (the default of global windows: give them a trigger of their own).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverTrigger;

impl<T, W: Window> Trigger<T, W> for NeverTrigger {
    type State = ();

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        _timestamp: Option<i64>,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, ()>,
    ) {
    }
}

/// Turns every fire of the inner trigger into fire-and-purge.
#[derive(Debug, Clone, Copy)]
pub struct PurgingTrigger<Tr>(pub Tr);

impl<Tr> PurgingTrigger<Tr> {
    pub fn of(inner: Tr) -> Self {
        Self(inner)
    }
}

fn purging(r: TriggerResult) -> TriggerResult {
    if r.is_fire() {
        TriggerResult::FireAndPurge
    } else {
        r
    }
}

impl<T, W: Window, Tr: Trigger<T, W>> Trigger<T, W> for PurgingTrigger<Tr> {
    type State = Tr::State;

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        record: &T,
        timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult {
        purging(self.0.on_element(record, timestamp, window, ctx))
    }

    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult {
        purging(self.0.on_event_time(time, window, ctx))
    }

    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) -> TriggerResult {
        purging(self.0.on_processing_time(time, window, ctx))
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) {
        self.0.on_merge(window, ctx)
    }

    fn merge_state(&self, into: &mut Self::State, from: &Self::State) {
        self.0.merge_state(into, from)
    }

    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Self::State>,
    ) {
        self.0.clear(window, ctx)
    }
}

/// Fires every `interval` of event time while the window is open, and at its end.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousEventTimeTrigger {
    interval: i64,
}

impl ContinuousEventTimeTrigger {
    pub fn of(interval: Duration) -> Self {
        assert!(!interval.is_zero());
        Self {
            interval: interval.as_millis() as i64,
        }
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousEventTimeTrigger {
    /// The next periodic fire.
    type State = Option<i64>;

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        if window.max_timestamp() <= ctx.watermark {
            return TriggerResult::Fire;
        }
        ctx.register_event_time_timer(window.max_timestamp());
        if ctx.state.is_none() {
            let ts = timestamp.unwrap_or(ctx.watermark);
            let next = (ts - ts.rem_euclid(self.interval)).saturating_add(self.interval);
            *ctx.state = Some(next);
            ctx.register_event_time_timer(next);
        }
        TriggerResult::Continue
    }

    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            return TriggerResult::Fire;
        }
        if *ctx.state == Some(time) {
            let next = time.saturating_add(self.interval);
            *ctx.state = Some(next);
            ctx.register_event_time_timer(next);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn merge_state(&self, into: &mut Option<i64>, from: &Option<i64>) {
        *into = match (*into, *from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) {
        if window.max_timestamp() > ctx.watermark {
            ctx.register_event_time_timer(window.max_timestamp());
        }
        if let Some(next) = *ctx.state {
            ctx.register_event_time_timer(next);
        }
    }

    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) {
        ctx.delete_event_time_timer(window.max_timestamp());
        if let Some(next) = ctx.state.take() {
            ctx.delete_event_time_timer(next);
        }
    }
}

/// Fires every `interval` of processing time while the window has records.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousProcessingTimeTrigger {
    interval: i64,
}

impl ContinuousProcessingTimeTrigger {
    pub fn of(interval: Duration) -> Self {
        assert!(!interval.is_zero());
        Self {
            interval: interval.as_millis() as i64,
        }
    }
}

impl<T, W: Window> Trigger<T, W> for ContinuousProcessingTimeTrigger {
    type State = Option<i64>;

    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        _record: &T,
        _timestamp: Option<i64>,
        _window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        if ctx.state.is_none() {
            let now = ctx.now;
            let next = (now - now.rem_euclid(self.interval)).saturating_add(self.interval);
            *ctx.state = Some(next);
            ctx.register_processing_time_timer(next);
        }
        TriggerResult::Continue
    }

    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        _time: i64,
        _window: &W,
        _ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        _window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) -> TriggerResult {
        if *ctx.state == Some(time) {
            let next = time.saturating_add(self.interval);
            *ctx.state = Some(next);
            ctx.register_processing_time_timer(next);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn merge_state(&self, into: &mut Option<i64>, from: &Option<i64>) {
        *into = match (*into, *from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) {
        if let Some(next) = *ctx.state {
            ctx.register_processing_time_timer(next);
        }
    }

    fn clear<K: Hash + Eq + Clone>(
        &mut self,
        _window: &W,
        ctx: &mut TriggerContext<'_, K, W, Option<i64>>,
    ) {
        if let Some(next) = ctx.state.take() {
            ctx.delete_processing_time_timer(next);
        }
    }
}

/// The default trigger of time windows: [`EventTimeTrigger`] for event-time windows,
/// [`ProcessingTimeTrigger`] for processing-time ones.
#[derive(Debug, Clone, Copy)]
pub struct TimeTrigger {
    pub event_time: bool,
}

impl<T, W: Window> Trigger<T, W> for TimeTrigger {
    type State = ();

    /// As [`EventTimeTrigger`] in event time: its only timer is the window's end.
    fn timers_at_window_end_only(&self) -> bool {
        self.event_time
    }

    #[inline]
    fn on_element<K: Hash + Eq + Clone>(
        &mut self,
        record: &T,
        timestamp: Option<i64>,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if self.event_time {
            Trigger::<T, W>::on_element(&mut EventTimeTrigger, record, timestamp, window, ctx)
        } else {
            Trigger::<T, W>::on_element(&mut ProcessingTimeTrigger, record, timestamp, window, ctx)
        }
    }

    fn on_event_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if self.event_time {
            Trigger::<T, W>::on_event_time(&mut EventTimeTrigger, time, window, ctx)
        } else {
            TriggerResult::Continue
        }
    }

    fn on_processing_time<K: Hash + Eq + Clone>(
        &mut self,
        time: i64,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) -> TriggerResult {
        if self.event_time {
            TriggerResult::Continue
        } else {
            Trigger::<T, W>::on_processing_time(&mut ProcessingTimeTrigger, time, window, ctx)
        }
    }

    fn on_merge<K: Hash + Eq + Clone>(
        &mut self,
        window: &W,
        ctx: &mut TriggerContext<'_, K, W, ()>,
    ) {
        if self.event_time {
            Trigger::<T, W>::on_merge(&mut EventTimeTrigger, window, ctx)
        } else {
            Trigger::<T, W>::on_merge(&mut ProcessingTimeTrigger, window, ctx)
        }
    }

    fn clear<K: Hash + Eq + Clone>(&mut self, window: &W, ctx: &mut TriggerContext<'_, K, W, ()>) {
        if self.event_time {
            Trigger::<T, W>::clear(&mut EventTimeTrigger, window, ctx)
        } else {
            Trigger::<T, W>::clear(&mut ProcessingTimeTrigger, window, ctx)
        }
    }
}
