//! Side outputs: records a process function sends to tags of other types reach the streams that
//! read those tags, and only those; both plain and keyed process functions.

use shardflow::prelude::*;

#[derive(Clone)]
struct Split {
    odd: OutputTag<i64>,
    big: OutputTag<String>,
}

impl ProcessFunction<i64, i64> for Split {
    fn process_element(
        &mut self,
        x: i64,
        _ctx: &RuntimeContext,
        out: &mut Collector<i64>,
    ) -> Result<(), UserError> {
        if x % 2 == 0 {
            out.collect(x);
        } else {
            out.output(&self.odd, x);
        }
        if x > 9_990 {
            out.output(&self.big, format!("big {x}"));
        }
        Ok(())
    }
}

#[test]
fn a_process_function_splits_its_input_over_typed_side_outputs() {
    let _cpus = shardflow_tests::shared_cpus();
    for p in [1, 3] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let split = Split {
            odd: OutputTag::new("odd"),
            big: OutputTag::new("big"),
        };
        let main = env.generate_sequence(1, 10_000).process(split.clone());
        let odd = main.get_side_output(&split.odd).map(|x| x * 10).collect();
        let big = main.get_side_output(&split.big).collect();
        let even = main.collect();
        env.execute("split").unwrap();
        let mut even = even.take();
        even.sort();
        let mut odd = odd.take();
        odd.sort();
        let mut big = big.take();
        big.sort();
        assert_eq!(
            even,
            (1..=10_000).filter(|x| x % 2 == 0).collect::<Vec<i64>>()
        );
        assert_eq!(
            odd,
            (1..=10_000)
                .filter(|x| x % 2 == 1)
                .map(|x| x * 10)
                .collect::<Vec<i64>>()
        );
        let mut want: Vec<String> = (9_991..=10_000).map(|x| format!("big {x}")).collect();
        want.sort();
        assert_eq!(big, want);
    }
}

#[derive(Clone)]
struct Alarm {
    alarms: OutputTag<(u32, i64)>,
}

impl KeyedProcessFunction<u32, (u32, i64), (u32, i64)> for Alarm {
    /// The running sum of the key.
    type State = i64;
    fn process_element(
        &mut self,
        (k, v): (u32, i64),
        ctx: &mut KeyedContext<u32, i64>,
        out: &mut Collector<(u32, i64)>,
    ) -> Result<(), UserError> {
        let sum = ctx.state_or_insert_with(|| 0);
        let before = *sum;
        *sum += v;
        let now = *sum;
        out.collect((k, now));
        // Crossing 1000 raises an alarm, once per crossing.
        if before < 1_000 && now >= 1_000 {
            out.output(&self.alarms, (k, now));
        }
        Ok(())
    }
}

#[test]
fn a_keyed_process_function_keeps_state_per_key_and_raises_side_alarms() {
    let _cpus = shardflow_tests::shared_cpus();
    let input: Vec<(u32, i64)> = (0..20_000).map(|i| (i % 13, (i % 7) as i64)).collect();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(1); // the order of each key's records is the input's
    let f = Alarm {
        alarms: OutputTag::new("alarms"),
    };
    let sums = env
        .from_iter(input.clone())
        .key_by(|r: &(u32, i64)| r.0)
        .process(f.clone());
    let alarms = sums.get_side_output(&f.alarms).collect();
    let sums = sums.collect();
    env.execute("alarms").unwrap();
    // The reference: running sums by a loop.
    let mut run = std::collections::HashMap::new();
    let mut want_sums = Vec::new();
    let mut want_alarms = Vec::new();
    for (k, v) in input {
        let s = run.entry(k).or_insert(0i64);
        let before = *s;
        *s += v;
        want_sums.push((k, *s));
        if before < 1_000 && *s >= 1_000 {
            want_alarms.push((k, *s));
        }
    }
    let mut got_sums = sums.take();
    got_sums.sort();
    want_sums.sort();
    assert_eq!(got_sums, want_sums);
    let mut got_alarms = alarms.take();
    got_alarms.sort();
    want_alarms.sort();
    assert_eq!(got_alarms, want_alarms);
    assert_eq!(want_alarms.len(), 13);
}

#[test]
fn a_window_function_emits_to_side_outputs_beside_the_late_output() {
    use std::time::Duration;
    let _cpus = shardflow_tests::shared_cpus();
    // (key, ts): key k has k + 1 records in every 100 ms window.
    let mut input: Vec<(u32, i64)> = Vec::new();
    for w in 0..20i64 {
        for k in 0..6u32 {
            for j in 0..=k as i64 {
                input.push((k, w * 100 + j));
            }
        }
    }
    input.sort_by_key(|r| r.1);
    let big = OutputTag::<(u32, i64)>::new("big windows");
    let late = OutputTag::<(u32, i64)>::new("late");
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    let b = big.clone();
    let counts = env
        .from_iter(input)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(10))
                .with_timestamp_assigner(|r: &(u32, i64)| r.1),
        )
        .key_by(|r: &(u32, i64)| r.0)
        .window(TumblingWindows::event_time(Duration::from_millis(100)))
        .side_output_late_data(&late)
        .process(
            move |k: &u32,
                  ctx: &WindowContext<TimeWindow>,
                  rs: &[(u32, i64)],
                  out: &mut Collector<(u32, u64)>| {
                out.collect((*k, rs.len() as u64));
                if rs.len() > 4 {
                    out.output(&b, (*k, ctx.window.start));
                }
                Ok(())
            },
        );
    let bigs = counts.get_side_output(&big).collect();
    let lates = counts.get_side_output(&late).collect();
    let counts = counts.collect();
    env.execute("window side outputs").unwrap();
    let mut counts = counts.take();
    counts.sort();
    let mut want: Vec<(u32, u64)> = (0..6u32)
        .flat_map(|k| (0..20).map(move |_| (k, k as u64 + 1)))
        .collect();
    want.sort();
    assert_eq!(counts, want);
    let mut bigs = bigs.take();
    bigs.sort();
    let want_big: Vec<(u32, i64)> = (4..6u32)
        .flat_map(|k| (0..20i64).map(move |w| (k, w * 100)))
        .collect();
    assert_eq!(bigs, want_big);
    assert!(lates.take().is_empty());
}
