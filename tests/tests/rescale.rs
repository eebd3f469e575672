//! Rescaling: a job stopped at parallelism P (a failure with restarts off, after checkpoints
//! completed, or cancelled after a savepoint) resumes at another parallelism; the key groups re-split
//! across the new shards (keyed tables filtered, timer queues redistributed by key, window
//! timers shared, source ranges and sink transactions dealt to exactly one new shard), and the
//! final output equals the brute-force reference.

use std::path::Path;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::checkpoint::CheckpointConfig;
use shardflow_core::config::RestartStrategy;
use shardflow_tests::exactly_once::{self, Failures, first_difference, read_output};

const EVENTS: u64 = 120_000;
const KEYS: u64 = 1_500;

/// Runs the exactly-once job at `p`; with `stop_at`, it fails at that record (no restart) and
/// must have completed a checkpoint first. Resumes from `checkpoints` if `resume`.
fn stage(p: u32, stop_at: Option<u64>, resume: bool, dir: &Path, budget: Option<usize>) {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    env.config_mut().source_batch_records = 200;
    env.config_mut().state_memory_bytes = budget;
    let checkpoints = dir.join("checkpoints");
    let mut c = CheckpointConfig::new(&checkpoints, Duration::from_millis(2));
    c.timeout = Duration::from_secs(60);
    env.config_mut().checkpoints = Some(c);
    env.config_mut().restart = RestartStrategy::None;
    if resume {
        env.config_mut().restore_from = Some(checkpoints.clone());
    }
    let failures = Failures {
        source_map: stop_at.unwrap_or(u64::MAX),
        ..Failures::NONE
    };
    let events = exactly_once::events(EVENTS, KEYS, 7);
    // Slow enough (a millisecond every 100 records) for checkpoints to complete before the stop.
    exactly_once::build(&env, events, failures, &dir.join("out"), 8_000, 100);
    let storage = shardflow_state::checkpoint::CheckpointStorage::new(&checkpoints).unwrap();
    let newest = || storage.latest().unwrap().0.map_or(0, |m| m.id);
    let before = newest();
    let result = env.execute("rescaled");
    match stop_at {
        Some(at) => {
            let e = result.expect_err("the job was to fail");
            assert!(e.to_string().contains("injected failure"), "{e}");
            assert!(
                newest() > before,
                "P = {p}: no checkpoint completed before the failure at {at}"
            );
        }
        None => {
            let r = result.unwrap();
            assert!(r.restored_from.is_some());
        }
    }
}

fn check(dir: &Path, what: &str) {
    let want = exactly_once::reference(&exactly_once::events(EVENTS, KEYS, 7));
    let (got, hidden) = read_output(&dir.join("out"));
    assert!(hidden.is_empty(), "{what}: left hidden: {hidden:?}");
    assert!(got == want, "{what}: {}", first_difference(&got, &want));
}

#[test]
fn a_checkpoint_taken_at_two_shards_resumes_at_one_three_and_four() {
    let _cpus = shardflow_tests::shared_cpus();
    for to in [1, 3, 4] {
        let tmp = tempfile::tempdir().unwrap();
        stage(2, Some(70_000), false, tmp.path(), None);
        stage(to, None, true, tmp.path(), None);
        check(tmp.path(), &format!("2 -> {to}"));
    }
}

/// 2 → 4 → 2, with a memory budget small enough that keyed state is spilled to the store.
/// At 4 the in-memory source's ranges go to two of the shards: the other two sources end at
/// once, and checkpoints go on without them (their last snapshot stands as their ack).
#[test]
fn a_job_rescales_up_and_back_down_with_spilled_state() {
    let _cpus = shardflow_tests::shared_cpus();
    let tmp = tempfile::tempdir().unwrap();
    let budget = Some(64 << 10);
    stage(2, Some(40_000), false, tmp.path(), budget);
    stage(4, Some(40_000), true, tmp.path(), budget);
    stage(2, None, true, tmp.path(), budget);
    check(tmp.path(), "2 -> 4 -> 2");
}

/// Session windows keep a timer per key and session in their timer queues: 4 → 2 with a
/// budget that spills them, so the queues are read whole from every earlier shard's store and
/// their timers re-registered by key. Every session of the brute-force reference comes out
/// once (a lost timer leaves its session unfired).
#[test]
fn session_timers_are_redistributed_by_key() {
    let _cpus = shardflow_tests::shared_cpus();
    let events = exactly_once::events(EVENTS, KEYS, 11);
    let gap = 150i64;
    let mut by_key: std::collections::BTreeMap<u32, Vec<(i64, u64)>> = Default::default();
    for &(k, t, v) in &events {
        by_key.entry(k).or_default().push((t, v));
    }
    let mut want = Vec::new();
    for (k, mut evs) in by_key {
        evs.sort();
        let (mut start, mut last, mut sum) = (evs[0].0, evs[0].0, 0);
        for (t, v) in evs {
            // Windows [t, t + gap) merge when they touch, as Flink's do.
            if t > last + gap {
                want.push(exactly_once::line(k, start, sum));
                (start, sum) = (t, 0);
            }
            last = last.max(t);
            sum += v;
        }
        want.push(exactly_once::line(k, start, sum));
    }
    want.sort();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoints = tmp.path().join("checkpoints");
    let mut spilled = 0;
    for (p, stop_at) in [(4, Some(60_000u64)), (2, None)] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().source_batch_records = 200;
        env.config_mut().state_memory_bytes = Some(48 << 10);
        let mut c = CheckpointConfig::new(&checkpoints, Duration::from_millis(2));
        c.timeout = Duration::from_secs(60);
        env.config_mut().checkpoints = Some(c);
        env.config_mut().restart = RestartStrategy::None;
        if stop_at.is_none() {
            env.config_mut().restore_from = Some(checkpoints.clone());
        }
        let fail = exactly_once::FailOnce::at(stop_at.unwrap_or(u64::MAX));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        env.from_iter(events.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(60))
                    .with_timestamp_assigner(|e: &exactly_once::Ev| e.1),
            )
            .map(move |e: exactly_once::Ev| {
                fail.tick();
                if seen
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .is_multiple_of(100)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                e
            })
            .key_by(|e: &exactly_once::Ev| e.0)
            .window(SessionWindows::event_time(Duration::from_millis(
                gap as u64,
            )))
            .reduce(|a: &mut exactly_once::Ev, b: exactly_once::Ev| {
                a.1 = a.1.min(b.1);
                a.2 += b.2;
            })
            .map(|(k, t, s): exactly_once::Ev| exactly_once::line(k, t, s))
            .sink_to_files(tmp.path().join("out"));
        match env.execute("sessions") {
            Ok(r) => {
                assert!(stop_at.is_none() && r.restored_from.is_some());
                spilled += r
                    .metrics
                    .operators
                    .iter()
                    .map(|o| o.timers_spilled)
                    .sum::<u64>();
            }
            Err(e) => assert!(stop_at.is_some(), "{e}"),
        }
    }
    assert!(spilled > 0, "no timer was spilled");
    let (got, hidden) = read_output(&tmp.path().join("out"));
    assert!(hidden.is_empty(), "{hidden:?}");
    assert!(got == want, "{}", first_difference(&got, &want));
}

/// Stop with savepoint, then rescale: a job at P = `from` (no periodic checkpoints) gets a
/// savepoint through `JobControl` while it runs and is cancelled; the checkpoint directory is
/// deleted (a savepoint is self-contained); the savepoint restored at each P of `to`, each on
/// a copy of the output as the cancelled job left it, gives the brute-force output. With
/// `unaligned`, the job is set to take unaligned checkpoints: its savepoint is aligned still.
fn savepoint_then_restore(from: u32, to: &[u32], unaligned: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let control = shardflow_core::config::JobControl::default();
    let running = {
        let control = control.clone();
        let dir = tmp.path().to_path_buf();
        std::thread::spawn(move || {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(from);
            env.config_mut().source_batch_records = 200;
            // Savepoints only: nothing is committed after the savepoint.
            let mut c = CheckpointConfig::new(dir.join("checkpoints"), Duration::from_secs(3600));
            c.unaligned = unaligned;
            env.config_mut().checkpoints = Some(c);
            env.config_mut().restart = RestartStrategy::None;
            env.config_mut().control = Some(control);
            let events = exactly_once::events(EVENTS, KEYS, 7);
            exactly_once::build(&env, events, Failures::NONE, &dir.join("out"), 8_000, 100);
            env.execute("savepointed")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let savepoint = control
        .savepoint(tmp.path().join("savepoints"))
        .expect("savepoint");
    control.cancel();
    let ended = running.join().unwrap();
    assert!(
        matches!(ended, Err(shardflow_core::JobError::Cancelled)),
        "{ended:?}"
    );
    assert!(savepoint.starts_with(tmp.path().join("savepoints")));
    let (done, _) = read_output(&tmp.path().join("out"));
    let want = exactly_once::reference(&exactly_once::events(EVENTS, KEYS, 7));
    assert!(
        done.len() < want.len(),
        "the job ended before it was cancelled"
    );
    std::fs::remove_dir_all(tmp.path().join("checkpoints")).unwrap();
    for &p in to {
        let run = tmp.path().join(format!("at-{p}"));
        std::fs::create_dir_all(run.join("out")).unwrap();
        for e in std::fs::read_dir(tmp.path().join("out")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), run.join("out").join(e.file_name())).unwrap();
        }
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().checkpoints = Some(CheckpointConfig::new(
            run.join("checkpoints"),
            Duration::from_millis(5),
        ));
        env.config_mut().restore_from = Some(savepoint.clone());
        let events = exactly_once::events(EVENTS, KEYS, 7);
        exactly_once::build(&env, events, Failures::NONE, &run.join("out"), 8_000, 0);
        let r = env.execute("from a savepoint").unwrap();
        assert!(r.restored_from.is_some());
        check(&run, &format!("savepoint at {from} -> {p}"));
    }
}

#[test]
fn a_savepoint_at_two_restores_at_one_three_and_four_without_the_checkpoints() {
    let _cpus = shardflow_tests::shared_cpus();
    savepoint_then_restore(2, &[1, 3, 4], false);
}

/// 4 → 2 from a savepoint of a job set to take unaligned checkpoints (the savepoint is aligned,
/// so it rescales).
#[test]
fn a_savepoint_at_four_restores_at_two_though_checkpoints_are_unaligned() {
    let _cpus = shardflow_tests::shared_cpus();
    savepoint_then_restore(4, &[2], true);
}

/// Operator uids: a job stopped after checkpoints resumes as a changed job — an operator
/// added in front of the keyed reduce (every node after it moves) and the reduce renamed —
/// whose uids find the source's, the reduce's and the sink's state; every key's running counts
/// come out once each over both runs. Without uids the same change is refused, naming the
/// operator whose state has nowhere to go; allowing non-restored state runs it anyway.
#[test]
fn uids_map_state_into_a_changed_job() {
    let _cpus = shardflow_tests::shared_cpus();
    let n = 300_000u64;
    let keys = 1_000u64;
    let tmp = tempfile::tempdir().unwrap();
    let run = |changed: bool, uids: bool, stop_at: Option<u64>, allow: bool| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        env.config_mut().source_batch_records = 200;
        env.config_mut().checkpoints = Some(CheckpointConfig::new(
            tmp.path().join("checkpoints"),
            Duration::from_millis(2),
        ));
        env.config_mut().restart = RestartStrategy::None;
        env.config_mut().allow_non_restored_state = allow;
        if stop_at.is_none() {
            env.config_mut().restore_from = Some(tmp.path().join("checkpoints"));
        }
        let uid = |s: DataStream<(u64, u64)>, u: &str| if uids { s.uid(u) } else { s };
        let fail = exactly_once::FailOnce::at(stop_at.unwrap_or(u64::MAX));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut s = uid(
            env.from_iter((0..n).map(|i| (i % keys, 1u64)).collect::<Vec<_>>()),
            "numbers",
        )
        .map(move |x: (u64, u64)| {
            fail.tick();
            if seen
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(200)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            x
        });
        if changed {
            s = s.filter(|x: &(u64, u64)| x.1 > 0);
        }
        let counts = s
            .key_by(|x: &(u64, u64)| x.0)
            .reduce(|a: &mut (u64, u64), x| a.1 += x.1);
        let counts = uid(counts, "counts");
        let counts = if changed {
            counts.name("totals")
        } else {
            counts
        };
        counts
            .map(|(k, c): (u64, u64)| format!("{k},{c}"))
            .sink_to_files(tmp.path().join("out"));
        env.execute("uids")
    };
    // Without uids, the changed job cannot place the reduce's state.
    run(false, false, Some(150_000), false).expect_err("stopped");
    let e = run(true, false, None, false).expect_err("refused");
    assert!(e.to_string().contains("operator 'reduce'"), "{e}");
    assert!(e.to_string().contains("uids"), "{e}");
    // Allowed, the reduce's state is dropped and the job runs (its counts restart from the
    // checkpointed source position: not exactly once, as asked).
    let r = run(true, false, None, true).expect("allowed");
    assert!(r.restored_from.is_some());
    // With uids it resumes exactly.
    std::fs::remove_dir_all(tmp.path()).unwrap();
    run(false, true, Some(150_000), false).expect_err("stopped");
    let r = run(true, true, None, false).expect("resumed by uid");
    assert!(r.restored_from.is_some());
    let (lines, hidden) = read_output(&tmp.path().join("out"));
    assert!(hidden.is_empty(), "{hidden:?}");
    let mut want: Vec<String> = (0..keys)
        .flat_map(|k| (1..=n / keys).map(move |c| format!("{k},{c}")))
        .collect();
    want.sort();
    assert!(lines == want, "{}", first_difference(&lines, &want));
}

/// The built-in telemetry job (generated readings whose ranges rescale, two-phase windows)
/// stopped at P = 2 and resumed at P = 1 and 3: exactly the windows of the single-threaded
/// loop.
#[test]
fn two_phase_windows_rescale_with_their_partials() {
    use shardflow::jobs::telemetry::{self, TelemetrySettings};
    let _cpus = shardflow_tests::shared_cpus();
    let settings = TelemetrySettings {
        readings: 600_000,
        sensors: 2_000,
        ..Default::default()
    };
    let mut want = Vec::new();
    telemetry::window_stats_loop(&settings, |w| want.push(format!("{w:?}")));
    want.sort();
    for to in [1, 3] {
        let tmp = tempfile::tempdir().unwrap();
        let checkpoints = tmp.path().join("checkpoints");
        for (p, stop_at) in [(2, Some(300_000u64)), (to, None)] {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(p);
            env.config_mut().source_batch_records = 256;
            env.config_mut().checkpoints = Some(CheckpointConfig::new(
                &checkpoints,
                Duration::from_millis(2),
            ));
            env.config_mut().restart = RestartStrategy::None;
            if stop_at.is_none() {
                env.config_mut().restore_from = Some(checkpoints.clone());
            }
            let fail = exactly_once::FailOnce::at(stop_at.unwrap_or(u64::MAX));
            let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let readings = telemetry::readings(&env, &settings).map(move |r| {
                fail.tick();
                if seen
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .is_multiple_of(500)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                r
            });
            telemetry::window_stats(&readings, &settings)
                .map(|w| format!("{w:?}"))
                .sink_to_files(tmp.path().join("out"));
            match env.execute("telemetry") {
                Ok(r) => assert!(stop_at.is_none() && r.restored_from.is_some()),
                Err(e) => assert!(stop_at.is_some(), "{e}"),
            }
        }
        let (got, hidden) = read_output(&tmp.path().join("out"));
        assert!(hidden.is_empty(), "{hidden:?}");
        assert!(got == want, "2 -> {to}: {}", first_difference(&got, &want));
    }
}
