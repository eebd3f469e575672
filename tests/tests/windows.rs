//! Event-time windows against brute-force references: random out-of-order streams with random
//! keys, timestamps and window kinds give exactly the windows a computation over the whole input
//! gives, at P = 1, 2 and 4; late records are counted and sent to the late output, and within
//! the allowed lateness they update their window, which fires again.

use std::collections::HashMap;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::rng::SplitMix64;
use shardflow_core::time::{WatermarkGenerator, WatermarkOutput};
use shardflow_core::window::Window;

/// (key, timestamp ms, value)
type Ev = (u32, i64, i64);
/// (key, window start, window end, count, sum, max)
type Out = (u32, i64, i64, u64, i64, i64);

/// Events whose timestamps run forward with jitter: each is at most `disorder` ms older than
/// the newest before it.
fn events(seed: u64, n: usize, keys: u64, disorder: i64) -> Vec<Ev> {
    let mut rng = SplitMix64::new(seed);
    let mut base = 1_700_000_000_000i64;
    (0..n)
        .map(|_| {
            base += rng.below(4) as i64;
            let ts = base - rng.below(disorder as u64 + 1) as i64;
            (rng.below(keys) as u32, ts, rng.below(1000) as i64 - 300)
        })
        .collect()
}

/// The most any event is older than the newest before it.
fn disorder_of(evs: &[Ev]) -> i64 {
    let mut max = i64::MIN;
    let mut d = 0;
    for e in evs {
        if max != i64::MIN {
            d = d.max(max - e.1);
        }
        max = max.max(e.1);
    }
    d
}

#[derive(Clone)]
struct CountSumMax;

impl AggregateFunction<Ev> for CountSumMax {
    type Acc = (u64, i64, i64);
    type Out = (u64, i64, i64);
    fn create_accumulator(&self) -> Self::Acc {
        (0, 0, i64::MIN)
    }
    fn add(&self, acc: &mut Self::Acc, e: Ev) {
        acc.0 += 1;
        acc.1 += e.2;
        acc.2 = acc.2.max(e.2);
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        *acc
    }
    fn merge(&self, into: &mut Self::Acc, from: Self::Acc) {
        into.0 += from.0;
        into.1 += from.1;
        into.2 = into.2.max(from.2);
    }
}

fn with_window(
    key: &u32,
    ctx: &WindowContext<TimeWindow>,
    r: &[(u64, i64, i64)],
    out: &mut Collector<Out>,
) -> Result<(), UserError> {
    for &(c, s, m) in r {
        out.collect((*key, ctx.window.start, ctx.window.end, c, s, m));
    }
    Ok(())
}

fn agg(rows: impl IntoIterator<Item = (u32, i64, i64, i64)>) -> Vec<Out> {
    let mut m: HashMap<(u32, i64, i64), (u64, i64, i64)> = HashMap::new();
    for (k, s, e, v) in rows {
        let a = m.entry((k, s, e)).or_insert((0, 0, i64::MIN));
        a.0 += 1;
        a.1 += v;
        a.2 = a.2.max(v);
    }
    let mut out: Vec<Out> = m
        .into_iter()
        .map(|((k, s, e), (c, sum, max))| (k, s, e, c, sum, max))
        .collect();
    out.sort();
    out
}

fn tumbling_reference(evs: &[Ev], size: i64) -> Vec<Out> {
    agg(evs.iter().map(|&(k, t, v)| {
        let s = t - t.rem_euclid(size);
        (k, s, s + size, v)
    }))
}

fn sliding_reference(evs: &[Ev], size: i64, slide: i64) -> Vec<Out> {
    let mut rows = Vec::new();
    for &(k, t, v) in evs {
        // Every window [s, s+size) with s a multiple of slide and s <= t < s+size.
        let mut s = t - t.rem_euclid(slide);
        while s > t - size {
            rows.push((k, s, s + size, v));
            s -= slide;
        }
    }
    agg(rows)
}

fn session_reference(evs: &[Ev], gap: i64) -> Vec<Out> {
    let mut by_key: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
    for &(k, t, v) in evs {
        by_key.entry(k).or_default().push((t, v));
    }
    let mut rows = Vec::new();
    for (k, mut es) in by_key {
        es.sort();
        let mut cur: Vec<(i64, i64)> = Vec::new();
        let mut end = i64::MIN;
        let flush = |cur: &mut Vec<(i64, i64)>, end: i64, rows: &mut Vec<(u32, i64, i64, i64)>| {
            let start = cur[0].0;
            for &(_, v) in cur.iter() {
                rows.push((k, start, end, v));
            }
            cur.clear();
        };
        for (t, v) in es {
            // Windows that touch merge, as Flink's sessions do.
            if !cur.is_empty() && t > end {
                flush(&mut cur, end, &mut rows);
            }
            end = if cur.is_empty() {
                t + gap
            } else {
                end.max(t + gap)
            };
            cur.push((t, v));
        }
        if !cur.is_empty() {
            flush(&mut cur, end, &mut rows);
        }
    }
    agg(rows)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

fn run(evs: &[Ev], kind: Kind, p: u32, bound_ms: u64) -> (Vec<Out>, JobResult) {
    run_in_budget(evs, kind, p, bound_ms, None)
}

fn run_in_budget(
    evs: &[Ev],
    kind: Kind,
    p: u32,
    bound_ms: u64,
    budget: Option<usize>,
) -> (Vec<Out>, JobResult) {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    env.config_mut().state_memory_bytes = budget;
    let keyed = env
        .from_iter(evs.to_vec())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound_ms))
                .with_timestamp_assigner(|e: &Ev| e.1),
        )
        .key_by(|e: &Ev| e.0);
    let ms = |x: i64| Duration::from_millis(x as u64);
    let out = match kind {
        Kind::Tumbling(size) => keyed
            .window(TumblingWindows::event_time(ms(size)))
            .aggregate_with(CountSumMax, with_window),
        Kind::Sliding(size, slide) => keyed
            .window(SlidingWindows::event_time(ms(size), ms(slide)))
            .aggregate_with(CountSumMax, with_window),
        Kind::Session(gap) => keyed
            .window(SessionWindows::event_time(ms(gap)))
            .aggregate_with(CountSumMax, with_window),
    }
    .collect();
    let result = env.execute("windows").unwrap();
    let mut got = out.take();
    got.sort();
    (got, result)
}

#[test]
fn random_out_of_order_streams_give_the_brute_force_windows() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x0057_ab1e);
    let mut rng = SplitMix64::new(seed);
    for round in 0..6 {
        let n = 2_000 + rng.below(6_000) as usize;
        let keys = 1 + rng.below(40);
        let disorder = 1 + rng.below(200) as i64;
        let evs = events(rng.next_u64(), n, keys, disorder);
        let d = disorder_of(&evs);
        let kind = match round % 3 {
            0 => Kind::Tumbling(10 + rng.below(500) as i64),
            1 => {
                let slide = 5 + rng.below(100) as i64;
                Kind::Sliding(slide * (1 + rng.below(4) as i64), slide)
            }
            _ => Kind::Session(1 + rng.below(30) as i64),
        };
        let expected = match kind {
            Kind::Tumbling(size) => tumbling_reference(&evs, size),
            Kind::Sliding(size, slide) => sliding_reference(&evs, size, slide),
            Kind::Session(gap) => session_reference(&evs, gap),
        };
        for p in [1, 2, 4] {
            // At the disorder of the data, and beyond it: nothing is late either way.
            for bound in [d as u64, d as u64 * 3 + 17] {
                let (got, result) = run(&evs, kind, p, bound);
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "round {round} {kind:?} P={p} bound {bound}: window count"
                );
                assert_eq!(got, expected, "round {round} {kind:?} P={p} bound {bound}");
                let late: u64 = result
                    .metrics
                    .operators
                    .iter()
                    .map(|o| o.records_late)
                    .sum();
                assert_eq!(late, 0, "nothing is late within the bound");
            }
        }
    }
}

/// Sessions of 20,000 keys (a timer per key and session, at times of their own) in a budget
/// that holds a fraction of them: session lists, contents and timers go to the stores and come
/// back, and the windows are the brute-force ones.
#[test]
fn sessions_with_their_timers_in_the_store_give_the_brute_force_windows() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x5e55_1045);
    let evs = events(seed, 300_000, 20_000, 50);
    let gap = 200;
    let expected = session_reference(&evs, gap);
    let (got, result) = run_in_budget(
        &evs,
        Kind::Session(gap),
        2,
        disorder_of(&evs) as u64,
        Some(256 << 10),
    );
    let op = result
        .metrics
        .operators
        .iter()
        .find(|o| o.state_writes > 0)
        .expect("the window operator used its stores");
    assert!(
        op.timers_spilled > 10_000 && op.state_reads > 10_000,
        "{op:?}"
    );
    assert_eq!(got.len(), expected.len(), "window count");
    assert_eq!(got, expected);
}

/// A punctuated generator: a watermark after every record, so what is late is fixed by the
/// order of the input alone (at P = 1).
#[derive(Clone)]
struct EveryRecord {
    bound: i64,
    max: i64,
}

impl WatermarkGenerator<Ev> for EveryRecord {
    fn on_event(&mut self, _e: &Ev, ts: i64, out: &mut WatermarkOutput) {
        self.max = self.max.max(ts);
        out.emit_watermark(self.max - self.bound - 1);
    }
    fn on_periodic_emit(&mut self, _out: &mut WatermarkOutput) {}
}

/// What a tumbling-window operator with allowed lateness emits, simulated record by record:
/// (fired windows, late records).
fn lateness_reference(evs: &[Ev], size: i64, bound: i64, lateness: i64) -> (Vec<Out>, Vec<Ev>) {
    struct W {
        acc: (u64, i64, i64),
        timer: bool,
    }
    let mut windows: HashMap<(u32, i64), W> = HashMap::new();
    let mut fired = Vec::new();
    let mut late = Vec::new();
    let mut wm = i64::MIN;
    let mut max_ts = i64::MIN;
    let fire = |k: u32, s: i64, w: &W, fired: &mut Vec<Out>| {
        fired.push((k, s, s + size, w.acc.0, w.acc.1, w.acc.2));
    };
    let advance = |wm: i64, windows: &mut HashMap<(u32, i64), W>, fired: &mut Vec<Out>| {
        for (&(k, s), w) in windows.iter_mut() {
            if w.timer && s + size - 1 <= wm {
                w.timer = false;
                fire(k, s, w, fired);
            }
        }
        windows.retain(|&(_, s), _| s + size - 1 + lateness > wm);
    };
    for &e in evs {
        let (k, t, v) = e;
        let s = t - t.rem_euclid(size);
        if s + size - 1 + lateness <= wm {
            late.push(e);
        } else {
            let w = windows.entry((k, s)).or_insert_with(|| W {
                acc: (0, 0, i64::MIN),
                timer: s + size - 1 > wm,
            });
            w.acc.0 += 1;
            w.acc.1 += v;
            w.acc.2 = w.acc.2.max(v);
            if s + size - 1 <= wm {
                fire(k, s, w, &mut fired);
            }
        }
        max_ts = max_ts.max(t);
        let new = max_ts - bound - 1;
        if new > wm {
            wm = new;
            advance(wm, &mut windows, &mut fired);
        }
    }
    advance(i64::MAX, &mut windows, &mut fired);
    fired.sort();
    late.sort();
    (fired, late)
}

#[test]
fn late_records_go_to_the_late_output_and_within_lateness_fire_the_window_again() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x1a7e);
    let mut rng = SplitMix64::new(seed);
    for round in 0..8 {
        let evs = events(rng.next_u64(), 3_000, 1 + rng.below(10), 300);
        let size = 20 + rng.below(200) as i64;
        // A bound below the disorder of the data: some records are late.
        let bound = rng.below(100) as i64;
        let lateness = [0, 10, 50, 150][round % 4];
        let (expected, expected_late) = lateness_reference(&evs, size, bound, lateness);
        assert!(!expected_late.is_empty(), "the test wants late records");

        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(1);
        let late_tag = OutputTag::<Ev>::new("late");
        let windows = env
            .from_iter(evs.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_generator(EveryRecord {
                    bound,
                    max: i64::MIN,
                })
                .with_timestamp_assigner(|e: &Ev| e.1),
            )
            .key_by(|e: &Ev| e.0)
            .window(TumblingWindows::event_time(Duration::from_millis(
                size as u64,
            )))
            .allowed_lateness(Duration::from_millis(lateness as u64))
            .side_output_late_data(&late_tag)
            .aggregate_with(CountSumMax, with_window);
        let late = windows.get_side_output(&late_tag).collect();
        let fired = windows.collect();
        let result = env.execute("lateness").unwrap();
        let mut fired = fired.take();
        fired.sort();
        let mut late = late.take();
        late.sort();
        assert_eq!(late, expected_late, "round {round}: late records");
        assert_eq!(fired, expected, "round {round}: fired windows");
        let counted: u64 = result
            .metrics
            .operators
            .iter()
            .map(|o| o.records_late)
            .sum();
        assert_eq!(
            counted,
            expected_late.len() as u64,
            "late records are counted"
        );
    }
}

#[test]
fn count_windows_and_window_all_match_a_loop() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0xc0);
    let evs = events(seed, 5_000, 7, 0);
    // Tumbling count windows of 10 per key, in arrival order (P = 1: one order per key).
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    let tumbling = env
        .from_iter(evs.clone())
        .key_by(|e: &Ev| e.0)
        .count_window(10)
        .reduce(|acc: &mut Ev, e| acc.2 += e.2)
        .map(|e| (e.0, e.2))
        .collect();
    let sliding = env
        .from_iter(evs.clone())
        .key_by(|e: &Ev| e.0)
        .count_window_sliding(5, 2)
        .reduce(|acc: &mut Ev, e| acc.2 += e.2)
        .map(|e| (e.0, e.2))
        .collect();
    env.execute("count windows").unwrap();
    let mut by_key: HashMap<u32, Vec<i64>> = HashMap::new();
    for e in &evs {
        by_key.entry(e.0).or_default().push(e.2);
    }
    let mut want_tumbling = Vec::new();
    let mut want_sliding = Vec::new();
    for (k, vs) in &by_key {
        for chunk in vs.chunks_exact(10) {
            want_tumbling.push((*k, chunk.iter().sum::<i64>()));
        }
        for i in (2..=vs.len()).step_by(2) {
            want_sliding.push((*k, vs[i.saturating_sub(5)..i].iter().sum::<i64>()));
        }
    }
    let (mut a, mut b) = (tumbling.take(), sliding.take());
    a.sort();
    b.sort();
    want_tumbling.sort();
    want_sliding.sort();
    assert_eq!(a, want_tumbling);
    assert_eq!(b, want_sliding);

    // window_all: one window stream over everything, at P = 3.
    let evs = events(seed + 1, 4_000, 50, 40);
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(3);
    let all = env
        .from_iter(evs.clone())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(40))
                .with_timestamp_assigner(|e: &Ev| e.1),
        )
        .window_all(TumblingWindows::event_time(Duration::from_millis(100)))
        .process(
            |_k: &(),
             ctx: &WindowContext<TimeWindow>,
             es: &[Ev],
             out: &mut Collector<(i64, u64, i64)>| {
                out.collect((
                    ctx.window.start,
                    es.len() as u64,
                    es.iter().map(|e| e.2).sum(),
                ));
                Ok(())
            },
        )
        .collect();
    env.execute("window all").unwrap();
    let mut got = all.take();
    got.sort();
    let mut want: Vec<(i64, u64, i64)> =
        tumbling_reference(&evs.iter().map(|e| (0, e.1, e.2)).collect::<Vec<_>>(), 100)
            .into_iter()
            .map(|o| (o.1, o.3, o.4))
            .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(TimeWindow::new(0, 100).max_timestamp(), 99);
}

/// Emits its share of `records` (with their timestamps) in order, with a watermark of its own:
/// the last timestamp emitted minus one.
struct TimedSource {
    records: std::vec::IntoIter<Ev>,
    last: Option<i64>,
}

impl shardflow_core::source::Source<Ev> for TimedSource {
    async fn next_batch(
        &mut self,
        _out: &mut Vec<Ev>,
        _max: usize,
    ) -> Result<shardflow_core::source::SourceStatus, JobError> {
        unreachable!("this source fills timed batches")
    }

    async fn next_timed_batch(
        &mut self,
        out: &mut shardflow_core::operator::Batch<Ev>,
        max: usize,
    ) -> Result<shardflow_core::source::SourceStatus, JobError> {
        for e in self.records.by_ref().take(max.min(100)) {
            self.last = Some(e.1);
            out.push(e, Some(e.1));
        }
        Ok(if self.records.len() == 0 {
            shardflow_core::source::SourceStatus::End
        } else {
            shardflow_core::source::SourceStatus::More
        })
    }

    fn current_watermark(&self) -> Option<i64> {
        self.last.map(|t| t - 1)
    }
}

#[test]
fn a_source_may_set_timestamps_and_watermarks_itself() {
    let _cpus = shardflow_tests::shared_cpus();
    // In order per shard (the source's watermark trusts it).
    let mut evs = events(shardflow_tests::seed(0x5005), 6_000, 9, 0);
    evs.sort_by_key(|e| e.1);
    let want = tumbling_reference(&evs, 50);
    for p in [1, 2] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let all = std::sync::Arc::new(evs.clone());
        let late = OutputTag::<Ev>::new("late");
        let windows = env
            .add_source("timed", move |ctx| {
                let r = shardflow::source::split_range(
                    0,
                    all.len() as u64,
                    ctx.runtime.shard,
                    ctx.runtime.parallelism,
                );
                Ok(TimedSource {
                    records: Vec::from(&all[r.start as usize..r.end as usize]).into_iter(),
                    last: None,
                })
            })
            .key_by(|e: &Ev| e.0)
            .window(TumblingWindows::event_time(Duration::from_millis(50)))
            .side_output_late_data(&late)
            .aggregate_with(CountSumMax, with_window);
        let late = windows.get_side_output(&late).collect();
        let got = windows.collect();
        env.execute("timed source").unwrap();
        let mut got = got.take();
        got.sort();
        assert_eq!(got, want, "P={p}");
        assert!(late.take().is_empty());
    }
}

#[test]
fn session_gaps_may_depend_on_the_record_and_evictors_trim_windows() {
    let _cpus = shardflow_tests::shared_cpus();
    let evs = events(shardflow_tests::seed(0x6a9), 3_000, 6, 20);
    // The gap of a record: 5 ms for even values, 15 ms for odd ones. The reference merges
    // [ts, ts + gap) windows that overlap or touch, per key.
    let gap = |e: &Ev| if e.2 % 2 == 0 { 5 } else { 15 };
    let mut by_key: HashMap<u32, Vec<(i64, i64, i64)>> = HashMap::new();
    for e in &evs {
        by_key
            .entry(e.0)
            .or_default()
            .push((e.1, e.1 + gap(e), e.2));
    }
    let mut want = Vec::new();
    for (k, mut ws) in by_key {
        ws.sort();
        let mut cur: Option<(i64, i64, u64)> = None;
        for (s, e, _) in ws {
            cur = match cur {
                Some((cs, ce, n)) if s <= ce => Some((cs, ce.max(e), n + 1)),
                Some(done) => {
                    want.push((k, done.0, done.1, done.2));
                    Some((s, e, 1))
                }
                None => Some((s, e, 1)),
            };
        }
        if let Some(done) = cur {
            want.push((k, done.0, done.1, done.2));
        }
    }
    want.sort();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    let timed = env.from_iter(evs.clone()).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(20))
            .with_timestamp_assigner(|e: &Ev| e.1),
    );
    let sessions = timed
        .key_by(|e: &Ev| e.0)
        .window(SessionWindows::event_time_dynamic(move |e: &Ev| {
            Duration::from_millis(gap(e) as u64)
        }))
        .process(
            |k: &u32,
             ctx: &WindowContext<TimeWindow>,
             es: &[Ev],
             out: &mut Collector<(u32, i64, i64, u64)>| {
                out.collect((*k, ctx.window.start, ctx.window.end, es.len() as u64));
                Ok(())
            },
        )
        .collect();
    // A time evictor keeps, of each 100 ms window, the records within 10 ms of its newest.
    let trimmed = timed
        .key_by(|e: &Ev| e.0)
        .window(TumblingWindows::event_time(Duration::from_millis(100)))
        .evictor(TimeEvictor::of(Duration::from_millis(10)))
        .process(
            |k: &u32,
             ctx: &WindowContext<TimeWindow>,
             es: &[Ev],
             out: &mut Collector<(u32, i64, u64)>| {
                out.collect((*k, ctx.window.start, es.len() as u64));
                Ok(())
            },
        )
        .collect();
    env.execute("sessions and evictors").unwrap();
    let mut got = sessions.take();
    got.sort();
    assert_eq!(got, want);
    let mut windows: HashMap<(u32, i64), Vec<i64>> = HashMap::new();
    for e in &evs {
        windows
            .entry((e.0, e.1 - e.1.rem_euclid(100)))
            .or_default()
            .push(e.1);
    }
    let mut want_trimmed: Vec<(u32, i64, u64)> = windows
        .into_iter()
        .map(|((k, s), ts)| {
            let newest = *ts.iter().max().unwrap();
            (k, s, ts.iter().filter(|&&t| t > newest - 10).count() as u64)
        })
        .collect();
    want_trimmed.sort();
    let mut got = trimmed.take();
    got.sort();
    assert_eq!(got, want_trimmed);
}

#[test]
fn a_continuous_trigger_fires_each_interval_and_at_the_end_of_the_window() {
    let _cpus = shardflow_tests::shared_cpus();
    // One key, one 1 s window, records every 10 ms in order; a firing every 250 ms of event
    // time emits the count so far. At P = 1 with a watermark after every record (punctuated,
    // the record's time - 1), the timer at T fires once the record at T + 10 has raised the
    // watermark to T + 9: that record is already in the window.
    let evs: Vec<Ev> = (0..100).map(|i| (7, i * 10, 1)).collect();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1);
    let counts = env
        .from_iter(evs)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_generator(EveryRecord {
                bound: 0,
                max: i64::MIN,
            })
            .with_timestamp_assigner(|e: &Ev| e.1),
        )
        .key_by(|e: &Ev| e.0)
        .window(TumblingWindows::event_time(Duration::from_secs(1)))
        .trigger(ContinuousEventTimeTrigger::of(Duration::from_millis(250)))
        .reduce(|acc: &mut Ev, e| acc.2 += e.2)
        .map(|e| e.2)
        .collect();
    env.execute("continuous").unwrap();
    // Fired at 250 (records 0..=260 ms: 27), 500 (52), 750 (77), and at the window's end (100).
    let mut got = counts.take();
    got.sort();
    assert_eq!(got, [27, 52, 77, 100]);
}

#[test]
fn two_phase_aggregation_gives_the_windows_of_one_phase() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x2f2);
    let mut rng = SplitMix64::new(seed);
    for round in 0..4 {
        let disorder = 1 + rng.below(100) as i64;
        let evs = events(rng.next_u64(), 5_000, 1 + rng.below(30), disorder);
        let d = disorder_of(&evs);
        let (kind, expected) = if round % 2 == 0 {
            let size = 10 + rng.below(300) as i64;
            (Kind::Tumbling(size), tumbling_reference(&evs, size))
        } else {
            let slide = 5 + rng.below(50) as i64;
            let size = slide * (1 + rng.below(3) as i64);
            (
                Kind::Sliding(size, slide),
                sliding_reference(&evs, size, slide),
            )
        };
        for p in [1, 2, 4] {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(p);
            let keyed = env
                .from_iter(evs.clone())
                .assign_timestamps_and_watermarks(
                    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(
                        d as u64,
                    ))
                    .with_timestamp_assigner(|e: &Ev| e.1),
                )
                .key_by(|e: &Ev| e.0);
            let ms = |x: i64| Duration::from_millis(x as u64);
            let out = match kind {
                Kind::Tumbling(size) => keyed
                    .window(TumblingWindows::event_time(ms(size)))
                    .aggregate_two_phase_with(CountSumMax, with_window),
                Kind::Sliding(size, slide) => keyed
                    .window(SlidingWindows::event_time(ms(size), ms(slide)))
                    .aggregate_two_phase_with(CountSumMax, with_window),
                Kind::Session(_) => unreachable!(),
            }
            .collect();
            let result = env.execute("two-phase").unwrap();
            let mut got = out.take();
            got.sort();
            assert_eq!(got, expected, "round {round} {kind:?} P={p}");
            // Fewer partials than records crossed the exchange.
            let partials = result
                .operator("window aggregate (local)")
                .map_or(0, |o| o.records_out);
            assert!(partials < evs.len() as u64, "{partials} partials");
        }
    }
    // With allowed lateness, late records re-fire their windows as in one phase.
    for round in 0..4 {
        let evs = events(rng.next_u64(), 3_000, 1 + rng.below(10), 300);
        let size = 20 + rng.below(200) as i64;
        let bound = rng.below(100) as i64;
        let lateness = [0, 10, 50, 150][round % 4];
        let (expected, expected_late) = lateness_reference(&evs, size, bound, lateness);
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(1);
        let fired = env
            .from_iter(evs.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_generator(EveryRecord {
                    bound,
                    max: i64::MIN,
                })
                .with_timestamp_assigner(|e: &Ev| e.1),
            )
            .key_by(|e: &Ev| e.0)
            .window(TumblingWindows::event_time(Duration::from_millis(
                size as u64,
            )))
            .allowed_lateness(Duration::from_millis(lateness as u64))
            .aggregate_two_phase_with(CountSumMax, with_window)
            .collect();
        let result = env.execute("two-phase lateness").unwrap();
        let mut fired = fired.take();
        fired.sort();
        assert_eq!(fired, expected, "round {round}: fired windows");
        let late: u64 = result
            .metrics
            .operators
            .iter()
            .map(|o| o.records_late)
            .sum();
        assert_eq!(late, expected_late.len() as u64, "late records are counted");
    }
}

/// Shard 0 emits timestamps 0, 1, 2, ... ms at full speed, shard 1 the same at a batch of
/// `SPAN` per 2 ms of sleep; shard 0 starts only once shard 1 has passed its first batch on (as
/// two live partitions).
struct UnevenSource {
    next: i64,
    end: i64,
    slow: bool,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Event time one batch of [`UnevenSource`] spans (ms).
const SPAN: i64 = 100;

impl shardflow_core::source::Source<Ev> for UnevenSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Ev>,
        _max: usize,
    ) -> Result<shardflow_core::source::SourceStatus, JobError> {
        use std::sync::atomic::Ordering;
        if self.slow {
            // Its first batch has been passed on by now.
            self.started.store(self.next > 0, Ordering::Release);
            glommio::timer::sleep(Duration::from_millis(2)).await;
        } else if !self.started.load(Ordering::Acquire) {
            glommio::timer::sleep(Duration::from_micros(200)).await;
            return Ok(shardflow_core::source::SourceStatus::More);
        }
        let to = (self.next + SPAN).min(self.end);
        out.extend((self.next..to).map(|t| ((t % 7) as u32, t, 1)));
        self.next = to;
        Ok(if self.next == self.end {
            shardflow_core::source::SourceStatus::End
        } else {
            shardflow_core::source::SourceStatus::More
        })
    }
}

/// Notes how far each record is ahead of the highest timestamp the other shard passed on.
#[derive(Clone)]
struct Lead {
    passed: std::sync::Arc<[std::sync::atomic::AtomicI64; 2]>,
    lead: std::sync::Arc<std::sync::atomic::AtomicI64>,
    end: i64,
}

impl ProcessFunction<Ev, Ev> for Lead {
    fn process_element(
        &mut self,
        e: Ev,
        rt: &shardflow_core::operator::RuntimeContext,
        out: &mut Collector<Ev>,
    ) -> Result<(), UserError> {
        use std::sync::atomic::Ordering;
        let me = rt.shard as usize;
        self.passed[me].fetch_max(e.1, Ordering::Relaxed);
        let other = self.passed[1 - me].load(Ordering::Relaxed);
        // Once the other has started, and until it ends (then it holds nobody back).
        if other >= 0 && other < self.end - 1 {
            self.lead.fetch_max(e.1 - other, Ordering::Relaxed);
        }
        out.collect(e);
        Ok(())
    }
}

/// Runs the uneven sources through an assigner (aligned within `drift` if given) and 100 ms
/// windows; the windows, and the furthest one shard's records ran ahead of the other's in
/// event time (each record against the highest timestamp the other shard had passed on).
fn uneven(drift: Option<Duration>) -> (Vec<Out>, i64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    const END: i64 = 20_000;
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    let started = Arc::new(AtomicBool::new(false));
    let mut strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::ZERO)
        .with_timestamp_assigner(|e: &Ev| e.1);
    if let Some(d) = drift {
        strategy = strategy.with_watermark_alignment("uneven", d);
    }
    let passed: Arc<[AtomicI64; 2]> = Arc::new([AtomicI64::new(-1), AtomicI64::new(-1)]);
    let lead = Arc::new(AtomicI64::new(0));
    let windows = env
        .add_source("uneven", move |ctx| {
            Ok(UnevenSource {
                next: 0,
                end: END,
                slow: ctx.runtime.shard == 1,
                started: started.clone(),
            })
        })
        .assign_timestamps_and_watermarks(strategy)
        .process(Lead {
            passed: passed.clone(),
            lead: lead.clone(),
            end: END,
        })
        .key_by(|e: &Ev| e.0)
        .window(TumblingWindows::event_time(Duration::from_millis(100)))
        .aggregate_with(CountSumMax, with_window)
        .collect();
    env.execute("uneven sources").unwrap();
    let mut got = windows.take();
    got.sort();
    (got, lead.load(Ordering::Relaxed))
}

#[test]
fn aligned_watermarks_keep_a_fast_shard_within_the_drift_of_a_slow_one() {
    let _cpus = shardflow_tests::shared_cpus();
    let evs: Vec<Ev> = (0..2)
        .flat_map(|_| (0..20_000i64).map(|t| ((t % 7) as u32, t, 1)))
        .collect();
    let want = tumbling_reference(&evs, 100);
    let drift = 500;
    let (got, lead) = uneven(Some(Duration::from_millis(drift as u64)));
    assert_eq!(got, want);
    // A shard looks before each batch: it may pass the drift by the batch it then takes, and
    // the other's published position may trail its assigner's by one batch.
    assert!(
        lead <= drift + 2 * SPAN,
        "ran {lead} ms ahead with a drift of {drift} ms"
    );
    // Without alignment the fast shard runs through its 20 s while the slow one sleeps.
    let (got, lead) = uneven(None);
    assert_eq!(got, want);
    assert!(lead > 5 * drift, "the control ran only {lead} ms ahead");
}
