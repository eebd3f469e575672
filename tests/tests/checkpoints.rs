//! Checkpoints of running jobs: barriers flow from the sources through exchanges and aligned
//! inputs, every operator with state acks each checkpoint, the coordinator completes them
//! (metadata written, the newest three kept), and a checkpoint holds a consistent cut: the
//! keyed state restored from it is exactly what a prefix of the input makes.

use std::collections::HashMap;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::checkpoint::{CheckpointConfig, OperatorSnapshot, decode_snapshots};
use shardflow_core::keyed::KeyedTable;
use shardflow_core::state::StateBackend;
use shardflow_core::time::ProcessingClock;
use shardflow_state::checkpoint::CheckpointStorage;
use shardflow_state::{Store, StoreOptions};

const KEYS: u64 = 1_000;

fn run(p: u32, n: u64, dir: &std::path::Path) -> JobResult {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    let mut c = CheckpointConfig::new(dir, Duration::from_millis(5));
    c.timeout = Duration::from_secs(60);
    env.config_mut().checkpoints = Some(c);
    let out = env
        .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        .collect();
    let result = env.execute("checkpointed counts").unwrap();
    // The job's own output is untouched by its checkpoints: every key's last count is whole.
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (k, c) in out.take() {
        let e = last.entry(k).or_default();
        *e = (*e).max(c);
    }
    assert_eq!(last.len() as u64, KEYS);
    assert!(last.values().all(|&c| c == n / KEYS));
    result
}

/// The reduce's counts per key in a checkpoint, read from its shards' restored stores.
fn counts_in(
    storage: &CheckpointStorage,
    acks: &[OperatorSnapshot],
    tmp: &std::path::Path,
) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for a in acks.iter().filter(|a| a.operator == "reduce") {
        let segments: Vec<(String, std::path::PathBuf)> = a
            .segments
            .iter()
            .map(|s| (s.clone(), storage.segment_path(s)))
            .collect();
        let dir = tmp.join(format!("restore-{}-{}", a.node, a.shard));
        Store::restore(&dir, StoreOptions::default(), &segments, &|_| true).unwrap();
        let backend = StateBackend::new(
            dir,
            usize::MAX,
            a.shard,
            shardflow_core::key::MAX_PARALLELISM_DEFAULT,
            ProcessingClock::System,
        );
        let name = format!("{}:{}/accumulators", a.node, a.operator);
        let mut table: KeyedTable<u64, (), (u64, u64)> = KeyedTable::new()
            .in_store(&backend, name)
            .unwrap()
            .restored();
        table.drain_all(|k, (), (_, c)| {
            assert!(counts.insert(k, c).is_none(), "key {k} on two shards");
        });
        backend.check().unwrap();
    }
    counts
}

#[test]
fn checkpoints_complete_and_hold_a_consistent_cut() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoints");
    let n = 4_000_000;
    let result = run(1, n, &dir);
    let done = &result.checkpoints;
    assert!(done.len() >= 2, "{} checkpoints completed", done.len());
    assert!(done.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        result.checkpoints_failed.is_empty(),
        "{:?}",
        result.checkpoints_failed
    );

    let storage = CheckpointStorage::new(&dir).unwrap();
    let listed: Vec<u64> = storage.list().unwrap().iter().map(|(id, _)| *id).collect();
    let newest: Vec<u64> = done.iter().rev().take(3).map(|c| c.id).collect();
    assert_eq!(listed, newest, "the newest three are kept");
    for id in &listed {
        let meta = storage.read(*id).unwrap();
        let acks = decode_snapshots(&meta.payload).unwrap();
        // The source, the reduce and the (transactional) collect sink ack, and the exchange
        // reader in front of the reduce (nothing in flight: aligned).
        let mut who: Vec<&str> = acks.iter().map(|a| a.operator.as_str()).collect();
        who.sort();
        assert_eq!(who.len(), 4, "{who:?}");
        assert!(who.contains(&"reduce/in-flight"), "{who:?}");
        assert!(
            acks.iter()
                .filter(|a| a.operator.ends_with("/in-flight"))
                .all(|a| a.state.is_empty() && a.uid == "reduce#0/in-flight/0"),
            "{acks:?}"
        );
        assert!(who.contains(&"reduce"), "{who:?}");
        // A consistent cut at P = 1: the counts of the first N records, N their sum.
        let counts = counts_in(&storage, &acks, &tmp.path().join(format!("r{id}")));
        let cut: u64 = counts.values().sum();
        eprintln!("checkpoint {id}: a cut after {cut} of {n} records");
        assert!(cut > 0 && cut <= n, "checkpoint {id}: {cut} records");
        for k in 0..KEYS {
            let want = if cut > k { (cut - k - 1) / KEYS + 1 } else { 0 };
            assert_eq!(
                counts.get(&k).copied().unwrap_or(0),
                want,
                "checkpoint {id}, key {k}"
            );
        }
    }
    // Incremental: a later checkpoint adds less than everything it needs.
    let last = done.last().unwrap();
    assert!(
        last.bytes_added < last.bytes_total || last.bytes_total == 0,
        "{last:?}"
    );
}

/// At P = 2 barriers cross the exchange between the shards and are aligned at each reader;
/// every checkpoint holds an ack from each operator with state on each shard, and the counts
/// of its cut are a mix of two input prefixes: never more than the input has.
#[test]
fn checkpoints_align_across_shards() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoints");
    let n = 4_000_000;
    let result = run(2, n, &dir);
    assert!(result.checkpoints.len() >= 2, "{:?}", result.checkpoints);
    let storage = CheckpointStorage::new(&dir).unwrap();
    let (latest, skipped) = storage.latest().unwrap();
    assert!(skipped.is_empty());
    let meta = latest.unwrap();
    let acks = decode_snapshots(&meta.payload).unwrap();
    let mut who: Vec<(String, u32)> = acks.iter().map(|a| (a.operator.clone(), a.shard)).collect();
    who.sort();
    // Source, reduce, sink and the reduce's exchange reader, on each of the two shards.
    assert_eq!(who.len(), 8, "{who:?}");
    let counts = counts_in(&storage, &acks, tmp.path());
    assert!(counts.values().all(|&c| c <= n / KEYS));
    let cut = counts.values().sum::<u64>();
    eprintln!("checkpoint {}: a cut after {cut} of {n} records", meta.id);
    assert!(cut > 0 && cut <= n);
}

/// Checkpoints leave a job's output as it is: event-time tumbling windows (one timer per
/// window, kept as operator state) and session windows (a timer per key and session, session
/// lists in keyed state) at P = 2, with a checkpoint every few milliseconds and a budget that
/// pages state, give what the same job gives without checkpoints.
#[test]
fn windows_give_the_same_output_with_checkpoints() {
    let _cpus = shardflow_tests::shared_cpus();
    type Ev = (u32, i64, u64);
    let events: Vec<Ev> = (0..400_000u64)
        .map(|i| {
            let h = shardflow_core::rng::SplitMix64::new(i).next_u64();
            (
                (h % 5_000) as u32,
                (i / 4) as i64 - (h >> 40) as i64 % 50,
                h >> 50,
            )
        })
        .collect();
    let run = |session: bool, checkpoints: Option<&std::path::Path>| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        env.config_mut().state_memory_bytes = Some(1 << 20);
        if let Some(dir) = checkpoints {
            env.config_mut().checkpoints =
                Some(CheckpointConfig::new(dir, Duration::from_millis(3)));
        }
        let keyed = env
            .from_iter(events.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(60))
                    .with_timestamp_assigner(|e: &Ev| e.1),
            )
            .key_by(|e: &Ev| e.0);
        let sum = |a: &mut Ev, b: Ev| {
            a.1 = a.1.min(b.1);
            a.2 += b.2;
        };
        let out = if session {
            keyed
                .window(SessionWindows::event_time(Duration::from_millis(40)))
                .reduce(sum)
        } else {
            keyed
                .window(TumblingWindows::event_time(Duration::from_millis(100)))
                .reduce(sum)
        }
        .collect();
        let result = env.execute("windows").unwrap();
        let mut got = out.take();
        got.sort();
        (got, result.checkpoints.len())
    };
    for session in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (plain, _) = run(session, None);
        let (checkpointed, taken) = run(session, Some(tmp.path()));
        assert!(taken >= 2, "session {session}: {taken} checkpoints");
        assert_eq!(plain.len(), checkpointed.len(), "session {session}");
        assert!(plain == checkpointed, "session {session}: outputs differ");
    }
}

/// A map that panics once, when the records it saw (over all shards and attempts) reach `at`.
fn fail_once_at<T: Clone + Send + 'static>(
    at: u64,
) -> impl Fn(T) -> T + Clone + Send + Sync + 'static {
    let fail = shardflow_tests::exactly_once::FailOnce::at(at);
    move |x: T| {
        fail.tick();
        x
    }
}

/// A failure in the middle of the job: it restarts from its newest checkpoint (sources
/// rewound, keyed state restored, the sink's staged output committed or dropped), and the
/// output is exactly once — nothing lost, nothing twice — at P = 1 and 2, for failures at
/// several points.
#[test]
fn a_failed_job_resumes_from_its_checkpoint_with_exact_keyed_state() {
    let _cpus = shardflow_tests::shared_cpus();
    let n = 2_000_000u64;
    for (p, at) in [(1, 700_000), (2, 1_300_000), (2, 333_333)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().checkpoints =
            Some(CheckpointConfig::new(tmp.path(), Duration::from_millis(5)));
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(10),
        };
        let out = env
            .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
            .map(fail_once_at(at))
            .key_by(|r: &(u64, u64)| r.0)
            .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
            .collect();
        let result = env.execute("fail and resume").unwrap();
        // (Whether a checkpoint completed before the failure depends on the machine: either
        // way the output must be exact.)
        assert_eq!(result.restarts, 1, "P = {p}, failure at {at}");
        // Exactly once, state and output: every key's running count goes 1, 2, ... n/KEYS,
        // each value once (the collect sink is transactional).
        let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
        for (k, c) in out.take() {
            seen.entry(k).or_default().push(c);
        }
        assert_eq!(seen.len() as u64, KEYS);
        let want: Vec<u64> = (1..=n / KEYS).collect();
        for (k, mut c) in seen {
            c.sort_unstable();
            assert!(
                c == want,
                "P = {p}, failure at {at}: key {k} has {} updates",
                c.len()
            );
        }
    }
}

/// Session windows (timers per key and session, in and out of the store) through a failure:
/// the windows after the restart, with those emitted before it, are exactly the windows of a
/// run without failure (a window emitted twice is emitted the same both times).
#[test]
fn session_windows_resume_from_a_checkpoint() {
    let _cpus = shardflow_tests::shared_cpus();
    type Ev = (u32, i64, u64);
    let events: Vec<Ev> = (0..300_000u64)
        .map(|i| {
            let h = shardflow_core::rng::SplitMix64::new(i ^ 77).next_u64();
            (
                (h % 3_000) as u32,
                (i / 3) as i64 - (h >> 40) as i64 % 40,
                h >> 52,
            )
        })
        .collect();
    let run = |fail: Option<u64>, dir: &std::path::Path| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        env.config_mut().state_memory_bytes = Some(256 << 10);
        env.config_mut().checkpoints = Some(CheckpointConfig::new(dir, Duration::from_millis(4)));
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(10),
        };
        let out = env
            .from_iter(events.clone())
            .map(fail_once_at(fail.unwrap_or(u64::MAX)))
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(50))
                    .with_timestamp_assigner(|e: &Ev| e.1),
            )
            .key_by(|e: &Ev| e.0)
            .window(SessionWindows::event_time(Duration::from_millis(30)))
            .reduce(|a: &mut Ev, b: Ev| {
                a.1 = a.1.min(b.1);
                a.2 += b.2;
            })
            .collect();
        let result = env.execute("sessions").unwrap();
        let mut got = out.take();
        got.sort();
        (got, result)
    };
    let a = tempfile::tempdir().unwrap();
    let (want, _) = run(None, a.path());
    let b = tempfile::tempdir().unwrap();
    let (got, result) = run(Some(200_000), b.path());
    assert_eq!(result.restarts, 1);
    if got != want {
        let g: std::collections::BTreeSet<_> = got.iter().collect();
        let w: std::collections::BTreeSet<_> = want.iter().collect();
        let missing: Vec<_> = w.difference(&g).take(8).collect();
        let extra: Vec<_> = g.difference(&w).take(8).collect();
        eprintln!(
            "restored from {:?}; missing {} e.g. {missing:?}; extra {} e.g. {extra:?}",
            result.restored_from,
            w.difference(&g).count(),
            g.difference(&w).count()
        );
    }
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the windows differ after the restart");
}

/// `restore_from` resumes a job from a given checkpoint: a first run's checkpoint (taken
/// somewhere in the middle) restored by a second run gives counts that go on from where the
/// checkpoint was, and end exact.
#[test]
fn restore_from_resumes_a_job_at_its_checkpoint() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoints");
    let n = 3_000_000u64;
    let first = run(2, n, &dir);
    let storage = CheckpointStorage::new(&dir).unwrap();
    let (latest, _) = storage.latest().unwrap();
    let meta = latest.expect("the first run completed checkpoints");
    let acks = decode_snapshots(&meta.payload).unwrap();
    let at_checkpoint = counts_in(&storage, &acks, tmp.path());
    assert_eq!(first.checkpoints.last().map(|c| c.id), Some(meta.id));

    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env.config_mut().restore_from = Some(storage.checkpoint_dir(meta.id));
    let out = env
        .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        .collect();
    let result = env.execute("resumed counts").unwrap();
    assert_eq!(result.restored_from, Some(meta.id));
    // Per key: the updates continue from the checkpoint's count to the whole count.
    let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
    for (k, c) in out.take() {
        seen.entry(k).or_default().push(c);
    }
    for k in 0..KEYS {
        let from = at_checkpoint.get(&k).copied().unwrap_or(0);
        let mut c = seen.remove(&k).unwrap_or_default();
        c.sort_unstable();
        let want: Vec<u64> = (from + 1..=n / KEYS).collect();
        assert!(c == want, "key {k}: from {from}, {} updates", c.len());
    }
}

/// At-least-once checkpoints (barriers not aligned) through a failure at P = 2: every running
/// count still appears (nothing lost); some may appear twice, and the last may pass the true
/// count (records after a barrier on a fast input can be in the state and replayed).
#[test]
fn at_least_once_checkpoints_lose_nothing() {
    let _cpus = shardflow_tests::shared_cpus();
    let n = 2_000_000u64;
    let tmp = tempfile::tempdir().unwrap();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    let mut c = CheckpointConfig::new(tmp.path(), Duration::from_millis(5));
    c.mode = shardflow_core::checkpoint::CheckpointingMode::AtLeastOnce;
    env.config_mut().checkpoints = Some(c);
    env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
        attempts: 2,
        delay: Duration::from_millis(10),
    };
    let out = env
        .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
        .map(fail_once_at(900_000))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        .collect();
    let result = env.execute("at least once").unwrap();
    assert_eq!(result.restarts, 1);
    let mut seen: HashMap<u64, std::collections::BTreeSet<u64>> = HashMap::new();
    for (k, c) in out.take() {
        seen.entry(k).or_default().insert(c);
    }
    assert_eq!(seen.len() as u64, KEYS);
    for (k, c) in &seen {
        assert!(
            (1..=n / KEYS).all(|v| c.contains(&v)),
            "key {k}: a running count is missing"
        );
    }
}

/// The keyed reduce's function, panicking once when the records it folded (over all shards and
/// attempts) reach `at`: a failure behind the exchange, in keyed code.
fn sum_failing_once_at(
    at: u64,
) -> impl Fn(&mut (u64, u64), (u64, u64)) + Clone + Send + Sync + 'static {
    let fail = fail_once_at::<u64>(at);
    move |acc: &mut (u64, u64), x: (u64, u64)| {
        fail(0);
        acc.1 += x.1;
    }
}

/// Exactly once under failure, 30 seeds: one or two failures at random record counts, in the
/// map before the exchange or in the keyed reduce behind it, at P = 1 or 2; every key's running
/// counts come out once each, as without failure.
#[test]
fn exactly_once_under_random_failures() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0xfa11);
    let mut rng = shardflow_core::rng::SplitMix64::new(seed);
    let n = 600_000u64;
    for round in 0..30 {
        let p = 1 + rng.below(2) as u32;
        let failures = 1 + rng.below(2);
        let at1 = 1 + rng.below(n);
        let at2 = 1 + rng.below(n);
        let in_reduce = rng.below(2) == 0;
        let tmp = tempfile::tempdir().unwrap();
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().checkpoints =
            Some(CheckpointConfig::new(tmp.path(), Duration::from_millis(2)));
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(1),
        };
        let mut stream = env
            .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
            .map(fail_once_at(if in_reduce { u64::MAX } else { at1 }));
        if failures == 2 {
            stream = stream.map(fail_once_at(at2));
        }
        let keyed = stream.key_by(|r: &(u64, u64)| r.0);
        let out = if in_reduce {
            keyed.reduce(sum_failing_once_at(at1))
        } else {
            keyed.reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        }
        .collect();
        let what = format!(
            "seed {seed} round {round}: P = {p}, failures at {at1}{} ({})",
            if failures == 2 {
                format!(" and {at2}")
            } else {
                String::new()
            },
            if in_reduce { "reduce" } else { "map" }
        );
        let result = env.execute("random failures").expect(&what);
        // Two failures may strike one attempt (on two shards at once): one restart then.
        assert!(
            (1..=failures).contains(&(result.restarts as u64)),
            "{what}: {} restarts",
            result.restarts
        );
        let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
        for (k, c) in out.take() {
            seen.entry(k).or_default().push(c);
        }
        let want: Vec<u64> = (1..=n / KEYS).collect();
        assert_eq!(seen.len() as u64, KEYS, "{what}");
        for (k, mut c) in seen {
            c.sort_unstable();
            assert!(c == want, "{what}: key {k} has {} updates", c.len());
        }
    }
}

/// A failure while a checkpoint is taken aborts that checkpoint only: the job goes on without a
/// restart, later checkpoints complete, and the output is exact.
#[test]
fn a_failure_during_a_checkpoint_aborts_only_that_checkpoint() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let n = 3_000_000u64;
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    env.config_mut().checkpoints =
        Some(CheckpointConfig::new(tmp.path(), Duration::from_millis(5)));
    let out = env
        .from_iter((0..n).map(|i| (i % KEYS, 1u64)).collect::<Vec<_>>())
        // Its snapshot fails at the second checkpoint.
        .process(shardflow_tests::exactly_once::SnapshotFails::at(2))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        .collect();
    let result = env.execute("snapshot fails once").unwrap();
    assert_eq!(result.restarts, 0);
    assert_eq!(
        result.checkpoints_failed.len(),
        1,
        "{:?}",
        result.checkpoints_failed
    );
    let (id, why) = &result.checkpoints_failed[0];
    assert!(why.contains("the snapshot failed"), "{why}");
    assert!(
        result.checkpoints.iter().any(|c| c.id > *id),
        "a later checkpoint completed: {:?}",
        result.checkpoints
    );
    let mut last: HashMap<u64, u64> = HashMap::new();
    for (k, c) in out.take() {
        let e = last.entry(k).or_default();
        *e = (*e).max(c);
    }
    assert!(last.values().all(|&c| c == n / KEYS) && last.len() as u64 == KEYS);
}

/// Incremental checkpoints at job level: 300,000 keys written once, then only 1% of them
/// updated; a checkpoint taken while only those change adds a few percent of the state's bytes,
/// not all of it.
#[test]
fn a_checkpoint_writes_what_changed_since_the_last() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let (keys, hot, updates) = (300_000u64, 3_000u64, 2_000_000u64);
    let input: Vec<(u64, u64)> = (0..keys)
        .map(|k| (k, 1))
        .chain((0..updates).map(|i| (i % hot, 1)))
        .collect();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    env.config_mut().checkpoints =
        Some(CheckpointConfig::new(tmp.path(), Duration::from_millis(10)));
    let out = env
        .from_iter(input)
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
        .collect();
    let result = env.execute("incremental").unwrap();
    drop(out);
    let done = &result.checkpoints;
    let full = done.iter().map(|c| c.bytes_total).max().unwrap_or(0);
    // Checkpoints of the whole state (every key written) that added little.
    let small: Vec<_> = done
        .iter()
        .filter(|c| c.bytes_total * 10 >= full * 9 && c.bytes_added * 20 <= c.bytes_total)
        .collect();
    assert!(
        full > 10 << 20 && !small.is_empty(),
        "no checkpoint of the full state added under 5%: {done:?}"
    );
}

/// The text file source records its splits and the line it is at: a job reading three files
/// (lines of uneven length, the last without a newline) through a failure, at P = 1 and 2,
/// counts every line exactly once.
#[test]
fn the_file_source_resumes_at_its_line() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let mut total = 0u64;
    for f in 0..3u64 {
        let mut text = String::new();
        let lines = 200_000 + f * 50_000;
        for i in 0..lines {
            let key = (i * 7 + f) % KEYS;
            // Keys padded to uneven widths: lines straddle reads and shard boundaries.
            text.push_str(&format!("{key:0width$}\n", width = 1 + (i % 9) as usize));
        }
        text.pop(); // the last line has no newline
        std::fs::write(input.join(format!("part-{f}.txt")), text).unwrap();
        total += lines;
    }
    for (p, at) in [(1u32, 333_333u64), (2, 500_000)] {
        let dir = tmp.path().join(format!("checkpoints-{p}"));
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().checkpoints = Some(CheckpointConfig::new(&dir, Duration::from_millis(3)));
        env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(5),
        };
        let out = env
            .read_text_file(&input)
            .map(|line: String| (line.trim().parse::<u64>().unwrap(), 1u64))
            .map(fail_once_at(at))
            .key_by(|r: &(u64, u64)| r.0)
            .reduce(|acc: &mut (u64, u64), x| acc.1 += x.1)
            .collect();
        let result = env.execute("file counts").unwrap();
        assert_eq!(result.restarts, 1);
        // The reference: counts per key over every line of the three files.
        let mut want: HashMap<u64, u64> = HashMap::new();
        for f in 0..3u64 {
            for i in 0..200_000 + f * 50_000 {
                *want.entry((i * 7 + f) % KEYS).or_default() += 1;
            }
        }
        let mut seen: HashMap<u64, Vec<u64>> = HashMap::new();
        for (k, c) in out.take() {
            seen.entry(k).or_default().push(c);
        }
        assert_eq!(seen.len(), want.len(), "P = {p}");
        let mut lines = 0;
        for (k, mut c) in seen {
            c.sort_unstable();
            let n = want[&k];
            lines += n;
            assert!(
                c == (1..=n).collect::<Vec<_>>(),
                "P = {p}: key {k}: {} updates of {n}",
                c.len()
            );
        }
        assert_eq!(lines, total);
    }
}

/// The built-in telemetry job (generated readings, two-phase windows) through a failure, at
/// P = 2: its sources resume at their recorded readings, and the windows are exactly those of
/// the single-threaded loop.
#[test]
fn the_telemetry_job_resumes_with_exact_windows() {
    use shardflow::jobs::telemetry::{self, TelemetrySettings};
    let _cpus = shardflow_tests::shared_cpus();
    let settings = TelemetrySettings {
        readings: 1_500_000,
        sensors: 2_000,
        ..Default::default()
    };
    let mut want = Vec::new();
    telemetry::window_stats_loop(&settings, |w| want.push(w));
    want.sort();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env.config_mut().checkpoints =
        Some(CheckpointConfig::new(tmp.path(), Duration::from_millis(3)));
    env.config_mut().restart = shardflow_core::config::RestartStrategy::FixedDelay {
        attempts: 2,
        delay: Duration::from_millis(5),
    };
    let readings = telemetry::readings(&env, &settings).map(fail_once_at(1_000_000));
    let out = telemetry::window_stats(&readings, &settings).collect();
    let result = env.execute("telemetry through a failure").unwrap();
    assert_eq!(result.restarts, 1);
    let mut got = out.take();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the windows differ from the loop's");
}
