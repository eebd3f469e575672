//! The trading-feed benchmark measures what it says: its latency percentiles agree with the
//! latencies it recorded, and its books end as a brute-force replay of the feed leaves them.

use std::time::Duration;

use shardflow_bench::trading::{self, TradingConfig};

fn config(seed: u64) -> TradingConfig {
    TradingConfig {
        symbols: 50,
        rate: 200_000,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(100),
        seed,
        keep_raw: true,
        ..Default::default()
    }
}

/// The histogram's percentiles against a sort of every recorded latency: within the
/// histogram's three significant digits.
fn check_percentiles(run: &trading::TradingRun, what: &str) {
    let mut raw = run.latencies.raw.clone();
    assert!(!raw.is_empty(), "{what}: nothing recorded");
    assert_eq!(raw.len() as u64, run.latencies.all.len(), "{what}");
    // Every event due after the warm-up is recorded once.
    let c = config(0);
    let due_after_warmup = (0..c.events())
        .filter(|&i| c.intended_ns(i) >= c.warmup.as_nanos() as u64)
        .count();
    assert_eq!(raw.len(), due_after_warmup, "{what}");
    raw.sort_unstable();
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        // The smallest recorded value with at least q of them at or below it.
        let rank = ((q * raw.len() as f64).ceil() as usize).clamp(1, raw.len());
        let want = raw[rank - 1];
        let got = run.latencies.all.value_at_quantile(q);
        let tolerance = (want / 500).max(1);
        assert!(
            got.abs_diff(want) <= tolerance,
            "{what}: p{} is {got} ns by the histogram, {want} ns by the recorded values",
            q * 100.0
        );
    }
    assert_eq!(run.latencies.all.max(), {
        let h = &run.latencies.all;
        h.highest_equivalent(*raw.last().unwrap())
    });
}

#[test]
fn the_latency_percentiles_match_the_recorded_latencies() {
    let _cpus = shardflow_tests::exclusive_cpus();
    let seed = shardflow_tests::seed(0x7ad);
    for p in [1, 2] {
        let c = TradingConfig {
            seed,
            ..config(seed)
        };
        let run = trading::engine(&c, p).unwrap();
        check_percentiles(&run, &format!("engine P = {p}"));
        // The books end as the feed replayed in order leaves them. (The last update of a
        // symbol is of whichever of its events its shard processed last, not necessarily the
        // one of the highest sequence number: only the book is compared.)
        let want = trading::final_updates(&c);
        let book = |u: &trading::Update| (u.vwap, u.volume, u.bid, u.ask);
        assert_eq!(run.latencies.last.len(), want.len());
        for (s, u) in &want {
            assert_eq!(
                run.latencies.last.get(s).map(book),
                Some(book(u)),
                "symbol {s} at P = {p}"
            );
        }
    }
    let c = config(seed);
    let run = trading::baseline(&c);
    check_percentiles(&run, "baseline");
    assert_eq!(run.latencies.last, trading::final_updates(&c));
}
