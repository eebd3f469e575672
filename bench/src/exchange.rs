//! The in-process exchange: records/s between two pinned shards, and the one-way latency of a
//! lone record.
//!
//! The engine workload is a whole job at P = 2: shard 0's source emits `n` records, all keyed to
//! shard 1, through a `key_by` exchange into a counting sink. It pays everything a job pays:
//! routing, staging, rkyv archiving, framing, the ring, credits, deserializing, the sink.
//!
//! The baseline is the bare mechanism: two pinned glommio executors, rkyv batches of the same
//! records handed over through an SPSC queue of buffers and read in place on the other side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use rkyv::{Archive, Deserialize, Serialize};
use shardflow::prelude::*;
use shardflow_core::key::{key_group, shard_of_key_group};
use shardflow_core::operator::sink::SinkFunction;
use shardflow_core::source::{Source, SourceStatus};

/// A 16-byte record.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct Rec16 {
    pub key: u64,
    pub value: u64,
}

/// A 128-byte record.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct Rec128 {
    pub key: u64,
    pub value: u64,
    pub payload: [u64; 14],
}

/// A record the exchange benchmarks can make and check.
pub trait BenchRecord: Data + Copy + Sync {
    fn make(key: u64, i: u64) -> Self;
    fn value(&self) -> u64;
    fn key(&self) -> u64;
}

impl BenchRecord for Rec16 {
    #[inline]
    fn make(key: u64, i: u64) -> Self {
        Rec16 { key, value: i }
    }
    #[inline]
    fn value(&self) -> u64 {
        self.value
    }
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

impl BenchRecord for Rec128 {
    #[inline]
    fn make(key: u64, i: u64) -> Self {
        Rec128 {
            key,
            value: i,
            payload: [i; 14],
        }
    }
    #[inline]
    fn value(&self) -> u64 {
        self.value
    }
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

/// A key whose group shard 1 of 2 owns.
pub fn key_for_shard_1(max_parallelism: u32) -> u64 {
    (0..)
        .find(|k| shard_of_key_group(key_group(k, max_parallelism), max_parallelism, 2) == 1)
        .unwrap()
}

struct CountingSource<R> {
    key: u64,
    next: u64,
    end: u64,
    _r: std::marker::PhantomData<R>,
}

impl<R: BenchRecord> Source<R> for CountingSource<R> {
    async fn next_batch(
        &mut self,
        out: &mut Vec<R>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        let upto = (self.next + max_records as u64).min(self.end);
        out.extend((self.next..upto).map(|i| R::make(self.key, i)));
        self.next = upto;
        Ok(if upto == self.end {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }
}

struct CountingSink {
    count: u64,
    sum: u64,
    total: Arc<(AtomicU64, AtomicU64)>,
}

impl<R: BenchRecord> SinkFunction<R> for CountingSink {
    fn write(&mut self, batch: &mut Vec<R>) -> Result<(), JobError> {
        self.count += batch.len() as u64;
        self.sum = batch
            .iter()
            .fold(self.sum, |s, r| s.wrapping_add(r.value()));
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.total.0.fetch_add(self.count, Ordering::Relaxed);
        self.total.1.fetch_add(self.sum, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs the engine's exchange workload: `n` records from shard 0 to shard 1. Returns the job's
/// wall time (executor start to last record counted) and checks every record arrived.
pub fn engine_exchange<R: BenchRecord>(n: u64, scheduling: SchedulingMode) -> Duration {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2).set_scheduling_mode(scheduling);
    env.set_flush_policy(FlushPolicy::WhenFull);
    env.config_mut().source_batch_records = 4096;
    let key = key_for_shard_1(env.config().max_parallelism);
    let total = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let t = total.clone();
    env.add_source::<R, _, _>("records", move |ctx| {
        Ok(CountingSource::<R> {
            key,
            next: 0,
            end: if ctx.runtime.shard == 0 { n } else { 0 },
            _r: std::marker::PhantomData,
        })
    })
    .key_by(|r: &R| r.key())
    .process_by_shard(PassThrough)
    .sink_to("count", move |_| {
        Ok(CountingSink {
            count: 0,
            sum: 0,
            total: t.clone(),
        })
    });
    let result = env.execute("exchange").expect("exchange job");
    assert_eq!(total.0.load(Ordering::Relaxed), n, "every record arrived");
    assert_eq!(
        total.1.load(Ordering::Relaxed),
        n * n.saturating_sub(1) / 2,
        "every value intact"
    );
    result.elapsed
}

/// The keyed operator of the exchange job: hands records on unchanged.
#[derive(Clone)]
pub struct PassThrough;

impl<R: BenchRecord> ProcessFunction<R, R> for PassThrough {
    fn process_element(
        &mut self,
        r: R,
        _ctx: &RuntimeContext,
        out: &mut Collector<R>,
    ) -> Result<(), UserError> {
        out.collect(r);
        Ok(())
    }
}

/// The baseline: rkyv batches of `batch_records` records between two executors pinned to CPUs
/// 0 and 1 over a bare SPSC queue of buffers, read in place (each record's value summed).
pub fn bare_handoff<R: BenchRecord>(n: u64, batch_records: usize) -> Duration
where
    R::Archived: ArchivedValue,
{
    use rkyv::util::AlignedVec;
    use shardflow_shuffle::spsc;
    let (full_tx, full_rx) = spsc::queue::<AlignedVec<16>>(8);
    let (free_tx, free_rx) = spsc::queue::<AlignedVec<16>>(8);
    for _ in 0..8 {
        let _ = free_tx.push(AlignedVec::with_capacity(
            batch_records * std::mem::size_of::<R>() + 64,
        ));
    }
    let start = Arc::new(std::sync::Barrier::new(2));
    let s2 = start.clone();
    let sender = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn(move || async move {
            s2.wait();
            let mut staged: Vec<R> = Vec::with_capacity(batch_records);
            let mut i = 0;
            while i < n {
                let upto = (i + batch_records as u64).min(n);
                staged.clear();
                staged.extend((i..upto).map(|j| R::make(1, j)));
                i = upto;
                let mut buf = loop {
                    if let Some(b) = free_rx.pop() {
                        break b;
                    }
                    std::hint::spin_loop();
                };
                buf.clear();
                let buf =
                    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&staged, buf).unwrap();
                let _ = full_tx.push(buf);
            }
            let _ = full_tx.push(AlignedVec::new()); // end
        })
        .unwrap();
    let receiver = LocalExecutorBuilder::new(Placement::Fixed(1))
        .spawn(move || async move {
            start.wait();
            let t0 = Instant::now();
            let mut sum = 0u64;
            let mut count = 0u64;
            loop {
                let Some(buf) = full_rx.pop() else {
                    std::hint::spin_loop();
                    continue;
                };
                if buf.is_empty() {
                    break;
                }
                // SAFETY: written by to_bytes_in of a Vec<R> just above, in this process.
                let batch =
                    unsafe { rkyv::access_unchecked::<rkyv::vec::ArchivedVec<R::Archived>>(&buf) };
                for r in batch.iter() {
                    sum = sum.wrapping_add(r.value());
                }
                count += batch.len() as u64;
                let _ = free_tx.push(buf);
            }
            assert_eq!(count, n);
            std::hint::black_box(sum);
            t0.elapsed()
        })
        .unwrap();
    sender.join().unwrap();
    receiver.join().unwrap()
}

/// Reads the value of an archived bench record in place.
pub trait ArchivedValue {
    fn value(&self) -> u64;
}

impl ArchivedValue for ArchivedRec16 {
    #[inline]
    fn value(&self) -> u64 {
        self.value.to_native()
    }
}

impl ArchivedValue for ArchivedRec128 {
    #[inline]
    fn value(&self) -> u64 {
        self.value.to_native()
    }
}

/// One-way latency of lone records from shard 0 to shard 1, in nanoseconds: shard 0 emits one
/// record every `gap`, stamped with the time since a shared epoch; shard 1 takes the difference
/// on arrival. Returns the histogram of `n` records (after `warmup` discarded ones).
pub fn lone_record_latency(
    n: u64,
    warmup: u64,
    gap: Duration,
    scheduling: SchedulingMode,
    io_poll_interval: Duration,
) -> hdrhistogram::Histogram<u64> {
    let epoch = Instant::now();
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2).set_scheduling_mode(scheduling);
    env.config_mut().latency_io_poll_interval = io_poll_interval;
    let key = key_for_shard_1(env.config().max_parallelism);
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).unwrap(),
    ));
    let h = hist.clone();
    let total = n + warmup;
    env.add_source::<Rec16, _, _>("stamps", move |ctx| {
        Ok(StampSource {
            key,
            left: if ctx.runtime.shard == 0 { total } else { 0 },
            epoch,
            gap,
        })
    })
    .key_by(|r: &Rec16| r.key)
    .process_by_shard(PassThrough)
    .sink_to("latency", move |_| {
        Ok(LatencySink {
            epoch,
            seen: 0,
            warmup,
            hist: hdrhistogram::Histogram::new(3).unwrap(),
            out: h.clone(),
        })
    });
    env.execute("latency").expect("latency job");
    let h = hist.lock().unwrap().clone();
    assert_eq!(h.len(), n);
    h
}

struct StampSource {
    key: u64,
    left: u64,
    epoch: Instant,
    gap: Duration,
}

impl Source<Rec16> for StampSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<Rec16>,
        _max: usize,
    ) -> Result<SourceStatus, JobError> {
        if self.left == 0 {
            return Ok(SourceStatus::End);
        }
        // Wait (cooperatively) so that each record is alone: the engine flushes while we wait.
        let until = Instant::now() + self.gap;
        while Instant::now() < until {
            futures_lite::future::yield_now().await;
        }
        self.left -= 1;
        out.push(Rec16 {
            key: self.key,
            value: self.epoch.elapsed().as_nanos() as u64,
        });
        Ok(SourceStatus::More)
    }
}

struct LatencySink {
    epoch: Instant,
    seen: u64,
    warmup: u64,
    hist: hdrhistogram::Histogram<u64>,
    out: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
}

impl SinkFunction<Rec16> for LatencySink {
    fn write(&mut self, batch: &mut Vec<Rec16>) -> Result<(), JobError> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        for r in batch.drain(..) {
            self.seen += 1;
            if self.seen > self.warmup {
                self.hist
                    .record(now.saturating_sub(r.value).max(1))
                    .unwrap();
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.out.lock().unwrap().add(&self.hist).unwrap();
        Ok(())
    }
}
