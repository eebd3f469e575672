//! `sink_to_files`: the exactly-once file sink.
//!
//! Each shard writes its records into a *part file*, hidden while it is written
//! (`.part-SSSSS-CCCCCC.inprogress`) and renamed into place (`part-SSSSS-CCCCCC`) only when
//! it may be seen: exactly once, through failures and restarts. Two-phase commit, as Flink's
//! `FileSink` does:
//!
//! - A part is *rolled* (closed, synced) when the rolling policy says so: it reached its size,
//!   it has been open for the rollover interval, or no record came for the inactivity
//!   interval. A rolled part waits for the next checkpoint barrier.
//! - At a barrier, the sink flushes and syncs the part being written and files every part
//!   rolled since the last barrier as *pending* for that checkpoint. Its operator state in the
//!   checkpoint names the pending parts and the length of the part being written.
//! - When the checkpoint completes, its pending parts are renamed into place. A committed
//!   file is never written again.
//! - After a failure the job resumes from the newest complete checkpoint: the parts it names
//!   as pending are renamed (if the completion did not reach the sink before the failure),
//!   the part it was writing is cut back to the length the checkpoint recorded and renamed
//!   (its bytes belong to the complete checkpoint), and every other hidden part of the shard
//!   was written after the checkpoint and is deleted: the restart replays its records.
//! - When a shard's input ends, its last part is rolled and committed once the whole job has
//!   ended (another shard may still fail and restart the job from a checkpoint).
//!
//! Without checkpoints there is nothing to wait for: a part is renamed as soon as it rolls.
//! Part numbers go on after the highest of the shard's parts in the directory, so a job may
//! write into a directory that earlier runs wrote; two jobs must not write into one at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardflow_core::JobError;
use shardflow_core::checkpoint::{Coordinator, decode_state};
use shardflow_core::operator::OperatorContext;
use shardflow_core::operator::sink::SinkFunction;

/// When a part file is closed and a new one begun (Flink's `DefaultRollingPolicy`). A part
/// also rolls when the shard's input ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingPolicy {
    /// A part that reached this size rolls (it may exceed it by one record).
    pub max_part_bytes: u64,
    /// A part open this long rolls at its next record or checkpoint.
    pub rollover_interval: Duration,
    /// A part that received no record for this long rolls at the next record or checkpoint.
    pub inactivity_interval: Duration,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        Self {
            max_part_bytes: 128 << 20,
            rollover_interval: Duration::from_secs(60),
            inactivity_interval: Duration::from_secs(60),
        }
    }
}

/// How the file sink names and rolls its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkOptions {
    pub rolling: RollingPolicy,
    /// Part names are `<prefix>-SSSSS-CCCCCC<suffix>` (shard, then part number).
    pub prefix: String,
    pub suffix: String,
}

impl Default for FileSinkOptions {
    fn default() -> Self {
        Self {
            rolling: RollingPolicy::default(),
            prefix: "part".to_string(),
            suffix: String::new(),
        }
    }
}

/// What a checkpoint records of one shard's sink.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct SinkState {
    shard: u32,
    /// The part being written, and its length at the barrier.
    in_progress: Option<(u64, u64)>,
    /// Rolled parts waiting for their checkpoint: (checkpoint, part).
    pending: Vec<(u64, u64)>,
}

/// The part file being written.
struct Part {
    number: u64,
    file: File,
    /// Bytes in the file (the sink's buffer holds more).
    written: u64,
    opened: Instant,
    last_record: Instant,
}

const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// One shard's exactly-once file sink; `encode` appends a record's bytes to a buffer.
pub struct FileSink<T, E> {
    dir: PathBuf,
    options: FileSinkOptions,
    encode: E,
    ctx: OperatorContext,
    checkpoints: Option<Arc<Coordinator>>,
    /// The next part number (None until the directory was read).
    next: Option<u64>,
    current: Option<Part>,
    /// Parts rolled since the last barrier.
    rolled: Vec<u64>,
    /// Parts waiting for a checkpoint to complete: (checkpoint, part).
    pending: Vec<(u64, u64)>,
    buf: Vec<u8>,
    _records: PhantomData<fn(&T)>,
}

impl<T, E: FnMut(&T, &mut Vec<u8>)> FileSink<T, E> {
    pub fn open(
        dir: &Path,
        options: FileSinkOptions,
        encode: E,
        ctx: &OperatorContext,
    ) -> Result<Self, JobError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| JobError::io(dir, "cannot create output directory", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            options,
            encode,
            ctx: ctx.clone(),
            checkpoints: ctx.checkpoints.clone(),
            next: None,
            current: None,
            rolled: Vec::new(),
            pending: Vec::new(),
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            _records: PhantomData,
        })
    }

    fn shard(&self) -> u32 {
        self.ctx.runtime.shard
    }

    fn final_name(&self, shard: u32, part: u64) -> String {
        format!(
            "{}-{shard:05}-{part:06}{}",
            self.options.prefix, self.options.suffix
        )
    }

    fn final_path(&self, shard: u32, part: u64) -> PathBuf {
        self.dir.join(self.final_name(shard, part))
    }

    fn staged_path(&self, shard: u32, part: u64) -> PathBuf {
        self.dir
            .join(format!(".{}.inprogress", self.final_name(shard, part)))
    }

    /// The shard and part number in `name` if it is one of this sink's parts, and whether it
    /// is staged.
    fn parse(&self, name: &str) -> Option<(u32, u64, bool)> {
        let (name, staged) = match name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".inprogress"))
        {
            Some(n) => (n, true),
            None => (name, false),
        };
        let rest = name
            .strip_prefix(&self.options.prefix)?
            .strip_prefix('-')?
            .strip_suffix(&self.options.suffix)?;
        let (shard, part) = rest.split_once('-')?;
        let digits = |s: &str, n: usize| s.len() >= n && s.bytes().all(|b| b.is_ascii_digit());
        (digits(shard, 5) && digits(part, 6))
            .then(|| Some((shard.parse().ok()?, part.parse().ok()?, staged)))
            .flatten()
    }

    /// Every part of this sink in the directory: (shard, number, staged).
    fn scan(&self) -> Result<Vec<(u32, u64, bool)>, JobError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| JobError::io(&self.dir, "cannot list output directory", e))?;
        let mut parts = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| JobError::io(&self.dir, "cannot list output directory", e))?;
            if let Some(name) = entry.file_name().to_str()
                && let Some(p) = self.parse(name)
            {
                parts.push(p);
            }
        }
        Ok(parts)
    }

    fn sync_dir(&self) -> Result<(), JobError> {
        sync_dir(&self.dir)
    }

    fn open_part(&mut self, now: Instant) -> Result<(), JobError> {
        let number = match self.next {
            Some(n) => n,
            None => {
                let shard = self.shard();
                self.scan()?
                    .iter()
                    .filter(|p| p.0 == shard)
                    .map(|p| p.1 + 1)
                    .max()
                    .unwrap_or(0)
            }
        };
        self.next = Some(number + 1);
        let path = self.staged_path(self.shard(), number);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JobError::io(&path, "cannot create part file", e))?;
        self.current = Some(Part {
            number,
            file,
            written: 0,
            opened: now,
            last_record: now,
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JobError> {
        let Some(part) = &mut self.current else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = part.file.write_all(&self.buf) {
            let number = part.number;
            return Err(JobError::io(
                self.staged_path(self.shard(), number),
                "cannot write part file",
                e,
            ));
        }
        part.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Closes the part being written: synced, it waits for the next barrier (or, without
    /// checkpoints, is renamed into place at once).
    fn roll(&mut self) -> Result<(), JobError> {
        self.flush()?;
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        part.file.sync_data().map_err(|e| {
            JobError::io(
                self.staged_path(self.shard(), part.number),
                "cannot sync part file",
                e,
            )
        })?;
        if self.checkpoints.is_some() {
            self.rolled.push(part.number);
        } else {
            self.publish(self.shard(), part.number, None)?;
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Rolls the part being written if it has been open, or idle, too long.
    fn roll_if_stale(&mut self, now: Instant) -> Result<(), JobError> {
        let rolling = self.options.rolling;
        if let Some(p) = &self.current
            && (now.duration_since(p.opened) >= rolling.rollover_interval
                || now.duration_since(p.last_record) >= rolling.inactivity_interval)
        {
            self.roll()?;
        }
        Ok(())
    }

    /// Renames `shard`'s staged part into place ([`publish`]).
    fn publish(&self, shard: u32, part: u64, checkpoint: Option<u64>) -> Result<(), JobError> {
        publish(
            self.staged_path(shard, part),
            &self.final_path(shard, part),
            match checkpoint {
                Some(_) => "cannot commit a part file a complete checkpoint names",
                None => "cannot commit part file",
            },
        )
    }

    /// Takes over one shard's transactions as checkpoint `checkpoint` recorded them (its
    /// other staged parts are aborted after, by `restore`).
    fn adopt(&self, checkpoint: u64, state: &SinkState) -> Result<(), JobError> {
        for &(id, part) in &state.pending {
            self.publish(state.shard, part, Some(id))?;
        }
        if let Some((part, len)) = state.in_progress {
            let staged = self.staged_path(state.shard, part);
            let file = match OpenOptions::new().write(true).open(&staged) {
                Ok(f) => f,
                Err(e) => {
                    // An earlier restore from this checkpoint cut it back and renamed it.
                    let target = self.final_path(state.shard, part);
                    let placed = std::fs::metadata(&target).ok().map(|m| m.len());
                    if placed == Some(len) {
                        return Ok(());
                    }
                    let committed_later = placed.is_some();
                    return Err(JobError::io(
                        staged,
                        if committed_later {
                            "the part file this checkpoint was writing was committed by a later \
                             checkpoint (restore from the newest one)"
                        } else {
                            "the part file a complete checkpoint was writing is missing"
                        },
                        e,
                    ));
                }
            };
            let have = file
                .metadata()
                .map_err(|e| JobError::io(&staged, "cannot read part file", e))?
                .len();
            if have < len {
                return Err(self.ctx.error(format!(
                    "part file {} holds {have} bytes; checkpoint {checkpoint} recorded {len}",
                    staged.display()
                )));
            }
            // Its bytes up to the barrier belong to the complete checkpoint; those after it
            // are replayed.
            file.set_len(len)
                .and_then(|()| file.sync_data())
                .map_err(|e| JobError::io(&staged, "cannot cut part file back", e))?;
            self.publish(state.shard, part, Some(checkpoint))?;
        }
        Ok(())
    }

    /// The sink's state for a checkpoint: its pending parts, and the part being written with
    /// its length.
    fn state_bytes(&self, in_progress: Option<(u64, u64)>) -> Result<Vec<u8>, JobError> {
        let state = SinkState {
            shard: self.shard(),
            in_progress,
            pending: self.pending.clone(),
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&state)
            .map(|b| b.to_vec())
            .map_err(|e| {
                self.ctx
                    .error(format!("cannot encode the sink's state: {e}"))
            })
    }

    /// Deletes the staged parts of the shards `which` picks: written after the checkpoint
    /// resumed from, or by an attempt that failed before any.
    fn abort_staged(&self, which: impl Fn(u32) -> bool) -> Result<(), JobError> {
        for (shard, part, staged) in self.scan()? {
            if staged && which(shard) {
                let path = self.staged_path(shard, part);
                std::fs::remove_file(&path)
                    .map_err(|e| JobError::io(&path, "cannot delete aborted part file", e))?;
            }
        }
        Ok(())
    }
}

impl<T: 'static, E: FnMut(&T, &mut Vec<u8>) + 'static> SinkFunction<T> for FileSink<T, E> {
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        self.roll_if_stale(now)?;
        let max = self.options.rolling.max_part_bytes;
        for r in batch.drain(..) {
            if self.current.is_none() {
                self.open_part(now)?;
            }
            (self.encode)(&r, &mut self.buf);
            let part = self.current.as_mut().expect("a part is open");
            part.last_record = now;
            if part.written + self.buf.len() as u64 >= max {
                self.roll()?;
            } else if self.buf.len() >= WRITE_BUFFER_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.roll()?;
        let Some(c) = &self.checkpoints else {
            return Ok(());
        };
        // Everything staged is final once the job has ended; until then a failure elsewhere
        // may restart the job from a checkpoint, which aborts these parts and replays them.
        let shard = self.shard();
        // They stay pending in the sink's final state too: a checkpoint taken after this
        // covers them, and its restore commits them.
        self.pending
            .extend(self.rolled.drain(..).map(|p| (u64::MAX, p)));
        let numbers: Vec<u64> = self.pending.iter().map(|&(_, p)| p).collect();
        let parts: Vec<(PathBuf, PathBuf)> = numbers
            .into_iter()
            .map(|p| (self.staged_path(shard, p), self.final_path(shard, p)))
            .collect();
        let dir = self.dir.clone();
        c.on_job_end(Box::new(move || {
            for (staged, target) in parts {
                publish(staged, &target, "cannot commit part file")?;
            }
            sync_dir(&dir)
        }));
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, JobError> {
        self.roll_if_stale(Instant::now())?;
        self.flush()?;
        let shard = self.shard();
        let in_progress = match &self.current {
            Some(p) => {
                p.file.sync_data().map_err(|e| {
                    JobError::io(
                        self.staged_path(shard, p.number),
                        "cannot sync part file",
                        e,
                    )
                })?;
                Some((p.number, p.written))
            }
            None => None,
        };
        self.pending
            .extend(self.rolled.drain(..).map(|p| (checkpoint, p)));
        self.state_bytes(in_progress)
    }

    fn finish_state(&mut self) -> Result<Vec<u8>, JobError> {
        self.state_bytes(None)
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), JobError> {
        let shard = self.shard();
        let mut any = false;
        let mut i = 0;
        while i < self.pending.len() {
            let (id, part) = self.pending[i];
            if id <= checkpoint {
                self.publish(shard, part, Some(id))?;
                self.pending.swap_remove(i);
                any = true;
            } else {
                i += 1;
            }
        }
        if any {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn restore(&mut self, checkpoint: u64, states: &[&[u8]]) -> Result<(), JobError> {
        self.current = None;
        self.rolled.clear();
        self.pending.clear();
        self.buf.clear();
        self.next = None;
        for bytes in states {
            let state: SinkState = decode_state(bytes).map_err(|e| {
                self.ctx.error(format!(
                    "checkpoint {checkpoint}: the file sink's state: {e}"
                ))
            })?;
            self.adopt(checkpoint, &state)?;
        }
        // Staged parts the checkpoint does not name (its own were published above) were
        // written after it: by the shards taken over, or by shards of a run at another
        // parallelism that failed before its first checkpoint. Shard `s`'s are this shard's
        // to delete when `s % parallelism` is this shard (the shards taken over are such).
        let (me, p) = (self.shard(), self.ctx.runtime.parallelism);
        self.abort_staged(|s| s % p == me)?;
        self.sync_dir()
    }
}

/// Renames a staged part into place. Already in place is done (a commit that reached the
/// directory before a failure); neither staged nor in place is an error naming the part:
/// committed output would be lost.
fn publish(staged: PathBuf, target: &Path, what: &'static str) -> Result<(), JobError> {
    match std::fs::rename(&staged, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && target.exists() => Ok(()),
        Err(e) => Err(JobError::io(staged, what, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), JobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JobError::io(dir, "cannot sync output directory", e))
}

/// Appends a record's `Display` form and a newline.
pub fn display_line<T: std::fmt::Display>(record: &T, buf: &mut Vec<u8>) {
    let _ = writeln!(buf, "{record}");
}
