//! The task manager: offers this process's cores to a job manager as shards, runs the parts of
//! jobs it is given (as many at once as its cores hold: each part pinned to cores of its own),
//! and moves their records to the other task managers' shards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardflow_shuffle::bell::Bell;
use shardflow_shuffle::link::LinkChannel;
use shardflow_shuffle::shm::{self, ShmConfig};
use shardflow_shuffle::tcp::{NetConfig, Network};
use shardflow_shuffle::{RingConfig, RingReceiver, RingSender};

use super::protocol::{Connection, Deployment, Message, Part, host_id};
use super::{Deployed, JobRunner, with_deployment};
use crate::checkpoint::{CheckpointParts, Coordinator, JobEndAction, OperatorSnapshot};
use crate::config::{ClusterCheckpoints, ClusterPart, JobControl, RemoteChannels};
use crate::error::JobError;

/// How often a task manager tells the job manager it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a task manager goes on without a word from the job manager (which heart-beats
/// every [`HEARTBEAT_INTERVAL`]).
pub const JOBMANAGER_SILENCE_MAX: Duration = Duration::from_secs(5);
/// How long a sender waits for the receiving task manager to make its shared-memory ring.
const SHM_ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// How a task manager joins a cluster.
#[derive(Debug, Clone)]
pub struct TaskManagerConfig {
    /// The job manager's address.
    pub jobmanager: String,
    /// Shards this task manager offers.
    pub cores: u32,
    pub secret: Vec<u8>,
    /// Where to listen for other task managers' data (default: the interface that reaches the
    /// job manager, any port).
    pub data_bind: Option<SocketAddr>,
    /// Where shared-memory rings and the doorbell live (default `/dev/shm`).
    pub shm_dir: PathBuf,
    /// Which host this is (default: [`host_id`]); task managers of one host share memory.
    pub host: Option<String>,
}

impl TaskManagerConfig {
    pub fn new(jobmanager: impl Into<String>, cores: u32, secret: Vec<u8>) -> Self {
        Self {
            jobmanager: jobmanager.into(),
            cores,
            secret,
            data_bind: None,
            shm_dir: PathBuf::from("/dev/shm"),
            host: None,
        }
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::Cluster(format!("{what}: {e}"))
}

/// Registers with the job manager and serves it until it goes away (an error) or `stop`
/// is set. Each deployment runs on a thread of its own through `runner`.
pub fn run_task_manager(
    config: TaskManagerConfig,
    runner: JobRunner,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), JobError> {
    if config.cores == 0 {
        return Err(JobError::Config(
            "a task manager offers at least one core".into(),
        ));
    }
    // A job manager that goes away may come back (restarted, it takes its jobs up again):
    // register again, for a while.
    let mut lost_since: Option<Instant> = None;
    loop {
        match session(&config, &runner, &stop) {
            Ok(()) => return Ok(()),
            Err(SessionEnd::Refused(e)) => return Err(e),
            Err(SessionEnd::Lost { error, registered }) => {
                if registered {
                    lost_since = None;
                }
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > JOBMANAGER_RECONNECT_MAX {
                    return Err(error);
                }
                if registered {
                    eprintln!("{error}; registering again when it is back");
                }
                std::thread::sleep(RECONNECT_PAUSE);
            }
        }
    }
}

/// Why a session with a job manager ended.
enum SessionEnd {
    /// For good: refused (the secret), or this process cannot serve.
    Refused(JobError),
    /// The job manager is gone or unreachable (it may come back); `registered`: it had
    /// registered this task manager first.
    Lost { error: JobError, registered: bool },
}

impl From<JobError> for SessionEnd {
    /// A problem of this process (a listener, a thread): nothing to wait for.
    fn from(e: JobError) -> Self {
        SessionEnd::Refused(e)
    }
}

/// How long a task manager keeps trying to register with a job manager that went away.
pub const JOBMANAGER_RECONNECT_MAX: Duration = Duration::from_secs(60);
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// How long a task manager waits for its part of a job to stop once cancelled.
const PART_STOP_MAX: Duration = Duration::from_secs(30);

/// One registration with the job manager, served until it ends.
fn session(
    config: &TaskManagerConfig,
    runner: &JobRunner,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), SessionEnd> {
    let jm = config.jobmanager.clone();
    let unreachable = |e: JobError| SessionEnd::Lost {
        error: e,
        registered: false,
    };
    let mut conn = Connection::connect(&jm, 0, &config.secret).map_err(|e| {
        let refused = e.kind() == std::io::ErrorKind::PermissionDenied;
        let e = io(&format!("job manager {jm}"), e);
        if refused {
            SessionEnd::Refused(e)
        } else {
            unreachable(e)
        }
    })?;
    let host = config.host.clone().unwrap_or_else(host_id);
    conn.send(&Message::Register {
        cores: config.cores,
        host: host.clone(),
        machine: super::protocol::machine_id(),
        shm_dir: config.shm_dir.display().to_string(),
        pid: std::process::id(),
    })
    .map_err(|e| unreachable(io(&format!("job manager {jm}"), e)))?;
    let (id, first_cpu) = match conn.recv() {
        Ok(Message::Registered { id, first_cpu }) => (id, first_cpu),
        Ok(Message::Refused { reason }) => {
            return Err(SessionEnd::Refused(JobError::Cluster(format!(
                "job manager {jm} refused: {reason}"
            ))));
        }
        Ok(other) => {
            return Err(SessionEnd::Refused(JobError::Cluster(format!(
                "job manager {jm} answered {other:?} to a registration"
            ))));
        }
        Err(e) => return Err(unreachable(io(&format!("job manager {jm}"), e))),
    };
    let lost = |e: JobError| SessionEnd::Lost {
        error: e,
        registered: true,
    };
    let bind = match config.data_bind {
        Some(b) => b,
        None => {
            let local = conn
                .local_addr()
                .map_err(|e| io("the job manager connection", e))?;
            SocketAddr::new(local.ip(), 0)
        }
    };
    let net = Arc::new(
        Network::start(NetConfig {
            process: id,
            bind,
            secret: config.secret.clone(),
        })
        .map_err(|e| io("the data listener", e))?,
    );
    remove_stale_files(&config.shm_dir);
    let bell = Arc::new(
        Bell::create(
            &config
                .shm_dir
                .join(format!("shardflow-tm{id}-{}.bell", std::process::id())),
        )
        .map_err(|e| io("the shared-memory doorbell", e))?,
    );
    conn.send(&Message::DataAddress {
        addr: net.local_addr().to_string(),
    })
    .map_err(|e| lost(io(&format!("job manager {jm}"), e)))?;
    eprintln!(
        "task manager {id}: {} shards, data on {}, host {host}",
        config.cores,
        net.local_addr()
    );

    let writer = Arc::new(Mutex::new(
        conn.try_clone()
            .map_err(|e| io("the job manager connection", e))?,
    ));
    // Heartbeats, from their own thread: a busy job never delays them.
    {
        let (writer, stop) = (writer.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("shardflow-tm{id}-heartbeat"))
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if lock(&writer).send(&Message::Heartbeat).is_err() {
                        return;
                    }
                    std::thread::sleep(HEARTBEAT_INTERVAL);
                }
            })
            .map_err(|e| io("the heartbeat thread", e))?;
    }
    // The parts of jobs running here.
    let running: Arc<Mutex<Vec<Running>>> = Arc::new(Mutex::new(Vec::new()));
    // Attempts whose part finished, with their sinks' last commits, until the job manager
    // says the job ended (or deploys another attempt).
    let ended: Arc<Mutex<Vec<Arc<TmCheckpoints>>>> = Arc::new(Mutex::new(Vec::new()));
    conn.set_read_timeout(Some(HEARTBEAT_INTERVAL))
        .map_err(|e| io("the job manager connection", e))?;
    let me = TaskManager {
        id,
        cores: config.cores,
        first_cpu: first_cpu as usize,
        host,
        shm_dir: config.shm_dir.clone(),
        net,
        bell,
    };
    let me = Arc::new(me);
    let mut last_heard = Instant::now();
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            cancel_running(&running);
            conn.shutdown();
            return Ok(());
        }
        let m = match conn.recv() {
            Ok(m) => {
                last_heard = Instant::now();
                m
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last_heard.elapsed() > JOBMANAGER_SILENCE_MAX {
                    // Cut off (a link down): the job manager has failed these parts over by
                    // now; running on alone could only compete with their successors.
                    stop_parts(&running);
                    conn.shutdown();
                    return Err(lost(JobError::Cluster(format!(
                        "task manager {id}: nothing from the job manager at {jm} for {:?}",
                        JOBMANAGER_SILENCE_MAX
                    ))));
                }
                continue;
            }
            Err(e) => {
                stop_parts(&running);
                conn.shutdown();
                return Err(lost(JobError::Cluster(format!(
                    "task manager {id}: the job manager at {jm} went away: {e}"
                ))));
            }
        };
        match m {
            Message::Deploy(d) => {
                let control = JobControl::default();
                let checkpoints = Arc::new(TmCheckpoints {
                    job: d.job,
                    attempt: d.attempt,
                    writer: writer.clone(),
                    coordinator: Mutex::new(None),
                    job_end: Mutex::new(Vec::new()),
                });
                {
                    let mut r = lock(&running);
                    let cores = match me.check_deployment(&d, &r) {
                        Ok(cores) => cores,
                        Err(reason) => {
                            drop(r);
                            eprintln!("task manager {id}: refused a deployment: {reason}");
                            let _ = lock(&writer).send(&Message::AttemptEnded {
                                job: d.job,
                                attempt: d.attempt,
                                error: Some(reason),
                            });
                            continue;
                        }
                    };
                    r.push(Running {
                        job: d.job,
                        attempt: d.attempt,
                        cores,
                        control: control.clone(),
                        checkpoints: checkpoints.clone(),
                    });
                }
                // A new attempt: what earlier ones left to commit is void (it restores and
                // re-commits what its checkpoint names).
                lock(&ended).retain(|c| c.job != d.job);
                let (me, runner, writer, running, ended) = (
                    me.clone(),
                    runner.clone(),
                    writer.clone(),
                    running.clone(),
                    ended.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name(format!("shardflow-job{}-{}", d.job, d.attempt))
                    .spawn(move || {
                        let (job, attempt, tag) = (d.job, d.attempt, d.tag);
                        let checkpoints_of_part = checkpoints.clone();
                        let error = me.run_part(d, control, checkpoints, &runner).err();
                        if let Some(e) = &error {
                            eprintln!("task manager {}: job {job} attempt {attempt}: {e}", me.id);
                        }
                        // Its rings are gone: what its peers still send it is dropped.
                        me.net.retire(tag);
                        // Ended before it stops running: a trigger in between finds it.
                        if error.is_none() {
                            lock(&ended).push(checkpoints_of_part);
                        }
                        lock(&running).retain(|r| (r.job, r.attempt) != (job, attempt));
                        let _ = lock(&writer).send(&Message::AttemptEnded {
                            job,
                            attempt,
                            error,
                        });
                    });
                if let Err(e) = spawned {
                    // The session ends, and its parts with it.
                    return Err(io("a job thread", e).into());
                }
            }
            Message::CancelAttempt { job, attempt } => {
                for r in lock(&running)
                    .iter()
                    .filter(|r| (r.job, r.attempt) == (job, attempt))
                {
                    r.control.cancel();
                }
            }
            Message::CommitJobEnd { job, attempt } => {
                let part = {
                    let mut e = lock(&ended);
                    let i = e.iter().position(|c| (c.job, c.attempt) == (job, attempt));
                    i.map(|i| e.remove(i))
                };
                let mut error = None;
                if let Some(part) = part {
                    for action in std::mem::take(&mut *lock(&part.job_end)) {
                        if let Err(e) = action() {
                            error.get_or_insert(e.to_string());
                        }
                    }
                }
                let _ = lock(&writer).send(&Message::JobEndCommitted {
                    job,
                    attempt,
                    error,
                });
            }
            Message::TriggerCheckpoint {
                job,
                attempt,
                id,
                savepoint,
            } => {
                if let Some(c) = coordinator_of(&running, &ended, job, attempt) {
                    c.trigger_id(id, savepoint);
                }
            }
            Message::CheckpointComplete { job, attempt, id } => {
                if let Some(c) = coordinator_of(&running, &ended, job, attempt) {
                    c.completed_globally(id);
                }
            }
            Message::Heartbeat => {}
            other => {
                eprintln!("task manager {id}: ignored a {other:?} from the job manager");
            }
        }
    }
}

/// Removes the doorbells and ring files of task managers that died without cleaning up
/// (killed): `shardflow-tm<id>-<pid>.bell` and `shardflow-r<pid>-...`, with no such process
/// any more. (A ring file is unlinked once both its ends hold it; one left is a ring whose
/// sender never came.)
fn remove_stale_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let bell = name
            .strip_prefix("shardflow-tm")
            .and_then(|r| r.strip_suffix(".bell"))
            .and_then(|r| r.rsplit_once('-'))
            .map(|(_, pid)| pid);
        let ring = name
            .strip_prefix("shardflow-r")
            .and_then(|r| r.split_once('-'))
            .map(|(pid, _)| pid);
        let Some(pid) = bell.or(ring).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The part of a job attempt a task manager runs.
struct Running {
    job: u64,
    attempt: u32,
    /// This task manager's cores it takes.
    cores: Vec<u32>,
    control: JobControl,
    checkpoints: Arc<TmCheckpoints>,
}

fn cancel_running(running: &Mutex<Vec<Running>>) {
    for r in lock(running).iter() {
        r.control.cancel();
    }
}

/// Cancels the running parts and waits (bounded) for them to stop: a new session must not
/// deploy beside parts still winding down.
fn stop_parts(running: &Mutex<Vec<Running>>) {
    cancel_running(running);
    let since = Instant::now();
    while !lock(running).is_empty() && since.elapsed() < PART_STOP_MAX {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The coordinator of attempt `(job, attempt)`: running (once its shards are built), or whose
/// part here finished — it still answers every checkpoint with its operators' last snapshots
/// (their standing acks), so the job's other parts go on checkpointing.
fn coordinator_of(
    running: &Mutex<Vec<Running>>,
    ended: &Mutex<Vec<Arc<TmCheckpoints>>>,
    job: u64,
    attempt: u32,
) -> Option<Arc<Coordinator>> {
    if let Some(r) = lock(running)
        .iter()
        .find(|r| (r.job, r.attempt) == (job, attempt))
    {
        return lock(&r.checkpoints.coordinator).clone();
    }
    let e = lock(ended);
    let c = e.iter().find(|c| (c.job, c.attempt) == (job, attempt))?;
    lock(&c.coordinator).clone()
}

/// A task manager's part in a job's checkpoints: what its coordinator completes goes to the
/// job manager, which triggers and completes checkpoints through it.
struct TmCheckpoints {
    job: u64,
    attempt: u32,
    writer: Arc<Mutex<Connection>>,
    coordinator: Mutex<Option<Arc<Coordinator>>>,
    /// The sinks' last commits, run when the job manager says the whole job ended.
    job_end: Mutex<Vec<JobEndAction>>,
}

impl TmCheckpoints {
    fn send(&self, m: &Message) {
        if let Err(e) = lock(&self.writer).send(m) {
            eprintln!(
                "job {} attempt {}: cannot tell the job manager about a checkpoint: {e}",
                self.job, self.attempt
            );
        }
    }
}

impl CheckpointParts for TmCheckpoints {
    fn part_ready(&self, id: u64, acks: Vec<OperatorSnapshot>, bytes_added: u64, bytes_total: u64) {
        match rkyv::to_bytes::<rkyv::rancor::Error>(&acks) {
            Ok(bytes) => self.send(&Message::CheckpointPart {
                job: self.job,
                attempt: self.attempt,
                id,
                acks: bytes.to_vec(),
                bytes_added,
                bytes_total,
            }),
            Err(e) => self.part_declined(id, format!("cannot encode the snapshots: {e}")),
        }
    }

    fn part_declined(&self, id: u64, reason: String) {
        self.send(&Message::CheckpointDeclined {
            job: self.job,
            attempt: self.attempt,
            id,
            reason,
        });
    }
}

/// The checkpoints of one attempt, as the runtime sees them.
struct AttemptCheckpoints(Arc<TmCheckpoints>);

impl ClusterCheckpoints for AttemptCheckpoints {
    fn parts(&self) -> Arc<dyn CheckpointParts> {
        self.0.clone()
    }

    fn ready(&self, coordinator: Arc<Coordinator>) {
        let dir = coordinator.config().dir.clone();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        self.0.send(&Message::CheckpointsReady {
            job: self.0.job,
            attempt: self.0.attempt,
            dir: dir.display().to_string(),
            base: coordinator.base(),
            interval_ms: coordinator.config().interval.as_millis() as u64,
            retain: coordinator.config().retain as u32,
        });
        *lock(&self.0.coordinator) = Some(coordinator);
    }

    fn at_job_end(&self, actions: Vec<JobEndAction>) {
        lock(&self.0.job_end).extend(actions);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct TaskManager {
    id: u32,
    /// The cores it offers.
    cores: u32,
    /// The first of its machine's CPUs: its core `c` is CPU `first_cpu + c`.
    first_cpu: usize,
    host: String,
    shm_dir: PathBuf,
    net: Arc<Network>,
    bell: Arc<Bell>,
}

impl TaskManager {
    /// The cores of this task manager that deployment `d` takes, or why it cannot run here:
    /// no part here, a part of the job running already, a core that another part holds or
    /// that this task manager does not have (the job manager's placement gone wrong).
    fn check_deployment(&self, d: &Deployment, running: &[Running]) -> Result<Vec<u32>, String> {
        let refused = |why: String| format!("job {} attempt {}: {why}", d.job, d.attempt);
        let part = d
            .parts
            .iter()
            .find(|p| p.task_manager == self.id)
            .ok_or_else(|| refused(format!("no part for task manager {}", self.id)))?;
        if let Some(r) = running.iter().find(|r| r.job == d.job) {
            return Err(refused(format!(
                "task manager {} runs attempt {} of the job already",
                self.id, r.attempt
            )));
        }
        if part.cores.is_empty() {
            return Err(refused("a part without cores".into()));
        }
        for &c in &part.cores {
            if c >= self.cores {
                return Err(refused(format!(
                    "core {c} of task manager {}, which offers {}",
                    self.id, self.cores
                )));
            }
            if let Some(r) = running.iter().find(|r| r.cores.contains(&c)) {
                return Err(refused(format!(
                    "core {c} of task manager {} runs job {} attempt {}",
                    self.id, r.job, r.attempt
                )));
            }
        }
        Ok(part.cores.clone())
    }

    /// Runs this task manager's part of a deployment to its end.
    fn run_part(
        &self,
        d: Deployment,
        control: JobControl,
        checkpoints: Arc<TmCheckpoints>,
        runner: &JobRunner,
    ) -> Result<(), String> {
        let mine = d
            .parts
            .iter()
            .find(|p| p.task_manager == self.id)
            .ok_or_else(|| {
                format!(
                    "deployment of job {} has no part for this task manager",
                    d.job
                )
            })?
            .clone();
        // One TCP link per pair of task managers on different hosts: the lower id connects.
        for p in &d.parts {
            if p.host != self.host && p.task_manager > self.id {
                let addr: SocketAddr = p.data_addr.parse().map_err(|e| {
                    format!(
                        "task manager {}'s data address {}: {e}",
                        p.task_manager, p.data_addr
                    )
                })?;
                // Linked already (an earlier attempt)? The network keeps that link and drops
                // the new connection.
                self.net
                    .connect(p.task_manager, addr)
                    .map_err(|e| format!("task manager {}: {e}", p.task_manager))?;
            }
        }
        let (shared, tcp): (Vec<u32>, Vec<u32>) = d
            .parts
            .iter()
            .filter(|p| p.task_manager != self.id)
            .map(|p| p.task_manager)
            .partition(|&tm| {
                d.parts
                    .iter()
                    .any(|p| p.task_manager == tm && p.host == self.host)
            });
        eprintln!(
            "task manager {}: job {} attempt {}: shards {}..{} of {} on cores {:?}; shared memory with task managers {shared:?}, TCP with {tcp:?}",
            self.id,
            d.job,
            d.attempt,
            mine.first_shard,
            mine.first_shard + mine.shards,
            d.parallelism,
            mine.cores
        );
        let transports = Transports {
            me: self.id,
            host: self.host.clone(),
            shm_dir: self.shm_dir.clone(),
            job: d.job,
            attempt: d.attempt,
            tag: d.tag,
            parts: d.parts.clone(),
            net: self.net.clone(),
            bell: self.bell.clone(),
        };
        let deployed = Deployed {
            parallelism: d.parallelism,
            part: ClusterPart {
                shards: mine.first_shard..mine.first_shard + mine.shards,
                cpus: mine
                    .cores
                    .iter()
                    .map(|&c| self.first_cpu + c as usize)
                    .collect(),
                remote: Arc::new(transports),
                checkpoints: Some(Arc::new(AttemptCheckpoints(checkpoints))),
            },
            control,
            restore_from: d.restore_from.as_ref().map(PathBuf::from),
        };
        with_deployment(deployed, || runner(&d.args))
    }
}

/// A task manager's rings to the shards of others: shared memory to task managers of its host,
/// its TCP links to the rest.
struct Transports {
    me: u32,
    host: String,
    shm_dir: PathBuf,
    job: u64,
    attempt: u32,
    /// The deployment's tag on TCP links.
    tag: u32,
    parts: Vec<Part>,
    net: Arc<Network>,
    bell: Arc<Bell>,
}

impl Transports {
    fn owner(&self, shard: u32) -> Result<&Part, JobError> {
        self.parts
            .iter()
            .find(|p| (p.first_shard..p.first_shard + p.shards).contains(&shard))
            .ok_or_else(|| JobError::Cluster(format!("no task manager runs shard {shard}")))
    }

    /// The ring file of `channel`, in the directory of the receiving task manager (process
    /// `pid`), which makes it.
    fn ring_path(&self, dir: &Path, pid: u32, channel: u32) -> PathBuf {
        dir.join(format!(
            "shardflow-r{pid}-j{}-a{}-c{channel}",
            self.job, self.attempt
        ))
    }

    fn fail(&self, what: String) -> JobError {
        JobError::Cluster(format!("task manager {}: {what}", self.me))
    }
}

impl RemoteChannels for Transports {
    fn sender(
        &self,
        channel: u32,
        _from: u32,
        to: u32,
        config: RingConfig,
    ) -> Result<RingSender, JobError> {
        let p = self.owner(to)?;
        if p.host != self.host {
            return Ok(self.net.sender(
                p.task_manager,
                LinkChannel::new(self.tag, channel),
                config,
            ));
        }
        // The receiving task manager makes the ring in its directory; wait for it.
        let path = self.ring_path(Path::new(&p.shm_dir), p.pid, channel);
        let start = Instant::now();
        loop {
            match shm::attach_sender(&path, channel, self.bell.clone()) {
                Ok(tx) => return Ok(tx),
                // Not made yet (its task manager is building its receivers): wait for it.
                Err(_) if start.elapsed() < SHM_ATTACH_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    return Err(self.fail(format!(
                        "task manager {} never made its ring: {e}",
                        p.task_manager
                    )));
                }
            }
        }
    }

    fn network_peer(&self, shard: u32) -> Option<u32> {
        let p = self.owner(shard).ok()?;
        (p.host != self.host).then_some(p.task_manager)
    }

    fn receiver(
        &self,
        channel: u32,
        from: u32,
        _to: u32,
        config: RingConfig,
    ) -> Result<RingReceiver, JobError> {
        let p = self.owner(from)?;
        if p.host != self.host {
            return Ok(self.net.receiver(
                p.task_manager,
                LinkChannel::new(self.tag, channel),
                config,
            ));
        }
        shm::create_receiver(
            &self.ring_path(&self.shm_dir, std::process::id(), channel),
            channel,
            ShmConfig {
                slots: config.buffers,
                // Room for a batch and the strings it points to: buffers seldom span slots.
                slot_bytes: config.buffer_bytes * 2,
            },
            self.bell.clone(),
        )
        .map_err(|e| self.fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::remove_stale_files;

    #[test]
    fn only_the_files_of_dead_task_managers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = u32::MAX - 1; // no such process
        let me = std::process::id();
        let names = [
            format!("shardflow-tm1-{dead}.bell"),
            format!("shardflow-r{dead}-j1-a1-c3"),
            format!("shardflow-tm2-{me}.bell"),
            format!("shardflow-r{me}-j1-a1-c4"),
            "shardflow-rubbish".to_string(),
            "someone-elses".to_string(),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        remove_stale_files(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = names[2..].to_vec();
        want.sort();
        assert_eq!(left, want);
    }
}
