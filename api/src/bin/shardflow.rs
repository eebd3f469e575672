//! The `shardflow` command line: runs the built-in jobs in local mode.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use shardflow::cluster::{ClusterArgs, JobManagerArgs, TaskManagerArgs};
use shardflow::jobs::logs;
use shardflow::jobs::telemetry::{self, TelemetrySettings, WindowStats};
use shardflow::jobs::wordcount::{self, ShortString, WordCountInput};
use shardflow::prelude::*;
use shardflow_core::runtime::MetricsSnapshot;

#[derive(Parser)]
#[command(
    name = "shardflow",
    version,
    about = "Stream and batch processing on a thread-per-core io_uring engine",
    long_about = "Stream and batch processing on a thread-per-core io_uring engine.\n\n\
                  Runs the built-in jobs in local mode: one process, one pinned shard per core.\n\
                  Try `shardflow run wordcount` (it generates its own text)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a built-in job.
    Run {
        #[command(subcommand)]
        job: Job,
    },
    /// Write sample input for the built-in jobs.
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
    /// List the local jobs running on this machine (or, with --jobmanager, a cluster's).
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Take a savepoint of a running local job, or with --jobmanager a cluster's (run with
    /// --checkpoint-dir): a full,
    /// self-contained copy of its state, restored with `run ... --from-savepoint PATH`, at any
    /// parallelism. Prints the savepoint's path.
    Savepoint {
        /// The job's name (as `shardflow list` shows it), or on a cluster its id.
        job: String,
        /// The directory to write the savepoint into (a new `savepoint-<n>` in it).
        #[arg(long, default_value = "savepoints")]
        dir: PathBuf,
        /// Which process, if several run the job.
        #[arg(long)]
        pid: Option<u32>,
        /// Cancel the job once the savepoint is taken (stop with savepoint).
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Cancel a running local job (or, with --jobmanager, a cluster's).
    Cancel {
        /// The job's name (as `shardflow list` shows it), or on a cluster its id.
        job: String,
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run a cluster's job manager: task managers register with it, `shardflow run ...
    /// --jobmanager ADDR` submits jobs to it.
    Jobmanager(JobManagerArgs),
    /// Run a task manager: offers this machine's cores to a job manager as shards.
    Taskmanager(TaskManagerArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Emit each word's final count once (bounded input).
    Batch,
    /// Emit every updated count (a rolling sum), as a streaming job does.
    Streaming,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scheduling {
    /// Idle shards park their core.
    Throughput,
    /// Idle shards busy-poll their inputs (lowest latency, burns the core).
    Latency,
}

#[derive(clap::Args)]
struct Common {
    /// Shards to run on (default: the cores this process may use). May exceed the cores.
    #[arg(long, short = 'p')]
    parallelism: Option<u32>,
    #[arg(long, value_enum, default_value_t = Scheduling::Throughput)]
    scheduling: Scheduling,
    /// Mebibytes of keyed state kept in memory (all shards together); beyond it, state goes to
    /// the shards' stores on disk and comes back when used. Default: no limit.
    #[arg(long, value_name = "MIB")]
    state_memory_mib: Option<usize>,
    /// Where the shards' state stores live while the job runs (default: a fresh temporary
    /// directory). Removed when the job ends.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Take checkpoints into this directory (incremental; the newest three are kept).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Milliseconds between checkpoints (with --checkpoint-dir).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// With --checkpoint-dir and --output: an output part open this long rolls (is committed at
    /// the next checkpoint and a new one begun), as Flink's file sink's rollover interval.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    part_rollover_ms: u64,
    /// Unaligned checkpoints: barriers overtake the records waiting in exchanges, which go
    /// into the checkpoint (for jobs under backpressure; restore at the same parallelism).
    #[arg(long)]
    unaligned_checkpoints: bool,
    /// Resume from a savepoint (or a checkpoint: a `chk-<n>` directory, or a checkpoint
    /// directory's newest complete one), at this run's parallelism (rescaling if it differs).
    #[arg(long, value_name = "PATH")]
    from_savepoint: Option<PathBuf>,
    /// With --from-savepoint: drop the state of operators this job no longer has, instead of
    /// failing.
    #[arg(long)]
    allow_non_restored_state: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Subcommand)]
enum Job {
    /// Count the words of a text: `(word, count)` for every distinct word.
    ///
    /// Without --input, generates its own text: --lines lines of Zipf-distributed words.
    /// Without --output, prints the ten most frequent words and a summary.
    Wordcount {
        /// A text file, or a directory of text files.
        #[arg(long)]
        input: Option<PathBuf>,
        /// A directory to write `word,count` CSV files into (one per shard; replaced if present).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Lines of text to generate when there is no --input.
        #[arg(long, default_value_t = 2_000_000)]
        lines: u64,
        /// Seed of the generated text.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = Mode::Batch)]
        mode: Mode,
        /// Skip (and count) lines that are not UTF-8 instead of failing.
        #[arg(long)]
        skip_malformed: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Count ERROR lines per host in one-minute event-time windows, from log lines of the form
    /// `<RFC 3339 timestamp> <host> <LEVEL> <message>`.
    ///
    /// Lines that do not parse are counted and listed with their file and line number; the job
    /// goes on. Try it on `shardflow generate logs --output logs.txt`.
    Logs {
        /// A log file, or a directory of them.
        #[arg(long)]
        input: PathBuf,
        /// A directory to write `window_start,window_end,host,errors` CSV files into.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Window length in seconds.
        #[arg(long, default_value_t = 60)]
        window_secs: u64,
        /// How far out of order (in event time) lines may be and still count, in seconds.
        #[arg(long, default_value_t = 5)]
        out_of_orderness_secs: u64,
        /// How long after its end a window still takes late lines (and is emitted again).
        #[arg(long, default_value_t = 0)]
        allowed_lateness_secs: u64,
        /// Malformed lines to list (all are counted).
        #[arg(long, default_value_t = 20)]
        show_malformed: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Generated sensor readings, out of order, in per-sensor tumbling event-time windows of
    /// count, sum and max.
    Telemetry {
        /// Readings per second (of event time; of real time too with --paced).
        #[arg(long, default_value_t = 1_000_000)]
        rate: u64,
        /// Seconds of readings.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value_t = 10_000)]
        sensors: u32,
        /// How far back a reading's time may be pulled (its disorder), in milliseconds.
        #[arg(long, default_value_t = 50)]
        disorder_ms: u64,
        /// The watermark's bound, in milliseconds: readings this much out of order still count.
        #[arg(long, default_value_t = 100)]
        out_of_orderness_ms: u64,
        #[arg(long, default_value_t = 1_000)]
        window_ms: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Emit readings in real time at --rate (a live feed) instead of as fast as possible.
        #[arg(long)]
        paced: bool,
        /// Send every reading to the shard of its sensor instead of pre-aggregating per shard
        /// first (two-phase aggregation, the default).
        #[arg(long)]
        one_phase: bool,
        /// A directory to write `sensor,window_start,window_end,count,sum,max` CSV files into.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum Generate {
    /// Log lines for `shardflow run logs`: timestamps a few seconds out of order, a few hosts,
    /// levels INFO/WARN/ERROR, and (with --malformed) some lines that do not parse.
    Logs {
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        lines: u64,
        /// One line in this many is malformed (0: none).
        #[arg(long, default_value_t = 0)]
        malformed_every: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// Keeps the latest count of each word of a streaming WordCount and emits them when the input
/// ends.
#[derive(Clone, Default)]
struct LatestCount {
    latest: std::collections::HashMap<ShortString, u64>,
}

impl ProcessFunction<(ShortString, u64), (ShortString, u64)> for LatestCount {
    fn process_element(
        &mut self,
        (word, count): (ShortString, u64),
        _ctx: &RuntimeContext,
        _out: &mut Collector<(ShortString, u64)>,
    ) -> Result<(), UserError> {
        self.latest.insert(word, count);
        Ok(())
    }

    fn finish(
        &mut self,
        _ctx: &RuntimeContext,
        out: &mut Collector<(ShortString, u64)>,
    ) -> Result<(), UserError> {
        out.extend(self.latest.drain());
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardflow: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Hands a value built by a chain of calls to a function (ends a stream's chain in a sink).
trait ThenDo: Sized {
    fn then_do<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}

impl<T> ThenDo for T {}

/// Writes `stream` as CSV part files into `dir`: exactly once when the job takes checkpoints
/// (the file sink: parts published as checkpoints complete, appended after a directory's
/// earlier parts, so a resumed run goes on where it stopped), else one file per shard,
/// replaced.
fn write_csv<T: shardflow::sink::csv::ToCsv + shardflow_core::Data>(
    stream: &DataStream<T>,
    dir: &std::path::Path,
    common: &Common,
) {
    if common.checkpoint_dir.is_some() {
        let mut options = FileSinkOptions {
            suffix: ".csv".to_string(),
            ..Default::default()
        };
        options.rolling.rollover_interval = Duration::from_millis(common.part_rollover_ms.max(1));
        stream.sink_to_files_with(dir, options, shardflow::sink::csv::csv_line::<T>);
    } else {
        stream.write_as_csv_with(dir.to_path_buf(), WriteMode::Overwrite);
    }
}

/// Applies the common flags, and serves the job's control socket (savepoints, cancel) until
/// the returned server is dropped.
fn configure(
    env: &mut StreamExecutionEnvironment,
    common: &Common,
    job: &str,
) -> Result<shardflow::control::ControlServer, JobError> {
    configure_env(env, common);
    env.config_mut().restore_from = common.from_savepoint.clone();
    env.config_mut().allow_non_restored_state = common.allow_non_restored_state;
    let control = shardflow_core::config::JobControl::default();
    env.config_mut().control = Some(control.clone());
    if shardflow_core::cluster::deployed().is_some() {
        return Ok(shardflow::control::ControlServer::none());
    }
    shardflow::control::serve(job, control)
}

fn configure_env(env: &mut StreamExecutionEnvironment, common: &Common) {
    if let Some(p) = common.parallelism {
        env.set_parallelism(p);
    }
    env.set_scheduling_mode(match common.scheduling {
        Scheduling::Throughput => SchedulingMode::Throughput,
        Scheduling::Latency => SchedulingMode::Latency,
    });
    env.config_mut().state_memory_bytes = common.state_memory_mib.map(|m| m << 20);
    env.config_mut().state_dir = common.state_dir.clone();
    if let Some(dir) = &common.checkpoint_dir {
        let mut c = shardflow_core::checkpoint::CheckpointConfig::new(
            dir,
            Duration::from_millis(common.checkpoint_interval_ms.max(1)),
        );
        c.unaligned = common.unaligned_checkpoints;
        env.config_mut().checkpoints = Some(c);
    }
}

/// Prints, every second on one refreshed line of standard error: records in/s (out of the job's
/// first operator, its source), records out/s (into its sinks), and backpressure (how often a
/// sender found no credit in the last second).
fn progress_reporter(job: &'static str) -> impl FnMut(&MetricsSnapshot, Duration) {
    let mut last: Option<(u64, u64, u64, Duration)> = None;
    let mut checkpoints_shown = 0;
    move |m: &MetricsSnapshot, t: Duration| {
        // Each checkpoint completed since the last report, on a line of its own.
        for c in m.checkpoints.iter().skip(checkpoints_shown) {
            eprintln!(
                "\r[{job}] checkpoint {}: {:.0} ms, {:.1} MB written, {:.1} MB in all, \
                 aligned in {:.1} ms{:20}",
                c.id,
                c.duration.as_secs_f64() * 1e3,
                c.bytes_added as f64 / 1e6,
                c.bytes_total as f64 / 1e6,
                c.alignment.as_secs_f64() * 1e3,
                ""
            );
        }
        checkpoints_shown = m.checkpoints.len();
        let input = m.operators.first().map_or(0, |o| o.records_out);
        let output: u64 = m
            .operators
            .iter()
            .filter(|o| o.records_out == 0 && o.records_in > 0)
            .map(|o| o.records_in)
            .sum();
        let stalls: u64 = m.exchanges.iter().map(|e| e.credit_stalls).sum();
        let (li, lo, ls, lt) = last.unwrap_or((0, 0, 0, Duration::ZERO));
        let dt = (t - lt).as_secs_f64().max(1e-9);
        eprint!(
            "\r[{job}] {:>6.1} s  in {:>12.0} records/s  out {:>12.0} records/s  backpressure {:>8.0} stalls/s   ",
            t.as_secs_f64(),
            input.saturating_sub(li) as f64 / dt,
            output.saturating_sub(lo) as f64 / dt,
            stalls.saturating_sub(ls) as f64 / dt,
        );
        let _ = std::io::stderr().flush();
        last = Some((input, output, stalls, t));
    }
}

fn run(cli: Cli) -> Result<(), JobError> {
    match cli.command {
        Command::Generate {
            what:
                Generate::Logs {
                    output,
                    lines,
                    malformed_every,
                    seed,
                },
        } => {
            let bytes = logs::write_sample(&output, lines, malformed_every, seed)
                .map_err(|e| JobError::io(&output, "cannot write sample logs", e))?;
            println!(
                "{lines} lines ({bytes} bytes) written to {}",
                output.display()
            );
            Ok(())
        }
        Command::List {
            cluster:
                ClusterArgs {
                    jobmanager: Some(jm),
                    secret,
                },
        } => {
            let secret = shardflow_core::cluster::secret(secret.as_deref())?;
            let jobs = shardflow_core::cluster::jobmanager::list(&jm, &secret)?;
            if jobs.is_empty() {
                println!("no job is running on {jm}");
            }
            for j in jobs {
                println!("{j}");
            }
            Ok(())
        }
        Command::Cancel {
            job,
            cluster:
                ClusterArgs {
                    jobmanager: Some(jm),
                    secret,
                },
            ..
        } => {
            let secret = shardflow_core::cluster::secret(secret.as_deref())?;
            let id = shardflow_core::cluster::jobmanager::cancel(&jm, &secret, &job)?;
            println!("cancelled job {id} ({job}) on {jm}");
            Ok(())
        }
        Command::Jobmanager(args) => shardflow::cluster::run_jobmanager(args),
        Command::Taskmanager(args) => {
            // A deployed job runs through the same command line as a local one.
            let runner: shardflow::cluster::JobRunner = std::sync::Arc::new(|args: &[String]| {
                let argv = ["shardflow", "run"]
                    .into_iter()
                    .map(String::from)
                    .chain(args.iter().cloned());
                let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
                run(cli).map_err(|e| e.to_string())
            });
            shardflow::cluster::run_taskmanager(args, runner)
        }
        Command::Run { job } if job.common().cluster.jobmanager.is_some() => submit(&job),
        Command::List { .. } => {
            let jobs = shardflow::control::running_jobs();
            if jobs.is_empty() {
                println!("no local job is running");
            }
            for j in jobs {
                println!("{}\tprocess {}", j.job, j.pid);
            }
            Ok(())
        }
        Command::Savepoint {
            job,
            dir,
            cancel,
            cluster:
                ClusterArgs {
                    jobmanager: Some(jm),
                    secret,
                },
            ..
        } => {
            let secret = shardflow_core::cluster::secret(secret.as_deref())?;
            let path =
                shardflow_core::cluster::jobmanager::savepoint(&jm, &secret, &job, &dir, cancel)?;
            println!("{path}");
            Ok(())
        }
        Command::Savepoint {
            job,
            dir,
            pid,
            cancel,
            ..
        } => {
            let running = shardflow::control::find(&job, pid)?;
            let path = shardflow::control::savepoint(&running, &dir)?;
            println!("{}", path.display());
            if cancel {
                shardflow::control::request(&running, "cancel")?;
            }
            Ok(())
        }
        Command::Cancel { job, pid, .. } => {
            let running = shardflow::control::find(&job, pid)?;
            shardflow::control::request(&running, "cancel")?;
            println!("cancelled {} (process {})", running.job, running.pid);
            Ok(())
        }
        Command::Run { job } => match job {
            Job::Logs {
                input,
                output,
                window_secs,
                out_of_orderness_secs,
                allowed_lateness_secs,
                show_malformed,
                common,
            } => {
                let mut env = StreamExecutionEnvironment::local();
                let _control = configure(&mut env, &common, "logs")?;
                env.on_progress(progress_reporter("logs"));
                let settings = logs::LogsSettings {
                    window: Duration::from_secs(window_secs.max(1)),
                    out_of_orderness: Duration::from_secs(out_of_orderness_secs),
                    allowed_lateness: Duration::from_secs(allowed_lateness_secs),
                };
                let lines = env.read_text_file_located(input.clone(), TextFileOptions::default());
                let (counts, malformed) = logs::error_counts(&lines, &settings);
                let malformed = malformed.collect();
                let collected = match &output {
                    Some(dir) => {
                        counts
                            .map(|h: logs::HostErrors| {
                                (
                                    logs::format_ms(h.window_start),
                                    logs::format_ms(h.window_end),
                                    h.host,
                                    h.errors,
                                )
                            })
                            .then_do(|s| write_csv(&s, dir, &common));
                        None
                    }
                    None => Some(counts.collect()),
                };
                let result = env.execute("logs")?;
                eprintln!();
                print!("{result}");
                let late = result.records_late();
                if let Some(c) = collected {
                    let mut rows = c.take();
                    rows.sort();
                    println!("errors per host and window ({} rows):", rows.len());
                    for r in &rows {
                        println!(
                            "  {} .. {}  {:<20} {:>8}",
                            logs::format_ms(r.window_start),
                            logs::format_ms(r.window_end),
                            r.host,
                            r.errors
                        );
                    }
                } else if let Some(dir) = &output {
                    println!("errors per host and window written to {}", dir.display());
                }
                if late > 0 {
                    println!(
                        "{late} ERROR lines came after their window had closed (more than \
                         {out_of_orderness_secs} s out of order) and were not counted"
                    );
                }
                report_malformed(&input, malformed.take(), show_malformed)?;
                Ok(())
            }
            Job::Telemetry {
                rate,
                duration_secs,
                sensors,
                disorder_ms,
                out_of_orderness_ms,
                window_ms,
                seed,
                paced,
                one_phase,
                output,
                common,
            } => {
                let mut env = StreamExecutionEnvironment::local();
                let _control = configure(&mut env, &common, "telemetry")?;
                env.on_progress(progress_reporter("telemetry"));
                let settings = TelemetrySettings {
                    readings: rate.saturating_mul(duration_secs),
                    sensors: sensors.max(1),
                    rate: rate.max(1),
                    disorder_ms,
                    out_of_orderness_ms,
                    window_ms: window_ms.max(1),
                    seed,
                    paced,
                    two_phase: !one_phase,
                };
                let readings = telemetry::readings(&env, &settings);
                let stats = telemetry::window_stats(&readings, &settings);
                let collected = match &output {
                    Some(dir) => {
                        stats
                            .map(|w: WindowStats| {
                                (
                                    w.sensor,
                                    w.window_start,
                                    w.window_end,
                                    w.count,
                                    w.sum,
                                    w.max,
                                )
                            })
                            .then_do(|s| write_csv(&s, dir, &common));
                        None
                    }
                    None => Some(stats.collect()),
                };
                let result = env.execute("telemetry")?;
                eprintln!();
                print!("{result}");
                let late = result.records_late();
                println!(
                    "{} readings of {} sensors, {:.1} M readings/s; {late} late",
                    settings.readings,
                    settings.sensors,
                    settings.readings as f64 / result.elapsed.as_secs_f64() / 1e6
                );
                match (collected, output) {
                    (Some(c), _) => {
                        let mut rows = c.take();
                        let windows: std::collections::BTreeSet<i64> =
                            rows.iter().map(|w| w.window_start).collect();
                        println!(
                            "{} windows ({} sensors x {} periods); the highest maxima:",
                            rows.len(),
                            settings.sensors,
                            windows.len()
                        );
                        rows.sort_by(|a, b| b.max.cmp(&a.max).then(a.cmp(b)));
                        for w in rows.iter().take(5) {
                            println!(
                                "  sensor {:>6}  {}  count {:>6}  sum {:>9}  max {:>4}",
                                w.sensor,
                                logs::format_ms(w.window_start),
                                w.count,
                                w.sum,
                                w.max
                            );
                        }
                    }
                    (None, Some(dir)) => println!("windows written to {}", dir.display()),
                    (None, None) => unreachable!(),
                }
                Ok(())
            }
            Job::Wordcount {
                input,
                output,
                lines,
                seed,
                mode,
                skip_malformed,
                common,
            } => {
                let mut env = StreamExecutionEnvironment::local();
                let _control = configure(&mut env, &common, "wordcount")?;
                env.set_runtime_mode(match mode {
                    Mode::Batch => RuntimeMode::Batch,
                    Mode::Streaming => RuntimeMode::Streaming,
                });
                if skip_malformed {
                    env.config_mut().on_malformed = OnMalformed::SkipAndCount;
                }
                env.on_progress(progress_reporter("wordcount"));
                let source = match &input {
                    Some(p) => WordCountInput::Path(p.clone()),
                    None => WordCountInput::Generated { lines, seed },
                };
                let text = match &source {
                    WordCountInput::Path(p) if skip_malformed => env.read_text_file_with(
                        p.clone(),
                        TextFileOptions {
                            on_invalid_utf8: OnMalformed::SkipAndCount,
                            ..TextFileOptions::default()
                        },
                    ),
                    _ => wordcount::lines(&env, &source),
                };
                let counts = wordcount::word_counts(&text);
                let collected = match &output {
                    Some(dir) => {
                        counts.then_do(|s| write_csv(&s, dir, &common));
                        None
                    }
                    // Streaming mode emits an update per word read: keep only the latest count of
                    // each word (its updates all arrive, in order, on the shard that owns it)
                    // rather than hold every update in memory.
                    None if mode == Mode::Streaming => Some(
                        counts
                            .process(LatestCount::default())
                            .name("latest")
                            .collect(),
                    ),
                    None => Some(counts.collect()),
                };
                let result = env.execute("wordcount")?;
                eprintln!();
                print!("{result}");
                match (collected, output) {
                    (Some(c), _) => {
                        let mut counts = c.take();
                        let total: u64 = counts.iter().map(|c| c.1).sum();
                        let distinct = counts.len();
                        if mode == Mode::Streaming {
                            let updates = result.operator("latest").map_or(0, |o| o.records_in);
                            println!(
                                "{updates} count updates emitted (streaming mode: one per word read)"
                            );
                        }
                        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                        println!("{distinct} distinct words, {total} words; the most frequent:");
                        for (w, n) in counts.iter().take(10) {
                            println!("  {n:>12}  {w}");
                        }
                    }
                    (None, Some(dir)) => println!("counts written to {}", dir.display()),
                    (None, None) => unreachable!(),
                }
                Ok(())
            }
        },
    }
}

impl Job {
    fn common(&self) -> &Common {
        match self {
            Job::Wordcount { common, .. }
            | Job::Logs { common, .. }
            | Job::Telemetry { common, .. } => common,
        }
    }

    fn output(&self) -> Option<&PathBuf> {
        match self {
            Job::Wordcount { output, .. }
            | Job::Logs { output, .. }
            | Job::Telemetry { output, .. } => output.as_ref(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Wordcount { .. } => "wordcount",
            Job::Logs { .. } => "logs",
            Job::Telemetry { .. } => "telemetry",
        }
    }
}

/// Runs `job` on a cluster: its command line (less the cluster flags) goes to the job manager,
/// which deploys it over its task managers; waits for its end.
fn submit(job: &Job) -> Result<(), JobError> {
    if job.output().is_none() {
        return Err(JobError::Config(
            "on a cluster, give --output DIR: each task manager writes its shards' files there"
                .into(),
        ));
    }
    let args = shardflow::cluster::job_args(&std::env::args().collect::<Vec<_>>());
    let name = job.name();
    let p =
        shardflow::cluster::submit(&job.common().cluster, name, args, job.common().parallelism)?;
    println!(
        "{name} finished at P = {p}; output in {}",
        job.output().expect("checked above").display()
    );
    Ok(())
}

/// Lists malformed lines by file and line number (the first `show` of them, in file order) and
/// says how many there were.
fn report_malformed(
    input: &std::path::Path,
    mut malformed: Vec<logs::Malformed>,
    show: usize,
) -> Result<(), JobError> {
    if malformed.is_empty() {
        return Ok(());
    }
    malformed.sort_by_key(|m| (m.file, m.offset));
    let files = shardflow::source::text_file::list_input_files(input)?;
    println!("{} malformed lines (not counted):", malformed.len());
    let shown = &malformed[..show.min(malformed.len())];
    for group in shown.chunk_by(|a, b| a.file == b.file) {
        let path = &files[group[0].file as usize].0;
        let offsets: Vec<u64> = group.iter().map(|m| m.offset).collect();
        let lines = shardflow::source::text_file::line_number_at(path, &offsets)
            .map_err(|e| JobError::io(path, "cannot read input", e))?;
        for (m, line) in group.iter().zip(lines) {
            println!("  {}:{line}: {}", path.display(), m.reason);
        }
    }
    if malformed.len() > shown.len() {
        println!("  ... and {} more", malformed.len() - shown.len());
    }
    Ok(())
}
