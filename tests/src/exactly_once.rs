//! The end-to-end exactly-once job of the checkpoint tests: event-time tumbling windows, a keyed
//! running total of their sums, and the exactly-once file sink, with failures injectable in
//! every operator; and its brute-force reference.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shardflow::prelude::*;

/// An event: key, event time (ms), value.
pub type Ev = (u32, i64, u64);

/// Window length (ms).
pub const WINDOW_MS: i64 = 100;

/// `n` events over `keys` keys, out of order by under 50 ms (the watermark allows 60: nothing is
/// late, so the windows are the same whatever the timing).
pub fn events(n: u64, keys: u64, seed: u64) -> Vec<Ev> {
    (0..n)
        .map(|i| {
            let h = shardflow_core::rng::SplitMix64::new(seed ^ i).next_u64();
            (
                (h % keys) as u32,
                (i / 4) as i64 - (h >> 40) as i64 % 50,
                h >> 50,
            )
        })
        .collect()
}

/// The output line of a running total: key, window start, total of the key's window sums up to
/// and with this window.
pub fn line(key: u32, window_start: i64, total: u64) -> String {
    format!("{key},{window_start},{total}")
}

/// The job's output by brute force, sorted: per key, windows in time order, running totals.
pub fn reference(events: &[Ev]) -> Vec<String> {
    let mut sums: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    for &(k, t, v) in events {
        *sums
            .entry((k, t.div_euclid(WINDOW_MS) * WINDOW_MS))
            .or_default() += v;
    }
    let mut out = Vec::with_capacity(sums.len());
    let mut last_key = None;
    let mut total = 0;
    for ((k, start), s) in sums {
        if last_key != Some(k) {
            last_key = Some(k);
            total = 0;
        }
        total += s;
        out.push(line(k, start, total));
    }
    out.sort();
    out
}

/// The number of windows (the records behind the window operator).
pub fn windows(events: &[Ev]) -> u64 {
    reference(events).len() as u64
}

/// Where a failure is injected: the record count (over all shards and attempts) at which the
/// operator panics once; `u64::MAX` for none.
#[derive(Debug, Clone, Copy)]
pub struct Failures {
    /// The map behind the source.
    pub source_map: u64,
    /// The window's reduce function.
    pub window: u64,
    /// The map between the windows and the running totals.
    pub between: u64,
    /// The keyed running-total reduce.
    pub totals: u64,
    /// The map in front of the sink.
    pub before_sink: u64,
    /// The checkpoint (counted over all attempts) whose snapshot fails in a stateless process
    /// function: a failure while a checkpoint is taken.
    pub snapshot: u64,
}

impl Failures {
    pub const NONE: Self = Self {
        source_map: u64::MAX,
        window: u64::MAX,
        between: u64::MAX,
        totals: u64::MAX,
        before_sink: u64::MAX,
        snapshot: u64::MAX,
    };
}

/// A counter that panics once, when the calls over all shards and attempts reach `at`.
#[derive(Clone)]
pub struct FailOnce {
    at: u64,
    seen: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
}

impl FailOnce {
    pub fn at(at: u64) -> Self {
        Self {
            at,
            seen: Arc::default(),
            failed: Arc::default(),
        }
    }

    pub fn tick(&self) {
        if self.at != u64::MAX
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            panic!("injected failure at record {}", self.at);
        }
    }
}

/// Passes records on; its snapshot fails once, at the `at`-th snapshot taken (over all shards
/// and attempts).
pub struct SnapshotFails<T> {
    at: u64,
    snapshots: Arc<AtomicU64>,
    _records: std::marker::PhantomData<fn(T)>,
}

impl<T> SnapshotFails<T> {
    pub fn at(at: u64) -> Self {
        Self {
            at,
            snapshots: Arc::default(),
            _records: std::marker::PhantomData,
        }
    }
}

impl<T> Clone for SnapshotFails<T> {
    fn clone(&self) -> Self {
        Self {
            at: self.at,
            snapshots: self.snapshots.clone(),
            _records: std::marker::PhantomData,
        }
    }
}

impl<T: Send + 'static> ProcessFunction<T, T> for SnapshotFails<T> {
    fn process_element(
        &mut self,
        x: T,
        _ctx: &RuntimeContext,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        out.collect(x);
        Ok(())
    }
    fn snapshot_state(
        &mut self,
        _state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), UserError> {
        if self.snapshots.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            return Err("injected: the snapshot failed".into());
        }
        Ok(())
    }
}

/// Builds the job on `env`: `events` → map → (snapshot-failing process) → key by → tumbling
/// event-time windows summing values → map → key by → running total per key → map → the
/// exactly-once file sink in `out` (parts rolled at `max_part_bytes`). `throttle`: sleep a
/// millisecond every that many records in the first map (a job slow enough to be killed
/// mid-way); 0 for none.
pub fn build(
    env: &StreamExecutionEnvironment,
    events: Vec<Ev>,
    failures: Failures,
    out: &Path,
    max_part_bytes: u64,
    throttle: u64,
) {
    let f = [
        FailOnce::at(failures.source_map),
        FailOnce::at(failures.window),
        FailOnce::at(failures.between),
        FailOnce::at(failures.totals),
        FailOnce::at(failures.before_sink),
    ];
    let [f0, f1, f2, f3, f4] = f;
    let seen = Arc::new(AtomicU64::new(0));
    let mut stream = env
        .from_iter(events)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(60))
                .with_timestamp_assigner(|e: &Ev| e.1),
        )
        .map(move |e: Ev| {
            f0.tick();
            if throttle > 0
                && seen
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(throttle)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            e
        });
    if failures.snapshot != u64::MAX {
        stream = stream.process(SnapshotFails::at(failures.snapshot));
    }
    let options = FileSinkOptions {
        rolling: RollingPolicy {
            max_part_bytes,
            ..Default::default()
        },
        ..Default::default()
    };
    stream
        .key_by(|e: &Ev| e.0)
        .window(TumblingWindows::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .reduce(move |a: &mut Ev, b: Ev| {
            f1.tick();
            a.1 = a.1.min(b.1);
            a.2 += b.2;
        })
        .map(move |(k, t, s): Ev| {
            f2.tick();
            (k, t.div_euclid(WINDOW_MS) * WINDOW_MS, s)
        })
        .key_by(|e: &Ev| e.0)
        .reduce(move |acc: &mut Ev, x: Ev| {
            f3.tick();
            acc.1 = x.1;
            acc.2 += x.2;
        })
        .map(move |(k, start, total): Ev| {
            f4.tick();
            line(k, start, total)
        })
        .sink_to_files_with(out, options, |l: &String, buf: &mut Vec<u8>| {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        });
}

/// What a file sink left in `dir`: the lines of its committed parts, sorted, and the names of
/// files still hidden (in progress or pending).
pub fn read_output(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut hidden = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output directory") {
        let entry = entry.expect("output directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    (lines, hidden)
}

/// The first line where `got` and `want` (both sorted) differ, for a readable failure.
pub fn first_difference(got: &[String], want: &[String]) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{} lines, want {}; first difference at {i}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        got.get(i),
        want.get(i)
    )
}
