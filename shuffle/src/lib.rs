//! # shardflow-shuffle: moving framed byte batches between shards
//!
//! This crate knows nothing of records, operators or state: it moves bytes. Every exchange of a
//! shardflow job, whatever its transport, carries the same [`frame`]: a 16-byte header (length,
//! crc32, kind, flags, channel) and a 16-byte-aligned payload, usually an rkyv-archived batch
//! of records that the receiver reads in place.
//!
//! The in-process transport is the [`ring`](mod@ring): a bounded single-producer/single-consumer
//! channel of pooled, aligned buffers per (sender shard, receiver shard, exchange). Its pool is its
//! credit: a sender fills only buffers the receiver gave back, so the bytes in flight are bounded
//! by `buffers × buffer size` and a slow receiver stops its senders (backpressure). The lock-free
//! queue underneath is [`spsc`].
//!
//! Between processes the same ring ends ([`RingSender`], [`RingReceiver`]) carry one of two
//! transports, so the exchange code never knows which:
//!
//! - [`shm`]: on one host, the ring's slots live in a file under `/dev/shm` that the receiver
//!   makes and one sender attaches to; a buffer is copied once into a slot and read in place.
//!   A task parked on a ring in another process is woken through that process's [`bell`] (a
//!   shared futex word), rung only when the other side said it parked.
//! - [`tcp`]: between hosts, one authenticated link per pair of processes carries every
//!   channel between them; a network thread per process moves buffers between the shards'
//!   rings and the socket, with credits across the network. [`link`] is its wire format
//!   (handshake, envelopes) and the decoder that checks every frame before a shard sees it.
//!
//! Frames that stay in the process carry `FLAG_CRC_UNSET`; frames that leave it carry a crc32
//! that [`frame::FrameReader`] checks before anything reaches an operator. A frame that fails its
//! length, kind, channel or crc check is a [`FrameError`] naming the channel and the offset.
//!
//! ```
//! use shardflow_shuffle::frame::{write_frame, Checksum, FrameKind, FrameReader};
//! use shardflow_shuffle::ring::{ring, RingConfig};
//!
//! let (tx, rx) = ring(1, RingConfig::default());
//! let mut buf = tx.try_take_buffer()?.expect("a fresh ring has credit");
//! write_frame(&mut buf, FrameKind::Data, 1, b"payload", Checksum::Compute)?;
//! write_frame(&mut buf, FrameKind::End, 1, &[], Checksum::Compute)?;
//! tx.send(buf);
//!
//! let buf = rx.try_recv()?.expect("sent above");
//! let kinds: Vec<FrameKind> = FrameReader::new(&buf, 1).map(|f| f.map(|f| f.kind)).collect::<Result<_, _>>()?;
//! assert_eq!(kinds, [FrameKind::Data, FrameKind::End]);
//! rx.release(buf); // the credit goes back to the sender
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bell;
pub mod error;
pub mod frame;
pub mod link;
pub mod ring;
pub mod shm;
pub mod spsc;
pub mod tcp;

pub use error::{ChannelError, FrameError};
pub use frame::{Checksum, Frame, FrameKind, FrameReader};
pub use ring::{
    Buffer, Received, RingConfig, RingHandle, RingReceiver, RingSender, RingStats, ring,
};
