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
use crate::shm::{MappedSlot, Recv, ShmRx, ShmTx};
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

pub(crate) struct Shared {
    pub(crate) channel: u32,
    pub(crate) rx_waker: AtomicWaker,
    pub(crate) tx_waker: AtomicWaker,
    /// This process's view: the sender left (or the ring was aborted here).
    pub(crate) sender_gone: AtomicBool,
    pub(crate) receiver_gone: AtomicBool,
    pub(crate) stats: RingStats,
    /// Whether the bytes cross a process boundary (a ring that feeds or drains a network link).
    pub(crate) foreign: AtomicBool,
    /// Why the ring was aborted, when its transport failed (a peer lost, a malformed frame).
    pub(crate) failure: std::sync::OnceLock<String>,
}

impl Shared {
    pub(crate) fn new(channel: u32) -> Arc<Self> {
        Arc::new(Self {
            channel,
            rx_waker: AtomicWaker::new(),
            tx_waker: AtomicWaker::new(),
            sender_gone: AtomicBool::new(false),
            receiver_gone: AtomicBool::new(false),
            stats: RingStats::default(),
            foreign: AtomicBool::new(false),
            failure: std::sync::OnceLock::new(),
        })
    }

    /// The error of an end that finds the ring closed: its transport's failure, if any.
    pub(crate) fn closed(&self) -> ChannelError {
        match self.failure.get() {
            Some(reason) => ChannelError::Disconnected {
                channel: self.channel,
                reason: reason.clone(),
            },
            None => ChannelError::Closed {
                channel: self.channel,
            },
        }
    }
}

/// Creates an in-process ring whose bytes cross a process boundary beyond it (one end is
/// driven by a network link): frames on it carry crcs and get the full check.
pub(crate) fn foreign_ring(channel: u32, config: RingConfig) -> (RingSender, RingReceiver) {
    let (tx, rx) = ring(channel, config);
    tx.shared.foreign.store(true, Ordering::Relaxed);
    (tx, rx)
}

/// Creates an in-process ring for `channel`.
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
    let shared = Shared::new(channel);
    (
        RingSender {
            end: SenderEnd::Process {
                full: full_tx,
                free: free_rx,
            },
            shared: shared.clone(),
        },
        RingReceiver {
            end: ReceiverEnd::Process {
                full: full_rx,
                free: free_tx,
            },
            shared,
        },
    )
}

enum SenderEnd {
    Process {
        full: Producer<Buffer>,
        free: Consumer<Buffer>,
    },
    Shm(Box<ShmTx>),
}

/// The sending end: takes free buffers (credits), fills them, sends them. The same for every
/// transport: in process (buffers handed over), shared memory (copied into the peer's slots).
pub struct RingSender {
    end: SenderEnd,
    shared: Arc<Shared>,
}

impl RingSender {
    pub(crate) fn from_shm(shared: Arc<Shared>, tx: ShmTx) -> Self {
        Self {
            end: SenderEnd::Shm(Box::new(tx)),
            shared,
        }
    }

    pub fn channel(&self) -> u32 {
        self.shared.channel
    }

    /// Whether the receiver may still take buffers (it has not gone, nor the ring failed).
    pub fn is_open(&self) -> bool {
        !self.shared.receiver_gone.load(Ordering::Acquire)
    }

    /// Whether the bytes leave the process: frames must then carry a crc.
    pub fn is_foreign(&self) -> bool {
        !matches!(self.end, SenderEnd::Process { .. })
            || self.shared.foreign.load(Ordering::Relaxed)
    }

    /// Takes an empty buffer if a credit is available.
    #[inline]
    pub fn try_take_buffer(&self) -> Result<Option<Buffer>, ChannelError> {
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return Err(self.shared.closed());
        }
        match &self.end {
            SenderEnd::Process { free, .. } => Ok(free.pop().map(|mut b| {
                b.clear();
                b
            })),
            SenderEnd::Shm(tx) => tx.try_take(&self.shared),
        }
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
        self.park(cx);
        match self.try_take_buffer()? {
            Some(b) => Poll::Ready(Ok(b)),
            None => Poll::Pending,
        }
    }

    /// Registers the task to be woken when a credit comes back (check `try_take_buffer`
    /// afterwards: a release that raced the registration is seen there).
    pub fn register(&self, cx: &mut Context<'_>) {
        self.park(cx);
    }

    fn park(&self, cx: &mut Context<'_>) {
        self.shared.tx_waker.register(cx.waker());
        if let SenderEnd::Shm(tx) = &self.end {
            tx.park();
        }
    }

    /// Sends a filled buffer. It came from this ring's pool, so there is always room (a
    /// shared-memory buffer larger than a slot may wait in the sender for slots to free:
    /// [`poll_sent`](Self::poll_sent) says when all is in the ring).
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
        match &self.end {
            SenderEnd::Process { full, .. } => {
                if full.push(buf).is_err() {
                    unreachable!(
                        "ring {}: more buffers in flight than the pool holds",
                        self.shared.channel
                    );
                }
                self.shared.rx_waker.wake();
            }
            SenderEnd::Shm(tx) => {
                // The receiving process keeps its own counts: ours drain as they are copied.
                stats.buffered_bytes.fetch_sub(bytes, Ordering::Relaxed);
                stats.buffered_buffers.fetch_sub(1, Ordering::Relaxed);
                tx.send(buf)
            }
        }
    }

    /// Ready once every buffer sent is where the receiver can read it (always, in process).
    /// A sender that is done polls this before it is dropped.
    pub fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        let SenderEnd::Shm(tx) = &self.end else {
            return Poll::Ready(Ok(()));
        };
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return Poll::Ready(Err(self.shared.closed()));
        }
        if tx.all_sent() {
            return Poll::Ready(Ok(()));
        }
        self.park(cx);
        if tx.all_sent() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
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

enum ReceiverEnd {
    Process {
        full: Consumer<Buffer>,
        free: Producer<Buffer>,
    },
    Shm(Box<ShmRx>),
}

/// A buffer received: handed over whole (in process) or read in place where the sender put it
/// (a shared-memory slot). Give it back with [`RingReceiver::release`].
pub struct Received(Held);

enum Held {
    Owned(Buffer),
    Mapped(MappedSlot),
}

impl std::ops::Deref for Received {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Held::Owned(b) => b,
            Held::Mapped(m) => m.bytes(),
        }
    }
}

impl Received {
    /// Whether the bytes are read where the sender wrote them, in memory shared with it
    /// (zero-copy), rather than in a buffer of this process.
    pub fn in_place(&self) -> bool {
        matches!(self.0, Held::Mapped(_))
    }
}

/// The receiving end: receives filled buffers in order and returns them (the credit).
pub struct RingReceiver {
    end: ReceiverEnd,
    shared: Arc<Shared>,
}

impl RingReceiver {
    pub(crate) fn from_shm(shared: Arc<Shared>, rx: ShmRx) -> Self {
        Self {
            end: ReceiverEnd::Shm(Box::new(rx)),
            shared,
        }
    }

    pub fn channel(&self) -> u32 {
        self.shared.channel
    }

    /// Whether the bytes come from outside the process: every frame must then carry a crc,
    /// and records get the full bytecheck.
    pub fn is_foreign(&self) -> bool {
        !matches!(self.end, ReceiverEnd::Process { .. })
            || self.shared.foreign.load(Ordering::Relaxed)
    }

    /// Receives the next buffer, if one is there. `Err` once the sender is gone and nothing is
    /// left: a sender that finished properly sent an END frame first, so this is a failure.
    #[inline]
    pub fn try_recv(&self) -> Result<Option<Received>, ChannelError> {
        let full = match &self.end {
            ReceiverEnd::Process { full, .. } => full,
            ReceiverEnd::Shm(rx) => {
                if self.shared.sender_gone.load(Ordering::Acquire) {
                    return Err(self.shared.closed());
                }
                return Ok(rx.try_recv(&self.shared)?.map(|r| {
                    Received(match r {
                        Recv::Mapped(m) => Held::Mapped(m),
                        Recv::Owned(b) => Held::Owned(b),
                    })
                }));
            }
        };
        match full.pop() {
            Some(buf) => {
                let stats = &self.shared.stats;
                stats.buffered_bytes.fetch_sub(buf.len(), Ordering::Relaxed);
                stats.buffered_buffers.fetch_sub(1, Ordering::Relaxed);
                Ok(Some(Received(Held::Owned(buf))))
            }
            None if self.shared.sender_gone.load(Ordering::Acquire) => {
                // The sender may have pushed its last buffer just before leaving.
                if full.is_empty() {
                    Err(self.shared.closed())
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
        match &self.end {
            ReceiverEnd::Process { full, .. } => {
                !full.is_empty() || self.shared.sender_gone.load(Ordering::Acquire)
            }
            ReceiverEnd::Shm(rx) => rx.is_ready(&self.shared),
        }
    }

    /// Registers the task to be woken by the next send. Check [`is_ready`](Self::is_ready)
    /// afterwards: a send that raced the registration is seen there.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.shared.rx_waker.register(cx.waker());
        if let ReceiverEnd::Shm(rx) = &self.end {
            rx.park();
        }
    }

    /// Returns a buffer: one credit back to the sender. Buffers are returned in the order they
    /// were received.
    #[inline]
    pub fn release(&self, buf: Received) {
        match (&self.end, buf.0) {
            (ReceiverEnd::Process { free, .. }, Held::Owned(buf)) => {
                if free.push(buf).is_err() {
                    unreachable!(
                        "ring {}: more buffers returned than the pool holds",
                        self.shared.channel
                    );
                }
                self.shared.tx_waker.wake();
            }
            (ReceiverEnd::Shm(rx), Held::Mapped(slot)) => rx.release(slot),
            // A buffer gathered from several slots: its slots went back as it was gathered.
            (ReceiverEnd::Shm(_), Held::Owned(_)) => {}
            (ReceiverEnd::Process { .. }, Held::Mapped(_)) => {
                unreachable!("an in-process ring hands out no mapped slots")
            }
        }
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

    /// Aborts the ring because its transport failed: both ends then report `reason`.
    pub fn fail(&self, reason: String) {
        let _ = self.shared.failure.set(reason);
        self.abort();
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
