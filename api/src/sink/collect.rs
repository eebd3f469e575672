//! `collect`: every record back to the program, after the job.

use std::sync::{Arc, Mutex};

use shardflow_core::JobError;
use shardflow_core::operator::sink::SinkFunction;

/// Yields what a `collect` sink gathered, once the job has run.
pub struct CollectHandle<T> {
    shards: Arc<Mutex<Vec<ShardRecords<T>>>>,
}

/// The records one shard collected, with its index.
type ShardRecords<T> = (u32, Vec<T>);

impl<T> Clone for CollectHandle<T> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
        }
    }
}

impl<T> Default for CollectHandle<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> CollectHandle<T> {
    pub fn new() -> Self {
        Self {
            shards: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The records, shard 0's first; each shard's in the order it received them.
    pub fn take(&self) -> Vec<T> {
        let mut shards =
            std::mem::take(&mut *self.shards.lock().unwrap_or_else(|e| e.into_inner()));
        shards.sort_by_key(|s| s.0);
        shards.into_iter().flat_map(|s| s.1).collect()
    }

    /// The records each shard received, by shard.
    pub fn take_by_shard(&self) -> Vec<(u32, Vec<T>)> {
        let mut shards =
            std::mem::take(&mut *self.shards.lock().unwrap_or_else(|e| e.into_inner()));
        shards.sort_by_key(|s| s.0);
        shards
    }
}

/// Gathers a shard's records locally; hands them over once, when the input ends.
pub struct CollectSink<T> {
    handle: CollectHandle<T>,
    shard: u32,
    records: Vec<T>,
}

impl<T> CollectSink<T> {
    pub fn new(handle: CollectHandle<T>, shard: u32) -> Self {
        Self {
            handle,
            shard,
            records: Vec::new(),
        }
    }
}

impl<T: Send + 'static> SinkFunction<T> for CollectSink<T> {
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.records.append(batch);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        let records = std::mem::take(&mut self.records);
        self.handle
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.shard, records));
        Ok(())
    }
}
