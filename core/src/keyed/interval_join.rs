//! The interval join of two keyed streams: each left record `l` meets every right record `r` of
//! its key with `l.ts + lower <= r.ts <= l.ts + upper` (Flink's `intervalJoin(...).between(...)`).
//!
//! Both sides are kept per key until the watermark says no partner can still come: a left record
//! until `l.ts + upper`, a right one until `r.ts - lower`. A record already behind the watermark
//! when it arrives is late: it joins nothing, and goes to the side's late output if there is one.
//! A pair's timestamp is the later of the two.

use std::hash::Hash;

use super::co_process::KeyedCoProcessFunction;
use super::process::KeyedContext;
use crate::operator::process::UserError;
use crate::operator::{Collector, OutputTag};

/// What a join function knows of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinContext {
    pub left_timestamp: i64,
    pub right_timestamp: i64,
}

/// Makes the output of a joined pair.
pub trait ProcessJoinFunction<L, R, O>: Clone + Send + Sync + 'static {
    fn process_element(
        &mut self,
        left: &L,
        right: &R,
        ctx: &JoinContext,
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;
}

impl<L, R, O, F> ProcessJoinFunction<L, R, O> for F
where
    F: FnMut(&L, &R, &JoinContext, &mut Collector<O>) -> Result<(), UserError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    fn process_element(
        &mut self,
        left: &L,
        right: &R,
        ctx: &JoinContext,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(left, right, ctx, out)
    }
}

/// The per-key buffers of an interval join.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct JoinBuffers<L, R> {
    left: Vec<(i64, L)>,
    right: Vec<(i64, R)>,
}

impl<L, R> Default for JoinBuffers<L, R> {
    fn default() -> Self {
        Self {
            left: Vec::new(),
            right: Vec::new(),
        }
    }
}

/// The interval join as a keyed co-process function.
pub struct IntervalJoin<L, R, F> {
    pub lower: i64,
    pub upper: i64,
    pub f: F,
    pub left_late: Option<OutputTag<L>>,
    pub right_late: Option<OutputTag<R>>,
}

impl<L, R, F: Clone> Clone for IntervalJoin<L, R, F> {
    fn clone(&self) -> Self {
        Self {
            lower: self.lower,
            upper: self.upper,
            f: self.f.clone(),
            left_late: self.left_late.clone(),
            right_late: self.right_late.clone(),
        }
    }
}

/// When a left record at `ts` can meet no future right record: its interval has passed.
fn left_expiry(upper: i64, ts: i64) -> i64 {
    ts.saturating_add(upper.max(0))
}

/// When a right record at `ts` can meet no future left record.
fn right_expiry(lower: i64, ts: i64) -> i64 {
    ts.saturating_sub(lower.min(0))
}

/// Whether a left record at `lts` and a right one at `rts` are within the join's interval.
fn meet(lower: i64, upper: i64, lts: i64, rts: i64) -> bool {
    lts.saturating_add(lower) <= rts && rts <= lts.saturating_add(upper)
}

/// Emits the output of one pair, stamped with the later of the two timestamps.
fn join<L, R, O, F: ProcessJoinFunction<L, R, O>>(
    f: &mut F,
    (lts, l): (i64, &L),
    (rts, r): (i64, &R),
    out: &mut Collector<O>,
) -> Result<(), UserError> {
    let jc = JoinContext {
        left_timestamp: lts,
        right_timestamp: rts,
    };
    out.collect_with_timestamp_of(lts.max(rts), |out| f.process_element(l, r, &jc, out))
}

fn need_timestamp(ts: Option<i64>) -> Result<i64, UserError> {
    ts.ok_or_else(|| {
        "an interval join needs event timestamps: call assign_timestamps_and_watermarks on both \
         inputs"
            .into()
    })
}

impl<K, L, R, O, F> KeyedCoProcessFunction<K, L, R, O> for IntervalJoin<L, R, F>
where
    K: Hash + Eq + Clone + 'static,
    L: crate::Data,
    R: crate::Data,
    O: 'static,
    F: ProcessJoinFunction<L, R, O>,
{
    type State = JoinBuffers<L, R>;

    fn process_element1(
        &mut self,
        l: L,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let ts = need_timestamp(ctx.timestamp())?;
        if ts < ctx.current_watermark() {
            if let Some(tag) = &self.left_late {
                out.output(tag, l);
            }
            return Ok(());
        }
        let (lower, upper) = (self.lower, self.upper);
        let buffers = ctx.state_or_insert_with(JoinBuffers::default);
        for (rts, r) in &buffers.right {
            if meet(lower, upper, ts, *rts) {
                join(&mut self.f, (ts, &l), (*rts, r), out)?;
            }
        }
        buffers.left.push((ts, l));
        ctx.register_event_time_timer(left_expiry(upper, ts));
        Ok(())
    }

    fn process_element2(
        &mut self,
        r: R,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let ts = need_timestamp(ctx.timestamp())?;
        if ts < ctx.current_watermark() {
            if let Some(tag) = &self.right_late {
                out.output(tag, r);
            }
            return Ok(());
        }
        let (lower, upper) = (self.lower, self.upper);
        let buffers = ctx.state_or_insert_with(JoinBuffers::default);
        for (lts, l) in &buffers.left {
            if meet(lower, upper, *lts, ts) {
                join(&mut self.f, (*lts, l), (ts, &r), out)?;
            }
        }
        buffers.right.push((ts, r));
        ctx.register_event_time_timer(right_expiry(lower, ts));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: i64,
        ctx: &mut KeyedContext<'_, K, Self::State>,
        _out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let (lower, upper) = (self.lower, self.upper);
        let empty = match ctx.state_mut() {
            Some(b) => {
                // No right record can still reach a left one whose interval ended by `time`,
                // nor a left one a right whose interval began by it.
                b.left.retain(|(ts, _)| left_expiry(upper, *ts) > time);
                b.right.retain(|(ts, _)| right_expiry(lower, *ts) > time);
                b.left.is_empty() && b.right.is_empty()
            }
            None => false,
        };
        if empty {
            ctx.clear_state();
        }
        Ok(())
    }
}
