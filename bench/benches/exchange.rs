//! Criterion benches of the exchange: records/s between two pinned shards through the whole
//! engine (16- and 128-byte records), the one-way latency of a lone record, and the mechanisms
//! underneath (SPSC queue, frames with crc, rkyv batches).
//!
//! `cargo bench -p shardflow-bench --bench exchange`. The harness binary
//! (`shardflow-bench exchange|latency`) reports the same workloads beside their bare baselines
//! and with hdrhistogram percentiles.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rkyv::util::AlignedVec;
use shardflow::SchedulingMode;
use shardflow_bench::exchange::{self, BenchRecord, Rec16, Rec128};
use shardflow_core::data::{archive_batch, unarchive_batch};
use shardflow_shuffle::frame::{Checksum, FrameKind, FrameReader, write_frame};
use shardflow_shuffle::spsc;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("exchange");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let n = 4_000_000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("engine_16B_records", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| exchange::engine_exchange::<Rec16>(n, SchedulingMode::Throughput))
                .sum()
        })
    });
    g.bench_function("bare_handoff_16B_records", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| exchange::bare_handoff::<Rec16>(n, 2048))
                .sum()
        })
    });
    let n = 1_000_000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("engine_128B_records", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| exchange::engine_exchange::<Rec128>(n, SchedulingMode::Throughput))
                .sum()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lone_record");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    // The mean one-way latency (criterion averages); p50/p99 come from `shardflow-bench latency`.
    g.bench_function("one_way_latency_mode", |b| {
        b.iter_custom(|iters| {
            let h = exchange::lone_record_latency(
                iters,
                100,
                Duration::from_micros(20),
                SchedulingMode::Latency,
                Duration::from_millis(100),
            );
            Duration::from_nanos((h.mean() * iters as f64) as u64)
        })
    });
    g.finish();
}

fn mechanisms(c: &mut Criterion) {
    let mut g = c.benchmark_group("mechanisms");
    g.throughput(Throughput::Elements(1));
    let (tx, rx) = spsc::queue::<u64>(64);
    g.bench_function("spsc_push_pop", |b| {
        b.iter(|| {
            tx.push(black_box(7)).unwrap();
            black_box(rx.pop())
        })
    });

    let payload = vec![0xa5u8; 32 << 10];
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut buf = AlignedVec::<16>::with_capacity(40 << 10);
    g.bench_function("frame_32KiB_write_and_check_crc", |b| {
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, FrameKind::Data, 1, &payload, Checksum::Compute).unwrap();
            let f = FrameReader::new(&buf, 1).next().unwrap().unwrap();
            black_box(f.payload.len())
        })
    });

    let records: Vec<Rec16> = (0..2048).map(|i| Rec16::make(1, i)).collect();
    g.throughput(Throughput::Elements(records.len() as u64));
    let mut buf = Some(AlignedVec::<16>::with_capacity(40 << 10));
    g.bench_function("archive_2048_16B_records", |b| {
        b.iter(|| {
            let mut v = buf.take().unwrap();
            v.clear();
            let v = archive_batch(black_box(&records), v).unwrap();
            black_box(v.len());
            buf = Some(v);
        })
    });
    let archived = archive_batch(&records, AlignedVec::new()).unwrap();
    let mut out: Vec<Rec16> = Vec::with_capacity(2048);
    g.bench_function("unarchive_2048_16B_records_trusted", |b| {
        b.iter(|| {
            out.clear();
            unarchive_batch(black_box(&archived), true, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.bench_function("unarchive_2048_16B_records_checked", |b| {
        b.iter(|| {
            out.clear();
            unarchive_batch(black_box(&archived), false, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, mechanisms, engine);
criterion_main!(benches);
