//! The exactly-once file sink: parts roll by size and time and hold every record once; with
//! checkpoints, a job with keyed state and windows through injected failures (30 seeds: one or
//! two failures in a random operator, or a snapshot that fails) leaves exactly the brute-force
//! output in its committed parts, and nothing hidden.

use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::checkpoint::CheckpointConfig;
use shardflow_tests::exactly_once::{self, Failures, first_difference, read_output};

/// Without checkpoints: parts roll at their size, every record is in exactly one committed part,
/// and a second run into the same directory adds parts after the first's without touching them.
#[test]
fn parts_roll_by_size_and_a_second_run_adds_parts() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let n = 100_000u64;
    let max = 10_000u64;
    let run = |offset: u64| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        let options = FileSinkOptions {
            rolling: RollingPolicy {
                max_part_bytes: max,
                ..Default::default()
            },
            ..Default::default()
        };
        env.from_iter((offset..offset + n).collect::<Vec<u64>>())
            .sink_to_files_with(&out, options, |x: &u64, buf: &mut Vec<u8>| {
                buf.extend_from_slice(format!("{x}\n").as_bytes())
            });
        env.execute("parts").unwrap();
    };
    run(0);
    let snapshot = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let first = snapshot(&out);
    assert!(first.len() > 2 * 5, "{} parts", first.len());
    for (name, bytes) in &first {
        // A part rolls once it reaches its size: at most one line over it.
        assert!(
            bytes.len() as u64 <= max + 7,
            "{name}: {} bytes",
            bytes.len()
        );
        assert!(name.starts_with("part-0000"), "{name}");
    }
    run(n);
    let second = snapshot(&out);
    for f in &first {
        assert!(second.contains(f), "{} was rewritten or removed", f.0);
    }
    let (lines, hidden) = read_output(&out);
    assert!(hidden.is_empty(), "{hidden:?}");
    let mut got: Vec<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert!(
        got == (0..2 * n).collect::<Vec<_>>(),
        "records lost or repeated"
    );
}

/// A rollover interval of zero rolls the part at every batch: time-based rolling.
#[test]
fn parts_roll_by_time() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    env.config_mut().batch_bytes = 4096;
    let options = FileSinkOptions {
        rolling: RollingPolicy {
            rollover_interval: Duration::ZERO,
            ..Default::default()
        },
        suffix: ".txt".to_string(),
        ..Default::default()
    };
    let n = 50_000u64;
    env.from_iter((0..n).collect::<Vec<u64>>())
        .sink_to_files_with(tmp.path(), options, |x: &u64, buf: &mut Vec<u8>| {
            buf.extend_from_slice(format!("{x}\n").as_bytes())
        });
    env.execute("parts by time").unwrap();
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.len() > 10, "{} parts", names.len());
    assert!(names.iter().all(|n| n.ends_with(".txt")), "{names:?}");
    let (lines, _) = read_output(tmp.path());
    assert_eq!(lines.len() as u64, n);
}

/// Exactly once end to end, 30 seeds: event-time windows, keyed running totals and the file
/// sink, at P = 1 or 2, with one or two failures at random record counts in random operators
/// (before the windows, in them, between, in the keyed reduce, in front of the sink), or a
/// snapshot that fails (its checkpoint is aborted, the job goes on); parts roll at a random
/// small size, so many are pending across checkpoints. The committed parts hold exactly the
/// brute-force output, and no hidden part is left.
#[test]
fn exactly_once_with_windows_and_the_file_sink_under_random_failures() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0xf11e5);
    let mut rng = shardflow_core::rng::SplitMix64::new(seed);
    let events = exactly_once::events(150_000, 2_000, seed);
    let want = exactly_once::reference(&events);
    let n = events.len() as u64;
    let windows = want.len() as u64;
    let mut restarted = 0;
    for round in 0..30 {
        let p = 1 + rng.below(2) as u32;
        let mut failures = Failures::NONE;
        let mut what = Vec::new();
        let count = if rng.below(8) == 0 {
            0
        } else {
            1 + rng.below(2)
        };
        for _ in 0..count {
            match rng.below(5) {
                0 => failures.source_map = 1 + rng.below(n),
                1 => failures.window = 1 + rng.below(n - 2_000),
                2 => failures.between = 1 + rng.below(windows),
                3 => failures.totals = 1 + rng.below(windows),
                _ => failures.before_sink = 1 + rng.below(windows),
            }
        }
        if count == 0 || rng.below(6) == 0 {
            failures.snapshot = 1 + rng.below(4);
        }
        what.push(format!("{failures:?}"));
        let max_part_bytes = 2_000 + rng.below(60_000);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().checkpoints = Some(CheckpointConfig::new(
            tmp.path().join("checkpoints"),
            Duration::from_millis(2),
        ));
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(1),
        };
        exactly_once::build(&env, events.clone(), failures, &out, max_part_bytes, 0);
        let what = format!(
            "seed {seed} round {round}: P = {p}, parts of {max_part_bytes} bytes, {}",
            what.join(", ")
        );
        let result = env.execute("exactly once").expect(&what);
        restarted += result.restarts;
        let (got, hidden) = read_output(&out);
        assert!(hidden.is_empty(), "{what}: left hidden: {hidden:?}");
        assert!(got == want, "{what}: {}", first_difference(&got, &want));
    }
    assert!(restarted >= 20, "only {restarted} restarts in 30 rounds");
}

/// Unaligned checkpoints, 12 seeds: the same job (windows, keyed totals, the file sink) at
/// P = 2 with barriers that overtake the records of the exchanges' other inputs, which go into
/// the checkpoint and are replayed on restore; one or two failures in random operators. The
/// committed parts are exactly the brute-force output, and checkpoints did hold in-flight
/// records.
#[test]
fn unaligned_checkpoints_are_exactly_once_under_failures() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0xa11e);
    let mut rng = shardflow_core::rng::SplitMix64::new(seed);
    let events = exactly_once::events(150_000, 2_000, seed);
    let want = exactly_once::reference(&events);
    let n = events.len() as u64;
    let windows = want.len() as u64;
    let mut in_flight = 0;
    for round in 0..12 {
        let mut failures = Failures::NONE;
        for _ in 0..1 + rng.below(2) {
            match rng.below(4) {
                0 => failures.source_map = 1 + rng.below(n),
                1 => failures.window = 1 + rng.below(n - 2_000),
                2 => failures.totals = 1 + rng.below(windows),
                _ => failures.before_sink = 1 + rng.below(windows),
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        env.config_mut().source_batch_records = 256;
        let mut c = CheckpointConfig::new(tmp.path().join("checkpoints"), Duration::from_millis(2));
        c.unaligned = true;
        env.config_mut().checkpoints = Some(c);
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(1),
        };
        exactly_once::build(&env, events.clone(), failures, &out, 20_000, 0);
        let what = format!("seed {seed} round {round}: {failures:?}");
        let result = env.execute("unaligned").expect(&what);
        in_flight += result
            .checkpoints
            .iter()
            .map(|c| c.in_flight_bytes)
            .sum::<u64>();
        let (got, hidden) = read_output(&out);
        assert!(hidden.is_empty(), "{what}: left hidden: {hidden:?}");
        assert!(got == want, "{what}: {}", first_difference(&got, &want));
    }
    assert!(in_flight > 0, "no checkpoint held in-flight records");
}

/// `csv_line` encodes rows exactly as `write_as_csv` writes them (RFC 4180 quoting): the file
/// sink writes the same CSV.
#[test]
fn csv_rows_through_the_file_sink_equal_write_as_csv() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<(String, u64, f64)> = (0..2_000u64)
        .map(|i| {
            let text = match i % 4 {
                0 => format!("plain {i}"),
                1 => format!("comma, {i}"),
                2 => format!("quote \" {i}"),
                _ => format!("line\nbreak {i}"),
            };
            (text, i, i as f64 / 3.0)
        })
        .collect();
    let run = |exactly_once: bool| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(1);
        let s = env.from_iter(records.clone());
        let dir = tmp.path().join(if exactly_once { "files" } else { "csv" });
        if exactly_once {
            s.sink_to_files_with(
                &dir,
                FileSinkOptions::default(),
                shardflow::sink::csv::csv_line::<(String, u64, f64)>,
            );
        } else {
            s.write_as_csv(&dir);
        }
        env.execute("csv").unwrap();
        let mut bytes = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            bytes.extend(std::fs::read(n).unwrap());
        }
        bytes
    };
    let plain = run(false);
    assert!(plain.len() > 20_000);
    assert!(run(true) == plain, "the encodings differ");
}
