//! Two-input operators against nested loops: interval joins, window joins, and a keyed
//! co-process function sharing state and timers between its inputs.

use std::collections::HashMap;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::rng::SplitMix64;

/// (key, timestamp, id)
type Rec = (u32, i64, u64);

/// Records with timestamps a little out of order (at most `disorder` ms behind the newest).
fn records(rng: &mut SplitMix64, n: usize, keys: u64, disorder: i64, id_base: u64) -> Vec<Rec> {
    let mut t = 0i64;
    (0..n)
        .map(|i| {
            t += rng.below(5) as i64;
            (
                rng.below(keys) as u32,
                t - rng.below(disorder as u64 + 1) as i64,
                id_base + i as u64,
            )
        })
        .collect()
}

type Strategy = WatermarkStrategy<
    shardflow_core::time::BoundedOutOfOrderness,
    shardflow_core::time::watermark::FnAssigner<fn(&Rec) -> i64>,
>;

fn strategy(disorder: i64) -> Strategy {
    let ts: fn(&Rec) -> i64 = |r| r.1;
    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(disorder as u64))
        .with_timestamp_assigner(ts)
}

#[test]
fn interval_join_equals_a_nested_loop_join() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x1011);
    let mut rng = SplitMix64::new(seed);
    for round in 0..6 {
        let disorder = 1 + rng.below(40) as i64;
        let keys = 1 + rng.below(20);
        let left = records(&mut rng, 1_500, keys, disorder, 0);
        let right = records(&mut rng, 1_500, keys, disorder, 1_000_000);
        let lower = rng.below(60) as i64 - 40;
        let upper = lower + rng.below(60) as i64;
        let mut want: Vec<(u32, u64, u64, i64)> = Vec::new();
        for l in &left {
            for r in &right {
                if l.0 == r.0 && l.1 + lower <= r.1 && r.1 <= l.1 + upper {
                    want.push((l.0, l.2, r.2, l.1.max(r.1)));
                }
            }
        }
        want.sort();
        for p in [1, 2, 4] {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(p);
            let a = env
                .from_iter(left.clone())
                .assign_timestamps_and_watermarks(strategy(disorder))
                .key_by(|r: &Rec| r.0);
            let b = env
                .from_iter(right.clone())
                .assign_timestamps_and_watermarks(strategy(disorder))
                .key_by(|r: &Rec| r.0);
            let joined = a
                .interval_join(&b)
                .between(lower, upper)
                .process(
                    |l: &Rec,
                     r: &Rec,
                     ctx: &JoinContext,
                     out: &mut Collector<(u32, u64, u64, i64)>| {
                        out.collect((l.0, l.2, r.2, ctx.left_timestamp.max(ctx.right_timestamp)));
                        Ok(())
                    },
                )
                .collect();
            env.execute("interval join").unwrap();
            let mut got = joined.take();
            got.sort();
            assert_eq!(
                got.len(),
                want.len(),
                "round {round} P={p} [{lower}, {upper}] disorder {disorder}"
            );
            assert_eq!(got, want, "round {round} P={p}");
        }
    }
}

#[test]
fn window_join_equals_a_nested_loop_per_window() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x3011);
    let mut rng = SplitMix64::new(seed);
    let disorder = 30;
    let left = records(&mut rng, 2_000, 15, disorder, 0);
    let right = records(&mut rng, 2_000, 15, disorder, 1_000_000);
    let size = 100i64;
    let mut want: Vec<(u64, u64)> = Vec::new();
    for l in &left {
        for r in &right {
            if l.0 == r.0 && l.1.div_euclid(size) == r.1.div_euclid(size) {
                want.push((l.2, r.2));
            }
        }
    }
    want.sort();
    for p in [1, 3] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let a = env
            .from_iter(left.clone())
            .assign_timestamps_and_watermarks(strategy(disorder));
        let b = env
            .from_iter(right.clone())
            .assign_timestamps_and_watermarks(strategy(disorder));
        let joined = a
            .join(&b)
            .where_key(|r: &Rec| r.0)
            .equal_to(|r: &Rec| r.0)
            .window(TumblingWindows::event_time(Duration::from_millis(
                size as u64,
            )))
            .apply(|l: &Rec, r: &Rec| (l.2, r.2))
            .collect();
        env.execute("window join").unwrap();
        let mut got = joined.take();
        got.sort();
        assert_eq!(got, want, "P={p}");
    }
}

/// Per key: the sum of the first input's values and the count of the second's, emitted by an
/// event-time timer at the end of input. State and timers are the key's, whichever input
/// touches them.
#[derive(Clone)]
struct SumAndCount;

impl KeyedCoProcessFunction<u32, (u32, i64), (u32, String), (u32, i64, u64)> for SumAndCount {
    type State = (i64, u64);
    fn process_element1(
        &mut self,
        (_, v): (u32, i64),
        ctx: &mut KeyedContext<u32, (i64, u64)>,
        _out: &mut Collector<(u32, i64, u64)>,
    ) -> Result<(), UserError> {
        ctx.state_or_insert_with(|| (0, 0)).0 += v;
        ctx.register_event_time_timer(i64::MAX - 1);
        Ok(())
    }
    fn process_element2(
        &mut self,
        _: (u32, String),
        ctx: &mut KeyedContext<u32, (i64, u64)>,
        _out: &mut Collector<(u32, i64, u64)>,
    ) -> Result<(), UserError> {
        ctx.state_or_insert_with(|| (0, 0)).1 += 1;
        ctx.register_event_time_timer(i64::MAX - 1);
        Ok(())
    }
    fn on_timer(
        &mut self,
        _time: i64,
        ctx: &mut KeyedContext<u32, (i64, u64)>,
        out: &mut Collector<(u32, i64, u64)>,
    ) -> Result<(), UserError> {
        if let Some(&(sum, n)) = ctx.state() {
            out.collect((*ctx.current_key(), sum, n));
        }
        Ok(())
    }
}

#[test]
fn connected_streams_share_each_keys_state_and_timers() {
    let _cpus = shardflow_tests::shared_cpus();
    let mut rng = SplitMix64::new(shardflow_tests::seed(0xc0c0));
    let first: Vec<(u32, i64)> = (0..5_000)
        .map(|_| (rng.below(40) as u32, rng.below(100) as i64 - 20))
        .collect();
    let second: Vec<(u32, String)> = (0..3_000)
        .map(|i| (rng.below(50) as u32, format!("s{i}")))
        .collect();
    let mut want: HashMap<u32, (i64, u64)> = HashMap::new();
    for (k, v) in &first {
        want.entry(*k).or_default().0 += v;
    }
    for (k, _) in &second {
        want.entry(*k).or_default().1 += 1;
    }
    let mut want: Vec<(u32, i64, u64)> = want.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    want.sort();
    for p in [1, 2, 4] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let a = env.from_iter(first.clone()).key_by(|r: &(u32, i64)| r.0);
        let b = env
            .from_iter(second.clone())
            .key_by(|r: &(u32, String)| r.0);
        let out = a.connect(&b).process(SumAndCount).collect();
        env.execute("connect").unwrap();
        let mut got = out.take();
        got.sort();
        assert_eq!(got, want, "P={p}");
    }
}
