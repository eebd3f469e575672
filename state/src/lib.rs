//! # shardflow-state: the log-structured key-value store
//!
//! A placeholder until the state issue: the store of segments, index, compaction and incremental
//! checkpoints described in DESIGN.md lives here. Until then keyed state is kept in memory by
//! core, behind the keyed-state views that this store will back.
