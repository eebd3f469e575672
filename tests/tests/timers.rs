//! Timers of keyed process functions: each fires once, in timestamp order per key, event-time
//! timers when the watermark passes them, processing-time timers when the job's (test) clock
//! does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::operator::sink::SinkFunction;
use shardflow_core::rng::SplitMix64;
use shardflow_core::source::{Source, SourceStatus};

/// (key, timestamp, timer to register, timer to delete (0: none))
type Cmd = (u32, i64, i64, i64);

#[derive(Clone)]
struct EventTimers;

impl KeyedProcessFunction<u32, Cmd, (u32, i64, i64)> for EventTimers {
    type State = ();
    fn process_element(
        &mut self,
        c: Cmd,
        ctx: &mut KeyedContext<u32, ()>,
        _out: &mut Collector<(u32, i64, i64)>,
    ) -> Result<(), UserError> {
        assert_eq!(*ctx.current_key(), c.0);
        ctx.register_event_time_timer(c.2);
        if c.3 != 0 {
            ctx.delete_event_time_timer(c.3);
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        time: i64,
        ctx: &mut KeyedContext<u32, ()>,
        out: &mut Collector<(u32, i64, i64)>,
    ) -> Result<(), UserError> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::EventTime));
        out.collect((*ctx.current_key(), time, ctx.current_watermark()));
        Ok(())
    }
}

#[test]
fn event_time_timers_fire_once_in_order_per_key_after_the_watermark() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x7173);
    let mut rng = SplitMix64::new(seed);
    // Timers near the record's time fire as the stream goes; timers past the end of the data
    // fire at the end of input, and only those are deleted (a deletion of a near timer could
    // race its firing). Every timer is registered once, and deleted, if at all, by a later
    // record of the same 5,000-record block: the blocks are what the source splits at P = 1, 2
    // and 4, so every shard sees a deletion after its registration.
    let end = 100_000_000i64;
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut far: HashMap<(u32, i64), Vec<i64>> = HashMap::new();
    for i in 0..20_000i64 {
        let key = rng.below(50) as u32;
        let ts = i * 1_000 - rng.below(3_000) as i64;
        let near = rng.below(2) == 0;
        let timer = if near {
            i * 1_000 + 500 + rng.below(400) as i64
        } else {
            end + i
        };
        let block = (key, i / 5_000);
        let delete = match far.get_mut(&block) {
            Some(v) if !v.is_empty() && rng.below(4) == 0 => {
                v.swap_remove(rng.below(v.len() as u64) as usize)
            }
            _ => 0,
        };
        if !near {
            far.entry(block).or_default().push(timer);
        }
        cmds.push((key, ts, timer, delete));
    }
    // The reference: per key, the timers registered and not deleted after their (last)
    // registration, in time order.
    let mut live: HashMap<u32, BTreeSet<i64>> = HashMap::new();
    for c in &cmds {
        let set = live.entry(c.0).or_default();
        set.insert(c.2);
        if c.3 != 0 {
            set.remove(&c.3);
        }
    }
    // With a budget of 64 KiB the far timers (ten thousand, each at a time of its own) go to
    // the shards' stores, deletions of them as tombstones.
    for (p, budget) in [
        (1, None),
        (2, None),
        (4, None),
        (1, Some(64 << 10)),
        (2, Some(64 << 10)),
    ] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().state_memory_bytes = budget;
        let fired = env
            .from_iter(cmds.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(3_000))
                    .with_timestamp_assigner(|c: &Cmd| c.1),
            )
            .key_by(|c: &Cmd| c.0)
            .process(EventTimers)
            .collect();
        let result = env.execute("event timers").unwrap();
        let spilled = result.operator("keyed process").unwrap().timers_spilled;
        assert_eq!(
            spilled > 5_000,
            budget.is_some(),
            "{spilled} timers spilled"
        );
        // The collect sink keeps each shard's order; a key lives on one shard.
        let mut got: HashMap<u32, Vec<i64>> = HashMap::new();
        for (_shard, records) in fired.take_by_shard() {
            for (k, t, wm) in records {
                assert!(wm >= t, "timer {t} of key {k} fired at watermark {wm}");
                got.entry(k).or_default().push(t);
            }
        }
        for (k, want) in &live {
            let want: Vec<i64> = want.iter().copied().collect();
            assert_eq!(
                got.get(k).cloned().unwrap_or_default(),
                want,
                "P={p} budget {budget:?} key {k}"
            );
        }
        assert_eq!(got.len(), live.len());
    }
}

/// Emits its records, says so (`emitted`), then waits until the gate opens.
struct Gated {
    records: Vec<(u32, i64)>,
    gate: Arc<AtomicBool>,
    emitted: Arc<AtomicBool>,
}

impl Source<(u32, i64)> for Gated {
    async fn next_batch(
        &mut self,
        out: &mut Vec<(u32, i64)>,
        _max: usize,
    ) -> Result<SourceStatus, JobError> {
        if !self.records.is_empty() {
            out.append(&mut self.records);
            return Ok(SourceStatus::More);
        }
        self.emitted.store(true, Ordering::Release);
        if self.gate.load(Ordering::Acquire) {
            return Ok(SourceStatus::End);
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
        Ok(SourceStatus::More)
    }
}

#[derive(Clone)]
struct ProcessingTimers;

/// (key, delay) in; (key, 0, registration time) when registered, (key, 1, timer) when fired.
impl KeyedProcessFunction<u32, (u32, i64), (u32, u8, i64)> for ProcessingTimers {
    type State = ();
    fn process_element(
        &mut self,
        (k, delay): (u32, i64),
        ctx: &mut KeyedContext<u32, ()>,
        out: &mut Collector<(u32, u8, i64)>,
    ) -> Result<(), UserError> {
        let now = ctx.current_processing_time();
        ctx.register_processing_time_timer(now + delay);
        out.collect((k, 0, now + delay));
        Ok(())
    }
    fn on_timer(
        &mut self,
        time: i64,
        ctx: &mut KeyedContext<u32, ()>,
        out: &mut Collector<(u32, u8, i64)>,
    ) -> Result<(), UserError> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::ProcessingTime));
        assert!(ctx.current_processing_time() >= time);
        out.collect((*ctx.current_key(), 1, time));
        Ok(())
    }
}

/// Sends every record to a channel the test reads while the job runs.
struct ToChannel<X>(std::sync::mpsc::Sender<X>);

impl<X: Send + 'static> SinkFunction<X> for ToChannel<X> {
    fn write(&mut self, batch: &mut Vec<X>) -> Result<(), JobError> {
        for x in batch.drain(..) {
            let _ = self.0.send(x);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        Ok(())
    }
}

#[test]
fn processing_time_timers_fire_when_the_test_clock_passes_them() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0xc10c);
    let mut rng = SplitMix64::new(seed);
    let records: Vec<(u32, i64)> = (0..500)
        .map(|_| (rng.below(20) as u32, 1 + rng.below(1_000) as i64))
        .collect();
    let clock = ManualClock::new(1_000);
    let gate = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let job = {
        let (clock, gate, records) = (clock.clone(), gate.clone(), records.clone());
        std::thread::spawn(move || {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(2);
            env.config_mut().clock = ProcessingClock::Manual(clock);
            let tx = std::sync::Mutex::new(tx);
            env.add_source("gated", move |ctx| {
                Ok(Gated {
                    records: if ctx.runtime.shard == 0 {
                        records.clone()
                    } else {
                        Vec::new()
                    },
                    gate: gate.clone(),
                    emitted: Arc::default(),
                })
            })
            .key_by(|r: &(u32, i64)| r.0)
            .process(ProcessingTimers)
            .sink_to("channel", move |_| {
                Ok(ToChannel(tx.lock().unwrap().clone()))
            });
            env.execute("processing timers")
        })
    };
    let recv = || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the job stopped sending")
    };
    // Every record registered its timer at processing time 1000: none has fired, time stands.
    let mut registered: HashMap<u32, BTreeSet<i64>> = HashMap::new();
    for _ in 0..records.len() {
        let (k, what, t) = recv();
        assert_eq!(what, 0, "a timer fired before the clock moved");
        registered.entry(k).or_default().insert(t);
    }
    for (k, delay) in &records {
        assert!(registered[k].contains(&(1_000 + delay)));
    }
    // Move the clock in two steps; each step fires exactly the timers it passes, in order.
    let mut fired: HashMap<u32, Vec<i64>> = HashMap::new();
    for to in [1_500, 2_000] {
        clock.set_ms(to);
        let due: usize = registered
            .values()
            .map(|s| s.iter().filter(|&&t| t <= to && t > to - 500).count())
            .sum();
        for _ in 0..due {
            let (k, what, t) = recv();
            assert_eq!(what, 1);
            assert!(
                t <= to && t > to - 500,
                "timer {t} fired with the clock at {to}"
            );
            fired.entry(k).or_default().push(t);
        }
    }
    gate.store(true, Ordering::Release);
    job.join().unwrap().unwrap();
    assert!(rx.try_recv().is_err(), "a timer fired twice");
    for (k, set) in &registered {
        assert_eq!(fired[k], set.iter().copied().collect::<Vec<_>>(), "key {k}");
    }
}

/// Counts per key in 1 s windows of (key, timestamp) records, from a job whose shard 1 input is
/// silent: returns (windows fired before the gate opened, all windows).
/// (key, window start, records)
type Fired = Vec<(u32, i64, u64)>;

fn run_with_silent_shard(idleness: Option<Duration>) -> (Fired, Fired) {
    // Keys and times; the last record pushes event time well past the earlier windows.
    let records: Vec<(u32, i64)> = (0..3_000).map(|i| (i % 5, i as i64 * 10)).collect();
    let clock = ManualClock::new(0);
    let gate = Arc::new(AtomicBool::new(false));
    let emitted = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<(u32, i64, u64)>();
    let job = {
        let (clock, gate, emitted, records) = (
            clock.clone(),
            gate.clone(),
            emitted.clone(),
            records.clone(),
        );
        std::thread::spawn(move || {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(2);
            env.config_mut().clock = ProcessingClock::Manual(clock);
            let tx = std::sync::Mutex::new(tx);
            let mut strategy =
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(0))
                    .with_timestamp_assigner(|r: &(u32, i64)| r.1);
            if let Some(t) = idleness {
                strategy = strategy.with_idleness(t);
            }
            env.add_source("one-sided", move |ctx| {
                Ok(Gated {
                    records: if ctx.runtime.shard == 0 {
                        records.clone()
                    } else {
                        Vec::new()
                    },
                    gate: gate.clone(),
                    emitted: emitted.clone(),
                })
            })
            .assign_timestamps_and_watermarks(strategy)
            .key_by(|r: &(u32, i64)| r.0)
            .window(TumblingWindows::event_time(Duration::from_secs(1)))
            .process(
                |k: &u32,
                 ctx: &WindowContext<TimeWindow>,
                 rs: &[(u32, i64)],
                 out: &mut Collector<(u32, i64, u64)>| {
                    out.collect((*k, ctx.window.start, rs.len() as u64));
                    Ok(())
                },
            )
            .sink_to("channel", move |_| {
                Ok(ToChannel(tx.lock().unwrap().clone()))
            });
            env.execute("idleness")
        })
    };
    while !emitted.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Processing time passes well beyond the idleness timeout (if there is one).
    for t in 1..=20 {
        clock.set_ms(t * 100);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The windows of seconds 0..29 are complete (the watermark passed them); the last one,
    // [29 s, 30 s), holds the last record and closes only at the end of input.
    let complete = 29 * 5;
    let mut before = Vec::new();
    if idleness.is_some() {
        // Idle shard 1 no longer holds the watermark back: every complete window fires now.
        while before.len() < complete {
            before.push(
                rx.recv_timeout(Duration::from_secs(60))
                    .expect("windows fire"),
            );
        }
    } else {
        // Shard 1's watermark is still at the beginning of time: nothing may fire.
        std::thread::sleep(Duration::from_millis(200));
        while let Ok(w) = rx.try_recv() {
            before.push(w);
        }
    }
    gate.store(true, Ordering::Release);
    job.join().unwrap().unwrap();
    let mut all = before.clone();
    while let Ok(w) = rx.try_recv() {
        all.push(w);
    }
    before.sort();
    all.sort();
    (before, all)
}

#[test]
fn an_idle_input_holds_windows_back_unless_the_strategy_has_an_idleness_timeout() {
    let _cpus = shardflow_tests::shared_cpus();
    // The reference: 3,000 records 10 ms apart, keys round robin: per key and second, 20.
    let mut want: Vec<(u32, i64, u64)> = Vec::new();
    for s in 0..30i64 {
        for k in 0..5u32 {
            want.push((k, s * 1000, 20));
        }
    }
    want.sort();
    let complete: Vec<(u32, i64, u64)> = want.iter().copied().filter(|w| w.1 < 29_000).collect();
    let (before, all) = run_with_silent_shard(None);
    assert!(
        before.is_empty(),
        "windows fired without idleness: {before:?}"
    );
    assert_eq!(all, want, "at the end of input every window fires");

    let (before, all) = run_with_silent_shard(Some(Duration::from_millis(500)));
    assert_eq!(before, complete, "idle shard 1 did not stall the windows");
    assert_eq!(all, want);
}

#[test]
fn processing_time_windows_fire_when_the_test_clock_passes_their_end() {
    let _cpus = shardflow_tests::shared_cpus();
    let records: Vec<(u32, i64)> = (0..2_000).map(|i| (i % 7, i as i64)).collect();
    let clock = ManualClock::new(1_000);
    let gate = Arc::new(AtomicBool::new(false));
    let windowed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<(u32, i64, u64)>();
    let job = {
        let (clock, gate, records, windowed) = (
            clock.clone(),
            gate.clone(),
            records.clone(),
            windowed.clone(),
        );
        std::thread::spawn(move || {
            let mut env = StreamExecutionEnvironment::local();
            env.set_parallelism(2);
            env.config_mut().clock = ProcessingClock::Manual(clock);
            env.config_mut().progress_interval = Duration::from_millis(5);
            env.on_progress(move |m, _| {
                let n = m
                    .operators
                    .iter()
                    .filter(|o| o.name.starts_with("window"))
                    .map(|o| o.records_in)
                    .sum();
                windowed.store(n, Ordering::Release);
            });
            let tx = std::sync::Mutex::new(tx);
            env.add_source("gated", move |ctx| {
                Ok(Gated {
                    records: if ctx.runtime.shard == 0 {
                        records.clone()
                    } else {
                        Vec::new()
                    },
                    gate: gate.clone(),
                    emitted: Arc::default(),
                })
            })
            .key_by(|r: &(u32, i64)| r.0)
            .window(TumblingWindows::processing_time(Duration::from_secs(1)))
            .process(
                |k: &u32,
                 ctx: &WindowContext<TimeWindow>,
                 rs: &[(u32, i64)],
                 out: &mut Collector<(u32, i64, u64)>| {
                    out.collect((*k, ctx.window.start, rs.len() as u64));
                    Ok(())
                },
            )
            .sink_to("channel", move |_| {
                Ok(ToChannel(tx.lock().unwrap().clone()))
            });
            env.execute("processing-time windows")
        })
    };
    // Every record reaches its window while the clock stands at 1000 ms: window [1 s, 2 s).
    while windowed.load(Ordering::Acquire) < records.len() as u64 {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "a window fired before its end");
    clock.set_ms(2_000);
    let mut got: Vec<(u32, i64, u64)> = (0..7)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the windows fire")
        })
        .collect();
    got.sort();
    let want: Vec<(u32, i64, u64)> = (0..7u32)
        .map(|k| (k, 1_000, (0..2_000).filter(|i| i % 7 == k).count() as u64))
        .collect();
    assert_eq!(got, want);
    gate.store(true, Ordering::Release);
    job.join().unwrap().unwrap();
    assert!(rx.try_recv().is_err(), "a window fired twice");
}

#[test]
fn processing_time_windows_still_open_fire_when_a_bounded_input_ends() {
    let _cpus = shardflow_tests::shared_cpus();
    let records: Vec<(u32, i64)> = (0..3_000).map(|i| (i % 9, i as i64)).collect();
    for p in [1, 2] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        // Processing time stands still at 5 s: no window ever closes by the clock.
        env.config_mut().clock = ProcessingClock::Manual(ManualClock::new(5_000));
        let out = env
            .from_iter(records.clone())
            .key_by(|r: &(u32, i64)| r.0)
            .window(TumblingWindows::processing_time(Duration::from_secs(1)))
            .process(
                |k: &u32,
                 ctx: &WindowContext<TimeWindow>,
                 rs: &[(u32, i64)],
                 out: &mut Collector<(u32, i64, u64)>| {
                    out.collect((*k, ctx.window.start, rs.len() as u64));
                    Ok(())
                },
            )
            .collect();
        env.execute("processing-time windows at the end").unwrap();
        let mut got = out.take();
        got.sort();
        let want: Vec<(u32, i64, u64)> = (0..9u32)
            .map(|k| (k, 5_000, (0..3_000).filter(|i| i % 9 == k).count() as u64))
            .collect();
        assert_eq!(got, want, "P={p}");
    }
}
