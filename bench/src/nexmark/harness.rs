//! `shardflow-bench nexmark`: each query's events/s through the engine at each parallelism,
//! beside a single-threaded loop doing the same work (generating the events and computing the
//! query's result by [`super::reference`]'s brute force; a plain generate-map-filter loop for
//! the stateless q0-q2).

use std::time::{Duration, Instant};

use shardflow::prelude::*;

use super::model::Event;
use super::{NexmarkConfig, events, queries, reference};
use crate::harness::{Common, drop_into, sample_source_rate};
use crate::report::{Progress, Report, Series};

/// The stream the harness generates by default: 10 M events at Flink's default 10 M/s.
pub const DEFAULT_EVENTS: u64 = 10_000_000;

/// One run of a query through the engine.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub elapsed: Duration,
    /// Events/s generated over time: (seconds since the start, events/s).
    pub throughput: Vec<(f64, f64)>,
}

/// Runs `query` over `config`'s stream at parallelism `p`, its output dropped.
pub fn engine(query: &str, config: &NexmarkConfig, p: u32) -> anyhow::Result<EngineRun> {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    let samples = sample_source_rate(&mut env, "nexmark");
    let ev = events(&env, config);
    match query {
        "q0" => drop_into(&queries::q0(&ev)),
        "q1" => drop_into(&queries::q1(&ev)),
        "q2" => drop_into(&queries::q2(&ev)),
        "q3" => drop_into(&queries::q3(&ev)),
        "q4" => drop_into(&queries::q4(&ev)),
        "q5" => drop_into(&queries::q5(&ev)),
        "q6" => drop_into(&queries::q6(&ev)),
        "q7" => drop_into(&queries::q7(&ev)),
        "q8" => drop_into(&queries::q8(&ev)),
        "q9" => drop_into(&queries::q9(&ev)),
        "q11" => drop_into(&queries::q11(&ev)),
        "q12" => drop_into(&queries::q12(&ev)),
        other => anyhow::bail!(
            "no Nexmark query {other:?} (the queries: {:?})",
            queries::QUERIES
        ),
    }
    let t0 = Instant::now();
    env.execute(&format!("nexmark {query}"))?;
    let elapsed = t0.elapsed();
    let throughput = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    Ok(EngineRun {
        elapsed,
        throughput,
    })
}

/// The hand-written baseline of `query` on one thread: the time it takes and the rows it gives.
pub fn baseline(query: &str, config: &NexmarkConfig) -> anyhow::Result<(Duration, u64)> {
    let t0 = Instant::now();
    // The stateless queries stream: no event is kept.
    let streamed = |keep: &dyn Fn(&Event) -> Option<u64>| {
        let mut rows = 0u64;
        let mut sum = 0u64;
        for i in 0..config.events {
            if let Some(v) = keep(&config.event(i)) {
                rows += 1;
                sum = sum.wrapping_add(v);
            }
        }
        std::hint::black_box(sum);
        rows
    };
    let rows = match query {
        "q0" => streamed(&|e| e.bid().map(|b| b.price)),
        "q1" => streamed(&|e| e.bid().map(|b| b.price * 89 / 100)),
        "q2" => streamed(&|e| {
            e.bid()
                .filter(|b| b.auction % queries::Q2_SKIP == 0)
                .map(|b| b.price)
        }),
        q => {
            let all: Vec<Event> = (0..config.events).map(|i| config.event(i)).collect();
            match q {
                "q3" => reference::q3(&all).len(),
                "q4" => reference::q4(&all).len(),
                "q5" => reference::q5(&all).len(),
                "q6" => reference::q6(&all).len(),
                "q7" => reference::q7(&all).len(),
                "q8" => reference::q8(&all).len(),
                "q9" => reference::q9(&all).len(),
                "q11" => reference::q11(&all).len(),
                "q12" => reference::bids_per_bidder(&all).len(),
                other => anyhow::bail!("no Nexmark query {other:?}"),
            }
            .try_into()
            .expect("a count")
        }
    };
    Ok((t0.elapsed(), rows))
}

/// The `nexmark` subcommand.
pub fn run(common: &Common, queries_asked: &[String]) -> anyhow::Result<()> {
    crate::report::progress::set_quiet(common.quiet);
    common.check()?;
    let config = NexmarkConfig {
        events: common.events.unwrap_or(DEFAULT_EVENTS),
        rate: common.rate.unwrap_or(10_000_000),
        seed: common.seed,
        ..Default::default()
    };
    let asked: Vec<&str> = if queries_asked.iter().any(|q| q == "all") || queries_asked.is_empty() {
        queries::QUERIES.to_vec()
    } else {
        queries_asked.iter().map(String::as_str).collect()
    };
    for q in &asked {
        anyhow::ensure!(
            queries::QUERIES.contains(q),
            "no Nexmark query {q:?} (the queries: {:?})",
            queries::QUERIES
        );
    }
    let mut report = Report::new("nexmark", common.settings());
    report
        .setting("events", config.events)
        .setting("event rate (event time)", config.rate)
        .setting("queries", asked.join(","));
    let variants = common.parallelism.len() + usize::from(!common.no_baseline);
    let progress = Progress::new(
        (asked.len() * variants * (common.warmup + common.runs)) as u64,
        "nexmark",
    );
    let n = config.events as f64;
    for q in &asked {
        let mut engine_runs: Vec<Vec<f64>> = vec![Vec::new(); common.parallelism.len()];
        let mut base_runs = Vec::new();
        let mut last_series: Vec<Option<Vec<(f64, f64)>>> = vec![None; common.parallelism.len()];
        // Interleaved, run by run: the machine's noise hits every variant alike.
        for run in 0..common.warmup + common.runs {
            let counted = run >= common.warmup;
            for (k, &p) in common.parallelism.iter().enumerate() {
                progress.set_message(format!("{q} P={p} run {}", run + 1));
                let r = engine(q, &config, p)?;
                if counted {
                    engine_runs[k].push(n / r.elapsed.as_secs_f64());
                    last_series[k] = Some(r.throughput);
                }
                progress.inc(1);
            }
            if !common.no_baseline {
                progress.set_message(format!("{q} baseline run {}", run + 1));
                let (elapsed, _) = baseline(q, &config)?;
                if counted {
                    base_runs.push(n / elapsed.as_secs_f64());
                }
                progress.inc(1);
            }
        }
        for (k, &p) in common.parallelism.iter().enumerate() {
            report.figure(
                q,
                &format!("engine P={p}"),
                "throughput",
                "events/s",
                &engine_runs[k],
            );
            if let Some(points) = last_series[k].take() {
                let mut s = Series::new(
                    "nexmark throughput over time",
                    &format!("{q} P={p}"),
                    "time (s)",
                    "events/s",
                );
                for (t, v) in points {
                    s.push(t, v);
                }
                report.series(s);
            }
        }
        if !common.no_baseline {
            report.figure(
                q,
                "baseline (1 thread)",
                "throughput",
                "events/s",
                &base_runs,
            );
            report.compare_to_baseline(q, "baseline (1 thread)");
        }
    }
    progress.finish();
    common.finish(&report)
}
