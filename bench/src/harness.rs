//! What the harness's workloads share: the common flags (parallelism, size, rate, warm-up,
//! runs, seed, outputs) and what happens to a finished [`Report`] (a table on stdout, and on
//! request JSON, charts and a section of bench/RESULTS.md).

use std::path::PathBuf;
use std::sync::Arc;

use shardflow::prelude::*;
use shardflow_core::operator::sink::SinkFunction;

use crate::report::Report;

/// Flags every workload of the harness takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The engine's parallelism for each set of runs, comma-separated (e.g. `1,2`).
    #[arg(short = 'p', long, value_delimiter = ',', default_values_t = [1u32, 2])]
    pub parallelism: Vec<u32>,
    /// Events per run (the workload's default if not given).
    #[arg(long)]
    pub events: Option<u64>,
    /// Seconds per run, for paced workloads (the workload's default if not given).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Rate, events per second: of event time for Nexmark and telemetry (how far apart the
    /// generated timestamps are; events go as fast as the engine takes them), of real time
    /// for the trading feed (each event is sent when it is due).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Runs of each variant before the measured ones, not counted.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured runs of each variant; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Skip the hand-written single-threaded baselines.
    #[arg(long)]
    pub no_baseline: bool,
    /// Writes every figure, with its settings, the machine and the commit, to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Renders the run's charts (SVG and PNG) into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Appends the run's table, command and machine to this Markdown file (e.g.
    /// bench/RESULTS.md).
    #[arg(long, value_name = "FILE")]
    pub append_results: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    /// Refuses settings no run can be made with, naming the flag.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.runs >= 1,
            "--runs must be at least 1 (medians of the runs are reported)"
        );
        anyhow::ensure!(
            !self.parallelism.is_empty() && self.parallelism.iter().all(|&p| p >= 1),
            "-p takes parallelisms of at least 1, e.g. `-p 1,2`"
        );
        if let Some(r) = self.rate {
            anyhow::ensure!(r >= 1, "--rate must be at least 1 event per second");
        }
        if let Some(d) = self.duration_s {
            anyhow::ensure!(
                d.is_finite() && d > 0.0,
                "--duration-s must be a positive number of seconds"
            );
        }
        Ok(())
    }

    /// Prints the report's table and writes what the flags asked for.
    pub fn finish(&self, report: &Report) -> anyhow::Result<()> {
        println!("\n{}", report.table());
        for d in &report.distributions {
            println!(
                "{}: {} samples; p50 {:.2} {u}, p99 {:.2} {u}, p99.9 {:.2} {u}, p99.99 {:.2} {u}, max {:.2} {u}",
                d.name,
                d.count,
                d.p50,
                d.p99,
                d.p999,
                d.p9999,
                d.max,
                u = d.unit
            );
        }
        if let Some(path) = &self.json {
            report.write_json(path)?;
            println!("figures written to {}", path.display());
        }
        if let Some(dir) = &self.plot {
            std::fs::create_dir_all(dir)?;
            for p in report.plot(dir)? {
                println!("chart: {}", p.display());
            }
        }
        if let Some(path) = &self.append_results {
            report.append_to(path)?;
            println!("appended to {}", path.display());
        }
        Ok(())
    }

    /// Every setting of these flags, for the report.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            (
                "parallelism",
                self.parallelism
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("warmup runs", self.warmup.to_string()),
            ("runs", self.runs.to_string()),
            ("seed", self.seed.to_string()),
        ];
        if let Some(r) = self.rate {
            s.push(("rate", r.to_string()));
        }
        s
    }
}

/// Samples, every 100 ms while `env`'s job runs, the records/s its source operators named
/// `source` emit: (seconds since the start, records/s), for the "throughput over time" charts.
pub fn sample_source_rate(
    env: &mut StreamExecutionEnvironment,
    source: &'static str,
) -> Arc<std::sync::Mutex<Vec<(f64, f64)>>> {
    env.config_mut().progress_interval = std::time::Duration::from_millis(100);
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = samples.clone();
    let mut last = (0.0f64, 0u64);
    env.on_progress(move |m, elapsed| {
        let emitted: u64 = m
            .operators
            .iter()
            .filter(|o| o.name == source)
            .map(|o| o.records_out)
            .sum();
        let t = elapsed.as_secs_f64();
        if t > last.0 {
            let rate = (emitted - last.1) as f64 / (t - last.0);
            out.lock().expect("not poisoned").push((t, rate));
            last = (t, emitted);
        }
    });
    samples
}

/// A sink that drops what reaches it: the end of a benchmark's job.
pub struct DropSink;

impl<T> SinkFunction<T> for DropSink {
    #[inline]
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        Ok(())
    }
}

/// Ends `stream` in a [`DropSink`].
pub fn drop_into<T: Data>(stream: &DataStream<T>) {
    stream.sink_to("count", |_| Ok(DropSink));
}

/// `shardflow-bench command -- CMD ARGS...`: times a job of one's own. The command runs
/// `--warmup` + `--runs` times for each parallelism (`{p}` in its arguments is replaced by
/// it), interleaved; its wall time is reported, and events/s when `--events` says how many
/// events one run processes. A run that fails stops the harness, with the command's status.
pub fn run_command(common: &Common, command: &[String]) -> anyhow::Result<()> {
    crate::report::progress::set_quiet(common.quiet);
    common.check()?;
    let (program, args) = command.split_first().ok_or_else(|| {
        anyhow::anyhow!("no command given (`shardflow-bench command -- CMD ARGS`)")
    })?;
    let mut report = Report::new("command", common.settings());
    report.setting("command", command.join(" "));
    if let Some(n) = common.events {
        report.setting("events per run", n);
    }
    let progress = crate::report::Progress::new(
        (common.parallelism.len() * (common.warmup + common.runs)) as u64,
        "command",
    );
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); common.parallelism.len()];
    for run in 0..common.warmup + common.runs {
        for (k, &p) in common.parallelism.iter().enumerate() {
            progress.set_message(format!("P={p} run {}", run + 1));
            let args: Vec<String> = args
                .iter()
                .map(|a| a.replace("{p}", &p.to_string()))
                .collect();
            let t0 = std::time::Instant::now();
            let out = std::process::Command::new(program)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .status()
                .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
            let elapsed = t0.elapsed().as_secs_f64();
            anyhow::ensure!(
                out.success(),
                "run {} at P = {p} of `{program} {}` failed: {out}",
                run + 1,
                args.join(" ")
            );
            if run >= common.warmup {
                secs[k].push(elapsed);
            }
            progress.inc(1);
        }
    }
    progress.finish();
    for (k, &p) in common.parallelism.iter().enumerate() {
        let v = format!("P={p}");
        report.figure("command", &v, "wall time", "s", &secs[k]);
        if let Some(n) = common.events {
            let rates: Vec<f64> = secs[k].iter().map(|s| n as f64 / s).collect();
            report.figure("command", &v, "throughput", "events/s", &rates);
        }
    }
    if let Some(&first) = common.parallelism.first() {
        report.compare_to_baseline("command", &format!("P={first}"));
    }
    common.finish(&report)
}
