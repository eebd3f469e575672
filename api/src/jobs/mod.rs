//! The jobs the `shardflow` binary carries.

pub mod telemetry;
pub mod wordcount;
