//! Fills a store with `N` keys and times reopening it (for profiling the index rebuild).
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = std::env::temp_dir().join("shardflow-reopen-example");
    let _ = std::fs::remove_dir_all(&dir);
    let options = shardflow_state::StoreOptions::default();
    let mut store = shardflow_state::Store::open(&dir, options.clone()).unwrap();
    for i in 0..n {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        k[8..].copy_from_slice(&i.to_le_bytes());
        store.put((i % 4096) as u16, b"v", &k, &[7u8; 100]).unwrap();
    }
    store.seal().unwrap();
    drop(store);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let store = shardflow_state::Store::open(&dir, options.clone()).unwrap();
        println!("reopened {} keys in {:?}", store.len(), t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
