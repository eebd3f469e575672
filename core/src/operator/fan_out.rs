//! The joints of a chain: one output to many ([`FanOut`]), many inputs into one ([`Shared`]),
//! and an output nobody reads ([`Discard`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Batch, BoxPush, Push, ValveOutput, WatermarkValve};
use crate::error::JobError;

/// One stream consumed by several operators: every consumer gets every record (the first ones a
/// copy, the last one the batch itself).
pub struct FanOut<T> {
    downs: Vec<BoxPush<T>>,
    scratch: Batch<T>,
}

impl<T: Clone> FanOut<T> {
    pub fn new(downs: Vec<BoxPush<T>>) -> Self {
        assert!(!downs.is_empty());
        Self {
            downs,
            scratch: Batch::new(),
        }
    }
}

impl<T: Clone + 'static> Push<T> for FanOut<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        let (last, rest) = self.downs.split_last_mut().expect("at least one consumer");
        for d in rest {
            self.scratch.records.extend_from_slice(&batch.records);
            self.scratch.timestamps.extend_from_slice(&batch.timestamps);
            d.push(&mut self.scratch)?;
        }
        last.push(batch)
    }
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        self.downs
            .iter_mut()
            .try_for_each(|d| d.watermark(watermark))
    }
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.downs.iter_mut().try_for_each(|d| d.tick(now_ms))
    }
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.downs
            .iter_mut()
            .try_for_each(|d| d.watermark_status(idle))
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        for d in &mut self.downs {
            match d.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
    fn flush(&mut self) -> Result<(), JobError> {
        self.downs.iter_mut().try_for_each(|d| d.flush())
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        for d in &mut self.downs {
            match d.poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.downs.iter_mut().try_for_each(|d| d.finish())
    }
}

struct SharedInner<T> {
    down: BoxPush<T>,
    inputs_open: usize,
    valve: WatermarkValve,
}

impl<T> SharedInner<T> {
    fn apply(&mut self, out: ValveOutput) -> Result<(), JobError> {
        if let Some(w) = out.watermark {
            self.down.watermark(w)?;
        }
        if let Some(idle) = out.status {
            self.down.watermark_status(idle)?;
        }
        Ok(())
    }
}

/// One of several inputs of the same operator (a `union`, or several chains feeding one exchange
/// on this shard). The operator's watermark is the minimum of its inputs'; it finishes when the
/// last of its inputs has finished.
pub struct Shared<T> {
    inner: Rc<RefCell<SharedInner<T>>>,
    input: usize,
    finished: bool,
}

impl<T: 'static> Shared<T> {
    /// Splits `down` into `inputs` handles.
    pub fn split(down: BoxPush<T>, inputs: usize) -> Vec<BoxPush<T>> {
        assert!(inputs >= 1);
        let inner = Rc::new(RefCell::new(SharedInner {
            down,
            inputs_open: inputs,
            valve: WatermarkValve::new(inputs),
        }));
        (0..inputs)
            .map(|input| {
                Box::new(Shared {
                    inner: inner.clone(),
                    input,
                    finished: false,
                }) as BoxPush<T>
            })
            .collect()
    }
}

impl<T: 'static> Push<T> for Shared<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.inner.borrow_mut().down.push(batch)
    }
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        let mut inner = self.inner.borrow_mut();
        let out = inner.valve.watermark(self.input, watermark);
        inner.apply(out)
    }
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        let mut inner = self.inner.borrow_mut();
        let out = inner.valve.status(self.input, idle);
        inner.apply(out)
    }
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.inner.borrow_mut().down.tick(now_ms)
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.inner.borrow_mut().down.poll_ready(cx)
    }
    fn flush(&mut self) -> Result<(), JobError> {
        self.inner.borrow_mut().down.flush()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.inner.borrow_mut().down.poll_flush(cx)
    }
    fn finish(&mut self) -> Result<(), JobError> {
        assert!(!self.finished, "an input finished twice");
        self.finished = true;
        let mut inner = self.inner.borrow_mut();
        // An input that ended holds event time back no longer.
        let out = inner.valve.remove(self.input);
        inner.apply(out)?;
        inner.inputs_open -= 1;
        if inner.inputs_open == 0 {
            inner.down.finish()
        } else {
            Ok(())
        }
    }
}

/// The end of a stream nobody consumes.
pub struct Discard;

impl<T: 'static> Push<T> for Discard {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        batch.clear();
        Ok(())
    }
    fn watermark(&mut self, _watermark: i64) -> Result<(), JobError> {
        Ok(())
    }
    fn watermark_status(&mut self, _idle: bool) -> Result<(), JobError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        Ok(())
    }
}

/// Hands batches on unchanged: the operator behind `rebalance` and `broadcast`, and a combiner
/// switched off in streaming mode.
pub struct Forward<T> {
    down: BoxPush<T>,
}

impl<T> Forward<T> {
    pub fn new(down: BoxPush<T>) -> Self {
        Self { down }
    }
}

impl<T: 'static> Push<T> for Forward<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.down.push(batch)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
