//! Keyed state larger than memory: a windowed job whose live state is about 1 GiB runs with a
//! 64 MiB memory budget, paging window accumulators to and from the shards' stores, and gives
//! the result the same job gives with no budget, and that a loop over the input gives.

use std::collections::HashMap;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::rng::mix64;
use shardflow_tests::shared_cpus;

/// (key, timestamp ms, value)
type Ev = (u64, i64, u64);
/// (key, window start, count, sum, histogram digest)
type Out = (u64, i64, u64, u64, u64);

/// A fat accumulator: a count, a sum and a 12-bucket histogram of values (112 bytes), so that
/// the state is large for the records it takes.
#[derive(Clone, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Hist {
    count: u64,
    sum: u64,
    buckets: [u64; 12],
}

impl Hist {
    fn add(&mut self, v: u64) {
        self.count += 1;
        self.sum += v;
        self.buckets[(v % 12) as usize] += 1;
    }

    fn digest(&self) -> u64 {
        self.buckets
            .iter()
            .enumerate()
            .fold(0, |h, (i, &b)| mix64(h ^ b.wrapping_mul(i as u64 + 1)))
    }
}

#[derive(Clone)]
struct HistAgg;

impl AggregateFunction<Ev> for HistAgg {
    type Acc = Hist;
    type Out = Hist;
    fn create_accumulator(&self) -> Hist {
        Hist::default()
    }
    fn add(&self, acc: &mut Hist, e: Ev) {
        acc.add(e.2);
    }
    fn result(&self, acc: &Hist) -> Hist {
        acc.clone()
    }
    fn merge(&self, into: &mut Hist, from: Hist) {
        into.count += from.count;
        into.sum += from.sum;
        for (a, b) in into.buckets.iter_mut().zip(from.buckets) {
            *a += b;
        }
    }
}

const WINDOW_MS: i64 = 1_000_000;

/// Record `i` of `n`: keys drawn at random from `keys`, timestamps rising so that the input
/// spans two windows (every key lives in both for a while: the state is all keys twice).
fn event(i: u64, n: u64, keys: u64) -> Ev {
    let h = mix64(i ^ 0x5eed);
    let ts = (i as i128 * 2 * WINDOW_MS as i128 / n as i128) as i64;
    (h % keys, ts, h >> 40)
}

fn run(n: u64, keys: u64, budget: Option<usize>) -> (Vec<Out>, JobResult) {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env.config_mut().state_memory_bytes = budget;
    let out = env
        .generate_sequence(0, n as i64 - 1)
        .map(move |i| event(i as u64, n, keys))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &Ev| e.1),
        )
        .key_by(|e: &Ev| e.0)
        .window(TumblingWindows::event_time(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate_with(
            HistAgg,
            |key: &u64,
             ctx: &WindowContext<TimeWindow>,
             r: &[Hist],
             out: &mut Collector<Out>|
             -> Result<(), UserError> {
                for h in r {
                    out.collect((*key, ctx.window.start, h.count, h.sum, h.digest()));
                }
                Ok(())
            },
        )
        .collect();
    let result = env.execute("state larger than memory").unwrap();
    let mut got = out.take();
    got.sort_unstable();
    (got, result)
}

fn reference(n: u64, keys: u64) -> Vec<Out> {
    let mut m: HashMap<(u64, i64), Hist> = HashMap::new();
    for i in 0..n {
        let (k, ts, v) = event(i, n, keys);
        m.entry((k, ts - ts.rem_euclid(WINDOW_MS)))
            .or_default()
            .add(v);
    }
    let mut out: Vec<Out> = m
        .into_iter()
        .map(|((k, w), h)| (k, w, h.count, h.sum, h.digest()))
        .collect();
    out.sort_unstable();
    out
}

/// The acceptance test of the store: ~1 GiB of live window state through a 64 MiB budget.
///
/// 4.8 M keys, each in two windows live together near the boundary (the first window fires only
/// when the watermark passes its end): about 9.6 M accumulators of 112 bytes plus key, window
/// and entry overhead, over 1 GiB at the peak. Every record then most likely finds its
/// accumulator evicted: read back from a sealed segment, folded, written out again later.
#[test]
fn a_windowed_job_with_1_gib_of_state_runs_in_a_64_mib_budget() {
    let _cpus = shared_cpus();
    let keys = 4_800_000u64;
    let n = 3 * keys;
    let entry_bytes = std::mem::size_of::<Hist>() + 8 + 16;
    assert!(2 * keys as usize * entry_bytes > 1 << 30);

    let want = reference(n, keys);
    let (bounded, result) = run(n, keys, Some(64 << 20));
    let op = result.operator("window aggregate").unwrap();
    eprintln!(
        "budget 64 MiB: {} values written to the stores, {} read back, in {:?}",
        op.state_writes, op.state_reads, result.elapsed
    );
    assert!(op.state_writes > keys, "{} writes", op.state_writes);
    assert!(op.state_reads > keys, "{} reads", op.state_reads);
    assert_eq!(bounded.len(), want.len());
    assert!(bounded == want, "the 64 MiB run differs from the reference");
    drop(bounded);

    let (unbounded, result) = run(n, keys, None);
    let op = result.operator("window aggregate").unwrap();
    assert_eq!((op.state_writes, op.state_reads), (0, 0));
    assert!(
        unbounded == want,
        "the run without a budget differs from the reference"
    );
}

/// Per user: a running count (ValueState), the distinct items seen (MapState), the last three
/// items (ListState) and the largest amount (ReducingState), emitted with every record.
#[derive(Clone, Default)]
struct Profile {
    count: Option<ValueState<u64>>,
    items: Option<MapState<u32, u64>>,
    recent: Option<ListState<u32>>,
    largest: Option<ReducingState<u64, Max>>,
}

type Max = fn(&mut u64, u64);
/// A user in the reference: count, times per item, last three items, largest amount.
type UserModel = (u64, HashMap<u32, u64>, Vec<u32>, u64);

/// (user, item, amount)
type Buy = (u64, u32, u64);
/// (user, count, distinct items, times this item was bought, last three items, largest amount)
type Seen = (u64, u64, u64, u64, Vec<u32>, u64);

impl KeyedProcessFunction<u64, Buy, Seen> for Profile {
    type State = ();
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_, u64>) -> Result<(), UserError> {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        self.items = Some(ctx.map_state(MapStateDescriptor::new("items"))?);
        self.recent = Some(ctx.list_state(ListStateDescriptor::new("recent"))?);
        let max: Max = |a, x| *a = (*a).max(x);
        self.largest = Some(ctx.reducing_state(ReducingStateDescriptor::new("largest", max))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (user, item, amount): Buy,
        ctx: &mut KeyedContext<u64, ()>,
        out: &mut Collector<Seen>,
    ) -> Result<(), UserError> {
        let (count, items, recent, largest) = (
            self.count.as_ref().ok_or("not opened")?,
            self.items.as_ref().ok_or("not opened")?,
            self.recent.as_ref().ok_or("not opened")?,
            self.largest.as_ref().ok_or("not opened")?,
        );
        let n = count.get_or_insert_with(ctx, || 0);
        *n += 1;
        let n = *n;
        let times = items.get(ctx, &item).copied().unwrap_or(0) + 1;
        items.put(ctx, item, times);
        let distinct = items.entries(ctx).count() as u64;
        let mut last: Vec<u32> = recent.get(ctx).copied().collect();
        last.push(item);
        if last.len() > 3 {
            last.remove(0);
        }
        recent.update(ctx, last.clone());
        largest.add(ctx, amount);
        let max = *largest.get(ctx).ok_or("no largest")?;
        out.collect((user, n, distinct, times, last, max));
        Ok(())
    }
}

/// Buy `i` of `n`: the first half of the input is by the first half of the users, the second
/// by the second (a source shard reads one half at P = 2, so each user's buys reach the owner in
/// input order, and the running figures are defined).
fn buy(i: u64, n: u64, users: u64) -> Buy {
    let h = mix64(i ^ 0xb0b);
    let half = users / 2;
    let user = h % half + if i >= n / 2 { half } else { 0 };
    (user, ((h >> 20) % 50) as u32, (h >> 40) % 10_000)
}

/// Typed keyed state in a job, with a budget that holds a few hundred users of thousands:
/// every output record equals what a loop over the input computes, per user in input order.
#[test]
fn typed_keyed_state_in_a_job_matches_a_loop_under_a_small_budget() {
    let _cpus = shared_cpus();
    let (n, users) = (200_000u64, 5_000u64);
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env.config_mut().state_memory_bytes = Some(256 << 10);
    let out = env
        .from_iter((0..n).map(|i| buy(i, n, users)).collect::<Vec<_>>())
        .key_by(|b: &Buy| b.0)
        .process(Profile::default())
        .collect();
    let result = env.execute("typed state").unwrap();
    let op = result.operator("keyed process").unwrap();
    assert!(
        op.state_writes > 10_000 && op.state_reads > 10_000,
        "{op:?}"
    );

    // The reference, per user in input order.
    let mut got: HashMap<u64, Vec<Seen>> = HashMap::new();
    for s in out.take() {
        got.entry(s.0).or_default().push(s);
    }
    let mut want: HashMap<u64, Vec<Seen>> = HashMap::new();
    let mut by_user: HashMap<u64, UserModel> = HashMap::new();
    for i in 0..n {
        let (user, item, amount) = buy(i, n, users);
        let u = by_user.entry(user).or_default();
        u.0 += 1;
        let times = u.1.entry(item).or_default();
        *times += 1;
        let times = *times;
        u.2.push(item);
        if u.2.len() > 3 {
            u.2.remove(0);
        }
        u.3 = u.3.max(amount);
        want.entry(user)
            .or_default()
            .push((user, u.0, u.1.len() as u64, times, u.2.clone(), u.3));
    }
    assert_eq!(got.len(), want.len());
    for (user, w) in &want {
        assert_eq!(got.get(user), Some(w), "user {user}");
    }
}

/// The run directory under `state_dir` holds the shards' stores while the job runs and is gone
/// when it ends; a `state_dir` that cannot be a directory fails the job with an error naming it.
#[test]
fn the_state_directory_is_removed_after_the_run_and_a_bad_one_is_named() {
    let _cpus = shared_cpus();
    let parent = tempfile::tempdir().unwrap();
    let run = |state_dir: std::path::PathBuf| {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        env.config_mut().state_dir = Some(state_dir);
        env.config_mut().state_memory_bytes = Some(64 << 10);
        let out = env
            .from_iter(
                (0..50_000u64)
                    .map(|i| buy(i, 50_000, 20_000))
                    .collect::<Vec<_>>(),
            )
            .key_by(|b: &Buy| b.0)
            .process(Profile::default())
            .collect();
        env.execute("state directory")
            .map(|r| (r, out.take().len()))
    };
    let (result, n) = run(parent.path().to_path_buf()).unwrap();
    assert_eq!(n, 50_000);
    let op = result.operator("keyed process").unwrap();
    assert!(
        op.state_writes > 0,
        "the budget made the job use its stores"
    );
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    let file = parent.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let err = run(file.join("state")).unwrap_err().to_string();
    assert!(err.contains("not-a-directory"), "{err}");
}
