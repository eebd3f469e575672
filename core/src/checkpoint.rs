//! Checkpoints: barriers, the operators' snapshots, and the coordinator that completes them.
//!
//! Asynchronous barrier snapshots, as Flink takes them (DESIGN.md, "Checkpoints and
//! recovery"): the [`Coordinator`] triggers checkpoint n; every source task, before its next
//! batch, records its position and pushes [`Barrier`] n down its chain; an operator hands its
//! snapshot to the checkpoint when the barrier reaches it (after the barriers of all its
//! inputs: the exchange reader and two-input operators align them) and passes the barrier on.
//! An operator's snapshot is its own store ([`crate::state::StateBackend`], sealed and synced)
//! uploaded into the checkpoint directory's shared segments (incremental: a segment an earlier
//! checkpoint holds is named, not copied), plus the bytes of its operator state. Each operator
//! on each shard acks once; when every one has, the coordinator writes `chk-n/_metadata`
//! atomically and checkpoint n is complete; it then keeps the newest `retain` checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardflow_state::checkpoint::{CheckpointStorage, Metadata};

use crate::error::JobError;

/// Everything before it on its channel belongs to checkpoint `id`; nothing after it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    /// When the coordinator triggered it (ms since the epoch).
    pub timestamp_ms: i64,
    /// At-least-once: inputs are not held while the barrier is aligned (records after it
    /// from a fast input may reach the snapshot, and are replayed after a restore).
    pub at_least_once: bool,
    /// How long the longest alignment on its way here held inputs back, in µs (from an
    /// aligned operator's first input delivering it to its last): what the checkpoint cost
    /// the stream. Local to this process; a barrier frame does not carry it.
    pub alignment_us: u64,
    /// Unaligned (exactly-once): an exchange reader passes it on as soon as one input
    /// delivers it, and records the records its other inputs deliver before theirs as
    /// in-flight data of the checkpoint, replayed on restore. Never for a savepoint.
    pub unaligned: bool,
}

impl Barrier {
    /// The flags byte of a barrier frame: bit 0 at-least-once, bit 1 unaligned.
    pub fn flags(&self) -> u8 {
        self.at_least_once as u8 | (self.unaligned as u8) << 1
    }
}

/// What a checkpoint promises after a restore (as Flink's `CheckpointingMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointingMode {
    /// Barriers are aligned: every record counts in the state exactly once.
    #[default]
    ExactlyOnce,
    /// Barriers are not aligned (no input waits): a record may count twice after a restore.
    /// Lower latency under skew.
    AtLeastOnce,
}

/// How a job takes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Where checkpoints go (`chk-<n>/_metadata`, `shared/` segments).
    pub dir: PathBuf,
    /// Time between the triggers of two checkpoints.
    pub interval: Duration,
    /// A checkpoint not complete this long after its trigger is abandoned.
    pub timeout: Duration,
    /// The least time between the end of one checkpoint and the trigger of the next.
    pub min_pause: Duration,
    /// Checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Complete checkpoints kept (older ones, and segments only they need, are removed).
    pub retain: usize,
    pub mode: CheckpointingMode,
    /// Unaligned checkpoints (with `ExactlyOnce`): barriers overtake the records waiting in
    /// exchange channels, which go into the checkpoint instead (Flink's unaligned
    /// checkpoints), so a checkpoint's time does not grow with backpressure. Such a checkpoint
    /// restores at its own parallelism only (savepoints are always aligned, and rescale).
    pub unaligned: bool,
}

impl CheckpointConfig {
    /// Checkpoints into `dir` every `interval`, with Flink's defaults for the rest: a ten-minute
    /// timeout, no minimum pause, one in flight, the last three kept.
    pub fn new(dir: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            dir: dir.into(),
            interval,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            retain: 3,
            mode: CheckpointingMode::ExactlyOnce,
            unaligned: false,
        }
    }

    pub fn validate(&self) -> Result<(), JobError> {
        if self.interval.is_zero() {
            return Err(JobError::Config(
                "checkpoint interval must be above zero".into(),
            ));
        }
        if self.unaligned && self.mode != CheckpointingMode::ExactlyOnce {
            return Err(JobError::Config(
                "unaligned checkpoints are exactly-once checkpoints (mode ExactlyOnce)".into(),
            ));
        }
        if self.max_concurrent == 0 || self.retain == 0 {
            return Err(JobError::Config(
                "checkpoints: max_concurrent and retain must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What one operator on one shard contributes to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's node in the job graph, and its name.
    pub node: u32,
    pub operator: String,
    /// The id a restore finds its node by (its uid, or `name#k`).
    pub uid: String,
    pub shard: u32,
    /// The shared segments of its store.
    pub segments: Vec<String>,
    /// Its operator state (a source's position, a function's `snapshot_state`), as bytes.
    pub state: Vec<u8>,
}

/// A complete checkpoint, as the console and the job result show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    pub id: u64,
    /// From the trigger to the metadata written.
    pub duration: Duration,
    /// Bytes of segments this checkpoint added to the shared directory (its incremental size).
    pub bytes_added: u64,
    /// Bytes of all the segments it needs.
    pub bytes_total: u64,
    /// The longest barrier alignment it took (inputs held back at one operator).
    pub alignment: Duration,
    /// Bytes of in-flight records it holds (unaligned checkpoints: what barriers overtook).
    pub in_flight_bytes: u64,
}

/// A savepoint asked for: where to write it, and who waits for its path.
pub struct SavepointRequest {
    pub dir: PathBuf,
    pub reply: std::sync::mpsc::Sender<Result<PathBuf, String>>,
}

struct Pending {
    started: Instant,
    /// This checkpoint is also a savepoint.
    savepoint: Option<SavepointRequest>,
    /// The longest alignment an ack reported, µs.
    alignment_us: u64,
    /// Bytes of in-flight records the exchange readers' acks carried.
    in_flight_bytes: u64,
    acks: Vec<OperatorSnapshot>,
    bytes_added: u64,
    bytes_total: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    completed: Vec<CheckpointStats>,
    /// Checkpoints abandoned, with why.
    failed: Vec<(u64, String)>,
    last_completed_at: Option<Instant>,
    /// Operators whose input ended, with their last snapshot and its bytes: it stands as
    /// their ack of every later checkpoint (they will see no barrier again).
    finished: Vec<(OperatorSnapshot, u64)>,
    /// What two-phase-commit sinks left to commit once the whole job has ended.
    at_job_end: Vec<JobEndAction>,
    /// Savepoints asked for and not triggered yet.
    savepoints: Vec<SavepointRequest>,
    /// Checkpoints whose part this process handed over, awaiting the job's completion.
    handed_over: BTreeMap<u64, Pending>,
    /// Segments being uploaded for an ack not made yet: retention keeps them (counted, as
    /// two operators' snapshots may name one segment).
    protected: std::collections::HashMap<String, usize>,
}

/// A sink's last commit, run once every shard ended without failure (see
/// [`Coordinator::on_job_end`]).
pub type JobEndAction = Box<dyn FnOnce() -> Result<(), JobError> + Send>;

impl Pending {
    fn fail_savepoint(&self, id: u64, why: &str) {
        if let Some(r) = &self.savepoint {
            let _ = r.reply.send(Err(format!("checkpoint {id} failed: {why}")));
        }
    }
}

/// Where a process's part of each checkpoint goes when the job spans processes (a task
/// manager's link to its job manager): the job manager triggers every process's coordinator
/// with one id, gathers the parts, writes the checkpoint's metadata, and reports it complete
/// ([`Coordinator::completed_globally`]).
pub trait CheckpointParts: Send + Sync {
    /// Every operator of this process acked checkpoint `id`: their snapshots, and the bytes
    /// their segments added to the shared directory and hold in all.
    fn part_ready(&self, id: u64, acks: Vec<OperatorSnapshot>, bytes_added: u64, bytes_total: u64);
    /// An operator of this process could not snapshot for checkpoint `id`.
    fn part_declined(&self, id: u64, reason: String);
}

/// The job's checkpoint coordinator: triggers checkpoints, collects every operator's ack, and
/// completes them. Shared by the shards (acks are rare: a lock per operator and checkpoint).
pub struct Coordinator {
    config: CheckpointConfig,
    storage: CheckpointStorage,
    /// Acks that complete a checkpoint: one per operator and shard.
    expected: AtomicU64,
    /// The newest checkpoint triggered: sources inject its barrier before their next batch.
    triggered: AtomicU64,
    /// The newest checkpoint before this run's first.
    base: u64,
    /// The newest checkpoint complete (sinks commit up to it).
    latest_completed: AtomicU64,
    state: Mutex<State>,
    /// In a job that spans processes: where this process's parts go (it then completes no
    /// checkpoint by itself).
    parts: Option<std::sync::Arc<dyn CheckpointParts>>,
}

impl Coordinator {
    /// A coordinator writing into `config.dir`; checkpoint ids continue after the newest there.
    pub fn new(config: CheckpointConfig) -> Result<Self, JobError> {
        config.validate()?;
        let storage = CheckpointStorage::new(&config.dir).map_err(|e| {
            JobError::Config(format!(
                "checkpoint directory {}: {e}",
                config.dir.display()
            ))
        })?;
        let newest = storage
            .list()
            .map_err(|e| JobError::Config(format!("checkpoints: {e}")))?
            .first()
            .map_or(0, |(id, _)| *id);
        Ok(Self {
            config,
            storage,
            expected: AtomicU64::new(0),
            triggered: AtomicU64::new(newest),
            base: newest,
            latest_completed: AtomicU64::new(0),
            state: Mutex::new(State {
                next_id: newest + 1,
                ..State::default()
            }),
            parts: None,
        })
    }

    /// A coordinator of this process's part of a job that spans processes: checkpoints are
    /// triggered by id ([`trigger_id`](Self::trigger_id)), and completed by the job
    /// ([`completed_globally`](Self::completed_globally)) once every process's part is in.
    pub fn distributed(
        config: CheckpointConfig,
        parts: std::sync::Arc<dyn CheckpointParts>,
    ) -> Result<Self, JobError> {
        let mut c = Self::new(config)?;
        c.parts = Some(parts);
        Ok(c)
    }

    /// Whether this coordinator is a part of a job's (see [`distributed`](Self::distributed)).
    pub fn is_distributed(&self) -> bool {
        self.parts.is_some()
    }

    /// Triggers checkpoint `id` (chosen by the job manager for every process).
    /// `savepoint`: it is one (always aligned; the job manager writes it).
    pub fn trigger_id(&self, id: u64, savepoint: bool) {
        let mut s = self.state.lock().expect("coordinator lock");
        if id < s.next_id {
            return; // already triggered (or older than this run)
        }
        s.next_id = id;
        if savepoint {
            // Marks the checkpoint a savepoint here; its answer goes nowhere (the job manager
            // writes and reports it).
            let (reply, _) = std::sync::mpsc::channel();
            s.savepoints.insert(
                0,
                SavepointRequest {
                    dir: PathBuf::new(),
                    reply,
                },
            );
        }
        drop(s);
        self.open_next(Instant::now());
    }

    /// Checkpoint `id` is complete in every process (its metadata written): sinks commit up to
    /// it.
    pub fn completed_globally(&self, id: u64) {
        let mut s = self.state.lock().expect("coordinator lock");
        let Some(p) = s.handed_over.remove(&id) else {
            return;
        };
        // Older parts handed over and never completed: the job manager gave up on them.
        let older: Vec<u64> = s.handed_over.range(..id).map(|(i, _)| *i).collect();
        for i in older {
            s.handed_over.remove(&i);
        }
        self.finish_complete(&mut s, id, p);
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// One more operator on one shard will ack every checkpoint.
    pub fn expect_ack(&self) {
        self.expected.fetch_add(1, Ordering::Relaxed);
    }

    /// The newest checkpoint before this run's first (a source starts injecting after it).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The newest checkpoint complete in this run (0: none yet).
    pub fn latest_completed(&self) -> u64 {
        self.latest_completed.load(Ordering::Acquire)
    }

    /// The newest checkpoint triggered (0: none yet).
    pub fn triggered(&self) -> u64 {
        self.triggered.load(Ordering::Acquire)
    }

    /// Triggers the next checkpoint, unless `max_concurrent` are in flight or the minimum pause
    /// since the last complete one has not passed; abandons checkpoints past their timeout.
    pub fn trigger(&self) -> Option<u64> {
        let mut s = self.state.lock().expect("coordinator lock");
        let now = Instant::now();
        let timeout = self.config.timeout;
        let expired: Vec<u64> = s
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let why = format!("not complete within {timeout:?}");
            if let Some(p) = s.pending.remove(&id) {
                p.fail_savepoint(id, &why);
            }
            s.failed.push((id, why));
        }
        if s.pending.len() >= self.config.max_concurrent {
            return None;
        }
        if let Some(at) = s.last_completed_at
            && now.duration_since(at) < self.config.min_pause
            && s.savepoints.is_empty()
        {
            return None;
        }
        drop(s);
        Some(self.open_next(now))
    }

    /// Opens checkpoint `next_id` (finished operators ack it at once) and lets sources inject
    /// its barrier.
    fn open_next(&self, now: Instant) -> u64 {
        let mut s = self.state.lock().expect("coordinator lock");
        let id = s.next_id;
        s.next_id += 1;
        let savepoint = (!s.savepoints.is_empty()).then(|| s.savepoints.remove(0));
        // Finished operators ack with their last snapshot.
        let acks: Vec<OperatorSnapshot> = s.finished.iter().map(|f| f.0.clone()).collect();
        let bytes_total = s.finished.iter().map(|f| f.1).sum();
        s.pending.insert(
            id,
            Pending {
                started: now,
                savepoint,
                alignment_us: 0,
                in_flight_bytes: 0,
                acks,
                bytes_added: 0,
                bytes_total,
            },
        );
        self.triggered.store(id, Ordering::Release);
        if let Err(e) = self.complete_if_acked(&mut s, id) {
            s.failed.push((id, e.to_string()));
        }
        id
    }

    /// An operator's input ended: `snapshot` is its state from now on, standing as its ack of
    /// every checkpoint it has not acked (those in flight, and all later ones). `bytes_added`
    /// of its segments were new to the shared directory, `bytes_total` is all of them.
    pub fn finished(
        &self,
        snapshot: OperatorSnapshot,
        bytes_added: u64,
        bytes_total: u64,
    ) -> Result<(), JobError> {
        let mut s = self.state.lock().expect("coordinator lock");
        Self::unprotect_in(&mut s, &snapshot.segments);
        let ids: Vec<u64> = s
            .pending
            .iter()
            .filter(|(_, p)| {
                !p.acks
                    .iter()
                    .any(|a| a.uid == snapshot.uid && a.shard == snapshot.shard)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut added = bytes_added;
        for id in &ids {
            let p = s.pending.get_mut(id).expect("listed");
            p.acks.push(snapshot.clone());
            p.bytes_added += std::mem::take(&mut added);
            p.bytes_total += bytes_total;
        }
        s.finished.push((snapshot, bytes_total));
        for id in ids {
            self.complete_if_acked(&mut s, id)?;
        }
        Ok(())
    }

    /// An operator's snapshot for checkpoint `id`: `bytes_added` of its segments were new to
    /// the shared directory, `bytes_total` is all of them. The last ack completes the
    /// checkpoint: its metadata is written, and old checkpoints beyond `retain` removed.
    pub fn ack(
        &self,
        id: u64,
        snapshot: OperatorSnapshot,
        bytes_added: u64,
        bytes_total: u64,
    ) -> Result<(), JobError> {
        let mut s = self.state.lock().expect("coordinator lock");
        Self::unprotect_in(&mut s, &snapshot.segments);
        let Some(p) = s.pending.get_mut(&id) else {
            // Abandoned (timed out) meanwhile: nothing to add to.
            return Ok(());
        };
        if snapshot.uid.contains("/in-flight/") {
            p.in_flight_bytes += snapshot.state.len() as u64;
        }
        p.acks.push(snapshot);
        p.bytes_added += bytes_added;
        p.bytes_total += bytes_total;
        self.complete_if_acked(&mut s, id)
    }

    /// Whether checkpoint `id`'s barrier is unaligned: the job's setting, except for a
    /// savepoint (always aligned: it must restore at any parallelism).
    pub fn unaligned(&self, id: u64) -> bool {
        self.config.unaligned
            && self
                .state
                .lock()
                .expect("coordinator lock")
                .pending
                .get(&id)
                .is_none_or(|p| p.savepoint.is_none())
    }

    /// An operator's barrier of checkpoint `id` waited `alignment_us` in alignments on its way.
    pub fn note_alignment(&self, id: u64, alignment_us: u64) {
        if alignment_us == 0 {
            return;
        }
        let mut s = self.state.lock().expect("coordinator lock");
        if let Some(p) = s.pending.get_mut(&id) {
            p.alignment_us = p.alignment_us.max(alignment_us);
        }
    }

    /// Keeps `segments` from retention until the snapshot naming them is acked (or given up:
    /// [`unprotect`](Self::unprotect)).
    pub fn protect(&self, segments: &[String]) {
        let mut s = self.state.lock().expect("coordinator lock");
        for n in segments {
            *s.protected.entry(n.clone()).or_default() += 1;
        }
    }

    pub fn unprotect(&self, segments: &[String]) {
        Self::unprotect_in(&mut self.state.lock().expect("coordinator lock"), segments);
    }

    fn unprotect_in(s: &mut State, segments: &[String]) {
        for n in segments {
            if let Some(c) = s.protected.get_mut(n) {
                *c -= 1;
                if *c == 0 {
                    s.protected.remove(n);
                }
            }
        }
    }

    /// Completes checkpoint `id` if every operator on every shard acked it: its metadata is
    /// written, a savepoint copied, and old checkpoints beyond `retain` removed.
    fn complete_if_acked(&self, s: &mut State, id: u64) -> Result<(), JobError> {
        let Some(p) = s.pending.get(&id) else {
            return Ok(());
        };
        if (p.acks.len() as u64) < self.expected.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut p = s.pending.remove(&id).expect("found above");
        if let Some(parts) = &self.parts {
            // This process's part is ready: the job manager completes the checkpoint.
            let acks = std::mem::take(&mut p.acks);
            let (added, total) = (p.bytes_added, p.bytes_total);
            s.handed_over.insert(id, p);
            parts.part_ready(id, acks, added, total);
            return Ok(());
        }
        let meta = metadata_of(id, std::mem::take(&mut p.acks)).map_err(|e| self.error(id, e))?;
        self.storage
            .commit(&meta)
            .map_err(|e| self.error(id, e.to_string()))?;
        if let Some(req) = &p.savepoint {
            let written = write_savepoint(&self.storage, &req.dir, &meta);
            let _ = req.reply.send(written.map_err(|e| e.to_string()));
        }
        // Segments uploaded for checkpoints still in flight stay.
        // And those of finished operators, which every later checkpoint names.
        let in_flight = s
            .pending
            .values()
            .flat_map(|p| p.acks.iter().flat_map(|a| a.segments.iter().cloned()))
            .chain(s.finished.iter().flat_map(|f| f.0.segments.iter().cloned()))
            .chain(s.protected.keys().cloned())
            .collect();
        self.storage
            .retain(self.config.retain, &in_flight)
            .map_err(|e| self.error(id, e.to_string()))?;
        self.finish_complete(s, id, p);
        Ok(())
    }

    /// Records checkpoint `id` complete: sinks may commit up to it.
    fn finish_complete(&self, s: &mut State, id: u64, p: Pending) {
        let now = Instant::now();
        s.last_completed_at = Some(now);
        self.latest_completed.fetch_max(id, Ordering::Release);
        s.completed.push(CheckpointStats {
            id,
            duration: now.duration_since(p.started),
            bytes_added: p.bytes_added,
            bytes_total: p.bytes_total,
            alignment: Duration::from_micros(p.alignment_us),
            in_flight_bytes: p.in_flight_bytes,
        });
    }

    /// An operator could not snapshot for checkpoint `id`: the checkpoint is aborted (the job
    /// goes on; the next checkpoint is triggered as usual).
    pub fn decline(&self, id: u64, reason: String) {
        let mut s = self.state.lock().expect("coordinator lock");
        if let Some(p) = s.pending.remove(&id) {
            p.fail_savepoint(id, &reason);
            if let Some(parts) = &self.parts {
                parts.part_declined(id, reason.clone());
            }
            s.failed.push((id, reason));
        }
    }

    /// Asks for a savepoint in a directory of its own under `dir`: the next checkpoint,
    /// triggered at once (as soon as no other is in flight), is also written there whole —
    /// every segment it needs and its metadata, independent of the checkpoint directory and
    /// its retention. `reply` learns the savepoint's path, or why it was not taken.
    pub fn request_savepoint(&self, request: SavepointRequest) {
        self.state
            .lock()
            .expect("coordinator lock")
            .savepoints
            .push(request);
    }

    /// Whether a savepoint waits to be triggered.
    pub fn savepoint_requested(&self) -> bool {
        !self
            .state
            .lock()
            .expect("coordinator lock")
            .savepoints
            .is_empty()
    }

    /// The job ended: checkpoints still in flight are abandoned, saying which acks they had.
    pub fn abandon_pending(&self) {
        let mut s = self.state.lock().expect("coordinator lock");
        let expected = self.expected.load(Ordering::Relaxed);
        let pending = std::mem::take(&mut s.pending);
        for (id, _) in std::mem::take(&mut s.handed_over) {
            s.failed.push((
                id,
                "the job ended before every process's part was in".into(),
            ));
        }
        for r in s.savepoints.drain(..) {
            let _ = r
                .reply
                .send(Err("the job ended before it was taken".into()));
        }
        for (id, p) in pending {
            p.fail_savepoint(id, "the job ended before it was complete");
            let mut who: Vec<String> = p
                .acks
                .iter()
                .map(|a| format!("{}#{}", a.operator, a.shard))
                .collect();
            who.sort();
            s.failed.push((
                id,
                format!(
                    "the job ended with {} of {expected} acks ({})",
                    p.acks.len(),
                    who.join(", ")
                ),
            ));
        }
    }

    /// Runs `action` once the job has ended without failure. A shard whose input ended stages
    /// its last output and commits it here, not at its own end: another shard may still fail
    /// and restart the job from a checkpoint, which replays that output. An attempt that fails
    /// drops its actions (the next one aborts what they would have committed).
    pub fn on_job_end(&self, action: JobEndAction) {
        self.state
            .lock()
            .expect("coordinator lock")
            .at_job_end
            .push(action);
    }

    /// The actions registered by [`on_job_end`](Self::on_job_end), in order.
    pub fn take_job_end_actions(&self) -> Vec<JobEndAction> {
        std::mem::take(&mut self.state.lock().expect("coordinator lock").at_job_end)
    }

    /// Checkpoints completed so far.
    pub fn completed(&self) -> Vec<CheckpointStats> {
        self.state
            .lock()
            .expect("coordinator lock")
            .completed
            .clone()
    }

    /// Checkpoints abandoned so far, with why.
    pub fn failed(&self) -> Vec<(u64, String)> {
        self.state.lock().expect("coordinator lock").failed.clone()
    }

    fn error(&self, id: u64, message: String) -> JobError {
        JobError::Config(format!(
            "checkpoint {id} in {}: {message}",
            self.config.dir.display()
        ))
    }
}

/// Writes checkpoint `meta` as a self-contained savepoint `<dir>/savepoint-<id>`: a
/// checkpoint directory of its own (`shared/` with every segment, linked or copied, and
/// `chk-<id>/_metadata`), which `restore_from` takes like any checkpoint directory.
pub fn write_savepoint(
    storage: &CheckpointStorage,
    dir: &std::path::Path,
    meta: &Metadata,
) -> Result<PathBuf, JobError> {
    let root = dir.join(format!("savepoint-{}", meta.id));
    let bad = |e: String| JobError::Config(format!("savepoint {}: {e}", root.display()));
    let target = CheckpointStorage::new(&root).map_err(|e| bad(e.to_string()))?;
    for name in &meta.segments {
        let path = storage.segment_path(name);
        let file =
            std::fs::File::open(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let bytes = file
            .metadata()
            .map_err(|e| bad(format!("{}: {e}", path.display())))?
            .len();
        target
            .upload(&shardflow_state::SegmentHandle {
                name: name.clone(),
                path,
                bytes,
                file,
            })
            .map_err(|e| bad(e.to_string()))?;
    }
    target.commit(meta).map_err(|e| bad(e.to_string()))?;
    Ok(root)
}

/// The metadata of checkpoint `id` from every operator's snapshot (of every process): the
/// snapshots in (node, shard) order, and every segment they name.
pub fn metadata_of(id: u64, mut acks: Vec<OperatorSnapshot>) -> Result<Metadata, String> {
    acks.sort_by_key(|a| (a.node, a.shard));
    let mut segments: Vec<String> = acks.iter().flat_map(|a| a.segments.clone()).collect();
    segments.sort();
    segments.dedup();
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&acks)
        .map_err(|e| format!("cannot serialize the snapshots: {e}"))?
        .to_vec();
    Ok(Metadata {
        id,
        segments,
        payload,
    })
}

/// A piece of a snapshot's file work, run off the shards.
type IoJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the process's checkpoint I/O thread: snapshots are finished there (frozen
/// segments written and synced, segments uploaded) while the shards go on processing. One
/// thread, first in first out: a store's snapshots finish in the order they were taken, as a
/// later one names the segments an earlier one writes.
pub fn run_off_shard(job: IoJob) {
    static WORKER: std::sync::OnceLock<Option<Mutex<std::sync::mpsc::Sender<IoJob>>>> =
        std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<IoJob>();
        let started = std::thread::Builder::new()
            .name("shardflow-checkpoint-io".into())
            .spawn(move || {
                for job in rx {
                    // A job that panics must not take the thread (and every later
                    // checkpoint) with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        match started {
            Ok(_) => Some(Mutex::new(tx)),
            Err(e) => {
                eprintln!(
                    "warning: no checkpoint I/O thread ({e}): snapshots are written on the shards"
                );
                None
            }
        }
    });
    match worker {
        Some(w) => {
            if let Err(std::sync::mpsc::SendError(job)) =
                w.lock().unwrap_or_else(|e| e.into_inner()).send(job)
            {
                job();
            }
        }
        None => job(),
    }
}

/// Waits until every job handed to [`run_off_shard`] so far has run (the job's end: acks still
/// queued then are not lost to the abandonment of checkpoints in flight).
pub fn drain_off_shard() {
    let (tx, rx) = std::sync::mpsc::channel();
    run_off_shard(Box::new(move || {
        let _ = tx.send(());
    }));
    let _ = rx.recv();
}

/// Decodes operator state bytes written at a checkpoint (rkyv, fully checked: they come from a
/// file).
pub fn decode_state<T: crate::data::Data>(bytes: &[u8]) -> Result<T, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
        .map_err(|e| format!("the operator's checkpointed state does not decode: {e}"))
}

/// The operator state store a function or source resumes with: what it handed to the
/// checkpoint (an empty store on a fresh run).
pub fn restored_operator_state(
    ctx: &crate::operator::OperatorContext,
) -> Result<crate::state::OperatorStateStore, JobError> {
    if let Some(r) = &ctx.rescaled {
        // Every earlier shard's state, redistributed by kind (lists split, unions whole).
        let mut old = Vec::with_capacity(r.states.len());
        for (shard, bytes) in &r.states {
            if bytes.is_empty() {
                continue;
            }
            let snapshot: crate::state::operator::OperatorStateSnapshot = decode_state(bytes)
                .map_err(|e| ctx.error(format!("earlier shard {shard}'s state: {e}")))?;
            old.push(snapshot);
        }
        if old.is_empty() {
            return Ok(crate::state::OperatorStateStore::default());
        }
        let mut shares = crate::state::operator::redistribute(&old, ctx.runtime.parallelism);
        let mine = shares.swap_remove(ctx.runtime.shard as usize);
        return Ok(crate::state::OperatorStateStore::restored(mine));
    }
    match ctx.restored.as_deref() {
        Some(bytes) if !bytes.is_empty() => {
            let snapshot: crate::state::operator::OperatorStateSnapshot =
                decode_state(bytes).map_err(|e| ctx.error(e))?;
            Ok(crate::state::OperatorStateStore::restored(snapshot))
        }
        _ => Ok(crate::state::OperatorStateStore::default()),
    }
}

/// The operators' snapshots in a checkpoint's metadata payload.
pub fn decode_snapshots(payload: &[u8]) -> Result<Vec<OperatorSnapshot>, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Vec<OperatorSnapshot>, rkyv::rancor::Error>(&aligned)
        .map_err(|e| format!("the checkpoint's snapshots do not decode: {e}"))
}

/// Aligns the barriers of an operator's inputs (exactly-once): an input that delivered barrier
/// n is blocked — its records wait — until every open input has delivered it; then barrier n
/// goes on, once. A barrier newer than the one being aligned (the older was abandoned, and a
/// source skipped it) restarts the alignment at the newer one; an older one is stale and
/// ignored.
#[derive(Debug, Clone)]
pub struct BarrierAligner {
    /// Per input: still open (not ended), and delivered the barrier being aligned.
    open: Vec<bool>,
    arrived: Vec<bool>,
    current: Option<Barrier>,
    /// The newest barrier passed on.
    last: u64,
    /// When the barrier being aligned first arrived.
    started: Option<Instant>,
}

impl BarrierAligner {
    pub fn new(inputs: usize) -> Self {
        Self {
            open: vec![true; inputs],
            arrived: vec![false; inputs],
            current: None,
            last: 0,
            started: None,
        }
    }

    /// Input `input` delivered `barrier`; the barrier to pass on if that completes it.
    pub fn barrier(&mut self, input: usize, barrier: Barrier) -> Option<Barrier> {
        if barrier.id <= self.last {
            return None;
        }
        match self.current {
            Some(c) if barrier.id < c.id => return None,
            Some(c) if barrier.id == c.id => {}
            _ => {
                self.current = Some(barrier);
                self.started = Some(Instant::now());
                self.arrived.iter_mut().for_each(|a| *a = false);
            }
        }
        self.arrived[input] = true;
        self.complete()
    }

    /// Input `input` ended: it no longer holds an alignment back (which it may complete).
    pub fn remove(&mut self, input: usize) -> Option<Barrier> {
        self.open[input] = false;
        self.complete()
    }

    /// Whether `input` waits for the others (its records must not go on yet): never for an
    /// at-least-once barrier.
    pub fn blocked(&self, input: usize) -> bool {
        self.current.is_some_and(|c| !c.at_least_once) && self.arrived[input]
    }

    /// Whether a barrier is being aligned.
    pub fn aligning(&self) -> bool {
        self.current.is_some()
    }

    fn complete(&mut self) -> Option<Barrier> {
        let mut c = self.current?;
        if self.open.iter().zip(&self.arrived).all(|(o, a)| !o || *a) {
            self.current = None;
            self.last = c.id;
            self.arrived.iter_mut().for_each(|a| *a = false);
            if let Some(t) = self.started.take() {
                c.alignment_us = c.alignment_us.max(t.elapsed().as_micros() as u64);
            }
            Some(c)
        } else {
            None
        }
    }
}

/// What a job resumes from: a complete checkpoint's operator snapshots.
/// An operator's share of a checkpoint taken at another parallelism (see
/// [`RestorePlan::rescaled`]).
#[derive(Debug, Clone)]
pub struct Rescaled {
    pub old_parallelism: u32,
    /// The segments of each earlier shard whose key groups overlap this shard's.
    pub segments: Vec<(u32, Vec<(String, PathBuf)>)>,
    /// Every earlier shard's operator state, by shard.
    pub states: Vec<(u32, Arc<[u8]>)>,
}

impl Rescaled {
    /// The states of the earlier shards whose transactions or list entries shard `shard` of
    /// `parallelism` takes over: those `s` with `s % parallelism == shard`, so that each goes
    /// to exactly one new shard.
    pub fn owned_states(&self, shard: u32, parallelism: u32) -> Vec<(u32, Arc<[u8]>)> {
        self.states
            .iter()
            .filter(|(s, _)| s % parallelism == shard)
            .cloned()
            .collect()
    }
}

pub struct RestorePlan {
    storage: CheckpointStorage,
    id: u64,
    snapshots: Vec<OperatorSnapshot>,
    /// This job's node → the node whose state it takes in the checkpoint (set by `check`).
    nodes: std::collections::HashMap<u32, u32>,
    /// The parallelism the checkpoint was taken at.
    parallelism: u32,
}

impl RestorePlan {
    /// The checkpoint at `path`: a checkpoint directory (`chk-<n>`), or a checkpoint storage
    /// directory, whose newest complete checkpoint is taken (newer, incomplete ones are passed
    /// over: they are returned, with why, for the caller to warn about).
    pub fn load(
        path: &std::path::Path,
    ) -> Result<(Self, Vec<shardflow_state::checkpoint::Skipped>), JobError> {
        let bad = |m: String| JobError::Config(format!("restore from {}: {m}", path.display()));
        let id_of = |p: &std::path::Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
        };
        let (storage, meta, skipped) = match id_of(path) {
            Some(id) => {
                let root = path
                    .parent()
                    .ok_or_else(|| bad("no parent directory".into()))?;
                let storage = CheckpointStorage::new(root).map_err(|e| bad(e.to_string()))?;
                let meta = storage
                    .read(id)
                    .map_err(|s| bad(format!("{}: {}", s.path.display(), s.reason)))?;
                (storage, meta, Vec::new())
            }
            None => {
                let storage = CheckpointStorage::new(path).map_err(|e| bad(e.to_string()))?;
                let (meta, skipped) = storage.latest().map_err(|e| bad(e.to_string()))?;
                let meta = meta.ok_or_else(|| bad("no complete checkpoint there".into()))?;
                (storage, meta, skipped)
            }
        };
        let snapshots = decode_snapshots(&meta.payload).map_err(bad)?;
        for name in &meta.segments {
            let p = storage.segment_path(name);
            if !p.exists() {
                return Err(bad(format!(
                    "checkpoint {} needs segment {}, which is missing",
                    meta.id,
                    p.display()
                )));
            }
        }
        let parallelism = snapshots.iter().map(|s| s.shard + 1).max().unwrap_or(1);
        Ok((
            Self {
                storage,
                id: meta.id,
                snapshots,
                nodes: std::collections::HashMap::new(),
                parallelism,
            },
            skipped,
        ))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The parallelism the checkpoint was taken at.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// Maps this job's nodes (`(name, uid)` by index; see `JobGraph::node_uids`) to the
    /// checkpointed operators with the same uid. State with no node to go to is an error
    /// naming it, unless `allow_non_restored_state` (then each is a warning returned). Any
    /// parallelism: a different one rescales.
    pub fn check(
        &mut self,
        nodes: &[(&str, &str)],
        allow_non_restored_state: bool,
    ) -> Result<Vec<String>, JobError> {
        let mut old: Vec<(u32, &str, &str)> = self
            .snapshots
            .iter()
            .map(|s| (s.node, s.operator.as_str(), s.uid.as_str()))
            .collect();
        old.sort();
        old.dedup();
        let mut map = std::collections::HashMap::new();
        let mut unmatched = Vec::new();
        for (node, name, uid) in old {
            // An exchange reader's in-flight records go with the operator it feeds.
            if let Some((base, _)) = uid.split_once("/in-flight/") {
                if !nodes.iter().any(|n| n.1 == base) {
                    unmatched.push(format!("in-flight records of '{name}' (uid '{uid}')"));
                }
                continue;
            }
            match nodes.iter().position(|n| n.1 == uid) {
                Some(new) => {
                    map.insert(new as u32, node);
                }
                None => unmatched.push(format!("operator '{name}' (uid '{uid}')")),
            }
        }
        self.nodes = map;
        if !unmatched.is_empty() && !allow_non_restored_state {
            return Err(JobError::Config(format!(
                "checkpoint {} holds state of {} that this job does not have (give operators \
                 uids to restore a changed job, or allow non-restored state to drop it)",
                self.id,
                unmatched.join(", ")
            )));
        }
        Ok(unmatched
            .into_iter()
            .map(|u| format!("the state of {u} is not restored"))
            .collect())
    }

    /// What shard `shard` of `parallelism` restores of operator `node` when the checkpoint was
    /// taken at another parallelism (rescaling): the segments of every earlier shard whose
    /// key groups overlap its own (its store keeps only its key groups of them), and every
    /// earlier shard's operator state, by shard (each operator redistributes its own kind).
    /// None if the operator had no state in the checkpoint.
    pub fn rescaled(
        &self,
        node: u32,
        shard: u32,
        parallelism: u32,
        max_parallelism: u32,
    ) -> Option<Rescaled> {
        let node = *self.nodes.get(&node)?;
        let mine = crate::key::KeyGroupRange::of_shard(shard, parallelism, max_parallelism);
        let mut overlapping = Vec::new();
        let mut states = Vec::new();
        for s in self.snapshots.iter().filter(|s| s.node == node) {
            let theirs =
                crate::key::KeyGroupRange::of_shard(s.shard, self.parallelism, max_parallelism);
            if theirs.start.max(mine.start) < theirs.end.min(mine.end) && !s.segments.is_empty() {
                let segments = s
                    .segments
                    .iter()
                    .map(|n| (n.clone(), self.storage.segment_path(n)))
                    .collect();
                overlapping.push((s.shard, segments));
            }
            states.push((s.shard, Arc::<[u8]>::from(s.state.as_slice())));
        }
        if states.is_empty() {
            return None;
        }
        states.sort_by_key(|s| s.0);
        Some(Rescaled {
            old_parallelism: self.parallelism,
            segments: overlapping,
            states,
        })
    }

    /// The in-flight records an unaligned checkpoint holds for the exchange reader `uid` on
    /// `shard` (None: none). At another parallelism than the checkpoint's, in-flight records
    /// cannot be dealt to the right shards: an error if there are any.
    pub fn in_flight(
        &self,
        uid: &str,
        shard: u32,
        parallelism: u32,
    ) -> Result<Option<Arc<[u8]>>, JobError> {
        let mut of_uid = self.snapshots.iter().filter(|s| s.uid == uid);
        if parallelism == self.parallelism {
            return Ok(of_uid
                .find(|s| s.shard == shard)
                .filter(|s| !s.state.is_empty())
                .map(|s| Arc::from(s.state.as_slice())));
        }
        if of_uid.any(|s| !s.state.is_empty()) {
            return Err(JobError::Config(format!(
                "checkpoint {} is unaligned and holds in-flight records ('{uid}'): it restores \
                 at parallelism {} only (rescale from a savepoint, which is always aligned)",
                self.id, self.parallelism
            )));
        }
        Ok(None)
    }

    /// The snapshot of operator `node` on `shard`, with its segments' paths.
    pub fn of(&self, node: u32, shard: u32) -> Option<(&OperatorSnapshot, Vec<(String, PathBuf)>)> {
        let node = *self.nodes.get(&node)?;
        let s = self
            .snapshots
            .iter()
            .find(|s| s.node == node && s.shard == shard)?;
        let segments = s
            .segments
            .iter()
            .map(|n| (n.clone(), self.storage.segment_path(n)))
            .collect();
        Some((s, segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: u64) -> Barrier {
        Barrier {
            id,
            timestamp_ms: 0,
            at_least_once: false,
            alignment_us: 0,
            unaligned: false,
        }
    }

    #[test]
    fn barriers_align_across_open_inputs() {
        let mut a = BarrierAligner::new(3);
        assert_eq!(a.barrier(0, b(1)), None);
        assert!(a.blocked(0) && !a.blocked(1));
        assert_eq!(a.barrier(2, b(1)), None);
        // The last open input completes it; an ended input is not waited for.
        assert_eq!(a.remove(1).map(|x| x.id), Some(1));
        assert!(!a.blocked(0) && !a.aligning());
        // A stale barrier is ignored; a newer one than the one aligned restarts.
        assert_eq!(a.barrier(0, b(1)), None);
        assert_eq!(a.barrier(0, b(2)), None);
        assert_eq!(a.barrier(2, b(3)), None);
        assert!(!a.blocked(0) && a.blocked(2));
        assert_eq!(a.barrier(0, b(3)).map(|x| x.id), Some(3));
        // At least once: no input is held, the barrier still goes on once all delivered it.
        let alo = Barrier {
            at_least_once: true,
            ..b(4)
        };
        assert_eq!(a.barrier(2, alo), None);
        assert!(!a.blocked(2) && a.aligning());
        assert_eq!(a.barrier(0, alo).map(|x| x.id), Some(4));
    }
}
