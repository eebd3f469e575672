//! The joints of a chain: one output to many ([`FanOut`]), many inputs into one ([`Shared`]),
//! and an output nobody reads ([`Discard`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

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
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.downs.iter_mut().try_for_each(|d| d.barrier(barrier))
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.downs.iter_mut().try_for_each(|d| d.finish())
    }
}

/// The wakers of the several tasks that drive one downstream (the readers of a union's inputs,
/// or of a two-input operator's): the downstream keeps one waker (a writer waiting for credit
/// registers the last task that polled it), so each task polls it with a waker that wakes every
/// task that polled, each registered in its own slot. With the task's own waker instead, the
/// credit woke only the last one to poll, and another task stalled on the same credit slept on
/// with its input unread (a job with an exchange after a two-input operator hung about one run
/// in three).
pub(crate) struct InputWakers {
    slots: Arc<Slots>,
    waker: Waker,
}

struct Slots(Vec<AtomicWaker>);

impl Wake for Slots {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        for s in &self.0 {
            s.wake();
        }
    }
}

impl InputWakers {
    pub(crate) fn new(inputs: usize) -> Self {
        let slots = Arc::new(Slots((0..inputs).map(|_| AtomicWaker::new()).collect()));
        Self {
            waker: Waker::from(slots.clone()),
            slots,
        }
    }

    /// Polls with a context whose waker wakes input `input`'s task (from `cx`) and every other
    /// task that polled through these wakers and is waiting.
    #[inline]
    pub(crate) fn poll<R>(
        &self,
        input: usize,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.slots.0[input].register(cx.waker());
        poll(&mut Context::from_waker(&self.waker))
    }
}

/// What an input blocked by a barrier alignment handed over meanwhile, kept in order.
pub(crate) enum Held<T> {
    Batch(Batch<T>),
    Watermark(i64),
    Status(bool),
    Barrier(crate::checkpoint::Barrier),
    Finish,
}

struct SharedInner<T> {
    down: BoxPush<T>,
    inputs_open: usize,
    valve: WatermarkValve,
    aligner: crate::checkpoint::BarrierAligner,
    /// Per input: what it handed over while blocked.
    held: Vec<std::collections::VecDeque<Held<T>>>,
    wakers: InputWakers,
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

    /// Takes what input `input` hands over: held while a barrier alignment blocks it.
    fn handle(&mut self, input: usize, msg: Held<T>) -> Result<(), JobError> {
        if self.aligner.blocked(input) {
            self.held[input].push_back(msg);
            return Ok(());
        }
        match msg {
            Held::Batch(mut b) => self.down.push(&mut b),
            Held::Watermark(w) => {
                let out = self.valve.watermark(input, w);
                self.apply(out)
            }
            Held::Status(idle) => {
                let out = self.valve.status(input, idle);
                self.apply(out)
            }
            Held::Barrier(b) => match self.aligner.barrier(input, b) {
                Some(b) => self.aligned(b),
                None => Ok(()),
            },
            Held::Finish => {
                // An input that ended holds event time back no longer, nor a barrier.
                let out = self.valve.remove(input);
                self.apply(out)?;
                self.inputs_open -= 1;
                if let Some(b) = self.aligner.remove(input) {
                    self.aligned(b)?;
                }
                if self.inputs_open == 0 {
                    self.down.finish()
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Every input delivered barrier `b`: it goes on, and the inputs' held messages follow.
    fn aligned(&mut self, b: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.down.barrier(b)?;
        for i in 0..self.held.len() {
            while !self.aligner.blocked(i)
                && let Some(m) = self.held[i].pop_front()
            {
                self.handle(i, m)?;
            }
        }
        Ok(())
    }
}

/// One of several inputs of the same operator (a `union`, or several chains feeding one exchange
/// on this shard). The operator's watermark is the minimum of its inputs'; it finishes when the
/// last of its inputs has finished; a checkpoint barrier goes on once every open input has
/// delivered it, what an input hands over after its barrier waiting until then.
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
            aligner: crate::checkpoint::BarrierAligner::new(inputs),
            held: (0..inputs).map(|_| Default::default()).collect(),
            wakers: InputWakers::new(inputs),
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
        let mut inner = self.inner.borrow_mut();
        if inner.aligner.blocked(self.input) {
            let b = std::mem::take(batch);
            inner.handle(self.input, Held::Batch(b))
        } else {
            inner.down.push(batch)
        }
    }
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        self.inner
            .borrow_mut()
            .handle(self.input, Held::Watermark(watermark))
    }
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.inner
            .borrow_mut()
            .handle(self.input, Held::Status(idle))
    }
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.inner
            .borrow_mut()
            .handle(self.input, Held::Barrier(barrier))
    }
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.inner.borrow_mut().down.tick(now_ms)
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        let inner = &mut *self.inner.borrow_mut();
        let down = &mut inner.down;
        inner.wakers.poll(self.input, cx, |cx| down.poll_ready(cx))
    }
    fn flush(&mut self) -> Result<(), JobError> {
        self.inner.borrow_mut().down.flush()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        let inner = &mut *self.inner.borrow_mut();
        let down = &mut inner.down;
        inner.wakers.poll(self.input, cx, |cx| down.poll_flush(cx))
    }
    fn finish(&mut self) -> Result<(), JobError> {
        assert!(!self.finished, "an input finished twice");
        self.finished = true;
        self.inner.borrow_mut().handle(self.input, Held::Finish)
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
    fn barrier(&mut self, _barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
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
