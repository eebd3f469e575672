//! Bad input and failing user code: clear errors naming the place, never a panic, never a hang.

use std::io::Write;

use shardflow::prelude::*;

fn p2() -> StreamExecutionEnvironment {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env
}

#[test]
fn a_missing_input_names_its_path() {
    let _cpus = shardflow_tests::shared_cpus();
    let mut env = p2();
    env.read_text_file("/definitely/not/here.txt").collect();
    let err = env.execute("missing").unwrap_err();
    assert!(matches!(err, JobError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/definitely/not/here.txt"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

/// A file of `lines` ASCII lines with one invalid UTF-8 line at (1-based) `bad_line`.
fn file_with_bad_line(lines: usize, bad_line: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for i in 1..=lines {
        if i == bad_line {
            f.write_all(b"caf\xe9 au lait\n").unwrap();
        } else {
            writeln!(f, "line {i} is fine").unwrap();
        }
    }
    f.flush().unwrap();
    f
}

#[test]
fn a_line_that_is_not_utf8_is_reported_with_file_and_line() {
    let _cpus = shardflow_tests::shared_cpus();
    for (p, bad) in [(1, 1), (2, 7_321), (3, 9_999), (4, 5_000)] {
        let f = file_with_bad_line(10_000, bad);
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.read_text_file(f.path()).collect();
        let err = env.execute("utf8").unwrap_err();
        match &err {
            JobError::InvalidUtf8 { path, line, .. } => {
                assert_eq!(path, f.path());
                assert_eq!(*line, bad as u64, "P = {p}");
            }
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!(":{bad}:")), "{err}");
    }
}

#[test]
fn skipping_malformed_lines_counts_them_and_keeps_the_rest() {
    let _cpus = shardflow_tests::shared_cpus();
    let f = file_with_bad_line(3_000, 1_234);
    let mut env = p2();
    let lines = env
        .read_text_file_with(
            f.path(),
            TextFileOptions {
                on_invalid_utf8: OnMalformed::SkipAndCount,
                ..TextFileOptions::default()
            },
        )
        .collect();
    let result = env.execute("skip").unwrap();
    let lines = lines.take();
    assert_eq!(lines.len(), 2_999);
    assert!(!lines.iter().any(|l| l.contains("1234")));
    assert_eq!(
        result.operator("read_text_file").unwrap().records_skipped,
        1
    );
}

#[test]
fn an_overlong_line_is_an_error_not_an_allocation_without_bound() {
    let _cpus = shardflow_tests::shared_cpus();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "short").unwrap();
    f.write_all(&vec![b'x'; 5_000]).unwrap();
    f.flush().unwrap();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    env.read_text_file_with(
        f.path(),
        TextFileOptions {
            line_bytes_max: 1_000,
            ..Default::default()
        },
    )
    .collect();
    let err = env.execute("long").unwrap_err();
    assert!(
        matches!(
            err,
            JobError::LineTooLong {
                line: 2,
                limit_bytes: 1_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_output_directory_that_cannot_be_created_names_its_path() {
    let _cpus = shardflow_tests::shared_cpus();
    let f = tempfile::NamedTempFile::new().unwrap();
    let bad = f.path().join("sub");
    let mut env = p2();
    env.generate_sequence(1, 10).write_as_text(&bad);
    let err = env.execute("out").unwrap_err();
    assert!(matches!(err, JobError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn existing_output_is_not_overwritten_unless_asked() {
    let _cpus = shardflow_tests::shared_cpus();
    let dir = tempfile::tempdir().unwrap();
    for (mode, ok) in [
        (WriteMode::NoOverwrite, true),
        (WriteMode::NoOverwrite, false),
        (WriteMode::Overwrite, true),
    ] {
        let mut env = p2();
        env.generate_sequence(1, 100)
            .write_as_text_with(dir.path(), mode);
        let r = env.execute("out");
        assert_eq!(r.is_ok(), ok, "{mode:?}: {r:?}");
    }
    let mut all: Vec<i64> = std::fs::read_dir(dir.path())
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    assert_eq!(all, (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_refused_socket_names_its_address() {
    let _cpus = shardflow_tests::shared_cpus();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env = p2();
    env.socket_text_stream("127.0.0.1", port).collect();
    let err = env.execute("socket").unwrap_err();
    assert!(matches!(err, JobError::Socket { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn socket_lines_arrive_whole_and_counted() {
    let _cpus = shardflow_tests::shared_cpus();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for i in 0..5_000 {
            write!(s, "event {i}\r\n").unwrap();
        }
        s.write_all(b"last line without newline").unwrap();
    });
    let mut env = p2();
    let lines = env
        .socket_text_stream("127.0.0.1", port)
        .rebalance()
        .collect();
    env.execute("socket").unwrap();
    server.join().unwrap();
    let mut got = lines.take();
    got.sort();
    let mut want: Vec<String> = (0..5_000).map(|i| format!("event {i}")).collect();
    want.push("last line without newline".into());
    want.sort();
    assert_eq!(got, want);
}

#[derive(Clone)]
struct FailAt {
    n: u64,
    seen: u64,
    panic: bool,
}

impl ProcessFunction<i64, i64> for FailAt {
    fn process_element(
        &mut self,
        x: i64,
        _ctx: &RuntimeContext,
        out: &mut Collector<i64>,
    ) -> Result<(), UserError> {
        self.seen += 1;
        if self.seen == self.n {
            if self.panic {
                panic!("deliberate failure at record {}", self.n);
            }
            return Err(format!("refused record {x}").into());
        }
        out.collect(x);
        Ok(())
    }
}

#[test]
fn a_failing_or_panicking_user_function_fails_the_job_with_its_name() {
    let _cpus = shardflow_tests::shared_cpus();
    for panic in [false, true] {
        for p in [1, 2, 4] {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(p);
            env.generate_sequence(1, 1_000_000)
                .key_by(|x: &i64| x % 97)
                .process_by_shard(FailAt {
                    n: 1_000,
                    seen: 0,
                    panic,
                })
                .name("fragile")
                .map(|x| x + 1)
                .collect();
            let err = env.execute("failing").unwrap_err();
            match (&err, panic) {
                (
                    JobError::Operator {
                        operator, message, ..
                    },
                    false,
                ) => {
                    assert_eq!(operator, "fragile");
                    assert!(message.contains("refused record"), "{message}");
                }
                (
                    JobError::Panicked {
                        operator, message, ..
                    },
                    true,
                ) => {
                    assert_eq!(operator, "fragile");
                    assert!(
                        message.contains("deliberate failure at record 1000"),
                        "{message}"
                    );
                }
                other => panic!("P = {p}: unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn a_bad_setting_is_refused_before_anything_runs() {
    let _cpus = shardflow_tests::shared_cpus();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(0);
    env.generate_sequence(1, 3).collect();
    assert!(matches!(env.execute("bad"), Err(JobError::Config(_))));
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(8).set_max_parallelism(4);
    env.generate_sequence(1, 3).collect();
    let err = env.execute("bad").unwrap_err();
    assert!(err.to_string().contains("max parallelism"), "{err}");
}

#[test]
fn io_sources_make_progress_in_latency_mode() {
    let _cpus = shardflow_tests::exclusive_cpus();
    // Busy-polling shards reap io_uring completions only at the I/O poll interval: a socket and
    // a file must still be read, whole, in latency mode.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for i in 0..2_000 {
            writeln!(s, "tick {i}").unwrap();
            if i % 500 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    });
    let f = file_with_bad_line(3_000, 0);
    let mut env = p2();
    env.set_scheduling_mode(SchedulingMode::Latency);
    let ticks = env
        .socket_text_stream("127.0.0.1", port)
        .rebalance()
        .collect();
    let lines = env.read_text_file(f.path()).collect();
    env.execute("latency io").unwrap();
    server.join().unwrap();
    assert_eq!(ticks.take().len(), 2_000);
    assert_eq!(lines.take().len(), 3_000);
}

struct NullSink;

impl shardflow_core::operator::sink::SinkFunction<i64> for NullSink {
    fn write(&mut self, batch: &mut Vec<i64>) -> Result<(), JobError> {
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        Ok(())
    }
}

#[test]
fn a_shard_that_cannot_build_its_part_fails_the_job_instead_of_hanging_it() {
    let _cpus = shardflow_tests::shared_cpus();
    // Shard 2 of 3 cannot open its sink; the others have built theirs and exchange with it.
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(3);
    env.generate_sequence(1, 100_000)
        .key_by(|x: &i64| *x)
        .reduce(|a: &mut i64, b: i64| *a += b)
        .sink_to("fussy", |ctx| {
            if ctx.runtime.shard == 2 {
                Err(ctx.error("no sink for shard 2"))
            } else {
                Ok(NullSink)
            }
        });
    let err = env.execute("fussy").unwrap_err();
    assert!(err.to_string().contains("no sink for shard 2"), "{err}");
}
