//! Keyed state on one shard: `ValueState` read-modify-writes (a counter per key) over random
//! keys, beside a hand-written hash map doing the same, in cache and with a memory budget a
//! tenth of the state (every value then most likely comes back from the store).

use std::time::Instant;

use hashbrown::HashMap;
use shardflow_core::key::KeyedMapHasher;
use shardflow_core::rng::SplitMix64;
use shardflow_core::state::{KeyedStateHarness, StateBackend, ValueStateDescriptor};
use shardflow_core::time::ProcessingClock;

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyedStateRun {
    /// Read-modify-writes per second: the hand loop, the state in cache, the state paging.
    pub loop_per_s: f64,
    pub cached_per_s: f64,
    pub paging_per_s: f64,
    /// With the budget: values read back from the store per second, and written to it.
    pub store_reads_per_s: f64,
    pub store_writes_per_s: f64,
    /// With the budget, reads only (`value()` of random keys after the writes): point gets
    /// per second through the cache, nearly all from mapped sealed segments.
    pub paged_reads_per_s: f64,
}

/// `ops` increments over `keys` keys drawn at random (the same sequence for all three).
/// What to measure (all, or one part for profiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    All,
    Loop,
    Cached,
    Paging,
}

pub fn run(keys: u64, ops: u64, seed: u64, part: Part) -> std::io::Result<KeyedStateRun> {
    let mut rng = SplitMix64::new(seed);
    let seq: Vec<u64> = (0..ops).map(|_| rng.below(keys)).collect();
    let mut r = KeyedStateRun::default();

    // The hand loop: a map from key to count, with the engine's hasher.
    let mut map: HashMap<u64, u64, KeyedMapHasher> = HashMap::default();
    let t = Instant::now();
    for k in &seq {
        *map.entry(*k).or_insert(0) += 1;
    }
    r.loop_per_s = ops as f64 / t.elapsed().as_secs_f64();
    let want: u64 = map.values().sum();
    drop(map);
    let runs = |p: Part| part == Part::All || part == p;
    if !runs(Part::Cached) && !runs(Part::Paging) {
        return Ok(r);
    }

    // Warm: every key's value made before the clock starts (the loop above pays for its
    // inserts; so does this one, in the timed pass, as the first touch of each key).
    if runs(Part::Cached) {
        let (cached, _) = engine(
            &seq,
            StateBackend::in_memory(),
            &mut r.cached_per_s,
            &mut 0.0,
        )?;
        assert_eq!(cached, want);
    }
    if !runs(Part::Paging) {
        return Ok(r);
    }

    let dir = tempfile::tempdir()?;
    // The state: a million entries of ~40 bytes cached; a tenth of it.
    let budget = (keys as usize * 40) / 10;
    let backend = StateBackend::new(
        dir.path().to_path_buf(),
        budget,
        0,
        shardflow_core::key::MAX_PARALLELISM_DEFAULT,
        ProcessingClock::System,
    );
    let (paged, (writes, reads)) =
        engine(&seq, backend, &mut r.paging_per_s, &mut r.paged_reads_per_s)?;
    assert_eq!(paged, want);
    let secs = ops as f64 / r.paging_per_s;
    r.store_reads_per_s = reads as f64 / secs;
    r.store_writes_per_s = writes as f64 / secs;
    Ok(r)
}

/// The counters through a `ValueState`; returns the sum of all counts and the store traffic
/// of the read-modify-writes. Then reads every count back in random order (`reads_per_s`).
fn engine(
    seq: &[u64],
    backend: StateBackend,
    per_s: &mut f64,
    reads_per_s: &mut f64,
) -> std::io::Result<(u64, (u64, u64))> {
    let mut h: KeyedStateHarness<u64> = KeyedStateHarness::new(&backend, ProcessingClock::System);
    let count = h
        .open(|o| o.value_state(ValueStateDescriptor::<u64>::new("count")))
        .map_err(std::io::Error::other)?;
    let t = Instant::now();
    for k in seq {
        h.with_key(k, |ctx| *count.get_or_insert_with(ctx, || 0) += 1);
    }
    *per_s = seq.len() as f64 / t.elapsed().as_secs_f64();
    backend.check().map_err(std::io::Error::other)?;
    let traffic = h.store_traffic();
    // Every key once, in a random order (the sequence's first touches).
    let mut seen = hashbrown::HashSet::<u64, KeyedMapHasher>::default();
    let keys: Vec<u64> = seq.iter().copied().filter(|k| seen.insert(*k)).collect();
    drop(seen);
    let mut sum = 0;
    let t = Instant::now();
    for k in &keys {
        sum += h.with_key(k, |ctx| count.value(ctx).copied().unwrap_or(0));
    }
    *reads_per_s = keys.len() as f64 / t.elapsed().as_secs_f64();
    backend.check().map_err(std::io::Error::other)?;
    Ok((sum, traffic))
}
