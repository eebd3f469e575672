//! A bounded single-producer/single-consumer queue: the lock-free core of every ring.
//!
//! Lamport's queue with each side caching the other side's index, so that the common case (the
//! queue is neither full nor empty) touches no cache line the other core writes. One push or pop
//! is a slot move plus one release store: a few nanoseconds, paid once per batch, not per record.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Pads and aligns a value to its own cache line pair (AMD and Intel prefetch lines in pairs).
#[repr(align(128))]
struct CachePadded<T>(T);

struct Shared<T> {
    /// Next slot the consumer reads. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is accessed by exactly one side at a time: the producer owns slots in
// [tail, head + capacity), the consumer owns [head, tail); ownership passes with the
// release/acquire pair on `tail` (producer to consumer) and `head` (consumer to producer).
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        for i in head..tail {
            // SAFETY: slots in [head, tail) hold initialized values no one else can reach now.
            unsafe { (*self.slots[i & self.mask].get()).assume_init_drop() };
        }
    }
}

/// The producing end.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: Cell<usize>,
    head_cached: Cell<usize>,
}

/// The consuming end.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: Cell<usize>,
    tail_cached: Cell<usize>,
}

// SAFETY: each end is used by one thread at a time (it is moved, never shared); the Cells are
// that end's private copies of its own index.
unsafe impl<T: Send> Send for Producer<T> {}
unsafe impl<T: Send> Send for Consumer<T> {}

/// A queue of `capacity` slots (rounded up to a power of two).
pub fn queue<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        mask: capacity - 1,
        slots,
    });
    (
        Producer {
            shared: shared.clone(),
            tail: Cell::new(0),
            head_cached: Cell::new(0),
        },
        Consumer {
            shared,
            head: Cell::new(0),
            tail_cached: Cell::new(0),
        },
    )
}

impl<T> Producer<T> {
    /// Pushes `value`, or hands it back when the queue is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        let tail = self.tail.get();
        let capacity = self.shared.mask + 1;
        if tail - self.head_cached.get() == capacity {
            self.head_cached
                .set(self.shared.head.0.load(Ordering::Acquire));
            if tail - self.head_cached.get() == capacity {
                return Err(value);
            }
        }
        // SAFETY: the slot at `tail` is outside [head, tail): the consumer does not touch it.
        unsafe { (*self.shared.slots[tail & self.shared.mask].get()).write(value) };
        self.tail.set(tail + 1);
        self.shared.tail.0.store(tail + 1, Ordering::Release);
        Ok(())
    }

    /// Values queued and not yet popped (a racy snapshot, exact when the consumer is idle).
    pub fn len(&self) -> usize {
        self.tail.get() - self.shared.head.0.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest value, if any.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let head = self.head.get();
        if head == self.tail_cached.get() {
            self.tail_cached
                .set(self.shared.tail.0.load(Ordering::Acquire));
            if head == self.tail_cached.get() {
                return None;
            }
        }
        // SAFETY: the slot at `head` is in [head, tail): initialized and owned by the consumer.
        let value =
            unsafe { (*self.shared.slots[head & self.shared.mask].get()).assume_init_read() };
        self.head.set(head + 1);
        self.shared.head.0.store(head + 1, Ordering::Release);
        Some(value)
    }

    /// Whether a pop would find nothing right now.
    #[inline]
    pub fn is_empty(&self) -> bool {
        let head = self.head.get();
        head == self.tail_cached.get() && {
            self.tail_cached
                .set(self.shared.tail.0.load(Ordering::Acquire));
            head == self.tail_cached.get()
        }
    }

    /// Values queued and not yet popped (a racy snapshot).
    pub fn len(&self) -> usize {
        self.shared.tail.0.load(Ordering::Acquire) - self.head.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_bounded() {
        let (p, c) = queue::<u32>(3);
        assert_eq!(p.capacity(), 4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(rest, vec![1, 2, 3, 4]);
        assert!(c.is_empty());
    }

    #[test]
    fn two_threads_see_every_value_once_in_order() {
        let n = 1_000_000u64;
        let (p, c) = queue::<u64>(64);
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                let mut v = i;
                while let Err(back) = p.push(v) {
                    v = back;
                    std::hint::spin_loop();
                }
            }
        });
        let mut expected = 0;
        while expected < n {
            if let Some(v) = c.pop() {
                assert_eq!(v, expected);
                expected += 1;
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none());
    }

    #[test]
    fn values_left_in_the_queue_are_dropped() {
        let token = Arc::new(());
        let (p, c) = queue::<Arc<()>>(8);
        for _ in 0..5 {
            p.push(token.clone()).unwrap();
        }
        drop(c.pop());
        drop((p, c));
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
