//! `assign_timestamps_and_watermarks`: gives each record its event timestamp and emits the
//! watermarks of a [`WatermarkStrategy`].
//!
//! Watermarks from upstream are dropped, as in Flink (this operator decides event time from here
//! on), except the end of event time at end of input. A punctuated watermark goes out right
//! after the record that caused it (the batch is cut there); periodic ones on the ticks of the
//! driving task once `auto_watermark_interval` of processing time has passed, and whenever the
//! input goes idle (flush).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::ProcessingClock;
use super::align::{AlignmentGroup, AlignmentMember};
use super::watermark::{TimestampAssigner, WatermarkGenerator, WatermarkOutput, WatermarkStrategy};
use crate::error::JobError;
use crate::operator::{Batch, BoxPush, OperatorContext, Push, WATERMARK_MAX, WATERMARK_MIN};

pub struct AssignTimestamps<T, G, A> {
    generator: G,
    assigner: A,
    clock: ProcessingClock,
    interval_ms: i64,
    next_emit_ms: i64,
    output: WatermarkOutput,
    /// The last watermark sent on.
    watermark: i64,
    /// An input silent this long (processing time) goes idle.
    idle_timeout_ms: Option<i64>,
    /// When the last record came (processing time, as of the tick after it).
    last_record_ms: i64,
    /// Records came since the last tick.
    records_since_tick: bool,
    idle: bool,
    out: Batch<T>,
    /// The timestamp lane being filled (kept for its capacity).
    lane: Vec<i64>,
    /// Where a punctuated watermark cuts the batch being assigned: after how many records,
    /// and the watermark.
    cuts: Vec<(usize, i64)>,
    down: BoxPush<T>,
    ctx: OperatorContext,
    /// Watermark alignment: the drift the strategy allows, and this shard's place in its
    /// group once joined.
    alignment_drift_ms: Option<i64>,
    alignment: Option<AlignmentMember>,
    /// While ahead of the group: when to look again.
    pause: Option<Pin<Box<glommio::timer::Timer>>>,
}

/// How often a member ahead of its group looks whether the others caught up (the lowest is on
/// another shard: nothing here is woken when it moves).
const ALIGNMENT_RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

impl<T, G, A> AssignTimestamps<T, G, A>
where
    T: 'static,
    G: WatermarkGenerator<T>,
    A: TimestampAssigner<T>,
{
    pub fn new(strategy: WatermarkStrategy<G, A>, down: BoxPush<T>, ctx: OperatorContext) -> Self {
        let now = ctx.config.clock.now_ms();
        Self {
            idle_timeout_ms: strategy.idleness.map(|d| d.as_millis() as i64),
            last_record_ms: now,
            records_since_tick: false,
            idle: false,
            generator: strategy.generator,
            assigner: strategy.assigner,
            clock: ctx.config.clock.clone(),
            interval_ms: ctx.config.auto_watermark_interval.as_millis() as i64,
            next_emit_ms: i64::MIN,
            output: WatermarkOutput::default(),
            watermark: WATERMARK_MIN,
            out: Batch::new(),
            lane: Vec::new(),
            cuts: Vec::new(),
            down,
            ctx,
            alignment_drift_ms: strategy
                .alignment
                .as_ref()
                .map(|(_, d)| d.as_millis().min(i64::MAX as u128) as i64),
            alignment: None,
            pause: None,
        }
    }

    /// Joins `group` as this shard's member, if the strategy asked for alignment.
    pub fn with_alignment_group(mut self, group: &Arc<AlignmentGroup>) -> Self {
        if let Some(drift) = self.alignment_drift_ms {
            self.alignment = Some(group.join(self.ctx.node, self.ctx.runtime.shard, drift));
        }
        self
    }

    fn set_holding(&mut self, holding: bool) {
        if let Some(a) = &mut self.alignment {
            a.set_holding(holding);
        }
    }

    /// Sends on what the generator emitted, if it moves event time forward.
    fn emit(&mut self) -> Result<(), JobError> {
        if let Some(w) = self.output.watermark.take()
            && w > self.watermark
        {
            self.ship()?;
            self.watermark = w;
            self.down.watermark(w)?;
        }
        Ok(())
    }

    fn ship(&mut self) -> Result<(), JobError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)?;
        self.ctx.enter();
        Ok(())
    }

    fn periodic(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.next_emit_ms = now_ms.saturating_add(self.interval_ms);
        self.output.processing_time = now_ms;
        self.generator.on_periodic_emit(&mut self.output);
        self.emit()
    }
}

impl<T, G, A> Push<T> for AssignTimestamps<T, G, A>
where
    T: 'static,
    G: WatermarkGenerator<T>,
    A: TimestampAssigner<T>,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        // The timestamps go into a lane of their own and the records stay where they are: the
        // batch is handed on whole unless a punctuated watermark cuts it.
        let mut lane = std::mem::take(&mut self.lane);
        lane.clear();
        lane.reserve(batch.len());
        self.cuts.clear();
        let timed = batch.is_timed();
        for (i, x) in batch.records.iter().enumerate() {
            let previous = if timed {
                Some(batch.timestamps[i])
            } else {
                None
            };
            let Some(ts) = self.assigner.extract(x, previous) else {
                batch.clear();
                self.lane = lane;
                return Err(self.ctx.error(
                    "a record has no timestamp: give the watermark strategy a timestamp \
                     assigner, or read from a source that sets timestamps",
                ));
            };
            lane.push(ts);
            self.generator.on_event(x, ts, &mut self.output);
            if self.output.watermark.is_some() {
                // After record i, event time may move to the emitted watermark.
                let w = self.output.watermark.take().expect("checked");
                self.cuts.push((i + 1, w));
            }
        }
        if let Some(a) = &mut self.alignment
            && let Some(&max) = lane.iter().max()
        {
            a.advance(max);
        }
        std::mem::swap(&mut batch.timestamps, &mut lane);
        self.lane = lane;
        if self.cuts.is_empty() {
            self.ctx.counters.add_out(batch.len());
            self.down.push(batch)?;
            self.ctx.enter();
        } else {
            let mut done = 0;
            for k in 0..self.cuts.len() {
                let (at, w) = self.cuts[k];
                self.out.records.extend(batch.records.drain(..at - done));
                self.out
                    .timestamps
                    .extend(batch.timestamps.drain(..at - done));
                done = at;
                self.output.watermark = Some(w);
                self.emit()?;
            }
            self.out.append(batch);
            self.ship()?;
        }
        // Periodic watermarks and idleness go by processing time, on ticks: the task driving
        // this chain reads the clock after every batch already.
        if self.idle_timeout_ms.is_some() {
            self.records_since_tick = true;
            if self.idle {
                self.idle = false;
                self.set_holding(true);
                self.down.watermark_status(false)?;
            }
        }
        Ok(())
    }

    fn watermark_status(&mut self, _idle: bool) -> Result<(), JobError> {
        // Idleness is this operator's to decide, from its own input's silence.
        Ok(())
    }

    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        // The generator's state is not checkpointed (as in Flink): after a restore it starts
        // again from the records it sees.
        self.down.barrier(barrier)
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        // Event time is this operator's to decide; only the end of input passes.
        if watermark == WATERMARK_MAX && self.watermark < WATERMARK_MAX {
            self.watermark = WATERMARK_MAX;
            self.set_holding(false);
            self.down.watermark(WATERMARK_MAX)?;
        }
        Ok(())
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        if now_ms >= self.next_emit_ms {
            self.periodic(now_ms)?;
        }
        if std::mem::take(&mut self.records_since_tick) {
            self.last_record_ms = now_ms;
        }
        if let Some(timeout) = self.idle_timeout_ms
            && !self.idle
            && now_ms.saturating_sub(self.last_record_ms) >= timeout
        {
            // Silent for the timeout: stop holding event time back downstream.
            self.idle = true;
            self.set_holding(false);
            self.down.watermark_status(true)?;
        }
        self.down.tick(now_ms)
    }

    fn flush(&mut self) -> Result<(), JobError> {
        // The input is idle: event time may have moved since the last periodic emit.
        let now = self.clock.now_ms();
        self.periodic(now)?;
        self.down.flush()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        if let Some(a) = &mut self.alignment
            && a.ahead()
        {
            // Ahead of the group: no more input until the lowest member is within the drift.
            loop {
                let t = self
                    .pause
                    .get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(ALIGNMENT_RECHECK)));
                if t.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pause = None;
                if !a.ahead() {
                    break;
                }
            }
        }
        self.down.poll_ready(cx)
    }

    fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.down.poll_flush(cx)
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.set_holding(false);
        self.down.finish()
    }
}
