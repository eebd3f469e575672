//! The jobs the `shardflow` binary carries.

pub mod wordcount;
