//! Trading-feed latency: a paced feed of trades and quotes for many symbols at a fixed rate, a
//! keyed job keeping each symbol's VWAP and top of book, and a sink that records each update's
//! latency from the moment its event was *due* to be sent, in an hdrhistogram.
//!
//! Measuring from the intended send time (the schedule `i / rate`), not from when the source
//! got round to sending it, keeps coordinated omission out of the figures: when the engine
//! stalls, the events that pile up behind the stall are counted with the wait they suffered.
//! The source never runs ahead of the schedule, and a shard takes more events only when its
//! output has credit, so memory stays bounded whatever the rate: an engine too slow for the
//! rate shows as growing latency, not as a growing queue.
//!
//! Top of book is the latest quote *by sequence number* on each side, as a feed handler keeps
//! it (quotes of one symbol may reach its shard from several source shards out of order): the
//! final book is then the same whatever the interleaving, which is what the test checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rkyv::{Archive, Deserialize, Serialize};
use shardflow::prelude::*;
use shardflow_core::operator::sink::SinkFunction;
use shardflow_core::rng::mix64;
use shardflow_core::source::{Source, SourceStatus};

/// How the feed is generated.
#[derive(Debug, Clone)]
pub struct TradingConfig {
    pub symbols: u32,
    /// Events per second, over all shards.
    pub rate: u64,
    /// How long the feed runs (events: `rate * duration`).
    pub duration: Duration,
    /// Updates of events due in the first this much are not recorded (warm-up).
    pub warmup: Duration,
    /// One event in this many is a trade, the rest quotes.
    pub trade_every: u64,
    pub seed: u64,
    /// Latency histograms per interval of this much (the "over time" charts).
    pub interval: Duration,
    /// How often a shard's executor reaps I/O completions (`JobConfig::latency_io_poll_interval`).
    pub io_poll: Duration,
    /// Keep every recorded latency and each symbol's last update too (tests check them against
    /// the histogram and a replay); off in benchmark runs, where the sink keeps histograms only.
    pub keep_raw: bool,
}

impl Default for TradingConfig {
    fn default() -> Self {
        Self {
            symbols: 1_000,
            rate: 1_000_000,
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            trade_every: 4,
            seed: 42,
            interval: Duration::from_millis(100),
            io_poll: Duration::from_millis(1),
            keep_raw: false,
        }
    }
}

impl TradingConfig {
    pub fn events(&self) -> u64 {
        (self.rate as u128 * self.duration.as_nanos() / 1_000_000_000) as u64
    }

    /// When event `i` is due: nanoseconds after the feed's start.
    #[inline]
    pub fn intended_ns(&self, i: u64) -> u64 {
        (i as u128 * 1_000_000_000 / self.rate.max(1) as u128) as u64
    }

    /// How many events are due by `ns` after the start.
    #[inline]
    fn due_by(&self, ns: u64) -> u64 {
        (ns as u128 * self.rate as u128 / 1_000_000_000) as u64
    }

    /// Event `i` of the feed: a pure function of the seed and `i`.
    #[inline]
    pub fn tick(&self, i: u64) -> Tick {
        let r = mix64(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let symbol = (((r & 0xffff_ffff) * self.symbols as u64) >> 32) as u32;
        // Prices around 100.00 in cents, a walk-free jitter of ±5.00.
        let price = 10_000 + ((r >> 32) & 0x3ff) as i64 - 512;
        let kind = if i.is_multiple_of(self.trade_every.max(1)) {
            TickKind::Trade
        } else if (r >> 42) & 1 == 0 {
            TickKind::Bid
        } else {
            TickKind::Ask
        };
        Tick {
            seq: i,
            intended_ns: self.intended_ns(i),
            symbol,
            kind,
            qty: 1 + ((r >> 43) % 500) as u32,
            price,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum TickKind {
    Trade,
    Bid,
    Ask,
}

/// One event of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Tick {
    pub seq: u64,
    /// When it was due, nanoseconds after the feed's start.
    pub intended_ns: u64,
    pub symbol: u32,
    pub kind: TickKind,
    pub qty: u32,
    /// Cents.
    pub price: i64,
}

/// A symbol's state after an event: its VWAP so far and its top of book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Update {
    pub seq: u64,
    pub intended_ns: u64,
    pub symbol: u32,
    /// Volume-weighted average trade price so far, cents (0 before the first trade).
    pub vwap: i64,
    pub volume: u64,
    pub bid: i64,
    pub ask: i64,
}

/// A symbol's book: trade notional and volume, and the latest quote of each side by
/// sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Book {
    pub notional: u128,
    pub volume: u64,
    pub bid: (u64, i64),
    pub ask: (u64, i64),
}

impl Book {
    #[inline]
    pub fn apply(&mut self, t: &Tick) {
        match t.kind {
            TickKind::Trade => {
                self.notional += t.price as u128 * t.qty as u128;
                self.volume += t.qty as u64;
            }
            // Sequence numbers start at 0: a side with no quote yet holds (0, 0).
            TickKind::Bid if t.seq >= self.bid.0 => self.bid = (t.seq, t.price),
            TickKind::Ask if t.seq >= self.ask.0 => self.ask = (t.seq, t.price),
            _ => {}
        }
    }

    #[inline]
    pub fn update(&self, t: &Tick) -> Update {
        Update {
            seq: t.seq,
            intended_ns: t.intended_ns,
            symbol: t.symbol,
            vwap: (self.notional / self.volume.max(1) as u128) as i64,
            volume: self.volume,
            bid: self.bid.1,
            ask: self.ask.1,
        }
    }
}

/// The shared start of the feed: the first shard to start sets it.
pub type Origin = Arc<OnceLock<Instant>>;

/// One shard's share of the feed (events `shard, shard + P, ...`), each sent no earlier than
/// it is due.
pub struct TickSource {
    config: TradingConfig,
    next: u64,
    stride: u64,
    end: u64,
    origin: Instant,
}

impl TickSource {
    pub fn new(config: TradingConfig, shard: u32, parallelism: u32, origin: &Origin) -> Self {
        Self {
            end: config.events(),
            config,
            next: shard as u64,
            stride: parallelism.max(1) as u64,
            origin: *origin.get_or_init(Instant::now),
        }
    }
}

impl Source<Tick> for TickSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Tick>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        loop {
            if self.next >= self.end {
                return Ok(SourceStatus::End);
            }
            let due = self.config.due_by(self.origin.elapsed().as_nanos() as u64);
            if self.next <= due {
                // Everything due goes now (a backlog after a stall leaves in one batch).
                while self.next <= due && self.next < self.end && out.len() < max_records {
                    out.push(self.config.tick(self.next));
                    self.next += self.stride;
                }
                return Ok(SourceStatus::More);
            }
            // Nothing due: yield (the engine flushes what is staged meanwhile) and look again.
            futures_lite::future::yield_now().await;
        }
    }
}

/// Per symbol: its book, each event's update out.
#[derive(Clone)]
pub struct Books;

impl KeyedProcessFunction<u32, Tick, Update> for Books {
    type State = Book;

    #[inline]
    fn process_element(
        &mut self,
        t: Tick,
        ctx: &mut KeyedContext<'_, u32, Book>,
        out: &mut Collector<Update>,
    ) -> Result<(), UserError> {
        let book = ctx.state_or_insert_with(Book::default);
        book.apply(&t);
        out.collect(book.update(&t));
        Ok(())
    }
}

/// Latencies recorded by one or more sinks.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Nanoseconds from due to recorded.
    pub all: Histogram<u64>,
    /// Per interval of due time.
    pub intervals: Vec<Histogram<u64>>,
    /// Every recorded latency, when kept.
    pub raw: Vec<u64>,
    /// Each symbol's last update (the last to arrive: its final book), when kept.
    pub last: HashMap<u32, Update>,
}

impl Latencies {
    fn new() -> Self {
        Self {
            all: histogram(),
            intervals: Vec::new(),
            raw: Vec::new(),
            last: HashMap::new(),
        }
    }

    fn merge(&mut self, other: &Latencies) {
        self.all.add(&other.all).expect("same bounds");
        if self.intervals.len() < other.intervals.len() {
            self.intervals
                .resize(other.intervals.len(), interval_histogram());
        }
        for (a, b) in self.intervals.iter_mut().zip(&other.intervals) {
            a.add(b).expect("same bounds");
        }
        self.raw.extend_from_slice(&other.raw);
        for u in other.last.values() {
            self.note_last(*u);
        }
    }

    /// Keeps `u` as its symbol's last update: the last one to arrive, which shows the book after
    /// every event its shard processed. (Not the one of the highest sequence number: at P > 1
    /// a symbol's events reach its shard from several source shards out of order, and the
    /// update of the highest one may have been made before a lower one arrived. A symbol's
    /// updates all come from the one shard that owns it, through the sink chained there.)
    fn note_last(&mut self, u: Update) {
        self.last.insert(u.symbol, u);
    }
}

/// Latencies from 1 ns, three significant digits, growing past an hour if ever needed.
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    h.auto(true);
    h
}

/// The per-interval histograms (the "over time" charts) at two significant digits: a tenth
/// of the memory of three (a 3-digit histogram up to an hour is ~700 KiB, and a 5 s run has 50
/// intervals; at three digits they made most of the process' peak memory).
fn interval_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("valid bounds");
    h.auto(true);
    h
}

/// Records each update's latency; merges into `out` at the end.
pub struct LatencySink {
    origin: Origin,
    warmup_ns: u64,
    interval_ns: u64,
    /// Keep raw latencies and last updates (`TradingConfig::keep_raw`).
    keep: bool,
    mine: Latencies,
    out: Arc<Mutex<Latencies>>,
}

impl LatencySink {
    pub fn new(config: &TradingConfig, origin: Origin, out: Arc<Mutex<Latencies>>) -> Self {
        Self {
            origin,
            warmup_ns: config.warmup.as_nanos() as u64,
            interval_ns: config.interval.as_nanos().max(1) as u64,
            keep: config.keep_raw,
            mine: Latencies {
                raw: Vec::with_capacity(if config.keep_raw { 1 << 16 } else { 0 }),
                ..Latencies::new()
            },
            out,
        }
    }

    /// Records the latency of update `u`, seen at `now` (nanoseconds after the start).
    #[inline]
    fn take(&mut self, u: Update, now: u64) {
        if self.keep {
            self.mine.note_last(u);
        }
        let intended_ns = u.intended_ns;
        if intended_ns < self.warmup_ns {
            return;
        }
        let v = now.saturating_sub(intended_ns).max(1);
        self.mine.all.saturating_record(v);
        let k = ((intended_ns - self.warmup_ns) / self.interval_ns) as usize;
        if self.mine.intervals.len() <= k {
            self.mine.intervals.resize(k + 1, interval_histogram());
        }
        self.mine.intervals[k].saturating_record(v);
        if self.keep {
            self.mine.raw.push(v);
        }
    }
}

impl SinkFunction<Update> for LatencySink {
    fn write(&mut self, batch: &mut Vec<Update>) -> Result<(), JobError> {
        let origin = *self.origin.get().expect("the source started the feed");
        let now = origin.elapsed().as_nanos() as u64;
        for u in batch.drain(..) {
            self.take(u, now);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.out.lock().expect("not poisoned").merge(&self.mine);
        Ok(())
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct TradingRun {
    pub latencies: Latencies,
    pub events: u64,
    pub elapsed: Duration,
    /// The process' peak resident memory during the run (its peak was reset at the start).
    pub peak_rss_bytes: Option<u64>,
}

/// The engine at parallelism `p`, in latency scheduling (shards busy-poll, never park).
pub fn engine(config: &TradingConfig, p: u32) -> anyhow::Result<TradingRun> {
    reset_peak_rss();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p)
        .set_scheduling_mode(SchedulingMode::Latency);
    env.config_mut().latency_io_poll_interval = config.io_poll;
    let origin: Origin = Arc::default();
    let out = Arc::new(Mutex::new(Latencies::new()));
    let (c, o) = (config.clone(), origin.clone());
    let (c2, o2, out2) = (config.clone(), origin.clone(), out.clone());
    env.add_source("feed", move |ctx| {
        Ok(TickSource::new(
            c.clone(),
            ctx.runtime.shard,
            ctx.runtime.parallelism,
            &o,
        ))
    })
    .key_by(|t: &Tick| t.symbol)
    .process(Books)
    .name("books")
    .sink_to("latency", move |_| {
        Ok(LatencySink::new(&c2, o2.clone(), out2.clone()))
    });
    let t0 = Instant::now();
    env.execute("trading feed")?;
    let elapsed = t0.elapsed();
    let latencies = out.lock().expect("not poisoned").clone();
    Ok(TradingRun {
        latencies,
        events: config.events(),
        elapsed,
        peak_rss_bytes: peak_rss(),
    })
}

/// The hand-written baseline: one thread sends each event when due, updates the books in a
/// hash map and records the latency the same way.
pub fn baseline(config: &TradingConfig) -> TradingRun {
    reset_peak_rss();
    let origin: Origin = Arc::default();
    let out = Arc::new(Mutex::new(Latencies::new()));
    let mut sink = LatencySink::new(config, origin.clone(), out.clone());
    let start = *origin.get_or_init(Instant::now);
    let mut books: HashMap<u32, Book> = HashMap::with_capacity(config.symbols as usize);
    let t0 = Instant::now();
    let end = config.events();
    let mut i = 0;
    while i < end {
        let due = config.due_by(start.elapsed().as_nanos() as u64);
        if i > due {
            std::hint::spin_loop();
            continue;
        }
        while i <= due && i < end {
            let t = config.tick(i);
            let b = books.entry(t.symbol).or_default();
            b.apply(&t);
            let u = b.update(&t);
            sink.take(u, start.elapsed().as_nanos() as u64);
            i += 1;
        }
    }
    let elapsed = t0.elapsed();
    sink.finish().expect("merges");
    let latencies = out.lock().expect("not poisoned").clone();
    TradingRun {
        latencies,
        events: end,
        elapsed,
        peak_rss_bytes: peak_rss(),
    }
}

/// Each symbol's final update by brute force: the books after every event, in order.
pub fn final_updates(config: &TradingConfig) -> HashMap<u32, Update> {
    let mut books: HashMap<u32, (Book, Tick)> = HashMap::new();
    for i in 0..config.events() {
        let t = config.tick(i);
        let e = books.entry(t.symbol).or_insert((Book::default(), t));
        e.0.apply(&t);
        e.1 = t;
    }
    books
        .into_iter()
        .map(|(s, (b, t))| (s, b.update(&t)))
        .collect()
}

/// Resets the kernel's record of this process' peak resident memory (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process' peak resident memory since the last reset (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The percentile of a latency histogram in microseconds.
pub fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// The `trading` subcommand's settings beyond the common ones.
#[derive(clap::Args, Debug, Clone)]
pub struct TradingArgs {
    #[arg(long, default_value_t = 1_000)]
    pub symbols: u32,
    /// Raise the rate by `--sweep-factor` from `--rate` until p99 passes the budget, and
    /// report the highest rate within it for each parallelism.
    #[arg(long)]
    pub sweep: bool,
    #[arg(long, default_value_t = 100.0)]
    pub p99_budget_us: f64,
    #[arg(long, default_value_t = 1.5)]
    pub sweep_factor: f64,
    /// The highest rate a sweep tries.
    #[arg(long, default_value_t = 50_000_000)]
    pub sweep_max_rate: u64,
    /// Milliseconds between a shard's I/O polls (glommio's preempt timer in latency
    /// scheduling): each poll is a syscall that holds the shard up.
    #[arg(long, default_value_t = 1)]
    pub io_poll_ms: u64,
}

/// The latency figures of one variant's runs (merged histograms), into the report.
fn figures(
    report: &mut crate::report::Report,
    workload: &str,
    variant: &str,
    runs: &[TradingRun],
) -> Histogram<u64> {
    let mut merged = histogram();
    for r in runs {
        merged.add(&r.latencies.all).expect("same bounds");
    }
    for (metric, q) in [
        ("p50 latency", 0.5),
        ("p99 latency", 0.99),
        ("p99.9 latency", 0.999),
        ("p99.99 latency", 0.9999),
    ] {
        let per_run: Vec<f64> = runs.iter().map(|r| us(&r.latencies.all, q)).collect();
        report.figure(workload, variant, metric, "µs", &per_run);
    }
    let max: Vec<f64> = runs
        .iter()
        .map(|r| r.latencies.all.max() as f64 / 1e3)
        .collect();
    report.figure(workload, variant, "max latency", "µs", &max);
    let sent: Vec<f64> = runs
        .iter()
        .map(|r| r.events as f64 / r.elapsed.as_secs_f64())
        .collect();
    report.figure(workload, variant, "rate achieved", "events/s", &sent);
    let rss: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.peak_rss_bytes)
        .map(|b| b as f64 / (1 << 20) as f64)
        .collect();
    if !rss.is_empty() {
        report.figure(workload, variant, "peak RSS", "MiB", &rss);
    }
    merged
}

fn over_time(
    report: &mut crate::report::Report,
    chart: &str,
    name: &str,
    run: &TradingRun,
    config: &TradingConfig,
) {
    let step = config.interval.as_secs_f64();
    let warm = config.warmup.as_secs_f64();
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let mut s = crate::report::Series::new(
            chart,
            &format!("{name} {label}"),
            "event due at (s)",
            "latency (µs)",
        );
        for (k, h) in run.latencies.intervals.iter().enumerate() {
            if !h.is_empty() {
                s.push(warm + (k as f64 + 1.0) * step, us(h, q));
            }
        }
        report.series(s);
    }
}

/// Runs every variant at `config.rate`; returns each parallelism's median p99 (µs).
fn at_rate(
    common: &crate::harness::Common,
    config: &TradingConfig,
    report: &mut crate::report::Report,
    progress: &crate::report::Progress,
    charts: bool,
) -> anyhow::Result<Vec<f64>> {
    let workload = format!(
        "trading {} events/s",
        crate::report::format_value(config.rate as f64)
    );
    let mut engine_runs: Vec<Vec<TradingRun>> = vec![Vec::new(); common.parallelism.len()];
    let mut base_runs = Vec::new();
    for run in 0..common.warmup + common.runs {
        let counted = run >= common.warmup;
        for (k, &p) in common.parallelism.iter().enumerate() {
            progress.set_message(format!("{workload} P={p} run {}", run + 1));
            let r = engine(config, p)?;
            if counted {
                engine_runs[k].push(r);
            }
            progress.inc(1);
        }
        if !common.no_baseline {
            progress.set_message(format!("{workload} baseline run {}", run + 1));
            let r = baseline(config);
            if counted {
                base_runs.push(r);
            }
            progress.inc(1);
        }
    }
    let mut p99s = Vec::new();
    for (k, &p) in common.parallelism.iter().enumerate() {
        let variant = format!("engine P={p}");
        let merged = figures(report, &workload, &variant, &engine_runs[k]);
        // The p99 the table shows (its median over the runs).
        let runs_p99: Vec<f64> = engine_runs[k]
            .iter()
            .map(|r| us(&r.latencies.all, 0.99))
            .collect();
        p99s.push(crate::report::median(&runs_p99));
        if charts {
            report.distribution(crate::report::Distribution::from_histogram(
                &format!("{workload} {variant}"),
                &merged,
                1e3,
                "µs",
            ));
            if let Some(last) = engine_runs[k].last() {
                over_time(report, "trading latency over time", &variant, last, config);
            }
        }
    }
    if !common.no_baseline {
        let merged = figures(report, &workload, "baseline (1 thread)", &base_runs);
        if charts {
            report.distribution(crate::report::Distribution::from_histogram(
                &format!("{workload} baseline (1 thread)"),
                &merged,
                1e3,
                "µs",
            ));
        }
        report.compare_to_baseline(&workload, "baseline (1 thread)");
    }
    Ok(p99s)
}

/// The `trading` subcommand.
pub fn run(common: &crate::harness::Common, args: &TradingArgs) -> anyhow::Result<()> {
    crate::report::progress::set_quiet(common.quiet);
    common.check()?;
    let config = TradingConfig {
        symbols: args.symbols,
        rate: common.rate.unwrap_or(1_000_000),
        duration: Duration::from_secs_f64(common.duration_s.unwrap_or(5.0)),
        seed: common.seed,
        io_poll: Duration::from_millis(args.io_poll_ms.max(1)),
        ..Default::default()
    };
    anyhow::ensure!(
        config.duration > config.warmup,
        "--duration-s must be longer than the {:?} warm-up",
        config.warmup
    );
    let mut report = crate::report::Report::new("trading", common.settings());
    report
        .setting("symbols", config.symbols)
        .setting("duration (s)", config.duration.as_secs_f64())
        .setting("warm-up excluded (s)", config.warmup.as_secs_f64())
        .setting("trades", format!("1 event in {}", config.trade_every))
        .setting("I/O poll (ms)", args.io_poll_ms);
    let per_rate = (common.parallelism.len() + usize::from(!common.no_baseline))
        * (common.warmup + common.runs);
    if !args.sweep {
        let progress = crate::report::Progress::new(per_rate as u64, "trading");
        at_rate(common, &config, &mut report, &progress, true)?;
        progress.finish();
        return common.finish(&report);
    }
    report.setting("p99 budget (µs)", args.p99_budget_us);
    let progress = crate::report::Progress::new(per_rate as u64, "trading sweep");
    let mut best: Vec<Option<u64>> = vec![None; common.parallelism.len()];
    let mut rate = config.rate as f64;
    let mut first = true;
    while rate as u64 <= args.sweep_max_rate {
        let c = TradingConfig {
            rate: rate as u64,
            ..config.clone()
        };
        progress.set_position(0);
        let p99s = at_rate(common, &c, &mut report, &progress, first)?;
        first = false;
        let mut any_within = false;
        for (k, p99) in p99s.iter().enumerate() {
            println!(
                "  {} events/s, P={}: p99 {p99:.1} µs",
                c.rate, common.parallelism[k]
            );
            if *p99 <= args.p99_budget_us {
                best[k] = Some(c.rate);
                any_within = true;
            }
        }
        if !any_within {
            break;
        }
        rate *= args.sweep_factor;
    }
    progress.finish();
    for (k, &p) in common.parallelism.iter().enumerate() {
        let r = best[k].map_or(0.0, |r| r as f64);
        report.figure(
            "trading sweep",
            &format!("engine P={p}"),
            &format!("highest rate with p99 ≤ {} µs", args.p99_budget_us),
            "events/s",
            &[r],
        );
    }
    common.finish(&report)
}
