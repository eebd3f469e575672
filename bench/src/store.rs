//! The state store alone: point puts and gets (16-byte keys, 100-byte values), a full scan,
//! compaction and reopen (index rebuild), on one thread, in a temporary directory.

use shardflow_core::rng::mix64;
use std::time::Instant;

use shardflow_state::{Store, StoreOptions};

/// What one run measured, per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreRun {
    pub puts_per_s: f64,
    /// Gets of keys still in the active segment (in memory).
    pub active_gets_per_s: f64,
    /// Gets of keys in sealed segments (memmap2), random order.
    pub sealed_gets_per_s: f64,
    pub scan_mb_per_s: f64,
    pub compact_mb_per_s: f64,
    pub reopen_mb_per_s: f64,
    pub bytes: u64,
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// Runs every measurement on `n` keys.
pub fn run(n: u64) -> std::io::Result<StoreRun> {
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        segment_bytes: 64 << 20,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), options.clone()).map_err(std::io::Error::other)?;
    let value = [7u8; 100];
    let mut r = StoreRun::default();

    // Puts: the first segment's worth stays active, the rest gets sealed as it fills.
    let t = Instant::now();
    for i in 0..n {
        let k = key(i);
        store
            .put((i % 4096) as u16, b"v", &k, &value)
            .map_err(std::io::Error::other)?;
    }
    store.sync().map_err(std::io::Error::other)?;
    r.puts_per_s = n as f64 / t.elapsed().as_secs_f64();

    // Gets from the active segment: the keys written last.
    let active = (n / 10).max(1);
    let t = Instant::now();
    let mut found = 0u64;
    for j in 0..active {
        let i = n - 1 - mix64(j) % active;
        found += store.get((i % 4096) as u16, b"v", &key(i)).is_some() as u64;
    }
    r.active_gets_per_s = active as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, active);

    // Seal everything, then random gets from the mapped segments.
    store.seal().map_err(std::io::Error::other)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    for j in 0..n {
        let i = mix64(j ^ 0x5555) % n;
        bytes += store
            .get((i % 4096) as u16, b"v", &key(i))
            .map_or(0, |v| v.len() as u64);
    }
    r.sealed_gets_per_s = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(bytes, n * 100);

    // A scan of everything, in key order.
    let (total, _) = store.sealed_bytes();
    r.bytes = total;
    let t = Instant::now();
    let mut scanned = 0u64;
    store.scan(0..4096, None, |_, k, v| {
        scanned += (k.len() + v.len()) as u64
    });
    r.scan_mb_per_s = total as f64 / 1e6 / t.elapsed().as_secs_f64();
    assert!(scanned > 0);

    // Overwrite 60% of the keys (a new segment), then compact what fell below the ratio.
    for i in 0..n * 6 / 10 {
        store
            .put((i % 4096) as u16, b"v", &key(i), &value)
            .map_err(std::io::Error::other)?;
    }
    store.seal().map_err(std::io::Error::other)?;
    let (before, _) = store.sealed_bytes();
    let t = Instant::now();
    store.compact().map_err(std::io::Error::other)?;
    r.compact_mb_per_s = before as f64 / 1e6 / t.elapsed().as_secs_f64();

    // Reopen: map and check every segment, rebuild the index.
    store.sync().map_err(std::io::Error::other)?;
    let (on_disk, _) = store.sealed_bytes();
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path(), options).map_err(std::io::Error::other)?;
    r.reopen_mb_per_s = on_disk as f64 / 1e6 / t.elapsed().as_secs_f64();
    assert_eq!(store.len() as u64, n);
    Ok(r)
}
