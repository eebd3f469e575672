//! The `shardflow` binary as a user runs it.

mod common;

use std::collections::HashMap;
use std::process::Command;

fn shardflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardflow"))
}

/// Runs `cmd`, which must succeed, and returns its standard output.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_explains_every_subcommand() {
    let out = shardflow().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("run"), "{text}");
    let out = shardflow()
        .args(["run", "wordcount", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--input", "--output", "--parallelism", "--lines", "--mode"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn wordcount_writes_csv_counts_equal_to_a_plain_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = shardflow();
    cmd.args([
        "run",
        "wordcount",
        "--lines",
        "5000",
        "--seed",
        "3",
        "--parallelism",
        "3",
        "--output",
    ])
    .arg(dir.path());
    let stdout = stdout_of(&mut cmd);
    assert!(stdout.contains("job 'wordcount' finished"), "{stdout}");
    assert_eq!(
        common::read_counts(dir.path()),
        common::brute_force_counts(3, 5000)
    );
}

#[test]
fn a_missing_input_exits_2_naming_the_path() {
    let out = shardflow()
        .args(["run", "wordcount", "--input", "/no/such/input.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/no/such/input.txt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unwritable_output_exits_2_naming_the_path() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let bad = f.path().join("out");
    let out = shardflow()
        .args(["run", "wordcount", "--lines", "10", "--output"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
}

#[test]
fn a_non_utf8_line_exits_2_with_file_and_line_or_is_skipped_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.txt");
    std::fs::write(&path, b"good line\nalso good\nbad \xff byte\nfine\n").unwrap();
    let out = shardflow()
        .args(["run", "wordcount", "-p", "2", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:3:", path.display())),
        "{stderr}"
    );
    let out = shardflow()
        .args(["run", "wordcount", "--skip-malformed", "--input"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("4 distinct words, 5 words"), "{stdout}");
}

#[test]
fn streaming_mode_ends_with_the_same_counts_as_batch_mode() {
    let summary = |mode: &str| {
        let stdout = stdout_of(shardflow().args([
            "run",
            "wordcount",
            "--lines",
            "3000",
            "-p",
            "3",
            "--mode",
            mode,
        ]));
        let from = stdout.find("distinct words").expect("a summary");
        stdout[from..].to_string()
    };
    assert_eq!(summary("streaming"), summary("batch"));
}

/// Every CSV row of every file of `dir`.
fn csv_rows(dir: &std::path::Path) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(entry.unwrap().path())
            .unwrap();
        for r in reader.records() {
            rows.push(r.unwrap().iter().map(str::to_string).collect());
        }
    }
    rows.sort();
    rows
}

#[test]
fn logs_counts_errors_per_host_and_minute_and_names_malformed_lines() {
    use shardflow::jobs::logs::{format_ms, parse_line};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("app.log");
    // Lines a few seconds out of order (within the job's 5 s bound), some malformed.
    let mut text = String::new();
    let mut malformed_lines = Vec::new();
    let mut rng = shardflow_core::rng::SplitMix64::new(11);
    let start = 1_795_600_800_000i64;
    for i in 0..20_000i64 {
        if i % 997 == 500 {
            text.push_str("not a log line\n");
            malformed_lines.push(i + 1);
            continue;
        }
        let ts = start + i * 37 - rng.below(4_000) as i64;
        let host = ["a", "b", "c"][rng.below(3) as usize];
        let level = ["ERROR", "INFO", "WARN"][rng.below(3) as usize];
        text.push_str(&format!("{} {host} {level} msg {i}\n", format_ms(ts)));
    }
    std::fs::write(&input, &text).unwrap();
    // The reference: count ERROR lines per (minute, host) with a loop.
    let mut want: HashMap<(i64, String), u64> = HashMap::new();
    for line in text.lines() {
        if let Ok(e) = parse_line(line)
            && e.level == "ERROR"
        {
            *want
                .entry((e.ts - e.ts.rem_euclid(60_000), e.host))
                .or_default() += 1;
        }
    }
    let mut want: Vec<Vec<String>> = want
        .into_iter()
        .map(|((w, h), n)| vec![format_ms(w), format_ms(w + 60_000), h, n.to_string()])
        .collect();
    want.sort();
    let out = dir.path().join("out");
    let mut cmd = shardflow();
    cmd.args(["run", "logs", "-p", "2", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out);
    let stdout = stdout_of(&mut cmd);
    assert_eq!(csv_rows(&out), want);
    assert!(
        stdout.contains(&format!("{} malformed lines", malformed_lines.len())),
        "{stdout}"
    );
    for line in malformed_lines.iter().take(20) {
        let place = format!("{}:{line}: ", input.display());
        assert!(stdout.contains(&place), "{place} missing from:\n{stdout}");
    }
}

#[test]
fn telemetry_windows_equal_a_plain_loop() {
    use shardflow::jobs::telemetry::{TelemetrySettings, window_stats_loop};
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = shardflow();
    cmd.args([
        "run",
        "telemetry",
        "--rate",
        "50000",
        "--duration-secs",
        "4",
        "--sensors",
        "300",
        "--window-ms",
        "500",
        "-p",
        "2",
        "--output",
    ])
    .arg(dir.path());
    let stdout = stdout_of(&mut cmd);
    assert!(stdout.contains("0 late"), "{stdout}");
    let settings = TelemetrySettings {
        readings: 200_000,
        sensors: 300,
        rate: 50_000,
        window_ms: 500,
        ..TelemetrySettings::default()
    };
    let mut want = Vec::new();
    window_stats_loop(&settings, |w| {
        want.push(
            [
                w.sensor.to_string(),
                w.window_start.to_string(),
                w.window_end.to_string(),
                w.count.to_string(),
                w.sum.to_string(),
                w.max.to_string(),
            ]
            .to_vec(),
        )
    });
    want.sort();
    assert_eq!(csv_rows(dir.path()), want);
}
