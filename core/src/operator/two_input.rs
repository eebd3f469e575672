//! Operators with two inputs (connected streams, joins): one operator, two input ports.
//!
//! The ports share the operator on their shard (`Rc<RefCell<..>>`: both are driven by tasks of
//! the same executor). Each port forwards its batches to its side of the operator; watermarks of
//! the two inputs meet in a [`WatermarkValve`], so the operator sees one watermark, the minimum of
//! its inputs'; it finishes when both inputs have.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Batch, BoxPush, Push, ValveOutput, WatermarkValve};
use crate::error::JobError;

/// What a two-input operator does with each input and with time.
pub trait CoOperator<I1, I2>: 'static {
    fn push1(&mut self, batch: &mut Batch<I1>) -> Result<(), JobError>;
    fn push2(&mut self, batch: &mut Batch<I2>) -> Result<(), JobError>;
    /// The combined watermark of both inputs moved.
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError>;
    /// Both inputs went idle, or one came back.
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError>;
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>>;
    fn flush(&mut self) -> Result<(), JobError>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>>;
    /// Both inputs delivered checkpoint barrier `barrier`.
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError>;
    /// Both inputs ended.
    fn finish(&mut self) -> Result<(), JobError>;
}

use super::fan_out::{Held, InputWakers};

struct Inner<C, I1, I2> {
    op: C,
    valve: WatermarkValve,
    open: usize,
    aligner: crate::checkpoint::BarrierAligner,
    /// What each input handed over while a barrier alignment blocked it.
    held1: std::collections::VecDeque<Held<I1>>,
    held2: std::collections::VecDeque<Held<I2>>,
    /// Each input's reader task polls the operator's output (see [`InputWakers`]).
    wakers: InputWakers,
}

impl<C: CoOperator<I1, I2>, I1, I2> Inner<C, I1, I2> {
    fn apply(&mut self, out: ValveOutput) -> Result<(), JobError> {
        if let Some(w) = out.watermark {
            self.op.watermark(w)?;
        }
        if let Some(idle) = out.status {
            self.op.watermark_status(idle)?;
        }
        Ok(())
    }

    /// What input `side` hands over that is not a batch (held while it is blocked).
    fn control(&mut self, side: usize, msg: Control) -> Result<(), JobError> {
        match msg {
            Control::Watermark(w) => {
                let out = self.valve.watermark(side, w);
                self.apply(out)
            }
            Control::Status(idle) => {
                let out = self.valve.status(side, idle);
                self.apply(out)
            }
            Control::Barrier(b) => match self.aligner.barrier(side, b) {
                Some(b) => self.aligned(b),
                None => Ok(()),
            },
            Control::Finish => {
                let out = self.valve.remove(side);
                self.apply(out)?;
                self.open -= 1;
                if let Some(b) = self.aligner.remove(side) {
                    self.aligned(b)?;
                }
                if self.open == 0 {
                    self.op.finish()
                } else {
                    Ok(())
                }
            }
        }
    }

    fn handle1(&mut self, msg: Held<I1>) -> Result<(), JobError> {
        if self.aligner.blocked(0) {
            self.held1.push_back(msg);
            return Ok(());
        }
        match msg {
            Held::Batch(mut b) => self.op.push1(&mut b),
            other => self.control(0, Control::of(other)),
        }
    }

    fn handle2(&mut self, msg: Held<I2>) -> Result<(), JobError> {
        if self.aligner.blocked(1) {
            self.held2.push_back(msg);
            return Ok(());
        }
        match msg {
            Held::Batch(mut b) => self.op.push2(&mut b),
            other => self.control(1, Control::of(other)),
        }
    }

    /// Both inputs delivered barrier `b`: the operator snapshots and passes it on; what the
    /// inputs handed over meanwhile follows.
    fn aligned(&mut self, b: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.op.barrier(b)?;
        while !self.aligner.blocked(0)
            && let Some(m) = self.held1.pop_front()
        {
            self.handle1(m)?;
        }
        while !self.aligner.blocked(1)
            && let Some(m) = self.held2.pop_front()
        {
            self.handle2(m)?;
        }
        Ok(())
    }
}

/// A held message that is not a batch, whatever its input's type.
enum Control {
    Watermark(i64),
    Status(bool),
    Barrier(crate::checkpoint::Barrier),
    Finish,
}

impl Control {
    fn of<T>(h: Held<T>) -> Self {
        match h {
            Held::Watermark(w) => Control::Watermark(w),
            Held::Status(s) => Control::Status(s),
            Held::Barrier(b) => Control::Barrier(b),
            Held::Finish => Control::Finish,
            Held::Batch(_) => unreachable!("batches are pushed, not controls"),
        }
    }
}

/// One input port of a two-input operator.
pub struct CoPort<C, I1, I2, const SIDE: usize> {
    inner: Rc<RefCell<Inner<C, I1, I2>>>,
    finished: bool,
    _t: std::marker::PhantomData<fn(I1, I2)>,
}

/// The two input ports of `op`.
pub fn ports<I1: 'static, I2: 'static, C: CoOperator<I1, I2>>(op: C) -> (BoxPush<I1>, BoxPush<I2>) {
    let inner = Rc::new(RefCell::new(Inner {
        op,
        valve: WatermarkValve::new(2),
        open: 2,
        aligner: crate::checkpoint::BarrierAligner::new(2),
        held1: Default::default(),
        held2: Default::default(),
        wakers: InputWakers::new(2),
    }));
    (
        Box::new(CoPort::<C, I1, I2, 0> {
            inner: inner.clone(),
            finished: false,
            _t: std::marker::PhantomData,
        }),
        Box::new(CoPort::<C, I1, I2, 1> {
            inner,
            finished: false,
            _t: std::marker::PhantomData,
        }),
    )
}

macro_rules! co_port_common {
    ($handle:ident, $side:literal) => {
        fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
            self.inner.borrow_mut().$handle(Held::Watermark(watermark))
        }
        fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
            self.inner.borrow_mut().$handle(Held::Status(idle))
        }
        fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
            self.inner.borrow_mut().$handle(Held::Barrier(barrier))
        }
        fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
            self.inner.borrow_mut().op.tick(now_ms)
        }
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
            let inner = &mut *self.inner.borrow_mut();
            let op = &mut inner.op;
            inner.wakers.poll($side, cx, |cx| op.poll_ready(cx))
        }
        fn flush(&mut self) -> Result<(), JobError> {
            self.inner.borrow_mut().op.flush()
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
            let inner = &mut *self.inner.borrow_mut();
            let op = &mut inner.op;
            inner.wakers.poll($side, cx, |cx| op.poll_flush(cx))
        }
        fn finish(&mut self) -> Result<(), JobError> {
            assert!(!self.finished, "an input finished twice");
            self.finished = true;
            self.inner.borrow_mut().$handle(Held::Finish)
        }
    };
}

impl<I1: 'static, I2: 'static, C: CoOperator<I1, I2>> Push<I1> for CoPort<C, I1, I2, 0> {
    fn push(&mut self, batch: &mut Batch<I1>) -> Result<(), JobError> {
        let mut inner = self.inner.borrow_mut();
        if inner.aligner.blocked(0) {
            let b = std::mem::take(batch);
            inner.handle1(Held::Batch(b))
        } else {
            inner.op.push1(batch)
        }
    }
    co_port_common!(handle1, 0);
}

impl<I1: 'static, I2: 'static, C: CoOperator<I1, I2>> Push<I2> for CoPort<C, I1, I2, 1> {
    fn push(&mut self, batch: &mut Batch<I2>) -> Result<(), JobError> {
        let mut inner = self.inner.borrow_mut();
        if inner.aligner.blocked(1) {
            let b = std::mem::take(batch);
            inner.handle2(Held::Batch(b))
        } else {
            inner.op.push2(batch)
        }
    }
    co_port_common!(handle2, 1);
}
