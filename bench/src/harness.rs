//! What the harness's workloads share: the common flags (parallelism, size, rate, warm-up,
//! runs, seed, outputs) and what happens to a finished [`Report`] (a table on stdout, and on
//! request JSON, charts and a section of bench/RESULTS.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Target rate, events per second (for Nexmark: of event time).
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

/// A sink that counts what reaches it and drops it: the end of a benchmark's job.
pub struct CountingSink {
    seen: u64,
    total: Arc<AtomicU64>,
}

impl CountingSink {
    pub fn new(total: Arc<AtomicU64>) -> Self {
        Self { seen: 0, total }
    }
}

impl<T> SinkFunction<T> for CountingSink {
    #[inline]
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.seen += batch.len() as u64;
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.total.fetch_add(self.seen, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends `stream` into a [`CountingSink`] adding to `total`.
pub fn count_into<T: Data>(stream: &DataStream<T>, total: &Arc<AtomicU64>) {
    let total = total.clone();
    stream.sink_to("count", move |_| Ok(CountingSink::new(total.clone())));
}
