//! Keyed timers on one shard: a timer per key at a time of its own, registered in random order
//! and then all fired, beside a hand-written binary heap (which neither deduplicates nor deletes:
//! a lower bound), with the engine's queue in memory, in the store with no budget (only the
//! counting), and in the store with a budget a tenth of what the timers take in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use shardflow_core::keyed::TimerQueue;
use shardflow_core::rng::SplitMix64;
use shardflow_core::state::StateBackend;
use shardflow_core::time::ProcessingClock;

/// Timers per second (registered and fired), for each variant.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimersRun {
    pub heap_per_s: f64,
    pub memory_per_s: f64,
    pub counted_per_s: f64,
    pub budget_per_s: f64,
    /// With the budget: blocks (of about a thousand timer records) written to the store.
    pub blocks_written: u64,
}

pub fn run(timers: u64, seed: u64) -> std::io::Result<TimersRun> {
    let mut rng = SplitMix64::new(seed);
    // Key i's timer at a time of its own, 1 ms apart, registered in random order.
    let mut order: Vec<u64> = (0..timers).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let at = |k: u64| 1_000_000 + k as i64;
    let mut r = TimersRun::default();

    let t = Instant::now();
    let mut heap = BinaryHeap::with_capacity(order.len());
    for (seq, &k) in order.iter().enumerate() {
        heap.push(Reverse((at(k), seq, k)));
    }
    let mut check = 0u64;
    while let Some(Reverse((_, _, k))) = heap.pop() {
        check = check.wrapping_mul(31).wrapping_add(k);
    }
    r.heap_per_s = timers as f64 / t.elapsed().as_secs_f64();
    drop(heap);

    let queue = |q: TimerQueue<u64, ()>| -> std::io::Result<f64> {
        let mut q = q;
        let t = Instant::now();
        for &k in &order {
            q.register(at(k), &k, &());
        }
        let mut sum = 0u64;
        while let Some((_, k, ())) = q.pop_due(i64::MAX) {
            sum = sum.wrapping_mul(31).wrapping_add(k);
        }
        let per_s = timers as f64 / t.elapsed().as_secs_f64();
        if sum != check {
            return Err(std::io::Error::other("timers fired out of order"));
        }
        Ok(per_s)
    };
    r.memory_per_s = queue(TimerQueue::default())?;

    let dir = tempfile::tempdir()?;
    let backend = |budget: usize| {
        StateBackend::new(
            dir.path().join(format!("b{budget}")),
            budget,
            0,
            shardflow_core::key::MAX_PARALLELISM_DEFAULT,
            ProcessingClock::System,
        )
    };
    let unlimited = backend(usize::MAX);
    let q = TimerQueue::default()
        .in_store(&unlimited, "t".into())
        .map_err(std::io::Error::other)?;
    r.counted_per_s = queue(q)?;

    // A timer at a time of its own takes ~130 bytes in memory (its slot and its time's run).
    let limited = backend(timers as usize * 13);
    let q = TimerQueue::default()
        .in_store(&limited, "t".into())
        .map_err(std::io::Error::other)?;
    r.budget_per_s = queue(q)?;
    limited.check().map_err(std::io::Error::other)?;
    r.blocks_written = limited.spill_counts().0;
    Ok(r)
}
