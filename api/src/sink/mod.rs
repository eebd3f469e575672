//! Built-in sinks.
//!
//! The file sinks write through a 1 MiB buffer, so a shard makes one `write` call per MiB; those
//! calls are still synchronous on the shard's executor. `file` is the exactly-once file sink
//! (part files committed with checkpoints).

pub mod collect;
pub mod csv;
pub mod file;
pub mod print;
pub mod text;
