//! Telemetry ingestion: the engine's windows per series equal a single-threaded loop's, and a
//! line that does not parse is named.

use shardflow::prelude::*;
use shardflow_bench::ingest::{self, IngestConfig, SeriesWindow};

fn key(w: &SeriesWindow) -> (String, String, i64) {
    (
        w.host.as_str().into(),
        w.metric.as_str().into(),
        w.window_start,
    )
}

#[test]
fn the_engines_windows_equal_the_loops() {
    let _cpus = shardflow_tests::shared_cpus();
    let config = IngestConfig {
        points: 200_000,
        hosts: 40,
        rate: 5_000,
        seed: shardflow_tests::seed(0x1e),
        ..Default::default()
    };
    let mut want = Vec::new();
    ingest::baseline(&config, |w| want.push(w));
    want.sort_by_key(key);
    // 40 s of event time in 10 s windows, 320 series.
    assert!(want.len() > 1_000, "{}", want.len());
    for p in [1, 2, 3] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let got = ingest::windows(&env, &config).collect();
        env.execute("ingest").unwrap();
        let mut got = got.take();
        got.sort_by_key(key);
        assert_eq!(got.len(), want.len(), "P = {p}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(key(g), key(w), "P = {p}");
            assert_eq!(
                (g.count, g.min, g.max),
                (w.count, w.min, w.max),
                "{:?}",
                key(g)
            );
            // Sums of the same values in another order: equal to rounding.
            assert!(
                (g.sum - w.sum).abs() <= 1e-9 * w.sum.abs().max(1.0),
                "{:?}",
                key(g)
            );
        }
    }
}

#[test]
fn a_bad_line_is_named() {
    let e = ingest::parse(r#"{"host":"h1","metric":"cpu.user","region":"eu","value":"x","ts":1}"#)
        .unwrap_err();
    assert!(
        e.contains(r#""value":"x""#) && e.contains("invalid type"),
        "{e}"
    );
    let mut line = String::new();
    IngestConfig::default().line(7, &mut line);
    let p = ingest::parse(&line).unwrap();
    assert!(p.host.as_str().starts_with('h') && ingest::METRICS.contains(&p.metric.as_str()));
}
