//! The window operator: one per keyed window stream, on the shard that owns the keys.
//!
//! Per record: its key, its windows (the assigner), and for each window not yet past its
//! cleanup time, the trigger's verdict and the record added to the window's contents (one keyed
//! state lookup per window). A record whose every window is past cleanup is late: it goes to the
//! late side output if there is one, and is counted either way.
//!
//! At the end of input, event-time windows have fired with the end of event time; processing-time
//! windows still open fire then too (their contents are data: a bounded job loses none). Global
//! windows without a timer (count windows) emit only what their trigger fires, as in Flink.
//!
//! Timers are (time, key, window). A timer hands the window to its trigger; the cleanup timer
//! (window end + allowed lateness, in event time; window end in processing time) drops the
//! window's contents and trigger state. With no allowed lateness, the trigger's timer and the
//! cleanup timer are the same timer.

use std::hash::Hash;

use super::Window;
use super::assigners::{SingleWindow, WindowAssigner};
use super::functions::{WindowContext, WindowFunction};
use super::triggers::{Trigger, TriggerContext, TriggerResult};
use crate::error::JobError;
use crate::key::KeySelector;
use crate::keyed::{KeyedTable, TimerService};
use crate::operator::{
    Batch, BoxPush, Collector, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push, SideOutputSet,
    WATERMARK_MIN,
};
use crate::time::ProcessingClock;

/// A window's contents and its trigger's state: one keyed state entry per (key, window).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone)]
pub struct Slot<A, S> {
    acc: A,
    trigger: S,
}

/// How a window operator treats time that has passed.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowSettings {
    /// How long after its end (in event time) a window still takes late records and fires again.
    pub allowed_lateness_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Domain {
    Event,
    Processing,
}

pub struct WindowOperator<T, KS, WA, TR, F>
where
    KS: KeySelector<T>,
    WA: WindowAssigner<T>,
    TR: Trigger<T, WA::W>,
    F: WindowFunction<KS::Key, T, WA::W>,
{
    key: KS,
    assigner: WA,
    trigger: TR,
    f: F,
    settings: WindowSettings,
    event_time: bool,
    #[allow(clippy::type_complexity)]
    contents: KeyedTable<KS::Key, WA::W, Slot<F::Acc, TR::State>>,
    /// The live windows of each key, for merging assigners.
    sessions: KeyedTable<KS::Key, (), Vec<WA::W>>,
    timers: TimerService<KS::Key, WA::W>,
    /// One timer per window at its end, shared by all its keys, instead of one per key and
    /// window: for event-time windows that do not merge, have no allowed lateness and a
    /// trigger whose only timer is the window's end (the default trigger). A window's keys are
    /// then fired by walking its contents, cached and stored; no per-key timer is kept.
    shared: bool,
    window_timers: std::collections::BTreeMap<i64, Vec<WA::W>>,
    watermark: i64,
    clock: ProcessingClock,
    windows: Vec<WA::W>,
    single: SingleWindow<WA::W>,
    out: Batch<F::Out>,
    down: BoxPush<F::Out>,
    /// Side outputs: the late output (if any) and those the window function emits to.
    side: SideOutputSet,
    /// The side output late records go to.
    late_tag: Option<u32>,
    ctx: OperatorContext,
}

impl<T, KS, WA, TR, F> WindowOperator<T, KS, WA, TR, F>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    WA: WindowAssigner<T>,
    TR: Trigger<T, WA::W>,
    F: WindowFunction<KS::Key, T, WA::W>,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: KS,
        assigner: WA,
        trigger: TR,
        f: F,
        settings: WindowSettings,
        down: BoxPush<F::Out>,
        side: SideOutputSet,
        late_tag: Option<u32>,
        ctx: OperatorContext,
    ) -> Result<Self, JobError> {
        let merging = assigner.is_merging();
        // Few windows live at a time, each with many keys: a table per window (sessions are
        // as many as their keys: one table of pairs).
        let contents = ctx.keyed_state(
            "contents",
            if merging {
                KeyedTable::new()
            } else {
                KeyedTable::by_namespace()
            },
        )?;
        let sessions = ctx.keyed_state("sessions", KeyedTable::new())?;
        ctx.expect_checkpoints();
        // The shared window timers of the checkpoint the job resumed from.
        let mut window_timers = std::collections::BTreeMap::new();
        // After a rescale every earlier shard's: a shared timer only fires the windows a
        // shard holds contents of, so each new shard takes all of them.
        let earlier: Vec<std::sync::Arc<[u8]>> = match &ctx.rescaled {
            Some(r) => r.states.iter().map(|s| s.1.clone()).collect(),
            None => ctx.restored.iter().cloned().collect(),
        };
        for bytes in earlier.iter().filter(|b| !b.is_empty()) {
            let shared: Vec<(i64, Vec<WA::W>)> =
                crate::checkpoint::decode_state(bytes).map_err(|e| ctx.error(e))?;
            for (t, windows) in shared {
                let at = window_timers.entry(t).or_insert_with(Vec::new);
                for w in windows {
                    if !at.contains(&w) {
                        at.push(w);
                    }
                }
            }
        }
        let shared = !merging
            && assigner.is_event_time()
            && settings.allowed_lateness_ms == 0
            && trigger.timers_at_window_end_only();
        Ok(Self {
            event_time: assigner.is_event_time(),
            key,
            assigner,
            trigger,
            f,
            settings,
            contents,
            sessions,
            timers: ctx.timer_service()?,
            shared,
            window_timers,
            watermark: WATERMARK_MIN,
            clock: ctx.config.clock.clone(),
            windows: Vec::new(),
            single: SingleWindow::default(),
            out: Batch::new(),
            down,
            side,
            late_tag,
            ctx,
        })
    }

    /// When a window's contents are dropped.
    #[inline]
    fn cleanup_time(&self, w: &WA::W) -> i64 {
        if self.event_time {
            w.max_timestamp()
                .saturating_add(self.settings.allowed_lateness_ms)
        } else {
            w.max_timestamp()
        }
    }

    /// Whether a window is past its cleanup time (only event-time windows ever are).
    #[inline]
    fn is_late(&self, w: &WA::W) -> bool {
        self.event_time && self.cleanup_time(w) <= self.watermark
    }

    fn register_cleanup(&mut self, key: &KS::Key, w: &WA::W) {
        let at = self.cleanup_time(w);
        if at == i64::MAX {
            // Never: the window lasts as long as the job (global windows).
            return;
        }
        if self.shared {
            let windows = self.window_timers.entry(at).or_default();
            if !windows.contains(w) {
                windows.push(w.clone());
            }
            return;
        }
        if self.event_time {
            self.timers.event.register(at, key, w);
        } else {
            self.timers.processing.register(at, key, w);
        }
    }

    fn delete_cleanup(&mut self, key: &KS::Key, w: &WA::W) {
        let at = self.cleanup_time(w);
        if self.event_time {
            self.timers.event.delete(at, key, w);
        } else {
            self.timers.processing.delete(at, key, w);
        }
    }

    /// Pushes the output on (after a batch or a round of timers), once the store said nothing
    /// went wrong under it.
    fn emit(&mut self) -> Result<(), JobError> {
        self.ctx.state.check()?;
        if !self.out.is_empty() {
            self.ctx.counters.add_out(self.out.len());
            self.down.push(&mut self.out)?;
            self.ctx.enter();
        }
        self.side.push_buffered()?;
        self.ctx.enter();
        Ok(())
    }

    fn late_record(&mut self, x: T, ts: Option<i64>) {
        self.ctx.counters.add_late(1);
        if let Some(tag) = self.late_tag {
            self.side.output_by_id(tag, x, ts);
        }
    }

    /// Adds a record to one window: the trigger's verdict, then the contents, then what the
    /// verdict says. `force_new`: the window was made by a merge just now.
    fn add_to_window(
        &mut self,
        key: &KS::Key,
        w: &WA::W,
        value: T,
        ts: Option<i64>,
        now: i64,
        force_new: bool,
    ) -> Result<(), JobError> {
        let Self {
            contents,
            timers,
            trigger,
            f,
            out,
            side,
            ctx,
            watermark,
            shared,
            ..
        } = self;
        let (slot, created) = contents.get_or_insert_with(key, w, || Slot {
            acc: f.create(),
            trigger: Default::default(),
        });
        let mut tctx = TriggerContext {
            key,
            window: w,
            timers,
            watermark: *watermark,
            now,
            state: &mut slot.trigger,
            new_window: created || force_new,
            shared_end_timer: *shared,
        };
        let result = trigger.on_element(&value, ts, w, &mut tctx);
        f.add(&mut slot.acc, value, ts);
        if result != TriggerResult::Continue {
            act(
                result,
                f,
                key,
                w,
                &mut slot.acc,
                *watermark,
                now,
                out,
                side,
                ctx,
            )?;
        }
        if created {
            self.register_cleanup(key, w);
        }
        Ok(())
    }

    fn process_record(&mut self, x: T, ts: Option<i64>, now: i64) -> Result<(), JobError> {
        let key = self.key.with_key(&x, Clone::clone);
        self.ctx.debug_assert_owns(&key);
        if let Some(single) = self.single.find(&self.assigner, &x, ts, now) {
            // One window at most (tumbling, global): no list of windows to build.
            return match single {
                Some(w) if !self.is_late(&w) => self.add_to_window(&key, &w, x, ts, now, false),
                Some(_) => {
                    self.late_record(x, ts);
                    Ok(())
                }
                None => Ok(()),
            };
        }
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        self.assigner.assign(&x, ts, now, &mut windows);
        let result = if self.assigner.is_merging() {
            match windows.first().cloned() {
                Some(w) => self.add_merging(key, w, x, ts, now),
                None => Ok(()),
            }
        } else {
            self.add_to_windows(&key, &windows, x, ts, now)
        };
        self.windows = windows;
        result
    }

    /// Adds a record to each of its windows that is not past cleanup (a copy to all but the
    /// last); a record with none is late.
    fn add_to_windows(
        &mut self,
        key: &KS::Key,
        windows: &[WA::W],
        x: T,
        ts: Option<i64>,
        now: i64,
    ) -> Result<(), JobError> {
        let Some(last) = windows.iter().rposition(|w| !self.is_late(w)) else {
            self.late_record(x, ts);
            return Ok(());
        };
        for w in &windows[..last] {
            if !self.is_late(w) {
                self.add_to_window(key, w, x.clone(), ts, now, false)?;
            }
        }
        self.add_to_window(key, &windows[last], x, ts, now, false)
    }

    fn process_all(
        &mut self,
        records: &mut Vec<T>,
        timestamps: &[i64],
        now: i64,
    ) -> Result<(), JobError> {
        let timed = !timestamps.is_empty();
        for (i, x) in records.drain(..).enumerate() {
            let ts = if timed { Some(timestamps[i]) } else { None };
            self.process_record(x, ts, now)?;
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Session windows: the record's window merges with every window of its key it overlaps
    /// or touches; their contents and trigger states fold into the merged window's.
    fn add_merging(
        &mut self,
        key: KS::Key,
        new: WA::W,
        x: T,
        ts: Option<i64>,
        now: i64,
    ) -> Result<(), JobError> {
        let mut list = self.sessions.remove(&key, &()).unwrap_or_default();
        let mut merged = new.clone();
        for w in &list {
            if w.intersects(&new) {
                merged = merged.cover(w);
            }
        }
        if self.is_late(&merged) {
            if !list.is_empty() {
                self.sessions.insert(&key, &(), list);
            }
            self.late_record(x, ts);
            return Ok(());
        }
        let mut absorbed = Vec::new();
        list.retain(|w| {
            if w.intersects(&new) && *w != merged {
                absorbed.push(w.clone());
                false
            } else {
                true
            }
        });
        let mut olds = Vec::with_capacity(absorbed.len());
        for w in &absorbed {
            self.delete_cleanup(&key, w);
            if let Some(old) = self.contents.remove(&key, w) {
                olds.push((w, old));
            }
        }
        let watermark = self.watermark;
        let (slot, created) = self.contents.get_or_insert_with(&key, &merged, || Slot {
            acc: self.f.create(),
            trigger: Default::default(),
        });
        for (w, mut old) in olds {
            self.f.merge(&mut slot.acc, old.acc);
            self.trigger.merge_state(&mut slot.trigger, &old.trigger);
            let mut tctx = TriggerContext {
                key: &key,
                window: w,
                timers: &mut self.timers,
                watermark,
                now,
                state: &mut old.trigger,
                new_window: false,
                shared_end_timer: self.shared,
            };
            self.trigger.clear(w, &mut tctx);
        }
        if !absorbed.is_empty() {
            let mut tctx = TriggerContext {
                key: &key,
                window: &merged,
                timers: &mut self.timers,
                watermark,
                now,
                state: &mut slot.trigger,
                new_window: created,
                shared_end_timer: self.shared,
            };
            self.trigger.on_merge(&merged, &mut tctx);
        }
        if created {
            self.register_cleanup(&key, &merged);
        }
        if !list.contains(&merged) {
            list.push(merged.clone());
        }
        self.sessions.insert(&key, &(), list);
        self.add_to_window(&key, &merged, x, ts, now, created)
    }

    /// Drops a window: its contents, its trigger's state and timers, its place among its key's
    /// sessions.
    fn clear_window(&mut self, key: &KS::Key, w: &WA::W, now: i64) {
        if let Some(mut slot) = self.contents.remove(key, w) {
            let mut tctx = TriggerContext {
                key,
                window: w,
                timers: &mut self.timers,
                watermark: self.watermark,
                now,
                state: &mut slot.trigger,
                new_window: false,
                shared_end_timer: self.shared,
            };
            self.trigger.clear(w, &mut tctx);
        }
        if self.assigner.is_merging()
            && let Some(list) = self.sessions.get_mut(key, &())
        {
            list.retain(|x| x != w);
            if list.is_empty() {
                self.sessions.remove(key, &());
            }
        }
    }

    /// Fires the timers of a domain due at `time`.
    /// Emits the output so far and writes the state a snapshot takes to the store: cached
    /// contents, sessions and timers; the shared window timers (a few per job) as the bytes
    /// returned, the operator's state.
    fn snapshot_bytes(&mut self) -> Result<Vec<u8>, JobError> {
        self.emit()?;
        self.contents.flush_dirty();
        self.sessions.flush_dirty();
        self.timers.checkpoint();
        self.ctx.state.check()?;
        let shared: Vec<(i64, Vec<WA::W>)> = self
            .window_timers
            .iter()
            .map(|(t, w)| (*t, w.clone()))
            .collect();
        rkyv::to_bytes::<rkyv::rancor::Error>(&shared)
            .map(|b| b.to_vec())
            .map_err(|e| {
                self.ctx
                    .error(format!("cannot serialize the window timers: {e}"))
            })
    }

    fn fire(&mut self, domain: Domain, time: i64, now: i64) -> Result<(), JobError> {
        self.ctx.enter();
        loop {
            let due = match domain {
                Domain::Event => self.timers.event.pop_due(time),
                Domain::Processing => self.timers.processing.pop_due(time),
            };
            let Some((at, key, w)) = due else { break };
            let Self {
                contents,
                timers,
                trigger,
                f,
                out,
                side,
                ctx,
                watermark,
                shared,
                ..
            } = self;
            if let Some(slot) = contents.get_mut(&key, &w) {
                let mut tctx = TriggerContext {
                    key: &key,
                    window: &w,
                    timers,
                    watermark: *watermark,
                    now,
                    state: &mut slot.trigger,
                    new_window: false,
                    shared_end_timer: *shared,
                };
                let result = match domain {
                    Domain::Event => trigger.on_event_time(at, &w, &mut tctx),
                    Domain::Processing => trigger.on_processing_time(at, &w, &mut tctx),
                };
                if result != TriggerResult::Continue {
                    act(
                        result,
                        f,
                        &key,
                        &w,
                        &mut slot.acc,
                        *watermark,
                        now,
                        out,
                        side,
                        ctx,
                    )?;
                }
            }
            let cleanup_domain = if self.event_time {
                Domain::Event
            } else {
                Domain::Processing
            };
            if domain == cleanup_domain && at == self.cleanup_time(&w) {
                self.clear_window(&key, &w, now);
            }
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.emit()?;
            }
        }
        if domain == Domain::Event && self.shared {
            while let Some(entry) = self.window_timers.first_entry() {
                if *entry.key() > time {
                    break;
                }
                let (at, windows) = entry.remove_entry();
                for w in windows {
                    self.fire_window(at, &w, now)?;
                }
            }
        }
        self.emit()
    }

    /// A shared window timer: `at` is the end of `w` (and its cleanup time). Every key of the
    /// window, cached or stored, gets the trigger's verdict, then the window is dropped.
    fn fire_window(&mut self, at: i64, w: &WA::W, now: i64) -> Result<(), JobError> {
        let Self {
            contents,
            timers,
            trigger,
            f,
            out,
            side,
            ctx,
            watermark,
            down,
            ..
        } = self;
        let mut failed = Ok(());
        contents.drain_namespace(w, |key, mut slot| {
            if failed.is_err() {
                return;
            }
            let mut tctx = TriggerContext {
                key: &key,
                window: w,
                timers: &mut *timers,
                watermark: *watermark,
                now,
                state: &mut slot.trigger,
                new_window: false,
                shared_end_timer: true,
            };
            let result = trigger.on_event_time(at, w, &mut tctx);
            trigger.clear(w, &mut tctx);
            if result != TriggerResult::Continue {
                let r = act(
                    result,
                    f,
                    &key,
                    w,
                    &mut slot.acc,
                    *watermark,
                    now,
                    out,
                    side,
                    ctx,
                );
                if let Err(e) = r {
                    failed = Err(e);
                    return;
                }
            }
            if out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                ctx.counters.add_out(out.len());
                failed = down.push(out);
                ctx.enter();
            }
        });
        failed
    }
}

/// Carries out a trigger's verdict on one window.
#[allow(clippy::too_many_arguments)]
#[inline]
fn act<K, T, W: Window, F: WindowFunction<K, T, W>>(
    result: TriggerResult,
    f: &mut F,
    key: &K,
    w: &W,
    acc: &mut F::Acc,
    watermark: i64,
    now: i64,
    out: &mut Batch<F::Out>,
    side: &mut SideOutputSet,
    ctx: &OperatorContext,
) -> Result<(), JobError> {
    if result.is_fire() {
        let wctx = WindowContext {
            window: w.clone(),
            watermark,
            processing_time: now,
        };
        f.emit(
            key,
            &wctx,
            acc,
            &mut Collector::with_side_outputs(out, Some(w.max_timestamp()), side),
        )
        .map_err(|e| ctx.error(e))?;
    }
    if result.is_purge() {
        *acc = f.create();
    }
    Ok(())
}

impl<T, KS, WA, TR, F> Push<T> for WindowOperator<T, KS, WA, TR, F>
where
    T: Clone + 'static,
    KS: KeySelector<T>,
    KS::Key: Hash + Eq + Clone,
    WA: WindowAssigner<T>,
    TR: Trigger<T, WA::W>,
    F: WindowFunction<KS::Key, T, WA::W>,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        if self.event_time && !batch.is_timed() && !batch.is_empty() {
            batch.clear();
            return Err(self.ctx.error(super::NO_TIMESTAMPS));
        }
        let now = self.clock.now_ms();
        let mut records = std::mem::take(&mut batch.records);
        let mut timestamps = std::mem::take(&mut batch.timestamps);
        let result = self.process_all(&mut records, &timestamps, now);
        records.clear();
        timestamps.clear();
        batch.records = records;
        batch.timestamps = timestamps;
        result?;
        self.emit()
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        let now = self.clock.now_ms();
        self.fire(Domain::Event, watermark, now)?;
        self.side.watermark(watermark)?;
        self.down.watermark(watermark)
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.emit()?;
        self.side.watermark_status(idle)?;
        self.down.watermark_status(idle)
    }

    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        let state = self.snapshot_bytes()?;
        self.ctx.snapshot(barrier, state)?;
        self.side.barrier(barrier)?;
        self.down.barrier(barrier)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.fire(Domain::Processing, now_ms, now_ms)?;
        self.side.tick(now_ms)?;
        self.down.tick(now_ms)
    }

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_ready(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_ready(cx),
            other => other,
        }
    }

    fn flush(&mut self) -> Result<(), JobError> {
        self.emit()?;
        self.side.flush()?;
        self.down.flush()
    }

    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        match self.side.poll_flush(cx) {
            std::task::Poll::Ready(Ok(())) => self.down.poll_flush(cx),
            other => other,
        }
    }

    fn finish(&mut self) -> Result<(), JobError> {
        if !self.event_time {
            // The input ended: processing-time windows still open fire now rather than be lost
            // (event-time ones fired at the end of event time, just before).
            let now = self.clock.now_ms();
            self.fire(Domain::Processing, i64::MAX, now)?;
        }
        if self.ctx.checkpoints.is_some() {
            let state = self.snapshot_bytes()?;
            self.ctx.final_snapshot(state)?;
        } else {
            self.emit()?;
        }
        self.side.finish()?;
        self.down.finish()
    }
}
