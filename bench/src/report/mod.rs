//! # Reporting a benchmark run
//!
//! A harness run measures a workload beside its hand-written baseline, several times, and may
//! sample time series (throughput or latency percentiles over the run) and latency histograms
//! along the way. A [`Report`] collects all of that with what is needed to reproduce it — the
//! exact command, the machine and the commit ([`Machine`]), the date and the settings — and
//! renders it four ways:
//!
//! - [`Report::table`]: an aligned plain-text table for the terminal;
//! - [`Report::markdown`] and [`Report::append_to`]: a section for `bench/RESULTS.md`, whose old
//!   sections stay so that the history shows;
//! - [`Report::write_json`]: every field, for scripts that compare runs (`--json FILE`);
//! - [`Report::plot`]: SVG and PNG charts, one per chart of [`Series`] and one of the
//!   percentile distributions of every [`Distribution`] (see [`plot`]).
//!
//! What is reported:
//!
//! - a [`Figure`] is one measured quantity of one variant of a workload (say "engine P = 2",
//!   throughput in events/s): the median of its runs, the runs themselves and, once
//!   [`Report::compare_to_baseline`] has run, its ratio to the baseline variant;
//! - a [`Series`] is a sequence of `(x, y)` points sampled during a run, drawn as one line of
//!   the chart it names;
//! - a [`Distribution`] is a latency distribution taken from an `hdrhistogram`, kept as its
//!   percentile points and headline percentiles.
//!
//! [`Progress`] (in [`progress`]) draws a progress bar on stderr while a run goes, and stays
//! silent where nobody watches (CI, tests, `--quiet`).
//!
//! ```
//! use shardflow_bench::report::Report;
//!
//! let mut report = Report::new("wordcount", [("lines", 2_000_000), ("runs", 3)]);
//! report
//!     .figure("wordcount", "hand loop", "throughput", "words/s", &[23.2e6, 20.1e6, 25.0e6])
//!     .figure("wordcount", "engine P=2", "throughput", "words/s", &[31.1e6, 29.6e6, 30.0e6])
//!     .compare_to_baseline("wordcount", "hand loop");
//! let engine = &report.figures[1];
//! assert_eq!(engine.value, 30.0e6);
//! assert_eq!(engine.ratio.as_ref().unwrap().1, 30.0e6 / 23.2e6);
//! assert!(report.table().contains("1.29× hand loop"));
//! assert!(report.markdown().starts_with("### wordcount — "));
//! ```

mod distribution;
mod machine;
pub mod plot;
pub mod progress;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use distribution::Distribution;
pub use machine::{Machine, processor_model};
pub use plot::PlotError;
pub use progress::{Progress, Watch};

/// Most points one [`Series`] may hold: beyond this a chart is a smear and the JSON balloons
/// (a run sampled every 100 ms for an hour has 36,000).
pub const SERIES_POINTS_MAX: usize = 100_000;

/// Most runs one [`Figure`] may hold.
pub const FIGURE_RUNS_MAX: usize = 10_000;

/// Everything one harness run measured, with the command, machine, commit and date to
/// reproduce it. See the [module docs](self) for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The benchmark (the harness's subcommand), e.g. `"wordcount"`.
    pub bench: String,
    /// The full command line, as a shell would take it back.
    pub command: String,
    /// When the report was made: UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    /// The machine and the build it ran on.
    pub machine: Machine,
    /// The settings of the run (record counts, runs, parallelism...), by name.
    pub settings: BTreeMap<String, String>,
    /// The measured figures, in the order they were added.
    pub figures: Vec<Figure>,
    /// Time series sampled during the run, each naming the chart it belongs to.
    pub series: Vec<Series>,
    /// Latency distributions.
    pub distributions: Vec<Distribution>,
}

/// One measured quantity of one variant of a workload: the median of its runs.
///
/// ```
/// use shardflow_bench::report::Figure;
///
/// let f = Figure::new("q5", "engine P=2", "throughput", "events/s", &[3.0, 1.0, 4.0, 2.0]);
/// assert_eq!(f.value, 2.5); // the median of an even number of runs is the mean of the middle two
/// assert_eq!(f.runs, [3.0, 1.0, 4.0, 2.0]); // in the order they ran
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The workload, e.g. `"q5"` or `"wordcount"`.
    pub workload: String,
    /// Which implementation or setting of it, e.g. `"engine P=2"` or `"baseline"`.
    pub variant: String,
    /// What was measured, e.g. `"throughput"`.
    pub metric: String,
    /// The unit of `value` and `runs`, e.g. `"events/s"`.
    pub unit: String,
    /// The median of `runs`.
    pub value: f64,
    /// Every run's value, in the order they ran.
    pub runs: Vec<f64>,
    /// The ratio `value / baseline's value`, with the baseline variant's name, for a figure
    /// compared by [`Report::compare_to_baseline`].
    pub ratio: Option<(String, f64)>,
}

/// A sequence of `(x, y)` points sampled during a run, e.g. throughput each second or the p99
/// latency of each interval; [`Report::plot`] draws it as a line of the chart it names.
///
/// ```
/// use shardflow_bench::report::Series;
///
/// let mut p99 = Series::new("trading latency over time", "p99", "time (s)", "latency (µs)");
/// p99.push(0.5, 120.0);
/// p99.push(1.0, 95.0);
/// assert_eq!(p99.points, [(0.5, 120.0), (1.0, 95.0)]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The chart this series is drawn in, e.g. `"trading latency over time"`; series of the
    /// same chart share its axes.
    pub chart: String,
    /// This series' name in the chart's legend, e.g. `"p99"`.
    pub name: String,
    /// The x axis' description, with its unit, e.g. `"time (s)"`.
    pub x_label: String,
    /// The y axis' description, with its unit, e.g. `"latency (µs)"`.
    pub y_label: String,
    /// The points, in the order they were sampled.
    pub points: Vec<(f64, f64)>,
}

impl Figure {
    /// A figure whose value is the median of `runs` (kept in the order given).
    ///
    /// Panics if `runs` is empty or longer than [`FIGURE_RUNS_MAX`].
    pub fn new(workload: &str, variant: &str, metric: &str, unit: &str, runs: &[f64]) -> Figure {
        assert!(
            !runs.is_empty(),
            "figure {workload}/{variant}/{metric}: no runs"
        );
        assert!(
            runs.len() <= FIGURE_RUNS_MAX,
            "figure {workload}/{variant}/{metric}: {} runs, at most {FIGURE_RUNS_MAX}",
            runs.len()
        );
        Figure {
            workload: workload.to_string(),
            variant: variant.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            value: median(runs),
            runs: runs.to_vec(),
            ratio: None,
        }
    }
}

impl Series {
    /// An empty series named `name` in the chart `chart`.
    pub fn new(chart: &str, name: &str, x_label: &str, y_label: &str) -> Series {
        Series {
            chart: chart.to_string(),
            name: name.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            points: Vec::new(),
        }
    }

    /// Appends a point. Panics past [`SERIES_POINTS_MAX`] points.
    pub fn push(&mut self, x: f64, y: f64) {
        assert!(
            self.points.len() < SERIES_POINTS_MAX,
            "series {:?} of chart {:?}: more than {SERIES_POINTS_MAX} points",
            self.name,
            self.chart
        );
        self.points.push((x, y));
    }
}

impl Report {
    /// A report of the benchmark `bench` (the harness's subcommand) with `settings`, made now:
    /// the command is this process' command line, and the machine is detected
    /// ([`Machine::detect`], which runs `git` and `uname`).
    ///
    /// ```
    /// use shardflow_bench::report::Report;
    ///
    /// let report = Report::new("windows", [("events", "20000000"), ("keys", "10000")]);
    /// assert_eq!(report.settings["keys"], "10000");
    /// assert_eq!(report.date.len(), "2026-11-24 14:05".len());
    /// assert!(report.machine.cores >= 1);
    /// ```
    pub fn new<K, V>(bench: &str, settings: impl IntoIterator<Item = (K, V)>) -> Report
    where
        K: Into<String>,
        V: ToString,
    {
        Report {
            bench: bench.to_string(),
            command: command_line(std::env::args()),
            date: utc_now(),
            machine: Machine::detect(),
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.into(), v.to_string()))
                .collect(),
            figures: Vec::new(),
            series: Vec::new(),
            distributions: Vec::new(),
        }
    }

    /// Adds (or replaces) one setting.
    pub fn setting(&mut self, name: impl Into<String>, value: impl ToString) -> &mut Report {
        self.settings.insert(name.into(), value.to_string());
        self
    }

    /// Adds a figure: the median of `runs` (see [`Figure::new`]).
    pub fn figure(
        &mut self,
        workload: &str,
        variant: &str,
        metric: &str,
        unit: &str,
        runs: &[f64],
    ) -> &mut Report {
        self.figures
            .push(Figure::new(workload, variant, metric, unit, runs));
        self
    }

    /// Sets the ratio of every figure of `workload` to the figure of variant `baseline` with
    /// the same metric (`value / baseline's value`). Figures whose metric the baseline lacks,
    /// or whose baseline value is zero or not finite, get no ratio.
    ///
    /// Panics if `workload` has no figure of variant `baseline`: that is a harness bug.
    pub fn compare_to_baseline(&mut self, workload: &str, baseline: &str) -> &mut Report {
        let baselines: Vec<(String, f64)> = self
            .figures
            .iter()
            .filter(|f| f.workload == workload && f.variant == baseline)
            .map(|f| (f.metric.clone(), f.value))
            .collect();
        assert!(
            !baselines.is_empty(),
            "workload {workload:?} has no figure of baseline variant {baseline:?}"
        );
        for figure in &mut self.figures {
            if figure.workload != workload || figure.variant == baseline {
                continue;
            }
            let base = baselines
                .iter()
                .find(|(metric, _)| *metric == figure.metric);
            if let Some(&(_, base_value)) = base
                && base_value != 0.0
                && base_value.is_finite()
            {
                figure.ratio = Some((baseline.to_string(), figure.value / base_value));
            }
        }
        self
    }

    /// Adds a time series (see [`Series`]).
    pub fn series(&mut self, series: Series) -> &mut Report {
        assert!(
            series.points.len() <= SERIES_POINTS_MAX,
            "series {:?} of chart {:?}: {} points, at most {SERIES_POINTS_MAX}",
            series.name,
            series.chart,
            series.points.len()
        );
        self.series.push(series);
        self
    }

    /// Adds a latency distribution (see [`Distribution::from_histogram`]).
    pub fn distribution(&mut self, distribution: Distribution) -> &mut Report {
        self.distributions.push(distribution);
        self
    }

    /// The figures as an aligned plain-text table (columns workload, variant, metric, median,
    /// runs, ratio), one line per figure after a header and a rule, each ending in `\n`.
    /// Empty when there are no figures.
    pub fn table(&self) -> String {
        if self.figures.is_empty() {
            return String::new();
        }
        let rows: Vec<[String; 6]> = self.figures.iter().map(figure_cells).collect();
        let mut widths = TABLE_HEADER.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 6]| -> String {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .zip(TABLE_RIGHT_ALIGNED)
                .map(|((cell, width), right)| {
                    if right {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            cells.join(" | ") + "\n"
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut out = line(&TABLE_HEADER.map(String::from));
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
        }
        out
    }

    /// A section for `bench/RESULTS.md`: a `### <bench> — <date> UTC` heading, the command in
    /// a code block, the machine and commit, the settings, the figures as a table and the
    /// distributions as a table of percentiles. Ends with a blank line.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_markdown(&mut md);
        md
    }

    fn write_markdown(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "### {} — {} UTC\n", self.bench, self.date)?;
        writeln!(md, "```\n{}\n```\n", self.command)?;
        writeln!(md, "Machine: {}.", self.machine.summary())?;
        if !self.settings.is_empty() {
            let settings: Vec<String> = self
                .settings
                .iter()
                .map(|(name, value)| format!("`{name}` = {value}"))
                .collect();
            writeln!(md, "Settings: {}.", settings.join(", "))?;
        }
        if !self.figures.is_empty() {
            writeln!(md)?;
            writeln!(md, "| {} |", TABLE_HEADER.join(" | "))?;
            let rule: Vec<&str> = TABLE_RIGHT_ALIGNED
                .iter()
                .map(|&right| if right { "---:" } else { "---" })
                .collect();
            writeln!(md, "|{}|", rule.join("|"))?;
            for figure in &self.figures {
                let cells = figure_cells(figure).map(|c| markdown_cell(&c));
                writeln!(md, "| {} |", cells.join(" | "))?;
            }
        }
        if !self.distributions.is_empty() {
            writeln!(md)?;
            writeln!(
                md,
                "| distribution | count | p50 | p99 | p99.9 | p99.99 | max |"
            )?;
            writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
            for d in &self.distributions {
                let unit = &d.unit;
                writeln!(
                    md,
                    "| {} | {} | {} {unit} | {} {unit} | {} {unit} | {} {unit} | {} {unit} |",
                    markdown_cell(&d.name),
                    format_value(d.count as f64),
                    format_value(d.p50),
                    format_value(d.p99),
                    format_value(d.p999),
                    format_value(d.p9999),
                    format_value(d.max),
                )?;
            }
        }
        let mut charts: Vec<(&str, Vec<&str>)> = Vec::new();
        for s in &self.series {
            match charts.iter_mut().find(|(chart, _)| *chart == s.chart) {
                Some((_, names)) => names.push(&s.name),
                None => charts.push((&s.chart, vec![&s.name])),
            }
        }
        if !charts.is_empty() {
            writeln!(md)?;
            for (chart, names) in charts {
                writeln!(md, "Sampled over the run: {chart} ({}).", names.join(", "))?;
            }
        }
        writeln!(md)
    }

    /// Appends [`Report::markdown`] to the file at `path` (created if missing), after a blank
    /// line if the file is not empty.
    ///
    /// ```
    /// use shardflow_bench::report::Report;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let results = dir.path().join("RESULTS.md");
    /// std::fs::write(&results, "# Benchmark results\n").unwrap();
    /// let mut report = Report::new("windows", [("runs", 1)]);
    /// report.figure("windows", "engine P=1", "throughput", "events/s", &[9.5e6]);
    /// report.append_to(&results).unwrap();
    /// let text = std::fs::read_to_string(&results).unwrap();
    /// assert!(text.starts_with("# Benchmark results\n\n### windows — "));
    /// assert!(text.contains("| windows | engine P=1 | throughput | 9.50 M events/s |"));
    /// ```
    pub fn append_to(&self, path: &Path) -> io::Result<()> {
        let append = || -> io::Result<()> {
            let mut file = OpenOptions::new().create(true).append(true).open(path)?;
            let separator = if file.metadata()?.len() > 0 { "\n" } else { "" };
            file.write_all(format!("{separator}{}", self.markdown()).as_bytes())
        };
        append().map_err(|e| with_path(e, "appending the report to", path))
    }

    /// Writes every field of the report to `path` as pretty-printed JSON. Non-finite numbers
    /// (a NaN run) are written as `null`.
    ///
    /// ```
    /// use shardflow_bench::report::Report;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("wordcount.json");
    /// let mut report = Report::new("wordcount", [("lines", 1000)]);
    /// report.figure("wordcount", "hand loop", "throughput", "words/s", &[2.0, 1.0, 3.0]);
    /// report.write_json(&path).unwrap();
    /// let json: serde_json::Value =
    ///     serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    /// assert_eq!(json["figures"][0]["value"], 2.0);
    /// assert_eq!(json["settings"]["lines"], "1000");
    /// ```
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        let write = || -> io::Result<()> {
            let mut out = BufWriter::new(File::create(path)?);
            serde_json::to_writer_pretty(&mut out, self)?;
            out.write_all(b"\n")?;
            out.flush()
        };
        write().map_err(|e| with_path(e, "writing the report as JSON to", path))
    }

    /// Draws the report's charts into the directory `dir` (created if missing), each as SVG
    /// and as PNG, and returns the paths written. See [`plot`] for what is drawn and how files
    /// are named.
    ///
    /// ```
    /// use shardflow_bench::report::{Report, Series};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut report = Report::new("trading", [("runs", 1)]);
    /// let mut p99 = Series::new("latency over time", "p99", "time (s)", "latency (µs)");
    /// for t in 0..10 {
    ///     p99.push(f64::from(t), 100.0 + f64::from(t % 3));
    /// }
    /// report.series(p99);
    /// let written = report.plot(dir.path()).unwrap();
    /// let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap()).collect();
    /// assert_eq!(names, ["trading-latency-over-time.svg", "trading-latency-over-time.png"]);
    /// ```
    pub fn plot(&self, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
        plot::plot(self, dir)
    }
}

const TABLE_HEADER: [&str; 6] = ["workload", "variant", "metric", "median", "runs", "ratio"];
const TABLE_RIGHT_ALIGNED: [bool; 6] = [false, false, false, true, false, true];

fn figure_cells(f: &Figure) -> [String; 6] {
    let runs: Vec<String> = f.runs.iter().map(|&r| format_value(r)).collect();
    let ratio = match &f.ratio {
        Some((baseline, ratio)) => format!("{ratio:.2}× {baseline}"),
        None => String::new(),
    };
    [
        f.workload.clone(),
        f.variant.clone(),
        f.metric.clone(),
        format!("{} {}", format_value(f.value), f.unit),
        runs.join(", "),
        ratio,
    ]
}

fn markdown_cell(cell: &str) -> String {
    cell.replace('|', "\\|")
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// The median of `values` (the mean of the middle two for an even count). `values` must not
/// be empty.
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty());
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A number as a reader takes it in: three significant digits, `M` and `G` for millions and
/// billions ("23.2 M"), thousands separators below a million ("12,345"), and as many decimals
/// as three significant digits need below a thousand ("0.00123", "12.3").
///
/// ```
/// use shardflow_bench::report::format_value;
///
/// assert_eq!(format_value(23_214_000.0), "23.2 M");
/// assert_eq!(format_value(12_345.6), "12,346");
/// assert_eq!(format_value(0.8734), "0.873");
/// ```
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{} G", significant(v / 1e9))
    } else if a >= 1e6 {
        format!("{} M", significant(v / 1e6))
    } else if a >= 1e3 {
        let digits = format!("{:.0}", a);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else {
        significant(v)
    }
}

/// `v` with three significant digits (at least; integers keep all of theirs).
fn significant(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 12) as usize;
    format!("{v:.decimals$}")
}

/// The command line `args` as a shell would take it back: arguments with spaces or shell
/// metacharacters are single-quoted.
fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = args
        .into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect();
    quoted.join(" ")
}

/// Now, UTC, as `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with fixed machine, date and command, so that tests do not depend on where
    /// they run.
    pub(crate) fn sample_report() -> Report {
        let mut report = Report {
            bench: "nexmark".to_string(),
            command: "./target/release/shardflow-bench nexmark --events 1000000 --runs 3"
                .to_string(),
            date: "2026-11-24 14:05".to_string(),
            machine: Machine {
                cores: 2,
                model: "AMD EPYC".to_string(),
                memory_bytes: 24 << 30,
                os: "Linux 6.18.0".to_string(),
                commit: "89404fa0123456789abcdef0123456789abcdef0-dirty".to_string(),
            },
            settings: BTreeMap::new(),
            figures: Vec::new(),
            series: Vec::new(),
            distributions: Vec::new(),
        };
        report
            .setting("events", 1_000_000)
            .setting("runs", 3)
            .figure(
                "q5",
                "baseline",
                "throughput",
                "events/s",
                &[4.1e6, 3.9e6, 4.4e6],
            )
            .figure(
                "q5",
                "engine P=1",
                "throughput",
                "events/s",
                &[2.95e6, 3.05e6, 3.1e6],
            )
            .figure(
                "q5",
                "engine P=2",
                "throughput",
                "events/s",
                &[5.5e6, 5.1e6, 5.3e6],
            )
            .figure("q7", "engine P=2", "latency p99", "µs", &[812.7, 790.25])
            .compare_to_baseline("q5", "baseline");
        let mut p50 = Series::new("q5 latency over time", "p50", "time (s)", "latency (µs)");
        let mut p99 = Series::new("q5 latency over time", "p99", "time (s)", "latency (µs)");
        let mut rate = Series::new("q5 throughput", "engine P=2", "time (s)", "events/s");
        for i in 0..20 {
            let t = f64::from(i) * 0.5;
            p50.push(t, 40.0 + f64::from(i % 3));
            p99.push(t, 300.0 + 25.0 * f64::from(i % 5));
            rate.push(t, 5.0e6 + 1.0e5 * f64::from(i % 4));
        }
        report.series(p50).series(p99).series(rate);
        report
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0]), 5.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[1.0, f64::NAN, 2.0]), 2.0);
    }

    #[test]
    fn ratios_are_to_the_baseline_of_the_same_workload_and_metric() {
        let report = sample_report();
        let find = |variant: &str| {
            report
                .figures
                .iter()
                .find(|f| f.workload == "q5" && f.variant == variant)
                .unwrap()
        };
        assert_eq!(find("baseline").value, 4.1e6);
        assert_eq!(find("baseline").ratio, None);
        assert_eq!(find("engine P=1").value, 3.05e6);
        assert_eq!(
            find("engine P=1").ratio,
            Some(("baseline".to_string(), 3.05e6 / 4.1e6))
        );
        assert_eq!(
            find("engine P=2").ratio,
            Some(("baseline".to_string(), 5.3e6 / 4.1e6))
        );
        // Another workload is not compared.
        assert_eq!(report.figures[3].ratio, None);
    }

    #[test]
    #[should_panic(expected = "no figure of baseline variant")]
    fn a_missing_baseline_is_a_bug() {
        sample_report().compare_to_baseline("q5", "hand loop");
    }

    #[test]
    fn values_are_formatted_with_three_significant_digits() {
        let cases = [
            (23_200_000.0, "23.2 M"),
            (1_500_000.0, "1.50 M"),
            (2.5e9, "2.50 G"),
            (12_345.4, "12,345"),
            (1_000.0, "1,000"),
            (999_999.0, "999,999"),
            (-12_345.0, "-12,345"),
            (812.5, "812"),
            (12.34, "12.3"),
            (1.0, "1.00"),
            (0.001234, "0.00123"),
            (0.0, "0"),
            (-3.5, "-3.50"),
            (f64::NAN, "NaN"),
        ];
        for (v, expected) in cases {
            assert_eq!(format_value(v), expected, "formatting {v}");
        }
    }

    #[test]
    fn table_columns_line_up() {
        let report = sample_report();
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + report.figures.len(), "{table}");
        let width = lines[0].chars().count();
        let bars = |line: &str| -> Vec<usize> {
            line.chars()
                .enumerate()
                .filter(|&(_, c)| c == '|' || c == '+')
                .map(|(i, _)| i)
                .collect()
        };
        for line in &lines {
            assert_eq!(
                line.chars().count(),
                width,
                "ragged line {line:?} in\n{table}"
            );
            assert_eq!(
                bars(line),
                bars(lines[0]),
                "misaligned line {line:?} in\n{table}"
            );
        }
        let cells: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.split(" | ").map(str::trim).collect())
            .collect();
        assert_eq!(
            cells[0],
            ["workload", "variant", "metric", "median", "runs", "ratio"]
        );
        assert!(lines[1].chars().all(|c| c == '-' || c == '+'), "{table}");
        assert_eq!(
            cells[3],
            [
                "q5",
                "engine P=1",
                "throughput",
                "3.05 M events/s",
                "2.95 M, 3.05 M, 3.10 M",
                "0.74× baseline"
            ]
        );
        assert_eq!(
            cells[5],
            ["q7", "engine P=2", "latency p99", "801 µs", "813, 790", ""]
        );
        // Numbers are right-aligned: the medians end in the same column.
        let median_end = |line: &str| line.split(" | ").take(4).collect::<Vec<_>>().join(" | ");
        for line in &lines[2..] {
            assert!(!median_end(line).ends_with(' '), "{line:?}");
        }
        assert_eq!(
            Report {
                figures: vec![],
                ..report
            }
            .table(),
            ""
        );
    }

    #[test]
    fn markdown_has_the_command_machine_settings_and_every_figure() {
        let mut report = sample_report();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            hist.record(v * 1_000).unwrap();
        }
        report.distribution(Distribution::from_histogram(
            "lone record",
            &hist,
            1_000.0,
            "µs",
        ));
        let md = report.markdown();
        assert!(
            md.starts_with("### nexmark — 2026-11-24 14:05 UTC\n\n"),
            "{md}"
        );
        assert!(
            md.contains(&format!("```\n{}\n```\n", report.command)),
            "{md}"
        );
        assert!(md.contains("2 cores (AMD EPYC)"), "{md}");
        assert!(
            md.contains("89404fa0123456789abcdef0123456789abcdef0-dirty"),
            "{md}"
        );
        assert!(md.contains("`events` = 1000000, `runs` = 3"), "{md}");
        let table_rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| q5 ") || l.starts_with("| q7 "))
            .collect();
        assert_eq!(table_rows.len(), report.figures.len(), "{md}");
        for (row, figure) in table_rows.iter().zip(&report.figures) {
            let value = format!("| {} {} |", format_value(figure.value), figure.unit);
            assert!(row.contains(&value), "{value:?} not in {row:?}");
            assert!(row.contains(&format!("| {} |", figure.variant)), "{row:?}");
        }
        assert!(md.contains("| 1.29× baseline |"), "{md}");
        let d = &report.distributions[0];
        let row = format!(
            "| lone record | 10,000 | {} µs | {} µs | {} µs | {} µs | {} µs |",
            format_value(d.p50),
            format_value(d.p99),
            format_value(d.p999),
            format_value(d.p9999),
            format_value(d.max)
        );
        assert!(md.contains(&row), "{row:?} not in {md}");
        assert!(row.contains("| 5,001 µs |"), "{row}"); // 5,000 µs, to 3 significant digits
        assert!(md.contains("Sampled over the run: q5 latency over time (p50, p99)."));
        assert!(md.ends_with("\n\n"), "{md:?}");
    }

    #[test]
    fn markdown_escapes_pipes_in_cells() {
        let mut report = sample_report();
        report.figure("a|b", "x", "m", "u", &[1.0]);
        assert!(report.markdown().contains("| a\\|b | x | m | 1.00 u |"));
    }

    #[test]
    fn append_to_keeps_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("RESULTS.md");
        std::fs::write(&path, "# Benchmark results\n").unwrap();
        let report = sample_report();
        report.append_to(&path).unwrap();
        report.append_to(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let md = report.markdown();
        assert_eq!(text, format!("# Benchmark results\n\n{md}\n{md}"));
    }

    #[test]
    fn json_has_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut report = sample_report();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            hist.record(v).unwrap();
        }
        report.distribution(Distribution::from_histogram(
            "lone record",
            &hist,
            1e3,
            "µs",
        ));
        report.write_json(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["bench"], "nexmark");
        assert_eq!(json["command"], report.command.as_str());
        assert_eq!(json["date"], "2026-11-24 14:05");
        assert_eq!(json["machine"]["cores"], 2);
        assert_eq!(json["machine"]["model"], "AMD EPYC");
        assert_eq!(json["machine"]["os"], "Linux 6.18.0");
        assert_eq!(json["machine"]["memory_bytes"], 24u64 << 30);
        assert_eq!(json["machine"]["commit"], report.machine.commit.as_str());
        assert_eq!(json["settings"]["events"], "1000000");
        let figures = json["figures"].as_array().unwrap();
        assert_eq!(figures.len(), 4);
        assert_eq!(figures[2]["workload"], "q5");
        assert_eq!(figures[2]["variant"], "engine P=2");
        assert_eq!(figures[2]["metric"], "throughput");
        assert_eq!(figures[2]["unit"], "events/s");
        assert_eq!(figures[2]["value"], 5.3e6);
        assert_eq!(figures[2]["runs"], serde_json::json!([5.5e6, 5.1e6, 5.3e6]));
        assert_eq!(
            figures[2]["ratio"],
            serde_json::json!(["baseline", 5.3e6 / 4.1e6])
        );
        assert_eq!(figures[0]["ratio"], serde_json::Value::Null);
        assert_eq!(figures[3]["value"], (812.7 + 790.25) / 2.0);
        let series = json["series"].as_array().unwrap();
        assert_eq!(series.len(), 3);
        assert_eq!(series[1]["chart"], "q5 latency over time");
        assert_eq!(series[1]["name"], "p99");
        assert_eq!(series[1]["x_label"], "time (s)");
        assert_eq!(series[1]["y_label"], "latency (µs)");
        assert_eq!(series[1]["points"][3], serde_json::json!([1.5, 375.0]));
        let d = &json["distributions"][0];
        assert_eq!(d["name"], "lone record");
        assert_eq!(d["unit"], "µs");
        assert_eq!(d["count"], 4);
        assert_eq!(d["p50"], 2.0); // 2,000 ns is exact at 3 significant digits
        assert!(!d["points"].as_array().unwrap().is_empty());

        // And it reads back as the same report.
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("report.json");
        let err = sample_report().write_json(&path).unwrap_err();
        assert!(err.to_string().contains("missing-dir/report.json"), "{err}");
        let err = sample_report().append_to(&path).unwrap_err();
        assert!(err.to_string().contains("missing-dir/report.json"), "{err}");
    }

    #[test]
    fn command_lines_are_quoted_as_a_shell_reads_them() {
        let args = [
            "./shardflow-bench",
            "wordcount",
            "--lines",
            "2000000",
            "--out",
            "a b",
            "it's",
            "",
        ];
        assert_eq!(
            command_line(args.map(String::from)),
            r#"./shardflow-bench wordcount --lines 2000000 --out 'a b' 'it'\''s' ''"#
        );
    }

    #[test]
    fn new_report_has_the_date_and_settings() {
        let report = Report::new("wordcount", [("lines", 2_000_000u64)]);
        assert_eq!(report.settings["lines"], "2000000");
        let d = report.date.as_bytes();
        assert_eq!(d.len(), 16, "{}", report.date);
        for (i, &c) in d.iter().enumerate() {
            match i {
                4 | 7 => assert_eq!(c, b'-'),
                10 => assert_eq!(c, b' '),
                13 => assert_eq!(c, b':'),
                _ => assert!(c.is_ascii_digit(), "{}", report.date),
            }
        }
        assert!(report.date.as_str() >= "2025-01-01");
        assert!(!report.command.is_empty());
    }
}
