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
    /// Both inputs ended.
    fn finish(&mut self) -> Result<(), JobError>;
}

struct Inner<C> {
    op: C,
    valve: WatermarkValve,
    open: usize,
}

impl<C> Inner<C> {
    fn apply<I1, I2>(&mut self, out: ValveOutput) -> Result<(), JobError>
    where
        C: CoOperator<I1, I2>,
    {
        if let Some(w) = out.watermark {
            self.op.watermark(w)?;
        }
        if let Some(idle) = out.status {
            self.op.watermark_status(idle)?;
        }
        Ok(())
    }
}

/// One input port of a two-input operator.
pub struct CoPort<C, I1, I2, const SIDE: usize> {
    inner: Rc<RefCell<Inner<C>>>,
    finished: bool,
    _t: std::marker::PhantomData<fn(I1, I2)>,
}

/// The two input ports of `op`.
pub fn ports<I1: 'static, I2: 'static, C: CoOperator<I1, I2>>(op: C) -> (BoxPush<I1>, BoxPush<I2>) {
    let inner = Rc::new(RefCell::new(Inner {
        op,
        valve: WatermarkValve::new(2),
        open: 2,
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
    ($side:expr) => {
        fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
            let mut inner = self.inner.borrow_mut();
            let out = inner.valve.watermark($side, watermark);
            inner.apply::<I1, I2>(out)
        }
        fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
            let mut inner = self.inner.borrow_mut();
            let out = inner.valve.status($side, idle);
            inner.apply::<I1, I2>(out)
        }
        fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
            self.inner.borrow_mut().op.tick(now_ms)
        }
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
            self.inner.borrow_mut().op.poll_ready(cx)
        }
        fn flush(&mut self) -> Result<(), JobError> {
            self.inner.borrow_mut().op.flush()
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
            self.inner.borrow_mut().op.poll_flush(cx)
        }
        fn finish(&mut self) -> Result<(), JobError> {
            assert!(!self.finished, "an input finished twice");
            self.finished = true;
            let mut inner = self.inner.borrow_mut();
            let out = inner.valve.remove($side);
            inner.apply::<I1, I2>(out)?;
            inner.open -= 1;
            if inner.open == 0 {
                inner.op.finish()
            } else {
                Ok(())
            }
        }
    };
}

impl<I1: 'static, I2: 'static, C: CoOperator<I1, I2>> Push<I1> for CoPort<C, I1, I2, 0> {
    fn push(&mut self, batch: &mut Batch<I1>) -> Result<(), JobError> {
        self.inner.borrow_mut().op.push1(batch)
    }
    co_port_common!(0);
}

impl<I1: 'static, I2: 'static, C: CoOperator<I1, I2>> Push<I2> for CoPort<C, I1, I2, 1> {
    fn push(&mut self, batch: &mut Batch<I2>) -> Result<(), JobError> {
        self.inner.borrow_mut().op.push2(batch)
    }
    co_port_common!(1);
}
