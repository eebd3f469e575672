//! The in-process ring: one bounded channel of pooled, aligned buffers per
//! (sender shard, receiver shard, exchange).
//!
//! A ring is two single-producer/single-consumer queues over one fixed pool of buffers:
//!
//! ```text
//!            full: filled buffers, in order
//!   sender  ───────────────────────────────▶  receiver
//!           ◀───────────────────────────────
//!            free: emptied buffers (credits)
//! ```
//!
//! The pool is the credit: a sender may only fill a buffer it took from `free`, so at most
//! `buffers` buffers are ever in flight and a sender with no credit stops. That stop is
//! backpressure; it propagates upstream because the sending task stops pulling its own input.
//! Buffers are recycled, never reallocated on the hot path (a buffer that had to grow for one
//! oversized batch keeps its capacity).
//!
//! Waking follows the scheduling mode of the receiving shard. A receiver that busy-polls never
//! registers a waker and a send costs one release store. A receiver that parks registers its
//! task's waker; the sender wakes it across executors (glommio queues the wake and pokes the
//! parked executor's eventfd).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use crate::error::ChannelError;
use crate::spsc::{self, Consumer, Producer};

/// An aligned, growable byte buffer (16-byte aligned, as rkyv archives want).
pub type Buffer = rkyv::util::AlignedVec<16>;

/// How a ring is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Buffers in the pool: the credits a sender has before it must wait.
    pub buffers: usize,
    /// The capacity each pooled buffer starts with.
    pub buffer_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            buffers: 4,
            buffer_bytes: 32 << 10,
        }
    }
}

/// Limits on a ring's configuration: a ring never holds more than this.
pub const RING_BUFFERS_MAX: usize = 1024;
pub const RING_BUFFER_BYTES_MAX: usize = 64 << 20;

/// Counters of one ring, readable from any thread while the job runs.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Bytes of frames sent and not yet received.
    pub buffered_bytes: AtomicUsize,
    /// The most `buffered_bytes` ever reached.
    pub buffered_bytes_high_water: AtomicUsize,
    /// Buffers sent and not yet received.
    pub buffered_buffers: AtomicUsize,
    pub buffered_buffers_high_water: AtomicUsize,
    /// Buffers (and so batches of frames) sent in total.
    pub buffers_sent: AtomicU64,
    /// Bytes sent in total.
    pub bytes_sent: AtomicU64,
    /// Times the sender found no credit and had to wait: backpressure.
    pub credit_stalls: AtomicU64,
}

struct Shared {
    channel: u32,
    rx_waker: AtomicWaker,
    tx_waker: AtomicWaker,
    sender_gone: AtomicBool,
    receiver_gone: AtomicBool,
    stats: RingStats,
}

/// Creates a ring for `channel`.
///
/// # Panics
/// If the configuration exceeds [`RING_BUFFERS_MAX`] or [`RING_BUFFER_BYTES_MAX`]; callers
/// validate user settings before building rings.
pub fn ring(channel: u32, config: RingConfig) -> (RingSender, RingReceiver) {
    assert!(config.buffers >= 1 && config.buffers <= RING_BUFFERS_MAX);
    assert!(config.buffer_bytes <= RING_BUFFER_BYTES_MAX);
    let (full_tx, full_rx) = spsc::queue(config.buffers);
    let (free_tx, free_rx) = spsc::queue(config.buffers);
    for _ in 0..config.buffers {
        let buf = Buffer::with_capacity(config.buffer_bytes);
        free_tx
            .push(buf)
            .unwrap_or_else(|_| unreachable!("the free queue holds the whole pool"));
    }
    let shared = Arc::new(Shared {
        channel,
        rx_waker: AtomicWaker::new(),
        tx_waker: AtomicWaker::new(),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
        stats: RingStats::default(),
    });
    (
        RingSender {
            full: full_tx,
            free: free_rx,
            shared: shared.clone(),
        },
        RingReceiver {
            full: full_rx,
            free: free_tx,
            shared,
        },
    )
}

/// The sending end: takes free buffers (credits), fills them, sends them.
pub struct RingSender {
    full: Producer<Buffer>,
    free: Consumer<Buffer>,
    shared: Arc<Shared>,
}

impl RingSender {
    pub fn channel(&self) -> u32 {
        self.shared.channel
    }

    /// Takes an empty buffer if a credit is available.
    #[inline]
    pub fn try_take_buffer(&self) -> Result<Option<Buffer>, ChannelError> {
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return Err(ChannelError::Closed {
                channel: self.shared.channel,
            });
        }
        Ok(self.free.pop().map(|mut b| {
            b.clear();
            b
        }))
    }

    /// Takes an empty buffer, or registers the task to be woken when a credit comes back.
    pub fn poll_take_buffer(&self, cx: &mut Context<'_>) -> Poll<Result<Buffer, ChannelError>> {
        if let Some(b) = self.try_take_buffer()? {
            return Poll::Ready(Ok(b));
        }
        self.shared
            .stats
            .credit_stalls
            .fetch_add(1, Ordering::Relaxed);
        self.shared.tx_waker.register(cx.waker());
        match self.try_take_buffer()? {
            Some(b) => Poll::Ready(Ok(b)),
            None => Poll::Pending,
        }
    }

    /// Sends a filled buffer. It came from this ring's pool, so there is always room.
    #[inline]
    pub fn send(&self, buf: Buffer) {
        let bytes = buf.len();
        let stats = &self.shared.stats;
        let now = stats.buffered_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        stats
            .buffered_bytes_high_water
            .fetch_max(now, Ordering::Relaxed);
        let n = stats.buffered_buffers.fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .buffered_buffers_high_water
            .fetch_max(n, Ordering::Relaxed);
        stats.buffers_sent.fetch_add(1, Ordering::Relaxed);
        stats.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.full.push(buf).is_err() {
            unreachable!(
                "ring {}: more buffers in flight than the pool holds",
                self.shared.channel
            );
        }
        self.shared.rx_waker.wake();
    }

    pub fn stats(&self) -> &RingStats {
        &self.shared.stats
    }

    /// A handle that can read this ring's counters and abort it from any thread.
    pub fn handle(&self) -> RingHandle {
        RingHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for RingSender {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::Release);
        self.shared.rx_waker.wake();
    }
}

/// The receiving end: receives filled buffers in order and returns them (the credit).
pub struct RingReceiver {
    full: Consumer<Buffer>,
    free: Producer<Buffer>,
    shared: Arc<Shared>,
}

impl RingReceiver {
    pub fn channel(&self) -> u32 {
        self.shared.channel
    }

    /// Receives the next buffer, if one is there. `Err` once the sender is gone and nothing is
    /// left: a sender that finished properly sent an END frame first, so this is a failure.
    #[inline]
    pub fn try_recv(&self) -> Result<Option<Buffer>, ChannelError> {
        match self.full.pop() {
            Some(buf) => {
                let stats = &self.shared.stats;
                stats.buffered_bytes.fetch_sub(buf.len(), Ordering::Relaxed);
                stats.buffered_buffers.fetch_sub(1, Ordering::Relaxed);
                Ok(Some(buf))
            }
            None if self.shared.sender_gone.load(Ordering::Acquire) => {
                // The sender may have pushed its last buffer just before leaving.
                if self.full.is_empty() {
                    Err(ChannelError::Closed {
                        channel: self.shared.channel,
                    })
                } else {
                    self.try_recv()
                }
            }
            None => Ok(None),
        }
    }

    /// Whether a buffer is waiting (or the channel is closed, which `try_recv` reports).
    #[inline]
    pub fn is_ready(&self) -> bool {
        !self.full.is_empty() || self.shared.sender_gone.load(Ordering::Acquire)
    }

    /// Registers the task to be woken by the next send. Check [`is_ready`](Self::is_ready)
    /// afterwards: a send that raced the registration is seen there.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.shared.rx_waker.register(cx.waker());
    }

    /// Returns a buffer to the pool: one credit back to the sender.
    #[inline]
    pub fn release(&self, buf: Buffer) {
        if self.free.push(buf).is_err() {
            unreachable!(
                "ring {}: more buffers returned than the pool holds",
                self.shared.channel
            );
        }
        self.shared.tx_waker.wake();
    }

    pub fn stats(&self) -> &RingStats {
        &self.shared.stats
    }

    pub fn handle(&self) -> RingHandle {
        RingHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for RingReceiver {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.tx_waker.wake();
    }
}

/// Reads a ring's counters, and aborts it, from any thread.
#[derive(Clone)]
pub struct RingHandle {
    shared: Arc<Shared>,
}

impl RingHandle {
    pub fn channel(&self) -> u32 {
        self.shared.channel
    }

    pub fn stats(&self) -> &RingStats {
        &self.shared.stats
    }

    /// Closes both ends and wakes whoever waits on them: used when the job fails elsewhere, so
    /// that no task waits forever on a peer that will never send or return a credit.
    pub fn abort(&self) {
        self.shared.sender_gone.store(true, Ordering::Release);
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.rx_waker.wake();
        self.shared.tx_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Checksum, FrameKind, FrameReader, write_frame};

    #[test]
    fn credits_bound_the_buffers_in_flight() {
        let (tx, rx) = ring(
            3,
            RingConfig {
                buffers: 2,
                buffer_bytes: 64,
            },
        );
        for i in 0..2u8 {
            let mut b = tx.try_take_buffer().unwrap().expect("credit");
            write_frame(&mut b, FrameKind::Data, 3, &[i; 5], Checksum::Compute).unwrap();
            tx.send(b);
        }
        assert!(tx.try_take_buffer().unwrap().is_none(), "no credit left");
        let b = rx.try_recv().unwrap().unwrap();
        let f = FrameReader::new(&b, 3).next().unwrap().unwrap();
        assert_eq!(f.payload, &[0u8; 5]);
        rx.release(b);
        assert!(tx.try_take_buffer().unwrap().is_some(), "credit returned");
        assert_eq!(
            tx.stats()
                .buffered_buffers_high_water
                .load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn a_vanished_sender_is_an_error_after_its_last_buffer() {
        let (tx, rx) = ring(5, RingConfig::default());
        let mut b = tx.try_take_buffer().unwrap().unwrap();
        write_frame(&mut b, FrameKind::End, 5, &[], Checksum::Skip).unwrap();
        tx.send(b);
        drop(tx);
        assert!(rx.try_recv().unwrap().is_some());
        assert!(matches!(
            rx.try_recv(),
            Err(ChannelError::Closed { channel: 5 })
        ));
    }

    #[test]
    fn abort_fails_both_ends() {
        let (tx, rx) = ring(9, RingConfig::default());
        tx.handle().abort();
        assert!(tx.try_take_buffer().is_err());
        assert!(rx.try_recv().is_err());
    }
}
