//! The `shardflow` command line: runs the built-in jobs in local mode.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
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

fn configure(env: &mut StreamExecutionEnvironment, common: &Common) {
    if let Some(p) = common.parallelism {
        env.set_parallelism(p);
    }
    env.set_scheduling_mode(match common.scheduling {
        Scheduling::Throughput => SchedulingMode::Throughput,
        Scheduling::Latency => SchedulingMode::Latency,
    });
}

/// Prints, every second on one refreshed line of standard error: records in/s (out of the job's
/// first operator, its source), records out/s (into its sinks), and backpressure (how often a
/// sender found no credit in the last second).
fn progress_reporter(job: &'static str) -> impl FnMut(&MetricsSnapshot, Duration) {
    let mut last: Option<(u64, u64, u64, Duration)> = None;
    move |m: &MetricsSnapshot, t: Duration| {
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
        Command::Run { job } => match job {
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
                configure(&mut env, &common);
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
                        counts.write_as_csv_with(dir.clone(), WriteMode::Overwrite);
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
