//! Helpers shared by shardflow's end-to-end tests: seeds, and slow, obviously correct references.

use std::collections::HashMap;

use shardflow::datagen::ZipfText;
use shardflow::jobs::wordcount::{normalize, tokens};

pub mod exactly_once;

/// The seed of a randomized test: `SHARDFLOW_SEED` if set (to replay a failure), else `default`.
/// Printed, so that a failing run names the seed that replays it.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("SHARDFLOW_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed = {s} (replay with SHARDFLOW_SEED={s})");
    s
}

/// Word counts of `lines` by a plain loop.
pub fn reference_word_counts<'a>(lines: impl IntoIterator<Item = &'a str>) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for line in lines {
        for w in tokens(line) {
            *counts.entry(normalize(w).to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Lines `0..n` of the standard generated text with `seed`.
pub fn generated_lines(n: u64, seed: u64) -> Vec<String> {
    let text = ZipfText::standard(seed);
    (0..n)
        .map(|j| {
            let mut s = String::new();
            text.line(j, &mut s);
            s
        })
        .collect()
}

/// Pairs into a map, failing on a duplicate key (a key emitted twice is a bug of its own).
pub fn into_map<K: ToString>(pairs: Vec<(K, u64)>) -> HashMap<String, u64> {
    let mut m = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let k = k.to_string();
        assert!(m.insert(k.clone(), v).is_none(), "key {k:?} emitted twice");
    }
    m
}

/// Jobs in latency scheduling busy-poll their cores. On this 2-core machine, a latency-mode job
/// running beside another test's shards on the same cores was seen to hang about once in a
/// hundred runs (glommio parks an executor that still has runnable work; see the runtime). Tests
/// of one binary therefore share the CPUs (`shared_cpus`) except latency-mode ones, which take
/// them alone (`exclusive_cpus`).
static CPUS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn shared_cpus() -> std::sync::RwLockReadGuard<'static, ()> {
    CPUS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive_cpus() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPUS.write().unwrap_or_else(|e| e.into_inner())
}
