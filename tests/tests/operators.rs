//! The DataStream operators against plain-loop references on seeded random input.

use std::collections::HashMap;

use shardflow::prelude::*;
use shardflow_core::rng::SplitMix64;
use shardflow_tests::seed;

fn job_env(p: u32, mode: RuntimeMode) -> StreamExecutionEnvironment {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p).set_runtime_mode(mode);
    env
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn map_filter_flat_map_union_rebalance() {
    let mut rng = SplitMix64::new(seed(31));
    let a: Vec<i64> = (0..5_000)
        .map(|_| rng.below(1_000_000) as i64 - 500_000)
        .collect();
    let b: Vec<i64> = (0..3_000).map(|_| rng.below(1000) as i64).collect();
    let expected = sorted(
        a.iter()
            .chain(b.iter())
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .collect(),
    );
    for p in [1, 2, 5] {
        let env = job_env(p, RuntimeMode::Streaming);
        let s = env
            .from_iter(a.clone())
            .union(&env.from_iter(b.clone()))
            .rebalance()
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x: i64, out: &mut Collector<i64>| {
                out.collect(x);
                out.collect(x + 1);
            })
            .collect();
        let mut env = env;
        env.execute("ops").unwrap();
        assert_eq!(sorted(s.take()), expected, "P = {p}");
    }
}

#[test]
fn rebalance_spreads_evenly_and_broadcast_reaches_every_shard() {
    let p = 4;
    let mut env = job_env(p, RuntimeMode::Streaming);
    let n = 8_000i64;
    let by_shard = env.generate_sequence(1, n).rebalance().collect();
    let everywhere = env.generate_sequence(1, 10).broadcast().collect();
    env.execute("spread").unwrap();
    let by_shard = by_shard.take_by_shard();
    assert_eq!(by_shard.len(), p as usize);
    for (shard, records) in &by_shard {
        assert_eq!(
            records.len() as i64,
            n / p as i64,
            "shard {shard}: round robin is exact"
        );
    }
    assert_eq!(
        sorted(by_shard.into_iter().flat_map(|s| s.1).collect()),
        (1..=n).collect::<Vec<_>>()
    );
    for (shard, records) in everywhere.take_by_shard() {
        assert_eq!(
            sorted(records),
            (1..=10).collect::<Vec<_>>(),
            "shard {shard}"
        );
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reading {
    sensor: u32,
    value: i64,
    at: u64,
}

#[test]
fn keyed_aggregations_equal_a_grouping_loop() {
    let mut rng = SplitMix64::new(seed(32));
    let readings: Vec<Reading> = (0..6_000u64)
        .map(|at| Reading {
            sensor: rng.below(40) as u32,
            value: rng.below(2_000) as i64 - 1_000,
            at,
        })
        .collect();
    let mut groups: HashMap<u32, Vec<&Reading>> = HashMap::new();
    for r in &readings {
        groups.entry(r.sensor).or_default().push(r);
    }
    for p in [1, 2, 3, 8] {
        let mut env = job_env(p, RuntimeMode::Batch);
        let keyed = env
            .from_iter(readings.clone())
            .key_by(|r: &Reading| r.sensor);
        let sum = keyed.sum(|r: &mut Reading| &mut r.value).collect();
        let min = keyed.min(|r: &mut Reading| &mut r.value).collect();
        let max = keyed.max(|r: &mut Reading| &mut r.value).collect();
        let min_by = keyed.min_by(|r: &Reading| r.value).collect();
        let max_by = keyed.max_by(|r: &Reading| r.value).collect();
        let reduce = keyed
            .reduce(|acc: &mut Reading, x: Reading| {
                acc.at = acc.at.max(x.at);
                acc.value += x.value;
            })
            .collect();
        env.execute("aggregations").unwrap();
        let check = |name: &str, got: Vec<Reading>, want: &dyn Fn(u32) -> Reading| {
            assert_eq!(
                got.len(),
                groups.len(),
                "{name}: one result per key, P = {p}"
            );
            for r in got {
                assert_eq!(r, want(r.sensor), "{name}, P = {p}");
            }
        };
        // sum/min/max keep the key's first record's other fields — but which record is "first"
        // depends on arrival order across shards, so compare only the aggregated field there.
        let field_only = |got: Vec<Reading>, f: &dyn Fn(&[&Reading]) -> i64, name: &str| {
            assert_eq!(got.len(), groups.len(), "{name}, P = {p}");
            for r in got {
                assert_eq!(r.value, f(&groups[&r.sensor]), "{name}, P = {p}");
            }
        };
        field_only(sum.take(), &|g| g.iter().map(|r| r.value).sum(), "sum");
        field_only(
            min.take(),
            &|g| g.iter().map(|r| r.value).min().unwrap(),
            "min",
        );
        field_only(
            max.take(),
            &|g| g.iter().map(|r| r.value).max().unwrap(),
            "max",
        );
        // min_by/max_by keep a whole record with the extreme value.
        for (name, got, want) in [
            (
                "min_by",
                min_by.take(),
                groups
                    .iter()
                    .map(|(s, g)| (*s, g.iter().map(|r| r.value).min().unwrap()))
                    .collect::<HashMap<_, _>>(),
            ),
            (
                "max_by",
                max_by.take(),
                groups
                    .iter()
                    .map(|(s, g)| (*s, g.iter().map(|r| r.value).max().unwrap()))
                    .collect(),
            ),
        ] {
            assert_eq!(got.len(), groups.len(), "{name}, P = {p}");
            for r in got {
                assert_eq!(r.value, want[&r.sensor], "{name}, P = {p}");
                assert!(readings.contains(&r), "{name} emits a real record");
            }
        }
        check("reduce", reduce.take(), &|s| Reading {
            sensor: s,
            at: groups[&s].iter().map(|r| r.at).max().unwrap(),
            value: groups[&s].iter().map(|r| r.value).sum(),
        });
    }
}

#[derive(Clone)]
struct RunningTotal {
    total: i64,
    seen: u64,
}

impl ProcessFunction<i64, (u32, i64, u64)> for RunningTotal {
    fn process_element(
        &mut self,
        x: i64,
        _ctx: &RuntimeContext,
        _out: &mut Collector<(u32, i64, u64)>,
    ) -> Result<(), UserError> {
        self.total += x;
        self.seen += 1;
        Ok(())
    }

    fn finish(
        &mut self,
        ctx: &RuntimeContext,
        out: &mut Collector<(u32, i64, u64)>,
    ) -> Result<(), UserError> {
        out.collect((ctx.shard, self.total, self.seen));
        Ok(())
    }
}

#[test]
fn process_functions_finish_once_per_shard() {
    for p in [1, 3, 6] {
        let mut env = job_env(p, RuntimeMode::Streaming);
        let totals = env
            .generate_sequence(-500, 10_000)
            .process(RunningTotal { total: 0, seen: 0 })
            .collect();
        env.execute("process").unwrap();
        let totals = totals.take();
        assert_eq!(
            sorted(totals.iter().map(|t| t.0).collect()),
            (0..p).collect::<Vec<_>>()
        );
        assert_eq!(
            totals.iter().map(|t| t.1).sum::<i64>(),
            (-500..=10_000i64).sum::<i64>()
        );
        assert_eq!(totals.iter().map(|t| t.2).sum::<u64>(), 10_501);
    }
}

#[test]
fn empty_input_single_record_and_input_far_larger_than_the_buffers() {
    // Empty.
    let mut env = job_env(4, RuntimeMode::Batch);
    let out = env
        .from_iter(Vec::<(String, u64)>::new())
        .key_by_ref(|r: &(String, u64)| &r.0)
        .sum(|r: &mut (String, u64)| &mut r.1)
        .collect();
    let result = env.execute("empty").unwrap();
    assert!(out.take().is_empty());
    assert_eq!(result.operator("from_iter").unwrap().records_out, 0);
    // One record, more shards than records.
    let mut env = env_streaming(8);
    let out = env
        .from_iter(vec![("x".to_string(), 7u64)])
        .key_by(|r: &(String, u64)| r.0.clone())
        .sum(|r: &mut (String, u64)| &mut r.1)
        .collect();
    env.execute("one").unwrap();
    assert_eq!(out.take(), vec![("x".to_string(), 7)]);
    // Two million records through 128-byte batches and one credit per channel: the exchange
    // holds a tiny fraction of the input at any time.
    let n = 2_000_000i64;
    let mut env = job_env(2, RuntimeMode::Batch);
    env.config_mut().batch_bytes = 128;
    env.config_mut().channel_buffers = 1;
    let out = env
        .generate_sequence(1, n)
        .map(|x| (x % 1000, x))
        .key_by(|r: &(i64, i64)| r.0)
        .sum(|r: &mut (i64, i64)| &mut r.1)
        .collect();
    let result = env.execute("large").unwrap();
    let mut want: HashMap<i64, i64> = HashMap::new();
    for x in 1..=n {
        *want.entry(x % 1000).or_insert(0) += x;
    }
    let got: HashMap<i64, i64> = out.take().into_iter().collect();
    assert_eq!(got, want);
    let ex = &result.metrics.exchanges[0];
    assert!(ex.ring_buffered_buffers_high_water <= 1, "{ex:?}");
}

fn env_streaming(p: u32) -> StreamExecutionEnvironment {
    job_env(p, RuntimeMode::Streaming)
}
