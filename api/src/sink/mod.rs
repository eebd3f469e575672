//! Built-in sinks.
//!
//! The file sinks write through a 1 MiB buffer, so a shard makes one `write` call per MiB; those
//! calls are still synchronous on the shard's executor. The transactional file sink of the
//! checkpoint issue will write through glommio instead.

pub mod collect;
pub mod csv;
pub mod print;
pub mod text;
