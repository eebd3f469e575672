//! `collect`: every record back to the program, after the job.
//!
//! Exactly-once through restarts: the sink is transactional. What a shard took between two
//! checkpoint barriers is staged in the handle under the second's id, and becomes part of
//! the result when that checkpoint completes; a restart from checkpoint n commits what was
//! staged up to n and drops what was staged after (the restart replays it), and records not
//! staged yet die with the failed attempt. A shard whose input ended stages the rest as final;
//! `take` commits it, after the job has ended (another shard may fail after this one ended).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shardflow_core::JobError;
use shardflow_core::operator::sink::SinkFunction;

/// Yields what a `collect` sink gathered, once the job has run.
pub struct CollectHandle<T> {
    shards: Arc<Mutex<Vec<ShardRecords<T>>>>,
    /// Records staged per (shard, checkpoint), not committed yet.
    staged: Arc<Mutex<Staged<T>>>,
}

/// Records staged per (shard, checkpoint).
type Staged<T> = BTreeMap<(u32, u64), Vec<T>>;

/// The records one shard collected, with its index.
type ShardRecords<T> = (u32, Vec<T>);

impl<T> Clone for CollectHandle<T> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            staged: self.staged.clone(),
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
            staged: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Commits what `shard` staged for checkpoints up to `upto`, in checkpoint order, after
    /// what it committed before.
    fn commit(&self, shard: u32, upto: u64) {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<u64> = staged
            .range((shard, 0)..=(shard, upto))
            .map(|(k, _)| k.1)
            .collect();
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some(records) = staged.remove(&(shard, id)) {
                shards.push((shard, records));
            }
        }
    }

    /// Commits whatever is staged: once the job has run to its end, all of it is output (what
    /// failed attempts staged was aborted when the next one started).
    fn commit_all(&self) {
        let shards: Vec<u32> = self
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|k| k.0)
            .collect();
        for s in shards {
            self.commit(s, u64::MAX);
        }
    }

    /// The records, shard 0's first; each shard's in the order it received them.
    pub fn take(&self) -> Vec<T> {
        self.commit_all();
        let mut shards =
            std::mem::take(&mut *self.shards.lock().unwrap_or_else(|e| e.into_inner()));
        shards.sort_by_key(|s| s.0);
        shards.into_iter().flat_map(|s| s.1).collect()
    }

    /// The records each shard received, by shard.
    pub fn take_by_shard(&self) -> Vec<(u32, Vec<T>)> {
        self.commit_all();
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
        // This shard's input ended, not necessarily the job: another shard may still fail and
        // restart the job from a checkpoint. What came after the last barrier is staged as
        // final; the handle commits it once the job has ended (`take`), and a restart aborts
        // it like any staged output after the checkpoint it resumes from.
        let records = std::mem::take(&mut self.records);
        self.handle
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self.shard, u64::MAX), records);
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, JobError> {
        let records = std::mem::take(&mut self.records);
        self.handle
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self.shard, checkpoint), records);
        // The staged records live in the handle, beside the job; the checkpoint names whose
        // they are, so that a restore at another parallelism commits every shard's.
        Ok(self.shard.to_le_bytes().to_vec())
    }

    /// The shard and a mark: everything staged, the final records too, is the checkpoint's.
    fn finish_state(&mut self) -> Result<Vec<u8>, JobError> {
        let mut state = self.shard.to_le_bytes().to_vec();
        state.push(1);
        Ok(state)
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), JobError> {
        self.handle.commit(self.shard, checkpoint);
        Ok(())
    }

    fn restore(&mut self, checkpoint: u64, states: &[&[u8]]) -> Result<(), JobError> {
        // The shards whose staged records this one takes over: its own, and after a rescale
        // the earlier shards that map to it.
        // A shard that had finished when the checkpoint was taken: all it staged is covered.
        let mut shards: Vec<(u32, u64)> = states
            .iter()
            .filter_map(|b| {
                let shard = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
                Some((shard, if b.len() > 4 { u64::MAX } else { checkpoint }))
            })
            .collect();
        if !shards.iter().any(|s| s.0 == self.shard) {
            shards.push((self.shard, checkpoint));
        }
        for (shard, upto) in shards {
            self.handle.commit(shard, upto);
            // Staged after the checkpoint resumed from: the restart replays those records.
            self.handle
                .staged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k, _| k.0 != shard);
        }
        Ok(())
    }
}
