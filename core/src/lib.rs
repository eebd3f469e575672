//! # shardflow-core: the engine
//!
//! A shardflow job is a graph of operators that runs on P shards, one pinned glommio executor per
//! shard. This crate holds everything between the user's API and the bytes: the job graph and its
//! planner, the runtime that starts the shards, the operators, the exchanges that move records
//! between shards, keys and key groups.
//!
//! ## The path of a record
//!
//! 1. The API builds a [`graph::JobGraph`]: sources, operators and sinks, joined by forward edges
//!    and exchanges (`key_by`, `rebalance`, `broadcast`). Nothing runs yet.
//! 2. [`runtime::execute`] starts P executors, pinned with `Placement::Fixed`, builds the rings of
//!    every exchange (one per ordered pair of shards), and has each shard instantiate the graph:
//!    operators joined by forward edges are *chained* — plain calls passing batches of plain Rust
//!    values ([`operator::Push`]) — and each exchange becomes a writer at the end of the upstream
//!    chain and a reader task at the head of the downstream one.
//! 3. The [`exchange::writer::ExchangeWriter`] routes each record to the shard owning its key
//!    group ([`key`]), stages it per destination, and ships a batch — archived with rkyv into a
//!    pooled, aligned buffer of the destination's ring — when it is full or the input is idle.
//!    Records that stay on their shard are handed over as plain values, never serialized.
//! 4. The [`exchange::reader`] task reads each frame in place, deserializes the records into a
//!    reused batch and pushes it down its chain. End of input travels as a frame, in order with the
//!    data.
//! 5. Backpressure: a ring's buffers are its credits; a sender with none stops pulling its input.
//! 6. Event time ([`time`]): a batch carries a timestamp per record beside its records;
//!    watermarks and idleness travel down chains and through exchanges in order with the data,
//!    and every operator with several inputs keeps the minimum of its active inputs
//!    ([`operator::WatermarkValve`]). Keyed operators keep their state and timers in the keyed
//!    state interface ([`keyed`]); windows ([`window`]) are built on it.
//! 7. State ([`state`]): keyed tables are caches of live values in front of each operator's
//!    log-structured store on the shard; past the job's memory budget, values are evicted
//!    (written with rkyv) and read back on use; a working store keeps no log (a job resumes
//!    from checkpoints), so entries reach the disk once, sealed. Timers count in the same
//!    budget; past it, the latest go to the store in sorted runs ([`keyed::timers`]). Functions
//!    declare typed states (`ValueState`, …, with TTL) in `open`; non-keyed functions and
//!    sources hand over operator state.
//! 8. Checkpoints ([`checkpoint`]): sources inject barriers; exchange readers, unions and
//!    two-input operators align them; each operator with state seals its own store and hands
//!    its segments and operator state to the coordinator, which writes `chk-<n>/_metadata`
//!    when every one has; a failed job restarts from the newest.
//!
//! ## Guarantees
//!
//! - A key's records are processed only on the shard that owns its key group (asserted in debug
//!   builds by every keyed operator).
//! - Records of one channel arrive in the order they were sent; end of input arrives last.
//! - A frame that fails its checks never reaches an operator: the job fails with an error naming
//!   the exchange, the channel and the offset. A user function that fails or panics fails the job
//!   with an error naming the operator and shard; nothing panics out of [`runtime::execute`].

pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod data;
pub mod error;
pub mod exchange;
pub mod graph;
pub mod key;
pub mod keyed;
pub mod operator;
pub mod rng;
pub mod runtime;
pub mod source;
pub mod state;
pub mod time;
pub mod window;

pub use config::{
    ChecksumPolicy, FlushPolicy, JobConfig, OnMalformed, RuntimeMode, SchedulingMode,
    ShardPlacement,
};
pub use data::Data;
pub use error::JobError;
pub use graph::{ExchangeId, InputRef, JobGraph, NodeId};
pub use runtime::{JobResult, MetricsSnapshot, execute};
