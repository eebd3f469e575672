//! The `shardflow` binary as a user runs it.

use std::collections::HashMap;
use std::process::Command;

use shardflow::datagen::ZipfText;
use shardflow::jobs::wordcount::{normalize, tokens};

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
    let mut got: HashMap<String, u64> = HashMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(entry.unwrap().path())
            .unwrap();
        for row in reader.records() {
            let row = row.unwrap();
            assert!(
                got.insert(row[0].to_string(), row[1].parse().unwrap())
                    .is_none()
            );
        }
    }
    let text = ZipfText::standard(3);
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut line = String::new();
    for j in 0..5000 {
        line.clear();
        text.line(j, &mut line);
        for w in tokens(&line) {
            *want.entry(normalize(w).to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(got, want);
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
