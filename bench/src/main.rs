//! `shardflow-bench`: the benchmark harness. Every workload runs beside its hand-written
//! baseline, several times, and reports medians and the ratio.

use std::time::Duration;

use clap::{Parser, Subcommand};
use shardflow::SchedulingMode;
use shardflow_bench::exchange::{self, Rec16, Rec128};
use shardflow_bench::{windows, wordcount};

#[derive(Parser)]
#[command(name = "shardflow-bench", about = "shardflow's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Times a job of one's own: runs `CMD ARGS` (with `{p}` replaced by each parallelism)
    /// --warmup + --runs times, interleaved; wall time, and events/s given --events.
    /// E.g. `shardflow-bench command --events 20000000 -- shardflow run wordcount -p {p} --input F`.
    Command {
        #[command(flatten)]
        common: shardflow_bench::harness::Common,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Telemetry ingestion: metric points as JSON lines, parsed, pre-aggregated per series and
    /// windowed (10 s tumbling, count/sum/min/max): points/s and bytes/s through the engine at
    /// each parallelism, beside a single-threaded loop.
    Telemetry {
        #[arg(long, default_value_t = 1_000)]
        hosts: u32,
        #[command(flatten)]
        common: shardflow_bench::harness::Common,
    },
    /// Trading-feed latency: a paced feed of trades and quotes through a keyed VWAP and
    /// top-of-book job, each update's latency from its event's due time (hdrhistogram
    /// percentiles, no coordinated omission), beside a single-threaded loop; `--sweep` finds the
    /// highest rate whose p99 stays within a budget.
    Trading {
        #[command(flatten)]
        args: shardflow_bench::trading::TradingArgs,
        #[command(flatten)]
        common: shardflow_bench::harness::Common,
    },
    /// Nexmark (Beam's and Flink's streaming benchmark): events/s of each query through the
    /// engine at each parallelism, beside a single-threaded loop doing the same work.
    Nexmark {
        /// Queries to run, comma-separated (q0-q9, q11, q12), or `all`.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        queries: Vec<String>,
        #[command(flatten)]
        common: shardflow_bench::harness::Common,
    },
    /// WordCount on a generated file: the engine at P = 1 and 2 beside a single-threaded loop.
    Wordcount {
        #[arg(long, default_value_t = 2_000_000)]
        lines: u64,
        /// Runs of each; medians are reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Counts the words of a file with the hand-written loop only (for profiling runs, e.g.
    /// under callgrind beside `shardflow run wordcount -p 1 --input FILE`).
    CountBaseline {
        #[arg(long)]
        input: std::path::PathBuf,
    },
    /// Writes the generated text of the wordcount benchmark to a file (for profiling runs).
    GenText {
        #[arg(long, default_value_t = 2_000_000)]
        lines: u64,
        #[arg(long)]
        output: std::path::PathBuf,
    },
    /// Tumbling 1 s event-time windows (count/sum/max per sensor) over generated out-of-order
    /// readings: the engine at P = 1 and 2 beside a single-threaded loop.
    Windows {
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        #[arg(long, default_value_t = 10_000)]
        keys: u32,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Only the engine at this parallelism (for profiling).
        #[arg(long)]
        engine_only: Option<u32>,
        /// Only the hand-written loop (for profiling).
        #[arg(long)]
        loop_only: bool,
        /// Every reading crosses the exchange (no pre-aggregation per shard).
        #[arg(long)]
        one_phase: bool,
        /// Also run the engine (at --engine-only's P, default 2) with a checkpoint every this
        /// many milliseconds, alternating with runs without: throughput ratio, checkpoint
        /// durations and sizes.
        #[arg(long, value_name = "MS")]
        checkpoint_ms: Option<u64>,
        /// With --checkpoint-ms: unaligned checkpoints.
        #[arg(long)]
        unaligned: bool,
    },
    /// The state store alone: puts, gets (active and sealed), scan, compaction, reopen.
    Store {
        /// Keys (16 bytes, each with a 100-byte value).
        #[arg(long, default_value_t = 2_000_000)]
        keys: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Keyed state on one shard: ValueState read-modify-writes beside a hash-map loop, in cache
    /// and with a budget a tenth of the state.
    KeyedState {
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Read-modify-writes per run.
        #[arg(long, default_value_t = 20_000_000)]
        ops: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only one part (for profiling).
        #[arg(long, value_enum, default_value = "all")]
        only: shardflow_bench::keyed_state::Part,
    },
    /// Keyed timers on one shard: a timer per key at a time of its own, registered and fired,
    /// beside a binary heap; in memory, counted in a budget, and in a budget a tenth of them.
    Timers {
        #[arg(long, default_value_t = 1_000_000)]
        timers: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Records/s through the exchange between two pinned shards, beside a bare rkyv hand-off.
    Exchange {
        #[arg(long, default_value_t = 50_000_000)]
        records: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Only the engine in throughput mode with 16-byte records (for profiling).
        #[arg(long)]
        engine_only: bool,
    },
    /// Recovery time: a keyed job builds --state-mib of state, checkpoints it, fails, and
    /// restarts from the checkpoint; from the failure to the first record processed after the
    /// restore, beside reading the checkpoint's segments once.
    Recovery {
        #[arg(long, default_value_t = 1024)]
        state_mib: u64,
        #[arg(long, short = 'p', default_value_t = 2)]
        parallelism: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Drop the page cache at the failure (root): the restore reads from the disk.
        #[arg(long)]
        cold: bool,
        /// Where the checkpoints and stores go (default: a temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Shuffle transports, bytes only: framed batches between two threads in process, through
    /// shared memory and over a TCP link on loopback, beside the raw limits measured in the
    /// same run (one memcpy; a copy across cores; a plain TCP socket pair).
    Shuffle {
        #[arg(long, default_value_t = 200_000)]
        batches: u64,
        #[arg(long, default_value_t = 32)]
        batch_kib: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// WordCount on a cluster of two task manager processes (shared memory between them, then
    /// TCP) beside the same job in local mode at the same P = 2.
    Cluster {
        #[arg(long, default_value_t = 5_000_000)]
        lines: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// (The bench cluster's job manager: started by `cluster`.)
    #[command(hide = true)]
    Jobmanager(shardflow::cluster::JobManagerArgs),
    /// (A bench cluster's task manager: started by `cluster`.)
    #[command(hide = true)]
    Taskmanager(shardflow::cluster::TaskManagerArgs),
    /// One-way latency of a lone record between two shards (hdrhistogram percentiles).
    Latency {
        #[arg(long, default_value_t = 20_000)]
        records: u64,
        /// Microseconds between records.
        #[arg(long, default_value_t = 50)]
        gap_us: u64,
        /// Use throughput scheduling (parking receivers) instead of latency scheduling.
        #[arg(long)]
        parked: bool,
        /// Latency mode: milliseconds between glommio's I/O polls (JobConfig::latency_io_poll_interval).
        #[arg(long, default_value_t = 1)]
        io_poll_ms: u64,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!(
        "machine: {} CPUs ({})",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        shardflow_bench::report::processor_model()
    );
    match cli.bench {
        Bench::Command { common, command } => {
            shardflow_bench::harness::run_command(&common, &command)?
        }
        Bench::Telemetry { hosts, common } => shardflow_bench::ingest::run(&common, hosts)?,
        Bench::Trading { args, common } => shardflow_bench::trading::run(&common, &args)?,
        Bench::Nexmark { queries, common } => {
            shardflow_bench::nexmark::harness::run(&common, &queries)?
        }
        Bench::Recovery {
            state_mib,
            parallelism,
            runs,
            cold,
            dir,
        } => {
            println!(
                "recovery: {state_mib} MiB of keyed state at P={parallelism}, {runs} runs{}",
                if cold {
                    ", page cache dropped at the failure"
                } else {
                    ""
                }
            );
            let (mut recover, mut read) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let tmp = match &dir {
                    Some(d) => tempfile::tempdir_in(d)?,
                    None => tempfile::tempdir()?,
                };
                let r =
                    shardflow_bench::recovery::run(state_mib << 20, parallelism, tmp.path(), cold)?;
                println!(
                    "  {} keys, checkpoint {:.0} MiB (built in {:.1} s): failure to first record {:.2} s; reading the segments {:.2} s",
                    r.keys,
                    r.checkpoint_bytes as f64 / (1 << 20) as f64,
                    r.build.as_secs_f64(),
                    r.failure_to_first_record.as_secs_f64(),
                    r.read_segments.as_secs_f64()
                );
                recover.push(r.failure_to_first_record.as_secs_f64());
                read.push(r.read_segments.as_secs_f64());
            }
            println!(
                "  medians: recovery {:.2} s, reading the segments {:.2} s ({:.1}x)",
                median(recover.clone()),
                median(read.clone()),
                median(recover) / median(read).max(1e-9)
            );
        }
        Bench::Jobmanager(args) => shardflow::cluster::run_jobmanager(args)?,
        Bench::Taskmanager(args) => shardflow::cluster::run_taskmanager(
            args,
            std::sync::Arc::new(|a: &[String]| {
                shardflow_bench::cluster::job(a).map_err(|e| e.to_string())
            }),
        )?,
        Bench::Cluster { lines, runs } => {
            use shardflow_bench::cluster::{Cluster, local};
            let dir = tempdir()?;
            let input = dir.join("text.txt");
            let bytes = wordcount::write_text(&input, lines, 42)?;
            println!(
                "cluster: wordcount of {lines} lines ({:.0} MiB) at P = 2, two task managers of one shard each beside local mode, {runs} runs each (interleaved)",
                bytes as f64 / (1 << 20) as f64
            );
            for (hosts, transport) in [(["h", "h"], "shared memory"), (["a", "b"], "TCP")] {
                let cluster = Cluster::start(hosts)?;
                let (mut l, mut c) = (Vec::new(), Vec::new());
                for run in 0..runs {
                    let out = dir.join(format!("out-{run}"));
                    l.push(local(&input, &out)?.as_secs_f64());
                    c.push(cluster.run(&input, &out)?.as_secs_f64());
                    println!(
                        "  {transport}: local {:.3} s, cluster {:.3} s ({:.2}x)",
                        l[run],
                        c[run],
                        l[run] / c[run]
                    );
                }
                let (l, c) = (median(l), median(c));
                println!(
                    "  medians over {transport}: local {l:.3} s, cluster {c:.3} s: the cluster runs at {:.2}x local mode's speed",
                    l / c
                );
            }
        }
        Bench::Shuffle {
            batches,
            batch_kib,
            runs,
        } => {
            use shardflow_bench::shuffle;
            let batch_bytes = batch_kib << 10;
            println!(
                "shuffle: {batches} batches of {batch_kib} KiB, {runs} runs each (interleaved)"
            );
            let shm_dir = if std::path::Path::new("/dev/shm").is_dir() {
                tempfile::tempdir_in("/dev/shm")?
            } else {
                tempfile::tempdir()?
            };
            let bell = std::sync::Arc::new(shardflow_shuffle::bell::Bell::create(
                &shm_dir.path().join("bench.bell"),
            )?);
            let gbs = |d: Duration| (batches as usize * batch_bytes) as f64 / d.as_secs_f64() / 1e9;
            let (mut copy, mut hand, mut local, mut shm, mut tcp, mut link) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            // The TCP link as the engine sizes it for one channel (the link's whole window,
            // `LINK_WINDOW_BUFFERS`), and with the per-channel default a channel gets on a link
            // that carries many (16 buffers).
            let link_credits = shardflow_shuffle::tcp::link_channel_buffers(16, 1);
            let mut link_narrow = vec![];
            for run in 0..runs {
                copy.push(gbs(shuffle::memcpy(batches, batch_bytes)));
                hand.push(gbs(shuffle::handoff(batches, batch_bytes)));
                let (tx, rx) = shardflow_shuffle::ring(
                    1,
                    shardflow_shuffle::RingConfig {
                        buffers: 4,
                        buffer_bytes: batch_bytes + 64,
                    },
                );
                local.push(gbs(shuffle::ring(tx, rx, batches, batch_bytes)));
                let path = shm_dir.path().join(format!("ring-{run}"));
                let rx = shardflow_shuffle::shm::create_receiver(
                    &path,
                    2,
                    shardflow_shuffle::shm::ShmConfig {
                        slots: 4,
                        slot_bytes: 2 * batch_bytes,
                    },
                    bell.clone(),
                )?;
                let tx = shardflow_shuffle::shm::attach_sender(&path, 2, bell.clone())?;
                shm.push(gbs(shuffle::ring(tx, rx, batches, batch_bytes)));
                tcp.push(gbs(shuffle::socketpair(batches, batch_bytes)?));
                link.push(gbs(shuffle::tcp(batches, batch_bytes, link_credits)?));
                link_narrow.push(gbs(shuffle::tcp(batches, batch_bytes, 16)?));
                println!(
                    "  memcpy {:.2} GB/s, copied across cores {:.2} GB/s, in process {:.2} GB/s, shared memory {:.2} GB/s, plain TCP socket pair {:.2} GB/s, TCP link {:.2} GB/s ({link_credits} credits; 16 credits: {:.2} GB/s)",
                    copy[run],
                    hand[run],
                    local[run],
                    shm[run],
                    tcp[run],
                    link[run],
                    link_narrow[run]
                );
            }
            let (copy, hand, local, shm, tcp, link) = (
                median(copy),
                median(hand),
                median(local),
                median(shm),
                median(tcp),
                median(link),
            );
            let link_narrow = median(link_narrow);
            // Records of 16 bytes (the exchange bench's): what the bytes mean in records/s.
            let mrec = |gbs: f64| gbs * 1e9 / 16.0 / 1e6;
            println!(
                "  records of 16 bytes: in process {:.0} M/s, shared memory {:.0} M/s, TCP link {:.0} M/s",
                mrec(local),
                mrec(shm),
                mrec(link)
            );
            println!(
                "  medians: memcpy {copy:.2} GB/s; copied across cores {hand:.2} GB/s; in process {local:.2} GB/s ({:.2}x memcpy); shared memory {shm:.2} GB/s ({:.2}x memcpy, {:.2}x copied across cores); plain TCP {tcp:.2} GB/s; TCP link {link:.2} GB/s ({link_credits} credits, one channel's window: {:.2}x plain TCP; with 16 credits {link_narrow:.2} GB/s, {:.2}x)",
                local / copy,
                shm / copy,
                shm / hand,
                link / tcp,
                link_narrow / tcp
            );
        }
        Bench::Wordcount { lines, runs } => {
            let dir = tempdir()?;
            let path = dir.join("text.txt");
            let bytes = wordcount::write_text(&path, lines, 42)?;
            println!(
                "wordcount: {lines} lines, {:.1} MiB, {runs} runs each (interleaved)",
                bytes as f64 / (1 << 20) as f64
            );
            let (mut base, mut p1, mut p2) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let b = wordcount::baseline(&path);
                let e1 = wordcount::engine(&path, 1);
                let e2 = wordcount::engine(&path, 2);
                assert_eq!(
                    (b.words, b.distinct),
                    (e1.words, e1.distinct),
                    "engine P=1 disagrees with the loop"
                );
                assert_eq!(
                    (b.words, b.distinct),
                    (e2.words, e2.distinct),
                    "engine P=2 disagrees with the loop"
                );
                base.push(b.words_per_second());
                p1.push(e1.words_per_second());
                p2.push(e2.words_per_second());
            }
            let (b, e1, e2) = (median(base), median(p1), median(p2));
            println!("  hand loop (1 thread)  {:>8.1} M words/s", b / 1e6);
            println!(
                "  engine P=1            {:>8.1} M words/s   {:.2}x the loop",
                e1 / 1e6,
                e1 / b
            );
            println!(
                "  engine P=2            {:>8.1} M words/s   {:.2}x the loop",
                e2 / 1e6,
                e2 / b
            );
            std::fs::remove_dir_all(&dir)?;
        }
        Bench::Windows {
            events,
            keys,
            runs,
            engine_only,
            loop_only,
            one_phase,
            checkpoint_ms,
            unaligned,
        } => {
            let settings = shardflow::jobs::telemetry::TelemetrySettings {
                readings: events,
                sensors: keys,
                two_phase: !one_phase,
                ..Default::default()
            };
            println!(
                "windows: {events} events, {keys} keys, disorder {} ms, out-of-orderness {} ms, \
                 tumbling {} ms windows, {} aggregation, {runs} runs each (interleaved)",
                settings.disorder_ms,
                settings.out_of_orderness_ms,
                settings.window_ms,
                if settings.two_phase {
                    "two-phase"
                } else {
                    "one-phase"
                }
            );
            if loop_only {
                for _ in 0..runs {
                    let r = windows::baseline(&settings);
                    println!(
                        "  hand loop  {:>8.1} M events/s",
                        r.events_per_second() / 1e6
                    );
                }
                return Ok(());
            }
            if let Some(ms) = checkpoint_ms {
                let p = engine_only.unwrap_or(2);
                let interval = Duration::from_millis(ms.max(1));
                let (mut plain, mut with, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
                let mut stats = Vec::new();
                for _ in 0..runs {
                    let a = windows::engine(&settings, p);
                    let (b, s) =
                        windows::engine_checkpointed(&settings, p, Some(interval), unaligned);
                    assert_eq!(a.digest, b.digest, "checkpoints changed the windows");
                    plain.push(a.events_per_second());
                    with.push(b.events_per_second());
                    ratio.push(b.events_per_second() / a.events_per_second());
                    println!(
                        "  P={p}: {:>7.1} M/s without, {:>7.1} M/s with {} checkpoints",
                        a.events_per_second() / 1e6,
                        b.events_per_second() / 1e6,
                        s.len()
                    );
                    stats.extend(s);
                }
                let mut d: Vec<f64> = stats
                    .iter()
                    .map(|c| c.duration.as_secs_f64() * 1e3)
                    .collect();
                d.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let q = |x: f64| {
                    d.get(((d.len() as f64 - 1.0) * x).round() as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                let mut added: Vec<f64> = stats.iter().map(|c| c.bytes_added as f64).collect();
                added.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let mut aligned: Vec<f64> = stats
                    .iter()
                    .map(|c| c.alignment.as_secs_f64() * 1e3)
                    .collect();
                aligned.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let qa = |x: f64| {
                    aligned
                        .get(((aligned.len() as f64 - 1.0) * x).round() as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                println!(
                    "  medians: {:.1} M/s without, {:.1} M/s with checkpoints every {ms} ms: {:.2}x",
                    median(plain) / 1e6,
                    median(with) / 1e6,
                    median(ratio)
                );
                println!(
                    "  {} checkpoints: duration p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; bytes added per checkpoint median {:.0}",
                    d.len(),
                    q(0.5),
                    q(0.99),
                    d.last().copied().unwrap_or(0.0),
                    added.get(added.len() / 2).copied().unwrap_or(0.0)
                );
                println!(
                    "  alignment (longest per checkpoint): p50 {:.2} ms, p99 {:.2} ms",
                    qa(0.5),
                    qa(0.99)
                );
                return Ok(());
            }
            if let Some(p) = engine_only {
                for _ in 0..runs {
                    let r = windows::engine(&settings, p);
                    println!(
                        "  engine P={p}  {:>8.1} M events/s",
                        r.events_per_second() / 1e6
                    );
                }
                return Ok(());
            }
            let (mut base, mut p1, mut p2) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let b = windows::baseline(&settings);
                let e1 = windows::engine(&settings, 1);
                let e2 = windows::engine(&settings, 2);
                assert_eq!(b.digest, e1.digest, "engine P=1 disagrees with the loop");
                assert_eq!(b.digest, e2.digest, "engine P=2 disagrees with the loop");
                base.push(b.events_per_second());
                p1.push(e1.events_per_second());
                p2.push(e2.events_per_second());
            }
            let (b, e1, e2) = (median(base), median(p1), median(p2));
            println!("  hand loop (1 thread)  {:>8.1} M events/s", b / 1e6);
            println!(
                "  engine P=1            {:>8.1} M events/s   {:.2}x the loop",
                e1 / 1e6,
                e1 / b
            );
            println!(
                "  engine P=2            {:>8.1} M events/s   {:.2}x the loop",
                e2 / 1e6,
                e2 / b
            );
        }
        Bench::Timers { timers, runs } => {
            println!(
                "timers: {timers} keys with a timer each, registered and fired, {runs} runs (medians)"
            );
            let mut all = Vec::new();
            for i in 0..runs {
                all.push(shardflow_bench::timers::run(timers, 42 + i as u64)?);
            }
            let m = |f: fn(&shardflow_bench::timers::TimersRun) -> f64| {
                median(all.iter().map(f).collect())
            };
            println!(
                "  binary heap (no dedup)      {:>8.2} M/s",
                m(|r| r.heap_per_s) / 1e6
            );
            for (name, f) in [
                (
                    "queue in memory            ",
                    (|r| r.memory_per_s) as fn(&shardflow_bench::timers::TimersRun) -> f64,
                ),
                ("queue in store, no budget  ", |r| r.counted_per_s),
                ("queue in store, budget 1/10", |r| r.budget_per_s),
            ] {
                println!(
                    "  {name} {:>8.2} M/s   {:.2}x the heap, {:.2}x in memory",
                    m(f) / 1e6,
                    median(all.iter().map(|r| f(r) / r.heap_per_s).collect()),
                    median(all.iter().map(|r| f(r) / r.memory_per_s).collect()),
                );
            }
            println!(
                "    blocks written with the budget: {}",
                all.iter()
                    .map(|r| r.blocks_written.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Bench::KeyedState {
            keys,
            ops,
            runs,
            only,
        } => {
            println!(
                "keyed state: {keys} keys, {ops} ValueState read-modify-writes per run, {runs} runs (medians)"
            );
            let mut all = Vec::new();
            for i in 0..runs {
                all.push(shardflow_bench::keyed_state::run(
                    keys,
                    ops,
                    42 + i as u64,
                    only,
                )?);
            }
            let m = |f: fn(&shardflow_bench::keyed_state::KeyedStateRun) -> f64| {
                median(all.iter().map(f).collect())
            };
            let lp = m(|r| r.loop_per_s);
            println!("  hand loop (hash map)        {:>8.2} M/s", lp / 1e6);
            println!(
                "  ValueState, in cache        {:>8.2} M/s   {:.2}x the loop",
                m(|r| r.cached_per_s) / 1e6,
                m(|r| r.cached_per_s / r.loop_per_s)
            );
            println!(
                "  ValueState, budget 1/10     {:>8.2} M/s   {:.2}x the loop",
                m(|r| r.paging_per_s) / 1e6,
                m(|r| r.paging_per_s / r.loop_per_s)
            );
            println!(
                "    store reads, writes       {:>8.2} M/s, {:.2} M/s",
                m(|r| r.store_reads_per_s) / 1e6,
                m(|r| r.store_writes_per_s) / 1e6
            );
            println!(
                "  value() reads, budget 1/10  {:>8.2} M/s   (point gets through the cache, from mapped segments)",
                m(|r| r.paged_reads_per_s) / 1e6
            );
        }
        Bench::Store { keys, runs } => {
            println!("store: {keys} keys of 16 bytes, 100-byte values, {runs} runs (medians)");
            let mut all = Vec::new();
            for _ in 0..runs {
                all.push(shardflow_bench::store::run(keys)?);
            }
            let m = |f: fn(&shardflow_bench::store::StoreRun) -> f64| {
                median(all.iter().map(f).collect())
            };
            println!(
                "  puts                      {:>10.2} M/s",
                m(|r| r.puts_per_s) / 1e6
            );
            println!(
                "  gets, active segment      {:>10.2} M/s",
                m(|r| r.active_gets_per_s) / 1e6
            );
            println!(
                "  gets, sealed (mapped)     {:>10.2} M/s",
                m(|r| r.sealed_gets_per_s) / 1e6
            );
            println!(
                "  scan                      {:>10.0} MB/s",
                m(|r| r.scan_mb_per_s)
            );
            println!(
                "  compaction                {:>10.0} MB/s",
                m(|r| r.compact_mb_per_s)
            );
            println!(
                "  reopen (index rebuild)    {:>10.0} MB/s",
                m(|r| r.reopen_mb_per_s)
            );
            println!(
                "  sealed bytes              {:>10.1} MB",
                all[0].bytes as f64 / 1e6
            );
        }
        Bench::CountBaseline { input } => {
            let r = wordcount::baseline(&input);
            println!(
                "{} words, {} distinct, {:?}",
                r.words, r.distinct, r.elapsed
            );
        }
        Bench::GenText { lines, output } => {
            let bytes = wordcount::write_text(&output, lines, 42)?;
            println!("{} bytes written to {}", bytes, output.display());
        }
        Bench::Exchange {
            records,
            runs,
            engine_only: true,
        } => {
            for _ in 0..runs {
                let d = exchange::engine_exchange::<Rec16>(records, SchedulingMode::Throughput);
                println!(
                    "engine: {:.1} M records/s",
                    records as f64 / d.as_secs_f64() / 1e6
                );
            }
        }
        Bench::Exchange { records, runs, .. } => {
            for size in [16, 128] {
                let (mut bare, mut eng, mut eng_lat) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..runs {
                    let per = |d: Duration| records as f64 / d.as_secs_f64();
                    if size == 16 {
                        bare.push(per(exchange::bare_handoff::<Rec16>(records, 2048)));
                        eng.push(per(exchange::engine_exchange::<Rec16>(
                            records,
                            SchedulingMode::Throughput,
                        )));
                        eng_lat.push(per(exchange::engine_exchange::<Rec16>(
                            records,
                            SchedulingMode::Latency,
                        )));
                    } else {
                        let n = records / 4;
                        let per = |d: Duration| n as f64 / d.as_secs_f64();
                        bare.push(per(exchange::bare_handoff::<Rec128>(n, 256)));
                        eng.push(per(exchange::engine_exchange::<Rec128>(
                            n,
                            SchedulingMode::Throughput,
                        )));
                        eng_lat.push(per(exchange::engine_exchange::<Rec128>(
                            n,
                            SchedulingMode::Latency,
                        )));
                    }
                }
                let (b, e, l) = (median(bare), median(eng), median(eng_lat));
                println!("exchange, {size}-byte records ({runs} runs, medians):");
                println!(
                    "  bare rkyv hand-off              {:>8.1} M records/s",
                    b / 1e6
                );
                println!(
                    "  engine, throughput scheduling   {:>8.1} M records/s   {:.2}x bare",
                    e / 1e6,
                    e / b
                );
                println!(
                    "  engine, latency scheduling      {:>8.1} M records/s   {:.2}x bare",
                    l / 1e6,
                    l / b
                );
            }
        }
        Bench::Latency {
            records,
            gap_us,
            parked,
            io_poll_ms,
        } => {
            let mode = if parked {
                SchedulingMode::Throughput
            } else {
                SchedulingMode::Latency
            };
            let h = exchange::lone_record_latency(
                records,
                records / 10,
                Duration::from_micros(gap_us),
                mode,
                Duration::from_millis(io_poll_ms),
            );
            println!(
                "lone record one-way latency, {mode:?} scheduling (I/O poll every {io_poll_ms} ms), \
                 {records} records, {gap_us} µs apart:"
            );
            for q in [0.5, 0.9, 0.99, 0.999] {
                println!(
                    "  p{:<5} {:>9.2} µs",
                    q * 100.0,
                    h.value_at_quantile(q) as f64 / 1e3
                );
            }
            println!("  max    {:>9.2} µs", h.max() as f64 / 1e3);
        }
    }
    Ok(())
}

fn tempdir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("shardflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
