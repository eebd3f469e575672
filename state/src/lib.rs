//! # shardflow-state: the log-structured key-value store
//!
//! One store per shard, on bytes (DESIGN.md, "State"): keyed state, windows and timers of a
//! shard are entries `(key group, namespace, key) → value` in append-only segment files.
//!
//! - [`entry`]: the framed, checksummed entry every segment is made of.
//! - [`store`]: the store — an active segment taking appends, sealed segments (sorted by key
//!   group, with a footer of key-group offsets) read through memmap2, an in-memory index of the
//!   newest entry of every key, compaction, and recovery that cuts a torn tail and refuses a
//!   corrupt sealed segment, naming the file and the offset.
//! - [`checkpoint`]: checkpoint storage — segments shared between incremental checkpoints,
//!   each checkpoint's atomic `_metadata`, retention with reference counting; a store takes
//!   part through [`Store::snapshot`] (or [`Store::snapshot_async`]: frozen on the shard,
//!   written elsewhere) and [`Store::restore`].

pub mod checkpoint;
pub mod entry;
pub mod index;
pub mod store;

pub use checkpoint::{CheckpointStorage, Metadata};
pub use entry::Op;
pub use store::{AsyncSnapshot, SegmentHandle, Store, StoreError, StoreOptions};
