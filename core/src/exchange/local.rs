//! The same-shard channel of an exchange: batches of plain values handed from the writer to the
//! reader on one executor. No serialization, no atomics; bounded like a ring (the same number of
//! batches in flight), with emptied batches handed back for reuse. Watermarks and end of input
//! travel in the same queue, in order with the batches, and take no slot.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Waker};

use crate::operator::Batch;

pub enum LocalMessage<T> {
    Batch(Batch<T>),
    Watermark(i64),
    /// The writer's input went idle (true) or active again (false).
    Status(bool),
    Barrier(crate::checkpoint::Barrier),
    End,
}

struct Inner<T> {
    queue: VecDeque<LocalMessage<T>>,
    spare: Vec<Batch<T>>,
    batches_in_flight: usize,
    batches_max: usize,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

impl<T> Inner<T> {
    /// Queues a message for the reader and wakes it.
    fn deliver(&mut self, msg: LocalMessage<T>) {
        self.queue.push_back(msg);
        if let Some(w) = self.rx_waker.take() {
            w.wake();
        }
    }
}

/// Both ends share this handle: the writer and the reader run on the same executor.
pub struct LocalChannel<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T> Clone for LocalChannel<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> LocalChannel<T> {
    pub fn new(batches_max: usize) -> Self {
        assert!(batches_max >= 1);
        Self {
            inner: Rc::new(RefCell::new(Inner {
                queue: VecDeque::with_capacity(batches_max + 2),
                spare: Vec::new(),
                batches_in_flight: 0,
                batches_max,
                rx_waker: None,
                tx_waker: None,
            })),
        }
    }

    /// Hands over the first `n` staged records (all of them if `n` is their number, leaving
    /// `staged` with the capacity of a recycled batch) if a batch slot is free; otherwise
    /// registers the waker, if any, and returns false.
    pub fn try_send(&self, staged: &mut Batch<T>, n: usize, cx: Option<&mut Context<'_>>) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.batches_in_flight >= inner.batches_max {
            if let Some(cx) = cx {
                inner.tx_waker = Some(cx.waker().clone());
            }
            return false;
        }
        let mut fresh = inner.spare.pop().unwrap_or_default();
        let batch = if n == staged.len() {
            std::mem::swap(staged, &mut fresh);
            fresh
        } else {
            fresh.records.extend(staged.records.drain(..n));
            if staged.is_timed() {
                fresh.timestamps.extend(staged.timestamps.drain(..n));
            }
            fresh
        };
        inner.batches_in_flight += 1;
        inner.deliver(LocalMessage::Batch(batch));
        true
    }

    /// Sends a watermark (it needs no slot: a watermark right behind another replaces it).
    pub fn send_watermark(&self, watermark: i64) {
        let mut inner = self.inner.borrow_mut();
        match inner.queue.back_mut() {
            Some(LocalMessage::Watermark(w)) => *w = (*w).max(watermark),
            _ => inner.deliver(LocalMessage::Watermark(watermark)),
        }
    }

    /// Sends a watermark status (it needs no slot).
    pub fn send_barrier(&self, barrier: crate::checkpoint::Barrier) {
        self.inner
            .borrow_mut()
            .deliver(LocalMessage::Barrier(barrier));
    }

    pub fn send_status(&self, idle: bool) {
        self.inner.borrow_mut().deliver(LocalMessage::Status(idle));
    }

    /// Sends end of input (it needs no slot: it carries nothing).
    pub fn send_end(&self) {
        self.inner.borrow_mut().deliver(LocalMessage::End);
    }

    pub fn try_recv(&self) -> Option<LocalMessage<T>> {
        self.inner.borrow_mut().queue.pop_front()
    }

    pub fn is_ready(&self) -> bool {
        !self.inner.borrow().queue.is_empty()
    }

    pub fn register(&self, cx: &mut Context<'_>) {
        self.inner.borrow_mut().rx_waker = Some(cx.waker().clone());
    }

    /// Returns an emptied batch: one slot back to the writer.
    pub fn release(&self, mut batch: Batch<T>) {
        batch.clear();
        let mut inner = self.inner.borrow_mut();
        inner.batches_in_flight -= 1;
        inner.spare.push(batch);
        if let Some(w) = inner.tx_waker.take() {
            w.wake();
        }
    }
}
