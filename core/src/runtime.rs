//! The runtime: P shards, one pinned glommio executor each, running a job graph to completion.
//!
//! [`execute`] builds every ring of every exchange on the calling thread (a P×P matrix per
//! exchange, without the diagonal: same-shard traffic is local), starts one executor per shard
//! with `Placement::Fixed(cpu)` (shard `i` on the `i mod n`-th CPU, so a job may ask for more
//! shards than cores), hands each shard its ring ends, and waits. Each shard instantiates the
//! graph ([`JobGraph::instantiate`]) and runs its tasks — sources and exchange readers —
//! cooperatively on its executor.
//!
//! Failure: the first task to fail cancels the job. Its shard drops its other tasks; the
//! [`CancelToken`] aborts every ring, so a task on another shard waiting for a credit or a frame
//! wakes, sees the job cancelled, and stops. The job's error is the first real one (a panic in a
//! user function becomes an error naming the operator and shard); the cancellations it caused
//! are not reported over it.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::{LocalExecutorBuilder, Placement};
use shardflow_shuffle::{RingConfig, RingHandle, ring};

use crate::config::{JobConfig, ShardPlacement};
use crate::error::{JobError, panic_message};
use crate::exchange::{ExchangeName, RemoteEnds};
use crate::graph::{ExchangeShard, JobGraph, ShardContext};
use crate::key::KeyGroupRange;
use crate::operator::OperatorCounters;

/// Cancels a running job from any shard.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    /// The error that cancelled the job: the root cause, not the failures it caused.
    root: Mutex<Option<JobError>>,
    rings: Mutex<Vec<RingHandle>>,
}

impl CancelToken {
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Fails the job with `error`, which becomes the job's error unless a root cause is known
    /// already. A closed channel is only ever a consequence (a ring closes because the task at its
    /// other end ended), so it gives way to any other error, which may arrive a moment later.
    pub fn fail(&self, error: JobError) {
        let consequence =
            |e: &JobError| matches!(e, JobError::Channel { .. } | JobError::Cancelled);
        let mut root = self.inner.root.lock().unwrap_or_else(|e| e.into_inner());
        let replace = match &*root {
            None => true,
            Some(r) => consequence(r) && !consequence(&error),
        };
        if replace {
            *root = Some(error);
        }
        drop(root);
        if !self.inner.cancelled.swap(true, Ordering::AcqRel) {
            self.abort_rings();
        }
    }

    fn take_root(&self) -> Option<JobError> {
        self.inner
            .root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn abort_rings(&self) {
        for r in self
            .inner
            .rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            r.abort();
        }
    }

    fn set_rings(&self, rings: Vec<RingHandle>) {
        *self.inner.rings.lock().unwrap_or_else(|e| e.into_inner()) = rings;
    }
}

/// The live counters of a running job, readable from any thread.
pub struct JobMetrics {
    pub operators: Vec<OperatorMetrics>,
    pub exchanges: Vec<ExchangeMetrics>,
}

pub struct OperatorMetrics {
    pub name: Arc<str>,
    /// One counter block per shard.
    pub shards: Vec<Arc<OperatorCounters>>,
}

pub struct ExchangeMetrics {
    pub name: Arc<str>,
    pub rings: Vec<RingHandle>,
}

/// Totals of one operator over all shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTotals {
    pub name: String,
    pub records_in: u64,
    pub records_out: u64,
    pub records_skipped: u64,
    /// Records that came after their windows had closed (dropped or sent to a late output).
    pub records_late: u64,
    /// Keyed-state values evicted to the store and read back from it.
    pub state_writes: u64,
    pub state_reads: u64,
    /// Timer records written to the store.
    pub timers_spilled: u64,
}

/// Totals of one exchange over all its rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeTotals {
    pub name: String,
    pub bytes_sent: u64,
    pub buffers_sent: u64,
    /// Times a sender found no credit: how often backpressure stopped a sender.
    pub credit_stalls: u64,
    /// The most bytes ever buffered in any one ring of this exchange.
    pub ring_buffered_bytes_high_water: usize,
    /// The most buffers ever in flight in any one ring.
    pub ring_buffered_buffers_high_water: usize,
}

/// A point-in-time reading of a job's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub operators: Vec<OperatorTotals>,
    pub exchanges: Vec<ExchangeTotals>,
    /// Checkpoints completed so far, in order (in progress reports).
    pub checkpoints: Vec<crate::checkpoint::CheckpointStats>,
}

impl JobMetrics {
    pub(crate) fn new(names: Vec<Arc<str>>, parallelism: u32) -> Self {
        Self {
            operators: names
                .into_iter()
                .map(|name| OperatorMetrics {
                    name,
                    shards: (0..parallelism)
                        .map(|_| Arc::new(OperatorCounters::default()))
                        .collect(),
                })
                .collect(),
            exchanges: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let sum = |m: &OperatorMetrics, f: fn(&OperatorCounters) -> u64| -> u64 {
            m.shards.iter().map(|c| f(c)).sum()
        };
        MetricsSnapshot {
            operators: self
                .operators
                .iter()
                .map(|m| OperatorTotals {
                    name: m.name.to_string(),
                    records_in: sum(m, |c| c.records_in.load(Ordering::Relaxed)),
                    records_out: sum(m, |c| c.records_out.load(Ordering::Relaxed)),
                    records_skipped: sum(m, |c| c.records_skipped.load(Ordering::Relaxed)),
                    records_late: sum(m, |c| c.records_late.load(Ordering::Relaxed)),
                    state_writes: sum(m, |c| c.state_writes.load(Ordering::Relaxed)),
                    state_reads: sum(m, |c| c.state_reads.load(Ordering::Relaxed)),
                    timers_spilled: sum(m, |c| c.timers_spilled.load(Ordering::Relaxed)),
                })
                .collect(),
            exchanges: self
                .exchanges
                .iter()
                .map(|e| {
                    let s = |f: fn(&shardflow_shuffle::RingStats) -> u64| -> u64 {
                        e.rings.iter().map(|r| f(r.stats())).sum()
                    };
                    let m = |f: fn(&shardflow_shuffle::RingStats) -> usize| -> usize {
                        e.rings.iter().map(|r| f(r.stats())).max().unwrap_or(0)
                    };
                    ExchangeTotals {
                        name: e.name.to_string(),
                        bytes_sent: s(|r| r.bytes_sent.load(Ordering::Relaxed)),
                        buffers_sent: s(|r| r.buffers_sent.load(Ordering::Relaxed)),
                        credit_stalls: s(|r| r.credit_stalls.load(Ordering::Relaxed)),
                        ring_buffered_bytes_high_water: m(|r| {
                            r.buffered_bytes_high_water.load(Ordering::Relaxed)
                        }),
                        ring_buffered_buffers_high_water: m(|r| {
                            r.buffered_buffers_high_water.load(Ordering::Relaxed)
                        }),
                    }
                })
                .collect(),
            checkpoints: Vec::new(),
        }
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_name: String,
    pub parallelism: u32,
    pub elapsed: Duration,
    pub metrics: MetricsSnapshot,
    /// Checkpoints completed, in order, and those abandoned with why (of the last attempt).
    pub checkpoints: Vec<crate::checkpoint::CheckpointStats>,
    pub checkpoints_failed: Vec<(u64, String)>,
    /// The checkpoint the last attempt resumed from, and how many times the job restarted.
    pub restored_from: Option<u64>,
    pub restarts: u32,
}

impl JobResult {
    /// The totals of the first operator named `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorTotals> {
        self.metrics.operators.iter().find(|o| o.name == name)
    }

    /// Records that came after their windows had closed, over every operator.
    pub fn records_late(&self) -> u64 {
        self.metrics.operators.iter().map(|o| o.records_late).sum()
    }

    /// The totals of the first exchange named `name`.
    pub fn exchange(&self, name: &str) -> Option<&ExchangeTotals> {
        self.metrics.exchanges.iter().find(|e| e.name == name)
    }

    /// Records per second an operator emitted over the whole run.
    pub fn records_out_per_second(&self, name: &str) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.operator(name).map(|o| o.records_out as f64 / secs)
    }

    /// Records per second an operator took in over the whole run.
    pub fn records_in_per_second(&self, name: &str) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.operator(name).map(|o| o.records_in as f64 / secs)
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "job '{}' finished in {:.3} s on {} shard(s)",
            self.job_name, secs, self.parallelism
        )?;
        writeln!(
            f,
            "  {:<28} {:>14} {:>14} {:>14} {:>10} {:>10}",
            "operator", "records in", "records out", "out/s", "skipped", "late"
        )?;
        for o in &self.metrics.operators {
            writeln!(
                f,
                "  {:<28} {:>14} {:>14} {:>14.0} {:>10} {:>10}",
                o.name,
                o.records_in,
                o.records_out,
                o.records_out as f64 / secs,
                o.records_skipped,
                o.records_late
            )?;
        }
        for o in self
            .metrics
            .operators
            .iter()
            .filter(|o| o.state_writes + o.state_reads + o.timers_spilled > 0)
        {
            writeln!(
                f,
                "  state of {:<19} {:>11} values evicted to the store, {} read back, {} timers spilled",
                o.name, o.state_writes, o.state_reads, o.timers_spilled
            )?;
        }
        if !self.checkpoints.is_empty() || !self.checkpoints_failed.is_empty() {
            let mut d: Vec<Duration> = self.checkpoints.iter().map(|c| c.duration).collect();
            d.sort();
            let pct = |q: f64| {
                d.get(((d.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
            };
            writeln!(
                f,
                "  checkpoints: {} complete, {} abandoned; duration p50 {:?}, max {:?}",
                self.checkpoints.len(),
                self.checkpoints_failed.len(),
                pct(0.5).unwrap_or_default(),
                d.last().copied().unwrap_or_default(),
            )?;
            if let Some(c) = self.checkpoints.last() {
                writeln!(
                    f,
                    "    last: checkpoint {} in {:?}, {} bytes written, {} bytes in all",
                    c.id, c.duration, c.bytes_added, c.bytes_total
                )?;
            }
        }
        for e in &self.metrics.exchanges {
            writeln!(
                f,
                "  exchange {:<19} {:>11} bytes in {} buffers, {} credit stalls, ring high water {} bytes",
                e.name,
                e.bytes_sent,
                e.buffers_sent,
                e.credit_stalls,
                e.ring_buffered_bytes_high_water
            )?;
        }
        Ok(())
    }
}

/// How often the driving thread kicks every shard (see `run_shard`): the longest a shard may
/// sleep through glommio's lost wake-up.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// The driving thread's hold on a shard's driving task, to wake it from outside (see
/// `run_shard`). It keeps the waker: every kick wakes the task again, whether or not the task
/// ran since the last one. (An `AtomicWaker` gives its waker up at the first wake: a kick that
/// fell into glommio's lost wake-up, its task never run to register again, was the last. Under
/// heavy load three test processes were once seen with both shards parked for 17 minutes while
/// their kicks went on; attaching a debugger, which interrupts the executor's sleep, resumed
/// them.)
#[derive(Default)]
pub struct Kick(std::sync::Mutex<Option<std::task::Waker>>);

impl Kick {
    /// The shard's task: wake me at every kick.
    pub fn register(&self, waker: &std::task::Waker) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *held = Some(waker.clone());
        }
    }

    /// The driving thread: wakes the task (a foreign wake, which writes its executor's eventfd).
    pub fn kick(&self) {
        if let Some(w) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            w.wake_by_ref();
        }
    }

    /// The shard's task, on its own thread before its executor goes away: no more kicks.
    pub fn clear(&self) {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(held);
    }
}

/// How long an idle shard polls before it parks in throughput mode.
const THROUGHPUT_SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// The CPUs shards are pinned to, in order.
fn cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = glommio::CpuSet::online()
        .map(|set| set.into_iter().map(|l| l.cpu).collect())
        .unwrap_or_default();
    cpus.sort_unstable();
    cpus.dedup();
    cpus.truncate(crate::config::default_parallelism() as usize);
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Runs `graph` to completion under `config`, calling `on_progress` on the calling thread every
/// `config.progress_interval` with the live counters and the time since the start.
///
/// A job that takes checkpoints and fails (an operator returns an error or panics, a source
/// fails) is restarted from its newest complete checkpoint as `config.restart` allows; a job
/// with `config.restore_from` starts from that checkpoint.
pub fn execute(
    graph: JobGraph,
    config: JobConfig,
    job_name: &str,
    on_progress: &mut dyn FnMut(&MetricsSnapshot, Duration),
) -> Result<JobResult, JobError> {
    config.validate()?;
    graph.validate()?;
    let graph = Arc::new(graph);
    let mut config = config;
    if let Some(c) = &config.control {
        c.set_running(true);
    }
    let control = config.control.clone();
    let result = execute_attempts(graph, &mut config, job_name, on_progress);
    if let Some(c) = control {
        c.set_running(false);
    }
    result
}

/// Runs attempts of the job until one succeeds or no restart is left.
fn execute_attempts(
    graph: Arc<JobGraph>,
    config: &mut JobConfig,
    job_name: &str,
    on_progress: &mut dyn FnMut(&MetricsSnapshot, Duration),
) -> Result<JobResult, JobError> {
    let mut restarts = 0u32;
    loop {
        // Checkpoints the attempt completed (known even when it fails).
        let completed = std::cell::Cell::new(0usize);
        let e = match execute_inner(
            graph.clone(),
            config.clone(),
            job_name,
            on_progress,
            &completed,
        ) {
            Ok(mut r) => {
                r.restarts = restarts;
                return Ok(r);
            }
            Err(e) => e,
        };
        let completed = completed.get();
        let Some(checkpoints) = &config.checkpoints else {
            return Err(e);
        };
        // A job that spans processes is restarted by its job manager, everywhere at once.
        if config.cluster.is_some() {
            return Err(e);
        }
        // A job cancelled from outside, or one that cannot start, is not restarted.
        if matches!(
            e,
            JobError::Cancelled | JobError::Config(_) | JobError::Graph(_)
        ) {
            return Err(e);
        }
        let Some(delay) = config.restart.delay(restarts) else {
            return Err(e);
        };
        // Restart from the newest complete checkpoint: this attempt's newest, or (if it
        // completed none) what it resumed from; with none at all, from the start.
        if completed > 0 {
            config.restore_from = Some(checkpoints.dir.clone());
        }
        eprintln!(
            "job '{job_name}' failed ({e}); restarting in {delay:?} (restart {})",
            restarts + 1
        );
        std::thread::sleep(delay);
        restarts += 1;
    }
}

/// The sending shard of `channel`, which shard `to` receives (channel ids are
/// `index * p * p + from * p + to`).
fn rx_from(name: &ExchangeName, channel: u32, to: u32) -> u32 {
    let p = name.parallelism;
    (channel - name.index * p * p - to) / p
}

/// One attempt of a job; `completed_out` learns how many checkpoints it completed.
fn execute_inner(
    graph: Arc<JobGraph>,
    config: JobConfig,
    job_name: &str,
    on_progress: &mut dyn FnMut(&MetricsSnapshot, Duration),
    completed_out: &std::cell::Cell<usize>,
) -> Result<JobResult, JobError> {
    let p = config.parallelism;
    let exchange_count = graph.exchange_count() as u64;
    if exchange_count * (p as u64) * (p as u64) > u32::MAX as u64 {
        return Err(JobError::Config(format!(
            "{exchange_count} exchanges at parallelism {p} exceed the channel id space"
        )));
    }
    let state_dir = StateDir::create(config.state_dir.as_deref())?;
    let state_budget = config
        .state_memory_bytes
        .map_or(usize::MAX, |b| (b / p as usize).max(1));
    let cluster_checkpoints = config.cluster.as_ref().and_then(|c| c.checkpoints.clone());
    let coordinator = match (&config.checkpoints, &cluster_checkpoints) {
        (Some(c), Some(cc)) => Some(Arc::new(crate::checkpoint::Coordinator::distributed(
            c.clone(),
            cc.parts(),
        )?)),
        (Some(c), None) => Some(Arc::new(crate::checkpoint::Coordinator::new(c.clone())?)),
        (None, _) => None,
    };
    // In a job that spans processes, the job manager triggers once every process is built.
    let mut announced = false;
    let restore = match &config.restore_from {
        Some(path) => {
            let (mut plan, skipped) = crate::checkpoint::RestorePlan::load(path)?;
            for s in skipped {
                eprintln!(
                    "warning: checkpoint {} passed over: {}",
                    s.path.display(),
                    s.reason
                );
            }
            let names = graph.node_names();
            let uids = graph.node_uids();
            let nodes: Vec<(&str, &str)> =
                names.iter().zip(&uids).map(|(n, u)| (&**n, &**u)).collect();
            for warning in plan.check(&nodes, config.allow_non_restored_state)? {
                eprintln!("warning: {warning}");
            }
            Some(Arc::new(plan))
        }
        None => None,
    };
    // Shards that have built their tasks (and so registered the acks a checkpoint waits for):
    // no checkpoint is triggered before all have.
    let built = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let config = Arc::new(config);
    let cancel = CancelToken::default();
    let mut metrics = graph.metrics_shape(p);

    // This process's shards: all of them in local mode, its range in cluster mode.
    let local = match &config.cluster {
        Some(c) => {
            if c.shards.is_empty() || c.shards.end > p {
                return Err(JobError::Config(format!(
                    "this process's shards {:?} are not a part of 0..{p}",
                    c.shards
                )));
            }
            if config.checkpoints.is_some() && c.checkpoints.is_none() {
                return Err(JobError::Config(
                    "checkpoints of a job spread over processes need the cluster's coordinator"
                        .into(),
                ));
            }
            c.shards.clone()
        }
        None => 0..p,
    };
    let here = |s: u32| local.contains(&s);
    // The k-th local shard's CPU, before the modulo of the machine's CPUs.
    let shard_cpu = |k: usize| match config.cluster.as_ref().map(|c| &c.cpus[..]) {
        Some(cpus) if !cpus.is_empty() => cpus[k % cpus.len()],
        _ => k,
    };

    // Rings: ends[local shard][exchange]. Between two shards here, an in-process ring; to or
    // from a shard elsewhere, the cluster's transport. Every receiving end is made before any
    // sending end, in every process: a sender may wait for its receiver to exist (shared
    // memory), never the other way round.
    let ring_config = RingConfig {
        buffers: config.channel_buffers,
        buffer_bytes: config.batch_bytes + config.batch_bytes / 4,
    };
    let names = graph.exchange_names();
    // Channels to or from a shard over TCP share their link's window: the fewer channels a
    // link carries, the more credits each gets.
    let link_channels = match &config.cluster {
        Some(c) => channels_per_link(p, &local, names.len(), |r| c.remote.network_peer(r)),
        None => Default::default(),
    };
    let remote_ring_config = |shard: u32| -> RingConfig {
        let peer = config
            .cluster
            .as_ref()
            .and_then(|c| c.remote.network_peer(shard));
        match peer.and_then(|q| link_channels.get(&q)) {
            Some(&n) => RingConfig {
                buffers: shardflow_shuffle::tcp::link_channel_buffers(ring_config.buffers, n),
                ..ring_config
            },
            None => ring_config,
        }
    };
    let mut ends: Vec<Vec<ExchangeShard>> = local.clone().map(|_| Vec::new()).collect();
    let mut all_rings = Vec::new();
    let mut receivers_of: Vec<Vec<Vec<Option<_>>>> = Vec::new();
    for (e, name) in names.iter().enumerate() {
        let ex_name = ExchangeName {
            name: name.clone(),
            index: e as u32,
            parallelism: p,
        };
        let mut receivers: Vec<Vec<Option<_>>> =
            (0..p).map(|_| (0..p).map(|_| None).collect()).collect();
        if let Some(c) = &config.cluster {
            for r in local.clone() {
                for s in (0..p).filter(|&s| !here(s)) {
                    receivers[r as usize][s as usize] = Some(c.remote.receiver(
                        ex_name.channel_id(s, r),
                        s,
                        r,
                        remote_ring_config(s),
                    )?);
                }
            }
        }
        receivers_of.push(receivers);
    }
    for ((e, name), mut receivers) in names.into_iter().enumerate().zip(receivers_of) {
        let ex_name = ExchangeName {
            name: name.clone(),
            index: e as u32,
            parallelism: p,
        };
        let mut senders: Vec<Vec<Option<_>>> =
            (0..p).map(|_| (0..p).map(|_| None).collect()).collect();
        let mut handles = Vec::new();
        for s in local.clone() {
            for r in 0..p {
                if s == r {
                    continue;
                }
                let channel = ex_name.channel_id(s, r);
                if here(r) {
                    let (tx, rx) = ring(channel, ring_config);
                    handles.push(tx.handle());
                    senders[s as usize][r as usize] = Some(tx);
                    receivers[r as usize][s as usize] = Some(rx);
                } else {
                    let c = config
                        .cluster
                        .as_ref()
                        .expect("a shard elsewhere: cluster mode");
                    let tx = c.remote.sender(channel, s, r, remote_ring_config(r))?;
                    handles.push(tx.handle());
                    senders[s as usize][r as usize] = Some(tx);
                }
            }
        }
        for r in local.clone() {
            for rx in receivers[r as usize].iter().flatten() {
                if !here(rx_from(&ex_name, rx.channel(), r)) {
                    handles.push(rx.handle());
                }
            }
        }
        all_rings.extend(handles.iter().cloned());
        metrics.exchanges.push(ExchangeMetrics {
            name,
            rings: handles,
        });
        for (i, shard) in local.clone().enumerate() {
            ends[i].push(ExchangeShard {
                remote: RemoteEnds {
                    senders: std::mem::take(&mut senders[shard as usize]),
                    receivers: std::mem::take(&mut receivers[shard as usize]),
                },
                name: ex_name.clone(),
            });
        }
    }
    cancel.set_rings(all_rings);
    let metrics = Arc::new(metrics);

    let kicks: Vec<Arc<Kick>> = (0..p).map(|_| Arc::new(Kick::default())).collect();
    let cpus = cpus();
    let (done_tx, done_rx) = mpsc::channel::<(u32, Result<(), JobError>)>();
    let start = Instant::now();
    let mut joins = Vec::new();
    for (i, shard_ends) in ends.into_iter().enumerate() {
        let shard = local.start + i as u32;
        let placement = match config.placement {
            ShardPlacement::Pinned => Placement::Fixed(cpus[shard_cpu(i) % cpus.len()]),
            ShardPlacement::Unpinned => Placement::Unbound,
        };
        let ctx = ShardContext {
            shard,
            parallelism: p,
            max_parallelism: config.max_parallelism,
            key_groups: KeyGroupRange::of_shard(shard, p, config.max_parallelism),
            config: config.clone(),
            cancel: cancel.clone(),
            kick: kicks[shard as usize].clone(),
            tick_resolution: graph
                .uses_processing_time()
                .then_some(config.timer_resolution),
            state_dir: state_dir.path().join(format!("shard-{shard}")),
            state_budget,
            checkpoints: coordinator.clone(),
            restore: restore.clone(),
        };
        let built = built.clone();
        let graph = graph.clone();
        let counters: Vec<_> = metrics
            .operators
            .iter()
            .map(|m| m.shards[shard as usize].clone())
            .collect();
        let done = done_tx.clone();
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shardflow-{shard}"))
            .io_memory(1 << 20);
        if config.scheduling == crate::config::SchedulingMode::Latency {
            // Busy-polling tasks never leave the executor idle, and glommio reaps I/O
            // completions only between task runs when its preempt timer fires: this bounds how
            // long a file read or a socket waits (JobConfig::latency_io_poll_interval).
            builder = builder.preempt_timer(config.latency_io_poll_interval);
        } else {
            // Going to sleep costs glommio a membarrier (an IPI to every core of the process)
            // and the wake an eventfd write: under a steady stream, spin briefly first.
            builder = builder.spin_before_park(THROUGHPUT_SPIN_BEFORE_PARK);
        }
        let spawned = builder.spawn(move || async move {
            let result = run_shard(&graph, &ctx, shard_ends, &counters, &built).await;
            let _ = done.send((shard, result));
        });
        match spawned {
            Ok(j) => joins.push(j),
            Err(e) => {
                cancel.fail(JobError::Runtime {
                    shard,
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    drop(done_tx);

    let mut finished = 0;
    let started = joins.len();
    let mut last_progress = Instant::now();
    let mut last_trigger = Instant::now();
    while finished < started {
        match done_rx.recv_timeout(KICK_INTERVAL) {
            Ok((_shard, result)) => {
                finished += 1;
                // The token already holds the root cause (a shard records it before it
                // returns); this only matters for an error it did not record.
                if let Err(e) = result {
                    cancel.fail(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(control) = &config.control {
                    if control.cancel_requested() {
                        cancel.fail(JobError::Cancelled);
                    }
                    for request in control.take_requests() {
                        match &coordinator {
                            Some(c) => c.request_savepoint(request),
                            None => {
                                let _ = request.reply.send(Err(
                                    "the job takes no checkpoints (give it a checkpoint \
                                     directory)"
                                        .into(),
                                ));
                            }
                        }
                    }
                }
                let all_built =
                    built.load(std::sync::atomic::Ordering::Acquire) == local.len() as u32;
                if let (Some(c), Some(cc)) = (&coordinator, &cluster_checkpoints)
                    && all_built
                    && !announced
                {
                    announced = true;
                    cc.ready(c.clone());
                }
                if let Some(c) = &coordinator
                    && !c.is_distributed()
                    && all_built
                    && (last_trigger.elapsed() >= c.config().interval || c.savepoint_requested())
                {
                    last_trigger = Instant::now();
                    c.trigger();
                }
                for k in &kicks {
                    k.kick();
                }
                if last_progress.elapsed() >= config.progress_interval {
                    last_progress = Instant::now();
                    let mut m = metrics.snapshot();
                    if let Some(c) = &coordinator {
                        m.checkpoints = c.completed();
                    }
                    on_progress(&m, start.elapsed());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for (i, j) in joins.into_iter().enumerate() {
        if let Err(e) = j.join() {
            cancel.fail(JobError::Runtime {
                shard: local.start + i as u32,
                message: format!("executor thread failed: {e}"),
            });
        }
    }
    let elapsed = start.elapsed();
    if let Some(c) = &coordinator {
        // Snapshots still being written finish first: their acks may complete a checkpoint.
        crate::checkpoint::drain_off_shard();
        c.abandon_pending();
        completed_out.set(c.completed().len());
    }
    if let Some(root) = cancel.take_root() {
        return Err(root);
    }
    // A part whose shards all ended before the loop above first looked (a short share of a job
    // with no exchange between the processes) announces its checkpoints now: its operators'
    // final snapshots answer every checkpoint the job manager triggers from here on. Without
    // this the job manager, waiting for every part, never triggered one.
    if let (Some(c), Some(cc)) = (&coordinator, &cluster_checkpoints)
        && !announced
    {
        cc.ready(c.clone());
    }
    if let Some(c) = &coordinator {
        let actions = c.take_job_end_actions();
        match &cluster_checkpoints {
            // The job manager says when the whole job has ended.
            Some(cc) => cc.at_job_end(actions),
            None => {
                for action in actions {
                    action()?;
                }
            }
        }
    }
    Ok(JobResult {
        job_name: job_name.to_string(),
        parallelism: p,
        elapsed,
        metrics: metrics.snapshot(),
        checkpoints: coordinator
            .as_ref()
            .map_or_else(Vec::new, |c| c.completed()),
        checkpoints_failed: coordinator.as_ref().map_or_else(Vec::new, |c| c.failed()),
        restored_from: restore.as_ref().map(|r| r.id()),
        restarts: 0,
    })
}

/// One shard: instantiate the graph, run its tasks until all end or one fails.
/// The directory of a run's state stores, removed when the run ends (its stores are working
/// state; checkpoints live elsewhere).
enum StateDir {
    Temporary(tempfile::TempDir),
    Under(PathBuf),
}

impl StateDir {
    fn create(parent: Option<&Path>) -> Result<Self, JobError> {
        match parent {
            None => tempfile::Builder::new()
                .prefix("shardflow-state-")
                .tempdir()
                .map(StateDir::Temporary)
                .map_err(|e| {
                    JobError::io(std::env::temp_dir(), "cannot create the state directory", e)
                }),
            Some(parent) => {
                static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = parent.join(format!("run-{}-{n}", std::process::id()));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        JobError::io(&dir, "cannot clear a stale state directory", e)
                    })?;
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| JobError::io(&dir, "cannot create the state directory", e))?;
                Ok(StateDir::Under(dir))
            }
        }
    }

    fn path(&self) -> &Path {
        match self {
            StateDir::Temporary(t) => t.path(),
            StateDir::Under(p) => p,
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let StateDir::Under(p) = self {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

async fn run_shard(
    graph: &JobGraph,
    ctx: &ShardContext,
    ends: Vec<ExchangeShard>,
    counters: &[Arc<OperatorCounters>],
    built: &std::sync::atomic::AtomicU32,
) -> Result<(), JobError> {
    // glommio 0.9 parks an executor that still has runnable tasks when its preempt timer fires
    // before `run_task_queues` picks a queue (it then reports that nothing ran), and sleeps with
    // no timer until an event arrives. Under busy-polling, or a CPU shared by more shards than it
    // has, nothing may ever arrive: both shards of a job were seen parked for good. A timer task
    // cannot guard against this (it must run to re-arm itself), so the driving thread wakes this
    // task every KICK_INTERVAL from outside: a foreign wake writes the executor's eventfd, which
    // ends any such sleep, after which the runnable tasks run.
    std::future::poll_fn(|cx| {
        ctx.kick.register(cx.waker());
        Poll::Ready(())
    })
    .await;
    let shard = ctx.shard;
    let built_tasks =
        std::panic::catch_unwind(AssertUnwindSafe(|| graph.instantiate(ctx, ends, counters)))
            .map_err(|p| JobError::Panicked {
                operator: "(building the job on this shard)".into(),
                shard,
                message: panic_message(p.as_ref()),
            })
            .and_then(|r| r);
    let tasks = match built_tasks {
        Ok(tasks) => {
            built.fetch_add(1, std::sync::atomic::Ordering::Release);
            tasks
        }
        Err(e) => {
            // The other shards may have built theirs and wait for this one: cancel them.
            ctx.cancel.fail(e);
            ctx.kick.clear();
            return Err(JobError::Cancelled);
        }
    };
    let mut running: Vec<Option<_>> = tasks
        .into_iter()
        .map(|(name, task)| {
            let guarded = AssertUnwindSafe(task).catch_unwind();
            Some(glommio::spawn_local(async move {
                match guarded.await {
                    Ok(r) => r,
                    Err(p) => Err(JobError::Panicked {
                        operator: crate::operator::current_operator()
                            .map_or_else(|| name.to_string(), |o| o.to_string()),
                        shard,
                        message: panic_message(p.as_ref()),
                    }),
                }
            }))
        })
        .collect();
    // Wait for all. A failure drops (and so cancels) the rest, but only after every task that
    // has finished in this round has reported: two tasks of a shard may fail together (a source
    // on bad input, and the reader beside it seeing the job cancelled), and the cause must not
    // be lost behind the consequence because of the order the tasks are polled in.
    let result = std::future::poll_fn(|cx| {
        ctx.kick.register(cx.waker());
        let mut open = 0;
        let mut failed = false;
        for slot in running.iter_mut() {
            if let Some(task) = slot {
                match task.poll(cx) {
                    Poll::Ready(Ok(())) => *slot = None,
                    Poll::Ready(Err(e)) => {
                        *slot = None;
                        failed = true;
                        // Recorded while this shard's other rings are still open: peers see the
                        // job cancelled before they see a channel close.
                        ctx.cancel.fail(e);
                    }
                    Poll::Pending => open += 1,
                }
            }
        }
        if failed {
            Poll::Ready(Err(JobError::Cancelled))
        } else if open == 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    // Drop the registered waker here, on its own thread, before the executor goes away.
    ctx.kick.clear();
    result
}

/// The channels each TCP link of this process carries per direction, by peer process: every
/// exchange, every local shard with every shard of the peer (`peer_of`: the process a shard
/// elsewhere runs in, if it is reached over TCP). The peer counts the same channels the other
/// way, so both ends of a channel size it alike.
fn channels_per_link(
    p: u32,
    local: &std::ops::Range<u32>,
    exchanges: usize,
    peer_of: impl Fn(u32) -> Option<u32>,
) -> std::collections::HashMap<u32, usize> {
    let mut links = std::collections::HashMap::new();
    for r in (0..p).filter(|r| !local.contains(r)) {
        if let Some(peer) = peer_of(r) {
            *links.entry(peer).or_default() += exchanges * local.len();
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kick wakes the registered task, whether or not it ran (and registered again) since
    /// the last: a kick lost to glommio's lost wake-up is followed by another. After `clear`,
    /// none.
    #[test]
    fn every_kick_wakes_the_task_until_it_clears() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = std::task::Waker::from(count.clone());
        let kick = Kick::default();
        kick.kick();
        kick.register(&waker);
        for _ in 0..3 {
            kick.kick();
        }
        kick.register(&waker);
        kick.kick();
        kick.clear();
        kick.kick();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[test]
    fn both_ends_of_a_link_count_the_same_channels() {
        // Processes 1 (shards 0..2) and 2 (2..5) on different hosts, 3 (5..6) on 1's host.
        let parts = [(1u32, 0..2u32, "a"), (2, 2..5, "b"), (3, 5..6, "a")];
        let host = |s: u32| parts.iter().find(|(_, r, _)| r.contains(&s)).unwrap();
        let links: Vec<_> = parts
            .iter()
            .map(|(id, local, h)| {
                let peer_of = |s: u32| {
                    let (q, _, qh) = host(s);
                    (qh != h).then_some(*q)
                };
                (*id, channels_per_link(6, local, 3, peer_of))
            })
            .collect();
        let count = |from: u32, to: u32| {
            let (_, l) = links.iter().find(|(id, _)| *id == from).unwrap();
            l.get(&to).copied()
        };
        // Every exchange, each of 1's two shards to each of 2's three.
        assert_eq!(count(1, 2), Some(3 * 2 * 3));
        assert_eq!(count(2, 1), count(1, 2));
        assert_eq!(count(2, 3), Some(3 * 3));
        assert_eq!(count(3, 2), count(2, 3));
        // One host: shared memory, no link.
        assert_eq!(count(1, 3), None);
        assert_eq!(count(3, 1), None);
    }
}
