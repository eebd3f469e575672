//! The joints of a chain: one output to many ([`FanOut`]), many inputs into one ([`Shared`]),
//! and an output nobody reads ([`Discard`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{BoxPush, Push};
use crate::error::JobError;

/// One stream consumed by several operators: every consumer gets every record (the first ones a
/// copy, the last one the batch itself).
pub struct FanOut<T> {
    downs: Vec<BoxPush<T>>,
    scratch: Vec<T>,
}

impl<T: Clone> FanOut<T> {
    pub fn new(downs: Vec<BoxPush<T>>) -> Self {
        assert!(!downs.is_empty());
        Self {
            downs,
            scratch: Vec::new(),
        }
    }
}

impl<T: Clone + 'static> Push<T> for FanOut<T> {
    fn push(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        let (last, rest) = self.downs.split_last_mut().expect("at least one consumer");
        for d in rest {
            self.scratch.extend_from_slice(batch);
            d.push(&mut self.scratch)?;
        }
        last.push(batch)
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
}

/// One of several inputs of the same operator (a `union`, or several chains feeding one exchange
/// on this shard). The operator finishes when the last of its inputs has finished.
pub struct Shared<T> {
    inner: Rc<RefCell<SharedInner<T>>>,
    finished: bool,
}

impl<T: 'static> Shared<T> {
    /// Splits `down` into `inputs` handles.
    pub fn split(down: BoxPush<T>, inputs: usize) -> Vec<BoxPush<T>> {
        assert!(inputs >= 1);
        let inner = Rc::new(RefCell::new(SharedInner {
            down,
            inputs_open: inputs,
        }));
        (0..inputs)
            .map(|_| {
                Box::new(Shared {
                    inner: inner.clone(),
                    finished: false,
                }) as BoxPush<T>
            })
            .collect()
    }
}

impl<T: 'static> Push<T> for Shared<T> {
    fn push(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.inner.borrow_mut().down.push(batch)
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
    fn push(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        batch.clear();
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
    fn push(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.down.push(batch)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
