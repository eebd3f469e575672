//! The jobs the `shardflow` binary carries.

pub mod logs;
pub mod telemetry;
pub mod wordcount;
