//! Telemetry ingestion: metric points as JSON lines, generated as fast as the engine takes
//! them, parsed (serde_json, borrowing the line), pre-aggregated per series on each shard and
//! reduced in 10 s tumbling event-time windows per series (count, sum, min, max).
//!
//! A point: `{"host":"h0042","metric":"cpu.user","region":"eu-west","value":734.125,"ts":...}`.
//! A series is a host and a metric. Point `i` is a pure function of the seed and `i`, so any
//! shard generates any share, and the baseline regenerates exactly what the engine read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkyv::{Archive, Deserialize, Serialize};
use shardflow::prelude::*;
use shardflow::types::ShortString;
use shardflow_core::operator::sink::SinkFunction;
use shardflow_core::rng::mix64;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::window::{AggregateFunction, TimeWindow, TumblingWindows, WindowContext};

pub const METRICS: [&str; 8] = [
    "cpu.user",
    "cpu.system",
    "mem.used",
    "mem.free",
    "disk.read",
    "disk.write",
    "net.rx",
    "net.tx",
];
const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", "sa-east"];

/// The start of event time of the points (2026-01-01T00:00:00Z, as the telemetry readings').
pub use shardflow::jobs::telemetry::EPOCH_MS;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub points: u64,
    pub hosts: u32,
    /// Points per second of event time.
    pub rate: u64,
    /// How far a point's time may lag its place in the stream.
    pub disorder_ms: u64,
    pub window: Duration,
    pub seed: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            points: 10_000_000,
            hosts: 1_000,
            rate: 100_000,
            disorder_ms: 200,
            window: Duration::from_secs(10),
            seed: 42,
        }
    }
}

impl IngestConfig {
    /// Line `i` of the stream (without a newline), appended to `out`.
    pub fn line(&self, i: u64, out: &mut String) {
        let r = mix64(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let host = (((r & 0xffff_ffff) * self.hosts as u64) >> 32) as u32;
        let metric = METRICS[((r >> 32) & 7) as usize];
        let region = REGIONS[(host % 4) as usize];
        let milli = (r >> 36) % 1_000_000;
        let base = EPOCH_MS + (i as u128 * 1000 / self.rate.max(1) as u128) as i64;
        let ts = base - ((r >> 56) % (self.disorder_ms + 1)) as i64;
        let _ = write!(
            out,
            r#"{{"host":"h{host:04}","metric":"{metric}","region":"{region}","value":{}.{:03},"ts":{ts}}}"#,
            milli / 1000,
            milli % 1000
        );
    }
}

/// A point as parsed, borrowing the line.
#[derive(serde::Deserialize)]
struct RawPoint<'a> {
    host: &'a str,
    metric: &'a str,
    #[allow(dead_code)]
    region: &'a str,
    value: f64,
    ts: i64,
}

/// A parsed point.
#[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
pub struct Point {
    pub host: ShortString,
    pub metric: ShortString,
    pub value: f64,
    pub ts: i64,
}

/// Parses one line; the error names the line and what is wrong with it.
pub fn parse(line: &str) -> Result<Point, String> {
    let p: RawPoint =
        serde_json::from_str(line).map_err(|e| format!("{e}, in the line `{line}`"))?;
    Ok(Point {
        host: ShortString::from(p.host),
        metric: ShortString::from(p.metric),
        value: p.value,
        ts: p.ts,
    })
}

/// A series' window.
#[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
pub struct SeriesWindow {
    pub host: ShortString,
    pub metric: ShortString,
    pub window_start: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats;

impl AggregateFunction<Point> for Stats {
    type Acc = (u64, f64, f64, f64);
    type Out = (u64, f64, f64, f64);
    fn create_accumulator(&self) -> Self::Acc {
        (0, 0.0, f64::INFINITY, f64::NEG_INFINITY)
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, p: Point) {
        acc.0 += 1;
        acc.1 += p.value;
        acc.2 = acc.2.min(p.value);
        acc.3 = acc.3.max(p.value);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        *acc
    }
    fn merge(&self, into: &mut Self::Acc, from: Self::Acc) {
        into.0 += from.0;
        into.1 += from.1;
        into.2 = into.2.min(from.2);
        into.3 = into.3.max(from.3);
    }
}

/// One shard's share of the lines.
pub struct LineSource {
    config: IngestConfig,
    /// Blocks of line numbers dealt round robin: every shard's lines are of the same moment.
    blocks: shardflow::source::DealtBlocks,
}

impl Source<String> for LineSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<String>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let config = &self.config;
        self.blocks.take_each(max_records as u64, |i| {
            let mut s = String::with_capacity(112);
            config.line(i, &mut s);
            out.push(s);
        });
        Ok(self.blocks.status())
    }
}

/// The job: lines, parsed, windowed per series.
pub fn windows(
    env: &StreamExecutionEnvironment,
    config: &IngestConfig,
) -> DataStream<SeriesWindow> {
    let c = config.clone();
    let lines = env.add_source("points", move |ctx| {
        Ok(LineSource {
            config: c.clone(),
            blocks: shardflow::source::DealtBlocks::new(
                c.points,
                1_024,
                ctx.runtime.shard,
                ctx.runtime.parallelism,
            ),
        })
    });
    lines
        .process(ParseLines)
        .name("parse")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(
                config.disorder_ms,
            ))
            .with_timestamp_assigner(|p: &Point| p.ts)
            .with_watermark_alignment("points", config.window),
        )
        .key_by(|p: &Point| (p.host.clone(), p.metric.clone()))
        .window(TumblingWindows::event_time(config.window))
        .aggregate_two_phase_with(
            Stats,
            |key: &(ShortString, ShortString),
             ctx: &WindowContext<TimeWindow>,
             stats: &[(u64, f64, f64, f64)],
             out: &mut Collector<SeriesWindow>| {
                for &(count, sum, min, max) in stats {
                    out.collect(SeriesWindow {
                        host: key.0.clone(),
                        metric: key.1.clone(),
                        window_start: ctx.window.start,
                        count,
                        sum,
                        min,
                        max,
                    });
                }
                Ok(())
            },
        )
        .name("series windows")
}

/// Parses each line; a line that does not parse fails the job, naming it.
#[derive(Clone)]
struct ParseLines;

impl ProcessFunction<String, Point> for ParseLines {
    fn process_element(
        &mut self,
        line: String,
        _ctx: &RuntimeContext,
        out: &mut Collector<Point>,
    ) -> Result<(), UserError> {
        out.collect(parse(&line).map_err(UserError::from)?);
        Ok(())
    }
}

/// What a run did: points, text bytes, windows and how long.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestRun {
    pub points: u64,
    pub bytes: u64,
    pub windows: u64,
    /// Sum of every window's count (each point counted once).
    pub counted: u64,
    pub elapsed: Duration,
    /// Points/s generated over time (engine runs): (seconds since the start, points/s).
    pub throughput: Vec<(f64, f64)>,
}

struct WindowCount {
    windows: u64,
    counted: u64,
    total: Arc<Mutex<(u64, u64)>>,
}

impl SinkFunction<SeriesWindow> for WindowCount {
    fn write(&mut self, batch: &mut Vec<SeriesWindow>) -> Result<(), JobError> {
        self.windows += batch.len() as u64;
        self.counted += batch.iter().map(|w| w.count).sum::<u64>();
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        let mut t = self.total.lock().expect("not poisoned");
        t.0 += self.windows;
        t.1 += self.counted;
        Ok(())
    }
}

/// The bytes of text the stream is made of (each line and its newline).
pub fn text_bytes(config: &IngestConfig) -> u64 {
    let mut s = String::with_capacity(128);
    let mut n = 0;
    for i in 0..config.points {
        s.clear();
        config.line(i, &mut s);
        n += s.len() as u64 + 1;
    }
    n
}

pub fn engine(config: &IngestConfig, p: u32) -> anyhow::Result<IngestRun> {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    let samples = crate::harness::sample_source_rate(&mut env, "points");
    let total = Arc::new(Mutex::new((0, 0)));
    let t = total.clone();
    windows(&env, config).sink_to("count", move |_| {
        Ok(WindowCount {
            windows: 0,
            counted: 0,
            total: t.clone(),
        })
    });
    let t0 = Instant::now();
    env.execute("telemetry ingestion")?;
    let elapsed = t0.elapsed();
    let (windows, counted) = *total.lock().expect("not poisoned");
    let throughput = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    Ok(IngestRun {
        points: config.points,
        bytes: 0,
        windows,
        counted,
        elapsed,
        throughput,
    })
}

/// The same windows by one thread: generate, parse, aggregate in a hash map.
pub fn baseline(config: &IngestConfig, mut emit: impl FnMut(SeriesWindow)) -> IngestRun {
    let t0 = Instant::now();
    let size = config.window.as_millis() as i64;
    type Series = (ShortString, ShortString, i64);
    let mut windows: HashMap<Series, <Stats as AggregateFunction<Point>>::Acc> = HashMap::new();
    let mut line = String::with_capacity(128);
    let mut bytes = 0;
    for i in 0..config.points {
        line.clear();
        config.line(i, &mut line);
        bytes += line.len() as u64 + 1;
        let p = parse(&line).expect("the generator writes valid lines");
        let start = p.ts.div_euclid(size) * size;
        let w = windows.entry((p.host, p.metric, start)).or_insert((
            0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ));
        w.0 += 1;
        w.1 += p.value;
        w.2 = w.2.min(p.value);
        w.3 = w.3.max(p.value);
    }
    let (mut n, mut counted) = (0, 0);
    for ((host, metric, window_start), (count, sum, min, max)) in windows {
        n += 1;
        counted += count;
        emit(SeriesWindow {
            host,
            metric,
            window_start,
            count,
            sum,
            min,
            max,
        });
    }
    IngestRun {
        points: config.points,
        bytes,
        windows: n,
        counted,
        elapsed: t0.elapsed(),
        throughput: Vec::new(),
    }
}

/// The `telemetry` subcommand.
pub fn run(common: &crate::harness::Common, hosts: u32) -> anyhow::Result<()> {
    crate::report::progress::set_quiet(common.quiet);
    common.check()?;
    let config = IngestConfig {
        points: common.events.unwrap_or(10_000_000),
        hosts,
        rate: common.rate.unwrap_or(100_000),
        seed: common.seed,
        ..Default::default()
    };
    let mut report = crate::report::Report::new("telemetry", common.settings());
    report
        .setting("points", config.points)
        .setting("hosts", config.hosts)
        .setting("series", config.hosts as usize * METRICS.len())
        .setting("event-time rate", config.rate)
        .setting("window (s)", config.window.as_secs_f64());
    let variants = common.parallelism.len() + usize::from(!common.no_baseline);
    let progress = crate::report::Progress::new(
        (variants * (common.warmup + common.runs)) as u64,
        "telemetry",
    );
    let n = config.points as f64;
    let mut engine_runs: Vec<Vec<f64>> = vec![Vec::new(); common.parallelism.len()];
    let mut base_runs = Vec::new();
    let mut reference: Option<IngestRun> = None;
    let mut last_series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); common.parallelism.len()];
    for run in 0..common.warmup + common.runs {
        let counted = run >= common.warmup;
        if !common.no_baseline {
            progress.set_message(format!("baseline run {}", run + 1));
            let r = baseline(&config, |_| {});
            if counted {
                base_runs.push(r.elapsed.as_secs_f64());
            }
            reference = Some(r);
            progress.inc(1);
        }
        for (k, &p) in common.parallelism.iter().enumerate() {
            progress.set_message(format!("P={p} run {}", run + 1));
            let r = engine(&config, p)?;
            anyhow::ensure!(
                r.counted == config.points,
                "the engine's windows hold {} points of {}",
                r.counted,
                config.points
            );
            if let Some(b) = &reference {
                anyhow::ensure!(
                    r.windows == b.windows,
                    "the engine made {} windows, the loop {}",
                    r.windows,
                    b.windows
                );
            }
            if counted {
                engine_runs[k].push(r.elapsed.as_secs_f64());
                last_series[k] = r.throughput;
            }
            progress.inc(1);
        }
    }
    progress.finish();
    // The loop counted the text's bytes as it went; without it, one pass counts them.
    let bytes = reference
        .as_ref()
        .map_or_else(|| text_bytes(&config), |r| r.bytes) as f64;
    report.setting("text bytes", bytes);
    let as_rates = |secs: &[f64], per: f64| secs.iter().map(|s| per / s).collect::<Vec<f64>>();
    for (k, &p) in common.parallelism.iter().enumerate() {
        let v = format!("engine P={p}");
        report.figure(
            "telemetry",
            &v,
            "points/s",
            "points/s",
            &as_rates(&engine_runs[k], n),
        );
        report.figure(
            "telemetry",
            &v,
            "bytes/s",
            "MB/s",
            &as_rates(&engine_runs[k], bytes / 1e6),
        );
        let mut s = crate::report::Series::new(
            "telemetry throughput over time",
            &v,
            "time (s)",
            "points/s",
        );
        for &(t, rate) in &last_series[k] {
            s.push(t, rate);
        }
        report.series(s);
    }
    if !common.no_baseline {
        let v = "baseline (1 thread)";
        report.figure(
            "telemetry",
            v,
            "points/s",
            "points/s",
            &as_rates(&base_runs, n),
        );
        report.figure(
            "telemetry",
            v,
            "bytes/s",
            "MB/s",
            &as_rates(&base_runs, bytes / 1e6),
        );
        report.compare_to_baseline("telemetry", v);
    }
    common.finish(&report)
}
