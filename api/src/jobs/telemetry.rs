//! Telemetry: sensor readings, out of order, in per-sensor tumbling event-time windows of
//! count, sum and max.
//!
//! ```text
//! readings ─timestamps (bounded out-of-orderness)─▶ key_by(sensor) ─window(tumbling)─▶ count/sum/max ─▶ sink
//! ```
//!
//! The readings are generated: reading `i` has event time `start + i / rate` (milliseconds),
//! pulled back by up to `disorder_ms`, a sensor drawn uniformly from `sensors`, and a value.
//! Every field is a pure function of the seed and `i`, so any shard can generate any share of
//! the stream, and a run is the same at every parallelism.

use shardflow_core::rng::mix64;
use std::time::Duration;

use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::time::WatermarkStrategy;
use shardflow_core::window::{AggregateFunction, TimeWindow, TumblingWindows, WindowContext};
use shardflow_core::{Data, JobError};

use crate::env::StreamExecutionEnvironment;
use crate::stream::DataStream;
use shardflow_core::operator::Collector;
use shardflow_core::operator::process::UserError;

/// One reading of one sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reading {
    pub sensor: u32,
    /// Event time, milliseconds since the Unix epoch.
    pub ts: i64,
    pub value: i64,
}

/// One window of one sensor.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct WindowStats {
    pub sensor: u32,
    pub window_start: i64,
    pub window_end: i64,
    pub count: u64,
    pub sum: i64,
    pub max: i64,
}

/// How the readings are generated and windowed.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub readings: u64,
    pub sensors: u32,
    /// Readings per second of event time.
    pub rate: u64,
    /// How far back a reading's time may be pulled (its disorder).
    pub disorder_ms: u64,
    /// The watermark's bound: readings at most this much out of order are never late.
    pub out_of_orderness_ms: u64,
    pub window_ms: u64,
    pub seed: u64,
    /// Pace the readings in real time at `rate` (a live feed) instead of as fast as possible.
    pub paced: bool,
    /// Pre-aggregate per shard before the exchange (two-phase aggregation); else every reading
    /// crosses to the shard that owns its sensor.
    pub two_phase: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            readings: 10_000_000,
            sensors: 10_000,
            rate: 1_000_000,
            disorder_ms: 50,
            out_of_orderness_ms: 100,
            window_ms: 1_000,
            seed: 42,
            paced: false,
            two_phase: true,
        }
    }
}

/// The start of event time of the generated readings (2026-01-01T00:00:00Z).
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// Reading `i` of the stream.
#[inline]
pub fn reading(s: &TelemetrySettings, i: u64) -> Reading {
    let r = mix64(s.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let base = EPOCH_MS + (i as u128 * 1000 / s.rate as u128) as i64;
    let back = ((r >> 32) % (s.disorder_ms + 1)) as i64;
    Reading {
        sensor: ((r & 0xffff_ffff) % s.sensors as u64) as u32,
        ts: base - back,
        value: ((r >> 48) % 1000) as i64,
    }
}

/// Readings per block dealt to the shards (about a millisecond of event time at the default
/// rate): every shard generates readings of the same moment, as a feed's partitions do.
pub const READINGS_PER_BLOCK: u64 = 1_024;

/// One shard's share of the generated readings: blocks of reading indices dealt round robin.
pub struct ReadingSource {
    settings: TelemetrySettings,
    blocks: crate::source::DealtBlocks,
    started: std::time::Instant,
}

impl ReadingSource {
    pub fn new(settings: TelemetrySettings, shard: u32, parallelism: u32) -> Self {
        Self {
            blocks: crate::source::DealtBlocks::new(
                settings.readings,
                READINGS_PER_BLOCK,
                shard,
                parallelism,
            ),
            settings,
            started: std::time::Instant::now(),
        }
    }
}

impl Source<Reading> for ReadingSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Reading>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let mut room = max_records.max(1) as u64;
        while room > 0 {
            let Some(next) = self.blocks.front() else {
                break;
            };
            let mut max = room;
            if self.settings.paced {
                // Emit no reading before its time: reading i is due i / rate seconds in.
                let elapsed = self.started.elapsed().as_secs_f64();
                let due = (elapsed * self.settings.rate as f64) as u64;
                if due <= next {
                    if out.is_empty() {
                        glommio::timer::sleep(Duration::from_micros(500)).await;
                    }
                    break;
                }
                max = max.min(due - next);
            }
            let Some(r) = self.blocks.take(max) else {
                break;
            };
            room -= r.end - r.start;
            out.extend(r.map(|i| reading(&self.settings, i)));
        }
        Ok(self.blocks.status())
    }

    /// A checkpoint records the blocks left; a restore goes on with them (paced: as if the
    /// readings before them had been sent on time). After a rescale a shard takes the shares
    /// of the earlier shards dealt to it.
    fn initialize_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        self.blocks.restore(state, "reading-blocks")?;
        if state.is_restored()
            && let Some(next) = self.blocks.front()
        {
            let ahead = Duration::from_secs_f64(next as f64 / self.settings.rate.max(1) as f64);
            self.started = std::time::Instant::now()
                .checked_sub(ahead)
                .unwrap_or(self.started);
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        self.blocks.save(state, "reading-blocks")
    }
}

/// The readings, generated on every shard.
pub fn readings(
    env: &StreamExecutionEnvironment,
    settings: &TelemetrySettings,
) -> DataStream<Reading> {
    let s = settings.clone();
    env.add_source("readings", move |ctx| {
        Ok(ReadingSource::new(
            s.clone(),
            ctx.runtime.shard,
            ctx.runtime.parallelism,
        ))
    })
}

/// Count, sum and max of a window's readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountSumMax;

impl AggregateFunction<Reading> for CountSumMax {
    type Acc = (u64, i64, i64);
    type Out = (u64, i64, i64);
    #[inline]
    fn create_accumulator(&self) -> Self::Acc {
        (0, 0, i64::MIN)
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, r: Reading) {
        acc.0 += 1;
        acc.1 += r.value;
        acc.2 = acc.2.max(r.value);
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

fn stats(
    sensor: &u32,
    ctx: &WindowContext<TimeWindow>,
    results: &[(u64, i64, i64)],
    out: &mut Collector<WindowStats>,
) -> Result<(), UserError> {
    for &(count, sum, max) in results {
        out.collect(WindowStats {
            sensor: *sensor,
            window_start: ctx.window.start,
            window_end: ctx.window.end,
            count,
            sum,
            max,
        });
    }
    Ok(())
}

/// The job's dataflow: a [`WindowStats`] per sensor and window.
pub fn window_stats(
    readings: &DataStream<Reading>,
    settings: &TelemetrySettings,
) -> DataStream<WindowStats> {
    let windows = readings
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(
                settings.out_of_orderness_ms,
            ))
            .with_timestamp_assigner(|r: &Reading| r.ts)
            // A shard's readings keep within a window of the others': as fast as the readings
            // come, a shard running ahead would have its windows held open downstream until
            // the slowest caught up (and written into every checkpoint meanwhile).
            .with_watermark_alignment("readings", Duration::from_millis(settings.window_ms.max(1))),
        )
        .key_by(|r: &Reading| r.sensor)
        .window(TumblingWindows::event_time(Duration::from_millis(
            settings.window_ms,
        )));
    if settings.two_phase {
        windows.aggregate_two_phase_with(CountSumMax, stats)
    } else {
        windows.aggregate_with(CountSumMax, stats)
    }
    .name("window count/sum/max")
}

/// The same windows by a plain single-threaded loop over the same readings: the reference of
/// tests and the baseline of the benchmark. Returns every window, in no particular order.
pub fn window_stats_loop(settings: &TelemetrySettings, mut emit: impl FnMut(WindowStats)) {
    use std::collections::HashMap;
    let size = settings.window_ms as i64;
    let bound = settings.out_of_orderness_ms as i64;
    // Open windows by start: a handful at a time, oldest first.
    // (The same fast hasher as the engine's keyed state.)
    type Accs = HashMap<u32, (u64, i64, i64), shardflow_core::key::KeyedMapHasher>;
    let mut open: std::collections::VecDeque<(i64, Accs)> = std::collections::VecDeque::new();
    let mut max_ts = i64::MIN;
    // The window of the last reading: the next one is usually in it too (found without a
    // division, as the engine finds it).
    let mut last_start = i64::MIN;
    for i in 0..settings.readings {
        let r = reading(settings, i);
        let start = if last_start <= r.ts && r.ts < last_start.saturating_add(size) {
            last_start
        } else {
            last_start = r.ts - r.ts.rem_euclid(size);
            last_start
        };
        let slot = match open.iter().position(|w| w.0 == start) {
            Some(p) => p,
            None => {
                let p = open.partition_point(|w| w.0 < start);
                open.insert(p, (start, Accs::default()));
                p
            }
        };
        let acc = open[slot].1.entry(r.sensor).or_insert((0, 0, i64::MIN));
        acc.0 += 1;
        acc.1 += r.value;
        acc.2 = acc.2.max(r.value);
        if r.ts > max_ts {
            max_ts = r.ts;
            let watermark = max_ts - bound - 1;
            while open.front().is_some_and(|w| w.0 + size - 1 <= watermark) {
                let (start, w) = open.pop_front().expect("checked");
                for (sensor, (count, sum, max)) in w {
                    emit(WindowStats {
                        sensor,
                        window_start: start,
                        window_end: start + size,
                        count,
                        sum,
                        max,
                    });
                }
            }
        }
    }
    for (start, w) in open {
        for (sensor, (count, sum, max)) in w {
            emit(WindowStats {
                sensor,
                window_start: start,
                window_end: start + size,
                count,
                sum,
                max,
            });
        }
    }
}

/// An order-independent digest of windows (to compare two runs without sorting them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub windows: u64,
    pub readings: u64,
    pub xor: u64,
}

impl Digest {
    pub fn add(&mut self, w: &WindowStats) {
        self.windows += 1;
        self.readings += w.count;
        self.xor ^= mix64(
            mix64(w.sensor as u64 ^ ((w.window_start as u64) << 20))
                ^ mix64(w.count ^ (w.sum as u64).rotate_left(17) ^ (w.max as u64).rotate_left(41)),
        );
    }

    pub fn merge(&mut self, o: &Digest) {
        self.windows += o.windows;
        self.readings += o.readings;
        self.xor ^= o.xor;
    }
}

/// Compile-time check that the job's records are records.
const _: fn() = || {
    fn data<T: Data>() {}
    data::<Reading>();
    data::<WindowStats>();
};
