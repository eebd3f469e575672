//! Job settings. Every number has a unit in its name and a checked limit.

use std::time::Duration;

use crate::error::JobError;
use crate::key::{MAX_PARALLELISM_DEFAULT, MAX_PARALLELISM_LIMIT};

/// The most shards one job may run.
pub const PARALLELISM_LIMIT: u32 = 1024;

/// How a shard with nothing to do waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulingMode {
    /// Park the executor until a peer wakes it (glommio's default): no CPU burnt while idle; a
    /// wake across cores costs microseconds.
    #[default]
    Throughput,
    /// Busy-poll the input rings and yield cooperatively, never parking: a lone record crosses
    /// cores in well under a microsecond, at the price of a core spinning while idle.
    Latency,
}

/// Whether results are emitted as they change or once, at the end of bounded input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeMode {
    /// As Flink's STREAMING mode: a rolling `reduce`/`sum` emits every update.
    #[default]
    Streaming,
    /// As Flink's BATCH mode: keyed aggregations emit only their final value per key when the
    /// input ends, and may pre-aggregate before the exchange.
    Batch,
}

/// When a sender ships a partly filled batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// When the batch is full, or when the sending task's input is idle, so an idle stream never
    /// holds a record back.
    #[default]
    WhenFullOrIdle,
    /// Only when the batch is full (or at end of input): the largest batches, for bulk jobs whose
    /// input is never idle anyway.
    WhenFull,
}

/// Whether exchange frames that stay in the process carry a crc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumPolicy {
    /// Compute and check the crc only where bytes leave the process.
    #[default]
    CrossProcessOnly,
    /// Also in process: every frame is checksummed and read with rkyv's full bytecheck. For tests
    /// and for hunting memory corruption.
    Always,
}

/// Where shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardPlacement {
    /// Shard `i` is pinned to the `i mod n`-th CPU the process may use (glommio `Placement::Fixed`).
    #[default]
    Pinned,
    /// The OS places shard threads.
    Unpinned,
}

/// What a source does with a record it cannot read (a line that is not UTF-8, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMalformed {
    /// Fail the job with an error naming the input and the place.
    #[default]
    Fail,
    /// Skip the record, count it in the job result, and go on.
    SkipAndCount,
}

/// The settings of one job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Shards the job runs on. Defaults to the CPUs the process may use; may exceed them (the
    /// shards then share CPUs).
    pub parallelism: u32,
    /// Key groups: the most shards the job can ever be rescaled to. Fixed for the job's lifetime.
    pub max_parallelism: u32,
    pub scheduling: SchedulingMode,
    pub runtime_mode: RuntimeMode,
    pub flush: FlushPolicy,
    pub checksum: ChecksumPolicy,
    pub placement: ShardPlacement,
    /// Target bytes of one exchange batch.
    pub batch_bytes: usize,
    /// Buffers per exchange channel: the credits a sender has before it must wait. 16 buffers of
    /// ~40 KiB is ~0.6 MiB per channel, P·(P-1) channels per exchange (pages are touched only
    /// as buffers fill). With 4, a sender out of credit parks often enough that glommio's
    /// park/wake cost showed in the exchange benchmark.
    pub channel_buffers: usize,
    /// Records a source hands to its chain at a time.
    pub source_batch_records: usize,
    /// How often a running job calls its progress reporter.
    pub progress_interval: Duration,
    /// What sources do with a record they cannot read, unless told otherwise per source.
    pub on_malformed: OnMalformed,
    /// Latency mode: how often a busy-polling shard lets glommio reap I/O completions (file
    /// reads, sockets). Shorter serves I/O sooner; longer disturbs the rings' p99 less.
    pub latency_io_poll_interval: Duration,
    /// How often watermark generators are asked for a periodic watermark (Flink's
    /// `autoWatermarkInterval`). They are also asked whenever their input goes idle.
    ///
    /// 20 ms by default, not Flink's 200: between two watermarks everything downstream that
    /// waits for event time (windows, their pre-aggregation, joins) holds what came meanwhile,
    /// and a replay moves through tens of seconds of event time in 200 ms. On the windows
    /// benchmark (70 M readings/s, 1 s windows) 200 ms kept about 14 windows of every key open
    /// at once; 20 ms keeps one or two, and ran 104.6 against 84.3 M readings/s (P = 2, medians
    /// of three, side by side). A watermark costs a few comparisons per operator: 50 a second
    /// per source shard is nothing. Live jobs also see their windows' results sooner.
    pub auto_watermark_interval: Duration,
    /// How often processing time advances for operators that act on it (timers, windows, idle
    /// inputs): the precision of a processing-time timer.
    pub timer_resolution: Duration,
    /// Where processing time comes from (a test sets a manual clock).
    pub clock: crate::time::ProcessingClock,
    /// Where the shards' state stores live while the job runs: a fresh directory under this
    /// one per run (`run-<pid>-<n>`, a `shard-<i>` store in it), removed when the job ends.
    /// None: a fresh temporary directory.
    pub state_dir: Option<std::path::PathBuf>,
    /// Bytes of deserialized state values the job keeps in memory, split evenly among its
    /// shards; beyond it, keyed state is evicted to the shards' stores and read back when used
    /// (DESIGN.md, "State"). None: no limit (state stays in memory).
    pub state_memory_bytes: Option<usize>,
    /// Periodic checkpoints (DESIGN.md, "Checkpoints and recovery"). None: none.
    pub checkpoints: Option<crate::checkpoint::CheckpointConfig>,
    /// Resume from this checkpoint (a `chk-<n>` directory, or a checkpoint directory whose
    /// newest complete checkpoint is taken).
    pub restore_from: Option<std::path::PathBuf>,
    /// Savepoints asked for from another thread while the job runs.
    pub control: Option<JobControl>,
    /// Restore even if the checkpoint holds state of operators this job does not have (that
    /// state is dropped, with a warning). Off: such a restore is an error naming them.
    pub allow_non_restored_state: bool,
    /// Whether a failed job with checkpoints restarts from its newest one.
    pub restart: RestartStrategy,
    /// In cluster mode: the shards this process runs, and how it reaches the others.
    /// `None`: local mode, every shard here.
    pub cluster: Option<ClusterPart>,
}

/// This process's part of a job that spans processes (cluster mode): a contiguous range of
/// the job's shards, and the rings to the shards of other processes.
#[derive(Clone)]
pub struct ClusterPart {
    /// The shards this process runs (global indices in `0..parallelism`).
    pub shards: std::ops::Range<u32>,
    /// The machine's CPUs this process's shards are pinned to: the k-th local shard to
    /// `cpus[k % cpus.len()]` (modulo the machine's CPUs). Processes of one machine, and jobs
    /// of one process, take different ones; more shards than CPUs share them. Empty: CPUs
    /// `0, 1, ...`.
    pub cpus: Vec<usize>,
    /// Ring ends to and from shards in other processes.
    pub remote: std::sync::Arc<dyn RemoteChannels>,
    /// How this process takes part in the job's checkpoints (none: a job with checkpoints
    /// cannot span processes).
    pub checkpoints: Option<std::sync::Arc<dyn ClusterCheckpoints>>,
}

/// A process's link to the job's checkpoints when the job spans processes: its part of each
/// checkpoint goes there, and the job manager triggers and completes checkpoints through the
/// coordinator it is given.
pub trait ClusterCheckpoints: Send + Sync {
    /// Where this process's parts go.
    fn parts(&self) -> std::sync::Arc<dyn crate::checkpoint::CheckpointParts>;
    /// Every shard of this process is built: checkpoints may be triggered on `coordinator`.
    fn ready(&self, coordinator: std::sync::Arc<crate::checkpoint::Coordinator>);
    /// This process's part ended without failure: `actions` commit its sinks' last output,
    /// run when the whole job has ended (another process may still fail and restart it).
    fn at_job_end(&self, actions: Vec<crate::checkpoint::JobEndAction>);
}

impl std::fmt::Debug for ClusterPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPart")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// Where a process gets the ends of the rings whose other end is in another process: shared
/// memory on one host, TCP between hosts (a task manager's choice).
pub trait RemoteChannels: Send + Sync {
    /// The end of channel `channel` from shard `from` (here) to shard `to` (elsewhere).
    fn sender(
        &self,
        channel: u32,
        from: u32,
        to: u32,
        config: shardflow_shuffle::RingConfig,
    ) -> Result<shardflow_shuffle::RingSender, JobError>;
    /// The end of channel `channel` from shard `from` (elsewhere) to shard `to` (here).
    fn receiver(
        &self,
        channel: u32,
        from: u32,
        to: u32,
        config: shardflow_shuffle::RingConfig,
    ) -> Result<shardflow_shuffle::RingReceiver, JobError>;
    /// The process shard `shard` runs in, if channels to and from it cross the network (TCP):
    /// the channels of one link share its window (`shardflow_shuffle::tcp::
    /// link_channel_buffers`). None for a shard on this host.
    fn network_peer(&self, _shard: u32) -> Option<u32> {
        None
    }
}

/// How a job with checkpoints restarts after a failure (as Flink's restart strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartStrategy {
    /// A failure fails the job.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// Up to `attempts` restarts, the delay doubling from `initial` up to `max`.
    ExponentialBackoff {
        attempts: u32,
        initial: Duration,
        max: Duration,
    },
}

impl Default for RestartStrategy {
    /// Three restarts, a second apart.
    fn default() -> Self {
        RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_secs(1),
        }
    }
}

impl RestartStrategy {
    /// The delay before restart number `done + 1`, if there may be one.
    pub fn delay(&self, done: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (done < attempts).then_some(delay),
            RestartStrategy::ExponentialBackoff {
                attempts,
                initial,
                max,
            } => (done < attempts).then(|| initial.saturating_mul(1u32 << done.min(30)).min(max)),
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            parallelism: default_parallelism(),
            max_parallelism: MAX_PARALLELISM_DEFAULT,
            scheduling: SchedulingMode::default(),
            runtime_mode: RuntimeMode::default(),
            flush: FlushPolicy::default(),
            checksum: ChecksumPolicy::default(),
            placement: ShardPlacement::default(),
            batch_bytes: 32 << 10,
            channel_buffers: 16,
            source_batch_records: 1024,
            progress_interval: Duration::from_secs(1),
            on_malformed: OnMalformed::default(),
            latency_io_poll_interval: Duration::from_millis(1),
            auto_watermark_interval: Duration::from_millis(20),
            timer_resolution: Duration::from_millis(1),
            clock: crate::time::ProcessingClock::System,
            state_dir: None,
            state_memory_bytes: None,
            checkpoints: None,
            restore_from: None,
            restart: RestartStrategy::default(),
            control: None,
            cluster: None,
            allow_non_restored_state: false,
        }
    }
}

/// Controls a running job from another thread: savepoints (the API equivalent of
/// `shardflow savepoint`). Put a clone in [`JobConfig::control`] before `execute`.
///
/// ```no_run
/// # use shardflow_core::config::{JobConfig, JobControl};
/// let control = JobControl::default();
/// let mut config = JobConfig::default();
/// config.control = Some(control.clone());
/// // ... execute the job on another thread, then:
/// let path = control.savepoint("/var/savepoints")?;
/// # Ok::<(), shardflow_core::JobError>(())
/// ```
#[derive(Clone, Default)]
pub struct JobControl {
    requests: std::sync::Arc<std::sync::Mutex<ControlState>>,
}

#[derive(Default)]
struct ControlState {
    requests: Vec<crate::checkpoint::SavepointRequest>,
    /// The job is not running (not yet, or no more): a request is answered at once.
    idle: bool,
    /// Cancel asked for.
    cancel: bool,
}

impl std::fmt::Debug for JobControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobControl")
    }
}

impl JobControl {
    /// Takes a savepoint of the running job into a new directory under `dir` and returns its
    /// path (restore from it with `JobConfig::restore_from`, at any parallelism up to the max
    /// parallelism). Waits for it; an error says why it was not taken (the job takes no
    /// checkpoints, a source ended, the checkpoint failed or the job ended first).
    pub fn savepoint(
        &self,
        dir: impl Into<std::path::PathBuf>,
    ) -> Result<std::path::PathBuf, crate::JobError> {
        let dir = dir.into();
        let (reply, answer) = std::sync::mpsc::channel();
        {
            let mut state = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            if state.idle {
                return Err(crate::JobError::Config(format!(
                    "savepoint into {}: the job is not running",
                    dir.display()
                )));
            }
            state.requests.push(crate::checkpoint::SavepointRequest {
                dir: dir.clone(),
                reply,
            });
        }
        match answer.recv() {
            Ok(Ok(path)) => Ok(path),
            Ok(Err(why)) => Err(crate::JobError::Config(format!(
                "savepoint into {}: {why}",
                dir.display()
            ))),
            Err(_) => Err(crate::JobError::Config(format!(
                "savepoint into {}: the job ended before it was taken",
                dir.display()
            ))),
        }
    }

    /// Cancels the job: it stops without a restart and `execute` returns
    /// `JobError::Cancelled` (take a savepoint first to resume it later: stop with savepoint).
    pub fn cancel(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel = true;
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancel_requested(&self) -> bool {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel
    }

    /// The savepoints asked for since the last call (the job's driver hands them on).
    pub fn take_requests(&self) -> Vec<crate::checkpoint::SavepointRequest> {
        std::mem::take(
            &mut self
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .requests,
        )
    }

    /// The job started (`running`) or ended: once ended, every request waiting and every
    /// later one is answered with an error.
    pub fn set_running(&self, running: bool) {
        let mut state = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        state.idle = !running;
        if running {
            state.cancel = false;
        } else {
            for r in state.requests.drain(..) {
                let _ = r
                    .reply
                    .send(Err("the job ended before it was taken".into()));
            }
        }
    }
}

/// The CPUs this process may run on.
pub fn default_parallelism() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .min(PARALLELISM_LIMIT)
}

impl JobConfig {
    /// Checks every setting against its limit.
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |what: &str| Err(JobError::Config(what.to_string()));
        if let Some(c) = &self.checkpoints {
            c.validate()?;
        }
        if self.parallelism == 0 || self.parallelism > PARALLELISM_LIMIT {
            return bad(&format!(
                "parallelism {} is outside 1..={PARALLELISM_LIMIT}",
                self.parallelism
            ));
        }
        if self.max_parallelism == 0 || self.max_parallelism > MAX_PARALLELISM_LIMIT {
            return bad(&format!(
                "max parallelism {} is outside 1..={MAX_PARALLELISM_LIMIT}",
                self.max_parallelism
            ));
        }
        if self.parallelism > self.max_parallelism {
            return bad(&format!(
                "parallelism {} exceeds max parallelism {}: some shard would own no key group",
                self.parallelism, self.max_parallelism
            ));
        }
        if !(64..=(16 << 20)).contains(&self.batch_bytes) {
            return bad(&format!(
                "batch size {} bytes is outside 64 B ..= 16 MiB",
                self.batch_bytes
            ));
        }
        if !(1..=shardflow_shuffle::ring::RING_BUFFERS_MAX).contains(&self.channel_buffers) {
            return bad(&format!(
                "{} buffers per channel is outside 1..={}",
                self.channel_buffers,
                shardflow_shuffle::ring::RING_BUFFERS_MAX
            ));
        }
        if self.latency_io_poll_interval < Duration::from_micros(500)
            || self.latency_io_poll_interval > Duration::from_secs(1)
        {
            return bad(&format!(
                "latency I/O poll interval {:?} is outside 500 µs ..= 1 s (shorter intervals were \
                 seen to stall glommio's scheduler under busy-polling)",
                self.latency_io_poll_interval
            ));
        }
        if self.timer_resolution < Duration::from_millis(1)
            || self.timer_resolution > Duration::from_secs(1)
        {
            return bad(&format!(
                "timer resolution {:?} is outside 1 ms ..= 1 s (processing time is counted in \
                 milliseconds)",
                self.timer_resolution
            ));
        }
        if self.auto_watermark_interval > Duration::from_secs(3600) {
            return bad(&format!(
                "watermark interval {:?} is over an hour",
                self.auto_watermark_interval
            ));
        }
        if !(1..=1 << 20).contains(&self.source_batch_records) {
            return bad(&format!(
                "source batch of {} records is outside 1..=1048576",
                self.source_batch_records
            ));
        }
        Ok(())
    }
}
