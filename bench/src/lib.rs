//! # shardflow-bench: the workloads behind the harness and the criterion benches
//!
//! Each workload comes with the hand-written baseline it is held against, so that a run reports
//! the ratio of the two measured side by side on the same machine.

pub mod cluster;
pub mod exchange;
pub mod harness;
pub mod ingest;
pub mod keyed_state;
pub mod nexmark;
pub mod recovery;
pub mod report;
pub mod shuffle;
pub mod store;
pub mod timers;
pub mod trading;
pub mod windows;
pub mod wordcount;
