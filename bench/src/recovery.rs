//! Recovery time: a keyed job builds a large state, checkpoints it, fails, and restarts from
//! the checkpoint. Measured: from the failure (the panic) to the first record processed after
//! the restore, which includes the restart, rebuilding every store from the checkpoint's
//! segments (linking them, reading their footers and indexing their keys) and the sources'
//! rewind. The hand-written baseline is the file system's own: reading the checkpoint's
//! segments once (`cat`-like), the least any restore that looks at its bytes can cost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardflow::prelude::*;
use shardflow_core::JobError;
use shardflow_core::checkpoint::CheckpointConfig;
use shardflow_core::config::RestartStrategy;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;
use shardflow_state::checkpoint::CheckpointStorage;

/// A value of 120 bytes: with its key and the store's framing, about 140 bytes of state.
pub type Payload = [u64; 15];

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Keys in the state.
    pub keys: u64,
    /// Bytes of the checkpoint restored (all its segments).
    pub checkpoint_bytes: u64,
    /// From the failure to the first record processed after the restore.
    pub failure_to_first_record: Duration,
    /// Reading the checkpoint's segment files once, start to end (the baseline).
    pub read_segments: Duration,
    /// Building the state (the job's first attempt up to the failure).
    pub build: Duration,
}

/// Emits `(key, payload)` for keys `0..n` (shard's contiguous share), then waits until a
/// checkpoint taken after its last record is complete, then emits one more record (the one
/// the job fails on). Its position is checkpointed, so the restart resumes at that record.
struct PausingSource {
    next: u64,
    end: u64,
    fail_record: bool,
    storage: PathBuf,
    /// The newest complete checkpoint when the share was all emitted.
    seen_at_end: Option<u64>,
}

fn latest_complete(storage: &Path) -> u64 {
    CheckpointStorage::new(storage)
        .ok()
        .and_then(|s| s.latest().ok())
        .and_then(|(m, _)| m)
        .map_or(0, |m| m.id)
}

impl Source<(u64, Payload)> for PausingSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<(u64, Payload)>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if self.next < self.end {
            let upto = self.end.min(self.next + max_records as u64);
            out.extend((self.next..upto).map(|k| (k, [k; 15])));
            self.next = upto;
            return Ok(SourceStatus::More);
        }
        if !self.fail_record {
            return Ok(SourceStatus::End);
        }
        // Two checkpoints after the one complete at the end: the second was triggered after
        // the first completed, so after every record was taken.
        let seen = *self
            .seen_at_end
            .get_or_insert_with(|| latest_complete(&self.storage));
        if latest_complete(&self.storage) < seen + 2 {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            return Ok(SourceStatus::More);
        }
        self.fail_record = false;
        out.push((u64::MAX, [0; 15]));
        Ok(SourceStatus::End)
    }

    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        if state.is_restored() {
            let s = state.list_state::<(u64, bool)>("position")?;
            if let Some(&(next, fail)) = s.first() {
                self.next = next;
                self.fail_record = fail;
            }
        }
        Ok(())
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let s = state.list_state::<(u64, bool)>("position")?;
        s.clear();
        s.push((self.next, self.fail_record));
        Ok(())
    }
}

/// Builds about `state_bytes` of keyed state at `parallelism`, fails once it is checkpointed,
/// and measures the recovery; `dir` holds the checkpoints and the working stores.
/// With `cold`, the page cache is dropped at the failure (root only), so the restore reads the
/// segments from the disk.
pub fn run(state_bytes: u64, parallelism: u32, dir: &Path, cold: bool) -> anyhow::Result<Recovery> {
    let keys = state_bytes / 140;
    let storage = dir.join("checkpoints");
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(parallelism);
    env.config_mut().state_dir = Some(dir.join("working"));
    // A quarter of the state in memory; the rest lives in the stores.
    env.config_mut().state_memory_bytes = Some((state_bytes / 4) as usize);
    let mut c = CheckpointConfig::new(&storage, Duration::from_millis(200));
    c.timeout = Duration::from_secs(600);
    env.config_mut().checkpoints = Some(c);
    env.config_mut().restart = RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::ZERO,
    };
    let failed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first_after: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Instant::now();
    let storage_for_source = storage.clone();
    let (fa, fr) = (failed_at.clone(), first_after.clone());
    env.add_source("keys", move |ctx| {
        let r = shardflow::source::split_range(0, keys, ctx.runtime.shard, ctx.runtime.parallelism);
        Ok(PausingSource {
            next: r.start,
            end: r.end,
            fail_record: ctx.runtime.shard == 0,
            storage: storage_for_source.clone(),
            seen_at_end: None,
        })
    })
    .map(move |x: (u64, Payload)| {
        let mut failed = fa.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some() {
            let mut first = fr.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(Instant::now);
        } else if x.0 == u64::MAX {
            if cold {
                // Write back, then drop the page cache: the restore reads from the disk.
                let _ = std::process::Command::new("sync").status();
                let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
            }
            *failed = Some(Instant::now());
            drop(failed);
            panic!("injected failure after the state was checkpointed");
        }
        x
    })
    .key_by(|x: &(u64, Payload)| x.0)
    .reduce(|acc: &mut (u64, Payload), x| acc.1 = x.1)
    .filter(|_| false)
    .print();
    let result = env.execute("recovery")?;
    anyhow::ensure!(result.restarts == 1, "the job did not restart once");
    let failure = failed_at.lock().unwrap().expect("failed");
    let first = first_after
        .lock()
        .unwrap()
        .expect("a record after the restart");
    let restored = result.restored_from.expect("restored");
    let meta = CheckpointStorage::new(&storage)?
        .read(restored)
        .map_err(|s| anyhow::anyhow!("{}: {}", s.path.display(), s.reason))?;
    let store = CheckpointStorage::new(&storage)?;
    let t = Instant::now();
    let mut bytes = 0;
    let mut buf = vec![0u8; 1 << 20];
    for name in &meta.segments {
        use std::io::Read;
        let mut f = std::fs::File::open(store.segment_path(name))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    let read_segments = t.elapsed();
    Ok(Recovery {
        keys,
        checkpoint_bytes: bytes,
        failure_to_first_record: first.duration_since(failure),
        read_segments,
        build: failure.duration_since(started),
    })
}
