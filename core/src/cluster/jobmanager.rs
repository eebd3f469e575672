//! The job manager: task managers register with it, clients submit jobs to it; it splits each
//! job's shards over the task managers' free cores, deploys the parts, watches heartbeats, and
//! reports each job's end to its client.
//!
//! A task manager's cores are its slots (Flink's task slots): each part of a job takes cores
//! of its own, so jobs run side by side on one task manager without sharing a CPU. A job
//! submitted while no core is free waits for one ([`JobManagerConfig::resource_wait`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::protocol::{Connection, Deployment, JobInfo, Message, Part};
use crate::error::JobError;

/// How a job manager serves.
#[derive(Debug, Clone)]
pub struct JobManagerConfig {
    pub bind: SocketAddr,
    pub secret: Vec<u8>,
    /// A task manager silent this long is lost (it heart-beats every
    /// [`HEARTBEAT_INTERVAL`](super::taskmanager::HEARTBEAT_INTERVAL)).
    pub heartbeat_timeout: Duration,
    /// Where the job manager records its running jobs, to take them up again (from their
    /// newest checkpoints) when it restarts. None: a restart forgets them.
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a failed job waits for as many free cores as it had (a replacement task
    /// manager registering) before it restarts on fewer.
    pub restart_grace: Duration,
    /// How long a submitted job waits for a free core (other jobs ending, task managers
    /// registering) before it is refused: Flink's `slot.request.timeout`, 5 minutes.
    pub resource_wait: Duration,
}

impl JobManagerConfig {
    pub fn new(bind: SocketAddr, secret: Vec<u8>) -> Self {
        Self {
            bind,
            secret,
            heartbeat_timeout: Duration::from_secs(5),
            state_dir: None,
            restart_grace: Duration::from_secs(3),
            resource_wait: Duration::from_secs(300),
        }
    }
}

struct TaskManagerEntry {
    pid: u32,
    cores: u32,
    host: String,
    machine: String,
    shm_dir: String,
    data_addr: Option<String>,
    writer: Connection,
}

struct Job {
    name: String,
    args: Vec<String>,
    /// The parallelism asked for (none: every free core).
    parallelism: Option<u32>,
    attempt: u32,
    parts: Vec<Part>,
    /// Task managers whose part has not ended.
    waiting: BTreeSet<u32>,
    error: Option<String>,
    /// The job's checkpoints, once its task managers said where they go.
    checkpoints: Option<Checkpointing>,
    /// Task managers committing their sinks' last output (the job ended without failure).
    committing: BTreeSet<u32>,
    /// Cancelled by a client: it fails without a restart.
    cancelled: bool,
}

/// A job's checkpoints as the job manager runs them: it triggers each on every task manager,
/// gathers their parts, writes the metadata, and says it is complete.
struct Checkpointing {
    dir: std::path::PathBuf,
    interval: Duration,
    retain: usize,
    next_id: u64,
    /// Task managers whose shards are built (checkpoints start when all are).
    ready: BTreeSet<u32>,
    last_trigger: Option<std::time::Instant>,
    /// Triggered and not complete: the parts in so far.
    pending: BTreeMap<u64, BTreeMap<u32, Vec<crate::checkpoint::OperatorSnapshot>>>,
    /// Checkpoints this job manager completed, with their segments (retention removes only
    /// these: a segment no metadata names yet may be one a task manager is uploading).
    committed: std::collections::VecDeque<(u64, Vec<String>)>,
    /// A task manager's part ended: no more checkpoints (it can no longer ack them).
    stopped: bool,
    /// Savepoints asked for, not yet triggered.
    savepoints: Vec<SavepointAsk>,
    /// Savepoints triggered, by checkpoint id.
    savepoints_pending: BTreeMap<u64, SavepointAsk>,
}

/// A client's savepoint: where to write it, whom to tell, and whether to stop the job then.
struct SavepointAsk {
    dir: std::path::PathBuf,
    reply: std::sync::mpsc::Sender<Result<String, String>>,
    cancel: bool,
}

impl Checkpointing {
    /// Writes checkpoint `id` from every part (and, if it is a savepoint, the savepoint too),
    /// keeps the newest `retain`; returns the savepoint's ask, if any.
    fn complete(&mut self, id: u64) -> Result<Option<SavepointAsk>, String> {
        let parts = self.pending.remove(&id).unwrap_or_default();
        let acks: Vec<_> = parts.into_values().flatten().collect();
        let meta = crate::checkpoint::metadata_of(id, acks)?;
        let storage = shardflow_state::CheckpointStorage::new(&self.dir)
            .map_err(|e| format!("checkpoint directory {}: {e}", self.dir.display()))?;
        storage
            .commit(&meta)
            .map_err(|e| format!("checkpoint {id}: {e}"))?;
        let ask = self.savepoints_pending.remove(&id);
        if let Some(a) = &ask {
            let written = crate::checkpoint::write_savepoint(&storage, &a.dir, &meta)
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string());
            let _ = a.reply.send(written);
        }
        self.committed.push_back((id, meta.segments));
        while self.committed.len() > self.retain {
            let (old, segments) = self.committed.pop_front().expect("longer than retain");
            let kept: BTreeSet<&String> = self.committed.iter().flat_map(|c| c.1.iter()).collect();
            let d = storage.checkpoint_dir(old);
            let _ = std::fs::remove_dir_all(&d);
            for s in segments.iter().filter(|s| !kept.contains(s)) {
                let _ = std::fs::remove_file(storage.segment_path(s));
            }
        }
        Ok(ask)
    }

    /// Abandons the checkpoints in flight: a savepoint among them is answered with `why`.
    fn abandon(&mut self, why: &str) {
        for id in std::mem::take(&mut self.pending).into_keys() {
            if let Some(a) = self.savepoints_pending.remove(&id) {
                let _ = a.reply.send(Err(format!("checkpoint {id}: {why}")));
            }
        }
    }
}

#[derive(Default)]
struct State {
    task_managers: BTreeMap<u32, TaskManagerEntry>,
    next_task_manager: u32,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    /// The tag of the next deployment on the task managers' TCP links.
    next_tag: u32,
}

struct Shared {
    config: JobManagerConfig,
    records: Records,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running job manager (it serves until dropped).
pub struct JobManager {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JobManager {
    /// Listens on `config.bind` and serves on a thread of its own.
    pub fn start(config: JobManagerConfig) -> Result<Self, JobError> {
        if config.secret.is_empty() {
            return Err(JobError::Config("a cluster needs a shared secret".into()));
        }
        let listener = TcpListener::bind(config.bind)
            .map_err(|e| JobError::Cluster(format!("cannot listen on {}: {e}", config.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| JobError::Cluster(format!("the job manager's address: {e}")))?;
        let records = Records {
            dir: config.state_dir.clone(),
        };
        if let Some(d) = &config.state_dir {
            std::fs::create_dir_all(d).map_err(|e| {
                JobError::Cluster(format!("job manager state directory {}: {e}", d.display()))
            })?;
        }
        let recovered = records.load();
        let shared = Arc::new(Shared {
            records,
            config,
            state: Mutex::new(State {
                next_task_manager: 1,
                next_tag: 1,
                next_job: recovered.iter().map(|r| r.job + 1).max().unwrap_or(1),
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("shardflow-jm-checkpoints".into())
            .spawn(move || {
                let mut last_beat = std::time::Instant::now();
                while !s.stop.load(Ordering::SeqCst) {
                    let mut st = s.lock();
                    trigger_due(&mut st);
                    // Task managers hear from the job manager at least this often: one that
                    // does not (a cut link) stops its part rather than run on alone.
                    if last_beat.elapsed() >= super::taskmanager::HEARTBEAT_INTERVAL {
                        last_beat = std::time::Instant::now();
                        for t in st.task_managers.values_mut() {
                            let _ = t.writer.send(&Message::Heartbeat);
                        }
                    }
                    drop(st);
                    std::thread::sleep(TRIGGER_TICK);
                }
            })
            .map_err(|e| JobError::Cluster(format!("the job manager's thread: {e}")))?;
        for record in recovered {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("shardflow-jm-job{}", record.job))
                .spawn(move || recover(&s, record))
                .map_err(|e| JobError::Cluster(format!("the job manager's thread: {e}")))?;
        }
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shardflow-jobmanager".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("shardflow-jm-conn".into())
                        .spawn(move || serve(&s, stream));
                }
            })
            .map_err(|e| JobError::Cluster(format!("the job manager's thread: {e}")))?;
        Ok(Self {
            shared,
            addr,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Task managers registered and ready (their data listener known).
    pub fn task_managers(&self) -> usize {
        self.shared
            .lock()
            .task_managers
            .values()
            .filter(|t| t.data_addr.is_some())
            .count()
    }

    /// Connections refused (they failed the secret's handshake).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JobManager {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.shared.lock().task_managers.values() {
            t.writer.shutdown();
        }
        // Wakes the accept loop.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The least time a checkpoint may take before it is abandoned (20 intervals otherwise).
const CHECKPOINT_TIMEOUT_MIN: Duration = Duration::from_secs(60);
/// How long a write to a task manager may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the job manager looks for checkpoints to trigger.
const TRIGGER_TICK: Duration = Duration::from_millis(20);

/// Triggers the checkpoints that are due: one in flight per job at a time, every job's
/// interval after the last trigger, once every task manager of the job is ready.
fn trigger_due(st: &mut State) {
    let mut sends = Vec::new();
    for (&job, j) in st.jobs.iter_mut() {
        let Some(c) = j.checkpoints.as_mut() else {
            continue;
        };
        // A part that never comes (its task manager declined without saying, or lost it):
        // the checkpoint is abandoned and the next one triggered.
        let timeout = (c.interval * 20).max(CHECKPOINT_TIMEOUT_MIN);
        if c.last_trigger.is_some_and(|t| t.elapsed() > timeout) && !c.pending.is_empty() {
            eprintln!(
                "job manager: job {job}: checkpoints {:?} not complete within {timeout:?}; abandoned",
                c.pending.keys().collect::<Vec<_>>()
            );
            c.abandon("not complete in time");
        }
        if c.stopped {
            for a in c.savepoints.drain(..) {
                let _ = a
                    .reply
                    .send(Err("a part of the job ended: no savepoint".into()));
            }
            continue;
        }
        let savepoint = !c.savepoints.is_empty();
        // Every part ended: nothing more to checkpoint (the job commits and ends).
        if j.waiting.is_empty() {
            continue;
        }
        if !c.pending.is_empty()
            || c.ready.len() < j.parts.len()
            || (!savepoint && c.last_trigger.is_some_and(|t| t.elapsed() < c.interval))
        {
            continue;
        }
        let id = c.next_id;
        c.next_id += 1;
        c.last_trigger = Some(std::time::Instant::now());
        c.pending.insert(id, BTreeMap::new());
        if savepoint {
            let ask = c.savepoints.remove(0);
            c.savepoints_pending.insert(id, ask);
        }
        for p in &j.parts {
            sends.push((p.task_manager, job, j.attempt, id, savepoint));
        }
    }
    for (tm, job, attempt, id, savepoint) in sends {
        if let Some(t) = st.task_managers.get_mut(&tm) {
            let _ = t.writer.send(&Message::TriggerCheckpoint {
                job,
                attempt,
                id,
                savepoint,
            });
        }
    }
}

fn serve(s: &Arc<Shared>, stream: std::net::TcpStream) {
    let (mut conn, _) = match Connection::accept(stream, 0, &s.config.secret) {
        Ok(c) => c,
        Err(e) => {
            if !s.stop.load(Ordering::SeqCst) {
                s.refused.fetch_add(1, Ordering::Relaxed);
                eprintln!("job manager: refused a connection: {e}");
            }
            return;
        }
    };
    match conn.recv() {
        Ok(Message::Register {
            cores,
            host,
            machine,
            shm_dir,
            pid,
        }) => serve_task_manager(s, conn, cores, host, machine, shm_dir, pid),
        Ok(Message::Submit {
            name,
            args,
            parallelism,
        }) => serve_submit(s, conn, name, args, parallelism),
        Ok(Message::ListJobs) => {
            let running = s
                .lock()
                .jobs
                .iter()
                .map(|(&job, j)| JobInfo {
                    job,
                    name: j.name.clone(),
                    attempt: j.attempt,
                    parallelism: shards_of(&j.parts),
                    task_managers: j.parts.iter().map(|p| p.task_manager).collect(),
                })
                .collect();
            let _ = conn.send(&Message::Jobs { running });
        }
        Ok(Message::SavepointJob { name, dir, cancel }) => {
            let (reply, answer) = std::sync::mpsc::channel();
            let asked = {
                let mut st = s.lock();
                match find_job(&st, &name)
                    .map(|job| st.jobs.get_mut(&job).and_then(|j| j.checkpoints.as_mut()))
                {
                    Err(e) => Err(e),
                    Ok(None) => Err(format!(
                        "job '{name}' takes no checkpoints (run it with --checkpoint-dir)"
                    )),
                    Ok(Some(c)) => {
                        c.savepoints.push(SavepointAsk {
                            dir: dir.into(),
                            reply,
                            cancel,
                        });
                        Ok(())
                    }
                }
            };
            let answer = asked.and_then(|()| {
                answer
                    .recv()
                    .unwrap_or_else(|_| Err("the job ended first".into()))
            });
            let _ = conn.send(&match answer {
                Ok(path) => Message::SavepointTaken { path },
                Err(reason) => Message::Refused { reason },
            });
        }
        Ok(Message::CancelJob { name }) => {
            let mut st = s.lock();
            let found = find_job(&st, &name);
            if let Ok(job) = found {
                if let Some(j) = st.jobs.get_mut(&job) {
                    j.cancelled = true;
                }
                cancel_job(&mut st, job, "cancelled".to_string());
            }
            drop(st);
            let _ = conn.send(&match found {
                Ok(job) => Message::Cancelled { job },
                Err(reason) => Message::Refused { reason },
            });
        }
        Ok(other) => {
            let _ = conn.send(&Message::Refused {
                reason: format!("a job manager does not take {other:?} first"),
            });
        }
        Err(e) => eprintln!("job manager: {}: {e}", conn.peer()),
    }
}

/// The running job `key` names: its id, or its name if no other running job has that name.
fn find_job(st: &State, key: &str) -> Result<u64, String> {
    if let Ok(id) = key.parse::<u64>()
        && st.jobs.contains_key(&id)
    {
        return Ok(id);
    }
    let named: Vec<u64> = st
        .jobs
        .iter()
        .filter(|(_, j)| j.name == key)
        .map(|(id, _)| *id)
        .collect();
    match named[..] {
        [] => Err(format!("no running job named '{key}'")),
        [one] => Ok(one),
        _ => Err(format!(
            "{} running jobs are named '{key}' (ids {named:?}): give the id",
            named.len()
        )),
    }
}

/// Fails a job's attempt with `why` (the first reason stands) and cancels its other parts.
fn cancel_job(st: &mut State, job: u64, why: String) {
    let Some(j) = st.jobs.get_mut(&job) else {
        return;
    };
    if j.error.is_none() {
        j.error = Some(why);
    }
    let attempt = j.attempt;
    let waiting: Vec<u32> = j.waiting.iter().copied().collect();
    for tm in waiting {
        if let Some(t) = st.task_managers.get_mut(&tm) {
            let _ = t.writer.send(&Message::CancelAttempt { job, attempt });
        }
    }
}

fn serve_task_manager(
    s: &Arc<Shared>,
    mut conn: Connection,
    cores: u32,
    host: String,
    machine: String,
    shm_dir: String,
    pid: u32,
) {
    let peer = conn.peer().to_string();
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    // A task manager that cannot take a message within this long is as good as lost; the
    // state lock is never held for longer on its account.
    let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
    let (id, first_cpu) = {
        let mut st = s.lock();
        let id = st.next_task_manager;
        // Its machine's task managers so far take the CPUs before its own.
        let first_cpu = st
            .task_managers
            .values()
            .filter(|t| t.machine == machine)
            .map(|t| t.cores)
            .sum::<u32>();
        st.next_task_manager += 1;
        st.task_managers.insert(
            id,
            TaskManagerEntry {
                pid,
                cores,
                host,
                machine,
                shm_dir,
                data_addr: None,
                writer,
            },
        );
        (id, first_cpu)
    };
    if conn.send(&Message::Registered { id, first_cpu }).is_err() {
        s.lock().task_managers.remove(&id);
        return;
    }
    let _ = conn.set_read_timeout(Some(s.config.heartbeat_timeout));
    let lost = loop {
        match conn.recv() {
            Ok(Message::DataAddress { addr }) => {
                eprintln!(
                    "job manager: task manager {id} at {peer} offers {cores} shards, data on {addr}"
                );
                if let Some(t) = s.lock().task_managers.get_mut(&id) {
                    t.data_addr = Some(addr);
                }
                s.changed.notify_all();
            }
            Ok(Message::Heartbeat) => {}
            Ok(Message::JobEndCommitted {
                job,
                attempt,
                error,
            }) => {
                let mut st = s.lock();
                if let Some(j) = st.jobs.get_mut(&job).filter(|j| j.attempt == attempt) {
                    j.committing.remove(&id);
                    if let Some(e) = error
                        && j.error.is_none()
                    {
                        j.error = Some(format!("task manager {id} committing the output: {e}"));
                    }
                }
                drop(st);
                s.changed.notify_all();
            }
            Ok(Message::CheckpointsReady {
                job,
                attempt,
                dir,
                base,
                interval_ms,
                retain,
            }) => {
                let mut st = s.lock();
                if let Some(j) = st.jobs.get_mut(&job).filter(|j| j.attempt == attempt) {
                    let c = j.checkpoints.get_or_insert_with(|| Checkpointing {
                        dir: dir.clone().into(),
                        interval: Duration::from_millis(interval_ms.max(1)),
                        retain: (retain as usize).max(1),
                        next_id: base + 1,
                        ready: BTreeSet::new(),
                        last_trigger: None,
                        pending: BTreeMap::new(),
                        committed: Default::default(),
                        stopped: false,
                        savepoints: Vec::new(),
                        savepoints_pending: BTreeMap::new(),
                    });
                    let first = c.ready.is_empty() && c.committed.is_empty();
                    if c.dir != std::path::Path::new(&dir) {
                        let why = format!(
                            "task manager {id} checkpoints into {dir}, another into {} (they must share one directory)",
                            c.dir.display()
                        );
                        cancel_job(&mut st, job, why);
                    } else {
                        c.next_id = c.next_id.max(base + 1);
                        c.ready.insert(id);
                        if first {
                            // A job manager that restarts takes the job up from there.
                            s.records.save(&JobRecord {
                                job,
                                name: j.name.clone(),
                                args: j.args.clone(),
                                parallelism: j.parallelism,
                                cores: cores_of(&j.parts),
                                checkpoint_dir: Some(dir.clone()),
                            });
                        }
                    }
                }
            }
            Ok(Message::CheckpointPart {
                job,
                attempt,
                id: ck,
                acks,
                ..
            }) => {
                let mut st = s.lock();
                let Some(j) = st.jobs.get_mut(&job).filter(|j| j.attempt == attempt) else {
                    continue;
                };
                let tms = j.parts.len();
                let name = j.name.clone();
                let Some(c) = j.checkpoints.as_mut() else {
                    continue;
                };
                let snapshots = crate::checkpoint::decode_snapshots(&acks);
                let Some(parts) = c.pending.get_mut(&ck) else {
                    continue; // abandoned meanwhile
                };
                match snapshots {
                    Ok(snapshots) => {
                        parts.insert(id, snapshots);
                    }
                    Err(e) => {
                        c.pending.remove(&ck);
                        eprintln!(
                            "job manager: checkpoint {ck} of job {job}: task manager {id}'s part: {e}"
                        );
                        continue;
                    }
                }
                if parts.len() == tms {
                    match c.complete(ck) {
                        Ok(ask) => {
                            if ask.as_ref().is_some_and(|a| a.cancel) {
                                j.cancelled = true;
                            }
                            eprintln!("job manager: job {job} '{name}' checkpoint {ck} complete");
                            let targets: Vec<u32> =
                                j.parts.iter().map(|p| p.task_manager).collect();
                            for tm in targets {
                                if let Some(t) = st.task_managers.get_mut(&tm) {
                                    let _ = t.writer.send(&Message::CheckpointComplete {
                                        job,
                                        attempt,
                                        id: ck,
                                    });
                                }
                            }
                        }
                        Err(e) => eprintln!("job manager: job {job}: {e}"),
                    }
                    if st
                        .jobs
                        .get(&job)
                        .is_some_and(|j| j.cancelled && j.error.is_none())
                    {
                        cancel_job(&mut st, job, "cancelled after a savepoint".into());
                    }
                }
            }
            Ok(Message::CheckpointDeclined {
                job,
                attempt,
                id: ck,
                reason,
            }) => {
                let mut st = s.lock();
                if let Some(c) = st
                    .jobs
                    .get_mut(&job)
                    .filter(|j| j.attempt == attempt)
                    .and_then(|j| j.checkpoints.as_mut())
                {
                    c.pending.remove(&ck);
                }
                eprintln!(
                    "job manager: job {job} checkpoint {ck} declined by task manager {id}: {reason}"
                );
            }
            Ok(Message::AttemptEnded {
                job,
                attempt,
                error,
            }) => {
                let mut st = s.lock();
                let failed = match st.jobs.get_mut(&job) {
                    Some(j) if j.attempt == attempt => {
                        j.waiting.remove(&id);
                        // A part that finished goes on answering checkpoints with its last
                        // snapshots; one that failed stops them (the attempt is over).
                        if let Some(c) = j.checkpoints.as_mut()
                            && error.is_some()
                        {
                            c.stopped = true;
                            c.abandon("a part of the job failed");
                        }
                        error.map(|e| format!("task manager {id}: {e}"))
                    }
                    _ => None,
                };
                if let Some(why) = failed {
                    cancel_job(&mut st, job, why);
                }
                drop(st);
                s.changed.notify_all();
            }
            Ok(other) => eprintln!("job manager: task manager {id} sent {other:?}; ignored"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break format!("no heartbeat for {:?}", s.config.heartbeat_timeout);
            }
            Err(e) => break format!("connection lost ({e})"),
        }
    };
    // Lost: every job with a part on it fails, and its other parts are cancelled.
    let mut st = s.lock();
    st.task_managers.remove(&id);
    for j in st.jobs.values_mut() {
        if j.committing.remove(&id) && j.error.is_none() {
            j.error = Some(format!(
                "task manager {id} at {peer} was lost committing the job's last output: {lost}"
            ));
        }
    }
    let jobs: Vec<u64> = st
        .jobs
        .iter()
        .filter(|(_, j)| j.waiting.contains(&id))
        .map(|(job, _)| *job)
        .collect();
    for job in jobs {
        if let Some(j) = st.jobs.get_mut(&job) {
            j.waiting.remove(&id);
        }
        cancel_job(
            &mut st,
            job,
            format!("task manager {id} at {peer} was lost: {lost}"),
        );
    }
    drop(st);
    if !s.stop.load(Ordering::SeqCst) {
        eprintln!("job manager: task manager {id} at {peer} lost: {lost}");
    }
    conn.shutdown();
    s.changed.notify_all();
}

/// Splits `parallelism` shards over task managers in proportion to their cores (each of the
/// first ones gets one more while a remainder is left); returns (id, first shard, shards).
pub fn assign(cores: &[(u32, u32)], parallelism: u32) -> Vec<(u32, u32, u32)> {
    let total: u64 = cores.iter().map(|&(_, c)| c as u64).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut counts: Vec<u32> = cores
        .iter()
        .map(|&(_, c)| (parallelism as u64 * c as u64 / total) as u32)
        .collect();
    let mut left = parallelism - counts.iter().sum::<u32>();
    for c in counts.iter_mut() {
        if left == 0 {
            break;
        }
        *c += 1;
        left -= 1;
    }
    let mut first = 0;
    cores
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(&(id, _), n)| {
            let part = (id, first, n);
            first += n;
            part
        })
        .collect()
}

/// Places `p` shards on free cores (each task manager's id and its free cores): for each
/// task manager that gets shards, (id, first shard, shards, the cores they take). Shards are
/// split in proportion to the free cores ([`assign`]); a part takes one core a shard, or
/// all of its task manager's free cores when it has more shards than that.
pub fn place(free: &[(u32, Vec<u32>)], p: u32) -> Vec<(u32, u32, u32, Vec<u32>)> {
    let counts: Vec<(u32, u32)> = free.iter().map(|(id, f)| (*id, f.len() as u32)).collect();
    assign(&counts, p)
        .into_iter()
        .map(|(id, first, n)| {
            let cores = &free
                .iter()
                .find(|(f, _)| *f == id)
                .expect("assigned from free")
                .1;
            (
                id,
                first,
                n,
                cores[..(n as usize).min(cores.len())].to_vec(),
            )
        })
        .collect()
}

/// Deploys attempt `attempt` of `job` on the task managers' free cores: `parallelism`
/// shards (one on each free core if `None`), restoring from `restore_from`. Returns its
/// parts, or why not.
///
/// The shards are split over the task managers with free cores in proportion to them
/// ([`assign`]); each part takes as many of its task manager's free cores as it has shards.
/// A job that asks for more shards than there are free cores gets every free core, its
/// shards sharing them (as in local mode, where a job may have more shards than the machine
/// has cores); it never shares a core with another job.
fn deploy(
    st: &mut State,
    job: u64,
    attempt: u32,
    name: &str,
    args: &[String],
    parallelism: Option<u32>,
    restore_from: Option<String>,
) -> Result<Vec<Part>, String> {
    let free: Vec<(u32, Vec<u32>)> = st
        .task_managers
        .keys()
        .map(|&id| (id, free_cores_of(st, id)))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if free.is_empty() {
        let registered = st.task_managers.len();
        return Err(if registered == 0 {
            "no task manager is registered".into()
        } else {
            format!(
                "every core of the {registered} task manager(s) registered runs a job ({} running)",
                st.jobs.len()
            )
        });
    }
    let p = parallelism.unwrap_or_else(|| free.iter().map(|(_, f)| f.len() as u32).sum());
    if p == 0 {
        return Err("a job needs at least one shard".into());
    }
    let parts: Vec<Part> = place(&free, p)
        .into_iter()
        .map(|(id, first, n, cores)| {
            let t = &st.task_managers[&id];
            Part {
                task_manager: id,
                first_shard: first,
                shards: n,
                cores,
                host: t.host.clone(),
                data_addr: t
                    .data_addr
                    .clone()
                    .expect("free cores: its data address is known"),
                shm_dir: t.shm_dir.clone(),
                pid: t.pid,
            }
        })
        .collect();
    let tag = st.next_tag;
    st.next_tag = st.next_tag.wrapping_add(1).max(1);
    let deployment = Deployment {
        job,
        attempt,
        name: name.to_string(),
        args: args.to_vec(),
        parallelism: p,
        parts: parts.clone(),
        tag,
        restore_from,
    };
    let checkpoints = st.jobs.get_mut(&job).and_then(|j| j.checkpoints.take());
    st.jobs.insert(
        job,
        Job {
            name: name.to_string(),
            args: args.to_vec(),
            parallelism,
            attempt,
            parts: parts.clone(),
            waiting: parts.iter().map(|p| p.task_manager).collect(),
            error: None,
            // The directory and the checkpoints kept carry over; the next ids too.
            checkpoints: checkpoints.map(|mut c| {
                c.ready.clear();
                c.pending.clear();
                c.stopped = false;
                c.last_trigger = None;
                c
            }),
            committing: BTreeSet::new(),
            cancelled: false,
        },
    );
    for part in &parts {
        let t = st
            .task_managers
            .get_mut(&part.task_manager)
            .expect("chosen from the registered");
        if let Err(e) = t.writer.send(&Message::Deploy(deployment.clone())) {
            let why = format!("deploying to task manager {}: {e}", part.task_manager);
            cancel_job(st, job, why);
            break;
        }
    }
    eprintln!(
        "job manager: job {job} '{name}' attempt {attempt} at P = {p} on task managers {:?}{}",
        parts.iter().map(|p| p.task_manager).collect::<Vec<_>>(),
        deployment
            .restore_from
            .as_deref()
            .map_or_else(String::new, |r| format!(", restoring from {r}"))
    );
    Ok(parts)
}

/// The cores of task manager `id` that no job's running part takes (a part runs until its
/// task manager says it ended, or is lost); none until its data listener is known.
fn free_cores_of(st: &State, id: u32) -> Vec<u32> {
    let Some(t) = st.task_managers.get(&id).filter(|t| t.data_addr.is_some()) else {
        return Vec::new();
    };
    let taken: Vec<u32> = st
        .jobs
        .values()
        .filter(|j| j.waiting.contains(&id))
        .flat_map(|j| j.parts.iter().filter(|p| p.task_manager == id))
        .flat_map(|p| p.cores.iter().copied())
        .collect();
    (0..t.cores).filter(|c| !taken.contains(c)).collect()
}

/// Cores of the registered task managers that no job takes.
fn free_cores(st: &State) -> u32 {
    st.task_managers
        .keys()
        .map(|&id| free_cores_of(st, id).len() as u32)
        .sum()
}

/// The cores a job's parts take.
fn cores_of(parts: &[Part]) -> u32 {
    parts.iter().map(|p| p.cores.len() as u32).sum()
}

/// The shards of a job's parts: its parallelism.
fn shards_of(parts: &[Part]) -> u32 {
    parts.iter().map(|p| p.shards).sum()
}

/// Waits for a change (or a while) with the state unlocked.
fn wait<'a>(s: &'a Shared, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    s.changed
        .wait_timeout(st, Duration::from_millis(200))
        .unwrap_or_else(|e| e.into_inner())
        .0
}

/// How long a job manager that restarted waits for as many cores as a job had before it
/// takes the job up on fewer.
const RECOVERY_GRACE: Duration = Duration::from_secs(10);
/// How long a job manager that restarted waits for task managers to take its jobs up.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);
/// Attempts a job may take (the first and its restarts after failures).
pub const ATTEMPTS_MAX: u32 = 4;
/// How long a failed job waits for a free task manager to restart on.
const RESTART_WAIT: Duration = Duration::from_secs(30);

fn serve_submit(
    s: &Arc<Shared>,
    mut conn: Connection,
    name: String,
    args: Vec<String>,
    parallelism: Option<u32>,
) {
    let mut st = s.lock();
    let job = st.next_job;
    st.next_job += 1;
    // No free core: wait for one (a job ending, a task manager registering), telling the
    // client once why.
    let since = std::time::Instant::now();
    let mut waiting = false;
    let parts = loop {
        match deploy(&mut st, job, 1, &name, &args, parallelism, None) {
            Ok(parts) => break parts,
            Err(reason)
                if parallelism != Some(0)
                    && free_cores(&st) == 0
                    && since.elapsed() < s.config.resource_wait =>
            {
                if !waiting {
                    waiting = true;
                    eprintln!("job manager: job {job} '{name}' waits for a free core: {reason}");
                    let _ = conn.send(&Message::Waiting { reason });
                }
                st = wait(s, st);
            }
            Err(reason) => {
                st.jobs.remove(&job);
                drop(st);
                let reason = if waiting {
                    format!("{reason} (waited {:?} for a free core)", since.elapsed())
                } else {
                    reason
                };
                let _ = conn.send(&Message::Refused { reason });
                return;
            }
        }
    };
    let p: u32 = shards_of(&parts);
    let record = JobRecord {
        job,
        name: name.clone(),
        args: args.clone(),
        parallelism,
        cores: cores_of(&parts),
        checkpoint_dir: None,
    };
    s.records.save(&record);
    drop(st);
    let _ = conn.send(&Message::Accepted {
        job,
        parallelism: p,
    });
    let (outcome, attempts, parts) = run_job(s, record);
    let _ = conn.send(&Message::JobEnded {
        error: outcome,
        task_managers: parts.len() as u32,
        attempts,
        parallelism: shards_of(&parts),
    });
}

/// Watches a deployed job to its end: restarts failed attempts from its newest checkpoint,
/// commits its sinks' last output when every part finished. Returns its error (none: it
/// finished), the attempts it took and its last attempt's parts; forgets its record.
fn run_job(s: &Arc<Shared>, record: JobRecord) -> (Option<String>, u32, Vec<Part>) {
    let JobRecord {
        job,
        name,
        args,
        parallelism,
        ..
    } = record.clone();
    let mut st = s.lock();
    let outcome: Option<String> = loop {
        // Every part of the attempt ends (or its task manager is lost).
        while st.jobs.get(&job).is_some_and(|j| !j.waiting.is_empty()) {
            st = wait(s, st);
        }
        let j = st.jobs.get_mut(&job).expect("jobs are removed only here");
        let Some(error) = j.error.clone() else {
            // Every part finished: now their sinks' last output is committed (not before: a
            // part that failed would have restarted the job from a checkpoint, replaying it).
            j.committing = j.parts.iter().map(|p| p.task_manager).collect();
            let attempt = j.attempt;
            for tm in j.committing.clone() {
                if let Some(t) = st.task_managers.get_mut(&tm) {
                    let _ = t.writer.send(&Message::CommitJobEnd { job, attempt });
                }
            }
            while st
                .jobs
                .get(&job)
                .is_some_and(|j| !j.committing.is_empty() && j.error.is_none())
            {
                st = wait(s, st);
            }
            break st.jobs.get(&job).and_then(|j| j.error.clone());
        };
        // Failed: restart from the newest checkpoint, if the job takes checkpoints (and no
        // one cancelled it).
        if j.cancelled {
            break Some(error);
        }
        let Some(dir) = j.checkpoints.as_ref().map(|c| c.dir.display().to_string()) else {
            break Some(error);
        };
        if j.attempt >= ATTEMPTS_MAX {
            break Some(format!("{error} (after {} attempts)", j.attempt));
        }
        let attempt = j.attempt + 1;
        let restore = shardflow_state::CheckpointStorage::new(&dir)
            .ok()
            .and_then(|c| c.list().ok())
            .is_some_and(|l| l.iter().any(|(_, m)| m.is_ok()))
            .then(|| dir.clone());
        eprintln!(
            "job manager: job {job} '{name}' attempt {} failed ({error}); restarting",
            attempt - 1
        );
        let since = std::time::Instant::now();
        // A replacement for a lost task manager may be on its way: wait a little for as many
        // free cores as the attempt had before restarting on fewer (a rescale).
        let had = cores_of(&j.parts);
        while since.elapsed() < s.config.restart_grace && free_cores(&st) < had {
            st = wait(s, st);
        }
        loop {
            match deploy(
                &mut st,
                job,
                attempt,
                &name,
                &args,
                parallelism,
                restore.clone(),
            ) {
                Ok(_) => break,
                // No free task manager yet: one may register (or finish another job).
                Err(_) if since.elapsed() < RESTART_WAIT => st = wait(s, st),
                Err(why) => {
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.error = Some(format!("{error}; no restart: {why}"));
                        j.waiting.clear();
                    }
                    break;
                }
            }
        }
        if st.jobs.get(&job).is_some_and(|j| j.attempt < attempt) {
            break st.jobs.get(&job).and_then(|j| j.error.clone());
        }
    };
    let j = st.jobs.remove(&job).expect("jobs are removed only here");
    drop(st);
    s.records.remove(job);
    eprintln!(
        "job manager: job {job} '{name}' {}",
        outcome
            .as_deref()
            .map_or_else(|| "finished".to_string(), |e| format!("failed: {e}"))
    );
    (outcome, j.attempt, j.parts)
}

/// What the job manager keeps of a running job, to take it up again after its own restart.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job: u64,
    pub name: String,
    pub args: Vec<String>,
    pub parallelism: Option<u32>,
    /// The cores its attempt took (a job manager that restarts waits a while for as many
    /// to come back before it takes the job up on fewer).
    pub cores: u32,
    /// Where its checkpoints go, once known.
    pub checkpoint_dir: Option<String>,
}

/// The job manager's records of its running jobs (`job-<id>` files in its state directory),
/// written atomically (a temporary file renamed); none without a directory.
struct Records {
    dir: Option<std::path::PathBuf>,
}

impl Records {
    fn path(&self, job: u64) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("job-{job}")))
    }

    fn save(&self, r: &JobRecord) {
        let Some(path) = self.path(r.job) else {
            return;
        };
        let written = rkyv::to_bytes::<rkyv::rancor::Error>(r)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &bytes[..])
                    .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!(
                "job manager: cannot record job {} in {}: {e}",
                r.job,
                path.display()
            );
        }
    }

    fn remove(&self, job: u64) {
        if let Some(p) = self.path(job) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The jobs recorded as running (a record that does not decode is named and skipped).
    fn load(&self) -> Vec<JobRecord> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("job-") || name.ends_with(".tmp") {
                continue;
            }
            let decoded = std::fs::read(e.path())
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    let mut aligned = rkyv::util::AlignedVec::<16>::new();
                    aligned.extend_from_slice(&b);
                    rkyv::from_bytes::<JobRecord, rkyv::rancor::Error>(&aligned)
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(r) => out.push(r),
                Err(err) => eprintln!(
                    "job manager: skipped the job record {}: {err}",
                    e.path().display()
                ),
            }
        }
        out.sort_by_key(|r| r.job);
        out
    }
}

/// Takes up a job recorded by an earlier job manager: once task managers are free, deploys it
/// from its newest checkpoint (from the start if it has none), and watches it to its end.
fn recover(s: &Arc<Shared>, record: JobRecord) {
    let job = record.job;
    eprintln!(
        "job manager: taking up job {job} '{}' from before a restart",
        record.name
    );
    let restore = record.checkpoint_dir.clone().filter(|dir| {
        shardflow_state::CheckpointStorage::new(dir)
            .ok()
            .and_then(|c| c.list().ok())
            .is_some_and(|l| l.iter().any(|(_, m)| m.is_ok()))
    });
    let mut st = s.lock();
    let since = std::time::Instant::now();
    // The task managers come back one by one: wait for the cores the job had (a while).
    while since.elapsed() < RECOVERY_GRACE && free_cores(&st) < record.cores {
        st = wait(s, st);
    }
    loop {
        match deploy(
            &mut st,
            job,
            1,
            &record.name,
            &record.args,
            record.parallelism,
            restore.clone(),
        ) {
            Ok(_) => break,
            Err(_) if since.elapsed() < RECOVERY_WAIT => st = wait(s, st),
            Err(why) => {
                st.jobs.remove(&job);
                drop(st);
                eprintln!("job manager: job {job} not taken up: {why}");
                s.records.remove(job);
                return;
            }
        }
    }
    drop(st);
    let _ = run_job(s, record);
}

/// Submits a job to the job manager at `addr` and waits for its end: `Ok(P)` once every part
/// finished, or the job's error.
pub fn submit(
    addr: &str,
    secret: &[u8],
    name: &str,
    args: Vec<String>,
    parallelism: Option<u32>,
    on_accepted: impl FnOnce(u64, u32),
) -> Result<u32, JobError> {
    let mut conn = Connection::connect(addr, 0, secret)
        .map_err(|e| JobError::Cluster(format!("job manager {addr}: {e}")))?;
    conn.send(&Message::Submit {
        name: name.to_string(),
        args,
        parallelism,
    })
    .map_err(|e| JobError::Cluster(format!("job manager {addr}: {e}")))?;
    let p = loop {
        match conn.recv() {
            Ok(Message::Waiting { reason }) => {
                eprintln!("waiting for a free core: {reason}");
            }
            Ok(Message::Accepted { job, parallelism }) => {
                on_accepted(job, parallelism);
                break parallelism;
            }
            Ok(Message::Refused { reason }) => {
                return Err(JobError::Cluster(format!(
                    "job manager {addr} refused the job: {reason}"
                )));
            }
            Ok(other) => {
                return Err(JobError::Cluster(format!(
                    "job manager {addr} answered {other:?}"
                )));
            }
            Err(e) => return Err(JobError::Cluster(format!("job manager {addr}: {e}"))),
        }
    };
    match conn.recv() {
        Ok(Message::JobEnded {
            error: None,
            attempts,
            parallelism,
            ..
        }) => {
            if attempts > 1 {
                eprintln!(
                    "restarted {} time(s) after failures; the last attempt ran at P = {parallelism}",
                    attempts - 1
                );
            }
            Ok(p)
        }
        Ok(Message::JobEnded { error: Some(e), .. }) => {
            Err(JobError::Cluster(format!("the job failed: {e}")))
        }
        Ok(other) => Err(JobError::Cluster(format!(
            "job manager {addr} answered {other:?}"
        ))),
        Err(e) => Err(JobError::Cluster(format!(
            "job manager {addr} went away: {e}"
        ))),
    }
}

/// The jobs running on the job manager at `addr`.
pub fn list(addr: &str, secret: &[u8]) -> Result<Vec<JobInfo>, JobError> {
    request(addr, secret, Message::ListJobs).map(|m| match m {
        Message::Jobs { running } => running,
        _ => Vec::new(),
    })
}

/// Takes a savepoint of the running job `name` (its name, or its id) into a new directory under `dir` (which
/// the job manager writes: shared storage); with `cancel`, stops the job once it is taken.
/// Returns the savepoint's path.
pub fn savepoint(
    addr: &str,
    secret: &[u8],
    name: &str,
    dir: &std::path::Path,
    cancel: bool,
) -> Result<String, JobError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match request(
        addr,
        secret,
        Message::SavepointJob {
            name: name.to_string(),
            dir: dir.display().to_string(),
            cancel,
        },
    )? {
        Message::SavepointTaken { path } => Ok(path),
        other => Err(JobError::Cluster(format!(
            "job manager {addr} answered {other:?}"
        ))),
    }
}

/// Cancels the running job `name` (its name, or its id); returns its id.
pub fn cancel(addr: &str, secret: &[u8], name: &str) -> Result<u64, JobError> {
    match request(
        addr,
        secret,
        Message::CancelJob {
            name: name.to_string(),
        },
    )? {
        Message::Cancelled { job } => Ok(job),
        other => Err(JobError::Cluster(format!(
            "job manager {addr} answered {other:?}"
        ))),
    }
}

fn request(addr: &str, secret: &[u8], m: Message) -> Result<Message, JobError> {
    let fail = |e: String| JobError::Cluster(format!("job manager {addr}: {e}"));
    let mut conn = Connection::connect(addr, 0, secret).map_err(|e| fail(e.to_string()))?;
    conn.send(&m).map_err(|e| fail(e.to_string()))?;
    match conn.recv().map_err(|e| fail(e.to_string()))? {
        Message::Refused { reason } => Err(fail(reason)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::{assign, place};

    #[test]
    fn jobs_placed_one_after_another_never_share_a_core() {
        // Jobs of random P placed on what the ones before left free (some ending between):
        // every shard is placed, a part's cores are free ones of its task manager, one a shard
        // up to all it has, and no two running jobs hold one core.
        let cores = [(1u32, 4u32), (2, 2), (3, 3)];
        let mut seed = 0x51ab_u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut running: Vec<Vec<(u32, Vec<u32>)>> = Vec::new();
        for round in 0..2_000 {
            if !running.is_empty() && next(3) == 0 {
                let i = next(running.len() as u64) as usize;
                running.remove(i);
            }
            let free: Vec<(u32, Vec<u32>)> = cores
                .iter()
                .map(|&(id, n)| {
                    let taken = |c: &u32| {
                        running
                            .iter()
                            .flatten()
                            .any(|(t, cs)| *t == id && cs.contains(c))
                    };
                    (id, (0..n).filter(|c| !taken(c)).collect::<Vec<_>>())
                })
                .filter(|(_, f)| !f.is_empty())
                .collect();
            let total: u32 = free.iter().map(|(_, f)| f.len() as u32).sum();
            if total == 0 {
                running.clear();
                continue;
            }
            let p = 1 + next(12) as u32;
            let parts = place(&free, p);
            assert_eq!(parts.iter().map(|x| x.2).sum::<u32>(), p, "round {round}");
            let mut job = Vec::new();
            for (id, _, n, cs) in parts {
                let f = &free.iter().find(|(t, _)| *t == id).unwrap().1;
                assert_eq!(cs.len(), (n as usize).min(f.len()), "round {round}");
                assert!(cs.iter().all(|c| f.contains(c)), "round {round}");
                let mut dedup = cs.clone();
                dedup.dedup();
                assert_eq!(dedup, cs, "round {round}");
                job.push((id, cs));
            }
            if p <= total {
                let used: u32 = job.iter().map(|(_, cs)| cs.len() as u32).sum();
                assert_eq!(used, p, "round {round}: one core a shard");
            }
            running.push(job);
        }
    }

    #[test]
    fn shards_follow_cores() {
        assert_eq!(assign(&[(1, 2), (2, 2)], 4), vec![(1, 0, 2), (2, 2, 2)]);
        assert_eq!(assign(&[(1, 1), (2, 3)], 4), vec![(1, 0, 1), (2, 1, 3)]);
        assert_eq!(assign(&[(1, 2), (2, 2)], 3), vec![(1, 0, 2), (2, 2, 1)]);
        assert_eq!(assign(&[(1, 2), (2, 2)], 1), vec![(1, 0, 1)]);
        assert_eq!(assign(&[(1, 1), (2, 1)], 5), vec![(1, 0, 3), (2, 3, 2)]);
        for p in 1..40 {
            let a = assign(&[(3, 1), (5, 4), (9, 2)], p);
            assert_eq!(a.iter().map(|x| x.2).sum::<u32>(), p);
            let mut next = 0;
            for (_, first, n) in a {
                assert_eq!(first, next);
                next += n;
            }
        }
    }
}
