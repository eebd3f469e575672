//! The store against a model (a `BTreeMap`), through random operations, seals, asynchronous
//! snapshots (frozen, written on other threads, or never), compactions and reopens; and against crashes: a torn active segment loses exactly its torn tail, a damaged
//! sealed segment is an error naming the file and the offset.

use std::collections::BTreeMap;

use shardflow_state::{Store, StoreError, StoreOptions};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Model = BTreeMap<(u16, Vec<u8>, Vec<u8>), Vec<u8>>;

fn check(store: &Store, model: &Model, rng: &mut Rng) {
    assert_eq!(store.len(), model.len());
    for ((kg, ns, k), v) in model {
        assert_eq!(store.get(*kg, ns, k), Some(&v[..]), "{kg} {ns:?} {k:?}");
    }
    // A scan of a random key-group range and namespace equals the model's.
    let a = rng.below(8) as u16;
    let b = a + rng.below(8) as u16;
    let ns = vec![b'n', rng.below(3) as u8];
    let mut got = Vec::new();
    store.scan(a..b, Some(&ns), |kg, k, v| {
        got.push((kg, k.to_vec(), v.to_vec()))
    });
    let want: Vec<(u16, Vec<u8>, Vec<u8>)> = model
        .iter()
        .filter(|((kg, n, _), _)| (a..b).contains(kg) && *n == ns)
        .map(|((kg, _, k), v)| (*kg, k.clone(), v.clone()))
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(
        got, got_sorted,
        "a scan comes out in key order within a key group"
    );
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted);
    // A prefix scan: the keys of one namespace starting with "key-1".
    let mut got = Vec::new();
    store.scan_prefix(0..8, Some(&ns), b"key-1", |kg, k, v| {
        got.push((kg, k.to_vec(), v.to_vec()))
    });
    got.sort();
    let mut want: Vec<(u16, Vec<u8>, Vec<u8>)> = model
        .iter()
        .filter(|((_, n, k), _)| *n == ns && k.starts_with(b"key-1"))
        .map(|((kg, _, k), v)| (*kg, k.clone(), v.clone()))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn random_operations_seals_compactions_and_reopens_agree_with_a_model() {
    for seed in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        // Seeds 6.. are working stores: no log, so asynchronous snapshots freeze, and no
        // reopen (a working store's active segment dies with its process).
        let log = seed < 6;
        let options = StoreOptions {
            segment_bytes: 8 << 10,
            compact_live_ratio: 0.6,
            flush_bytes: 512,
            // Unsynced stores must read back the same (only a machine crash tells them apart).
            sync: seed % 2 == 0,
            // Reopens read the active segment's log back.
            log,
        };
        let mut store = Store::open(dir.path(), options.clone()).unwrap();
        let mut model = Model::new();
        let mut rng = Rng(seed);
        // Asynchronous snapshots not finished yet, oldest first, and those finishing on
        // threads of their own.
        let mut unfinished: std::collections::VecDeque<shardflow_state::AsyncSnapshot> =
            Default::default();
        let mut finishing: Vec<std::thread::JoinHandle<()>> = Vec::new();
        for step in 0..4_000 {
            let kg = rng.below(8) as u16;
            let ns = vec![b'n', rng.below(3) as u8];
            // Half the keys too long to live in an index slot (they go to its arena).
            let n = rng.below(60);
            let key = if n.is_multiple_of(2) {
                format!("key-{n}-{}", "x".repeat(40)).into_bytes()
            } else {
                format!("key-{n}").into_bytes()
            };
            match rng.below(100) {
                0..=54 => {
                    let value = vec![step as u8; rng.below(40) as usize];
                    store.put(kg, &ns, &key, &value).unwrap();
                    model.insert((kg, ns, key), value);
                }
                55..=79 => {
                    store.delete(kg, &ns, &key).unwrap();
                    model.remove(&(kg, ns, key));
                }
                80..=89 => {
                    assert_eq!(
                        store.get(kg, &ns, &key),
                        model.get(&(kg, ns, key)).map(|v| &v[..])
                    );
                }
                90..=91 => store.seal().unwrap(),
                92..=93 => {
                    // Frozen now, written later (or on another thread), in order.
                    unfinished.push_back(store.snapshot_async().unwrap());
                    if rng.below(2) == 0 {
                        let mut batch: Vec<_> = unfinished.drain(..).collect();
                        for h in finishing.drain(..) {
                            h.join().unwrap();
                        }
                        finishing.push(std::thread::spawn(move || {
                            for s in batch.drain(..) {
                                s.finish().unwrap();
                            }
                        }));
                    }
                }
                94..=96 => {
                    store.compact().unwrap();
                }
                _ if !log => {
                    for h in finishing.drain(..) {
                        h.join().unwrap();
                    }
                    for s in unfinished.drain(..) {
                        s.finish().unwrap();
                    }
                    store.install_frozen().unwrap();
                }
                _ => {
                    // Half the time the snapshots in flight finish first; else the process
                    // "dies" with them unwritten (a logging store sealed them already).
                    for h in finishing.drain(..) {
                        h.join().unwrap();
                    }
                    if rng.below(2) == 0 {
                        for s in unfinished.drain(..) {
                            s.finish().unwrap();
                        }
                    } else {
                        unfinished.clear();
                    }
                    store.sync().unwrap();
                    drop(store);
                    store = Store::open(dir.path(), options.clone()).unwrap();
                }
            }
            assert_eq!(store.len(), model.len(), "seed {seed} step {step}");
            if step % 500 == 0 {
                check(&store, &model, &mut rng);
            }
        }
        check(&store, &model, &mut rng);
        for h in finishing.drain(..) {
            h.join().unwrap();
        }
        for s in unfinished.drain(..) {
            s.finish().unwrap();
        }
        store.install_frozen().unwrap();
        check(&store, &model, &mut rng);
        if log {
            store.sync().unwrap();
            drop(store);
            let store = Store::open(dir.path(), options).unwrap();
            check(&store, &model, &mut rng);
        } else {
            // Every segment a snapshot names restores to the model's contents.
            let handles = store.snapshot().unwrap();
            let segments: Vec<(String, std::path::PathBuf)> = handles
                .iter()
                .map(|h| (h.name.clone(), h.path.clone()))
                .collect();
            let restored =
                Store::restore(dir.path().join("restored"), options, &segments, &|_| true).unwrap();
            check(&restored, &model, &mut rng);
        }
    }
}

/// Writes entries 0..n (each its own key) into the active segment and returns the store's dir,
/// the active segment's bytes and the end offset of every entry.
fn written(n: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        store
            .put(
                (i % 5) as u16,
                b"ns",
                format!("k{i}").as_bytes(),
                &vec![i as u8; i % 13],
            )
            .unwrap();
        store.sync().unwrap();
        ends.push(std::fs::metadata(store.active_path()).unwrap().len() as usize);
    }
    let path = store.active_path().to_path_buf();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    (dir, path, bytes, ends)
}

#[test]
fn a_torn_active_segment_keeps_every_whole_entry_and_nothing_after_the_cut() {
    let (dir, path, bytes, ends) = written(12);
    // Cut at every byte of the last four entries.
    let from = ends[ends.len() - 5];
    for cut in from..=bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(store.len(), whole, "cut at {cut}");
        for i in 0..ends.len() {
            let got = store.get((i % 5) as u16, b"ns", format!("k{i}").as_bytes());
            if i < whole {
                assert_eq!(got, Some(&vec![i as u8; i % 13][..]), "cut {cut} entry {i}");
            } else {
                assert_eq!(got, None, "cut {cut}: entry {i} is after the cut");
            }
        }
        drop(store);
        // The recovered segment holds the whole entries only: reopening changes nothing.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            ends.iter()
                .copied()
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(0)
        );
    }
    // A flipped bit in one of the last entries: the entries before it stay, it and the rest go.
    for i in from..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x08;
        std::fs::write(&path, &b).unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let damaged = ends.iter().position(|&e| e > i).unwrap();
        assert_eq!(store.len(), damaged, "flip at {i}");
    }
}

#[test]
fn a_damaged_sealed_segment_is_an_error_naming_the_file_and_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    for i in 0..50u32 {
        store
            .put((i % 7) as u16, b"ns", &i.to_le_bytes(), b"some value")
            .unwrap();
    }
    store.seal().unwrap();
    let path = store.sealed_paths().pop().unwrap();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        std::fs::write(&path, &b).unwrap();
        match Store::open(dir.path(), StoreOptions::default()) {
            Err(StoreError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert!(
                    offset as usize <= i.max(bytes.len() - 8),
                    "offset {offset} for a flip at {i}"
                );
            }
            Err(e) => panic!("flip at {i}: {e}"),
            Ok(_) => panic!("flip at {i} went unnoticed"),
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.len(), 50);
}

#[test]
fn on_a_shard_segments_are_written_and_sealed_through_glommio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let options = StoreOptions {
        flush_bytes: usize::MAX,
        ..StoreOptions::default()
    };
    let opts = options.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let mut store = Store::open(&path, opts).unwrap();
            for i in 0..5_000u32 {
                store
                    .put((i % 11) as u16, b"ns", &i.to_le_bytes(), &i.to_be_bytes())
                    .unwrap();
                if i % 1_000 == 999 {
                    store.flush_async().await.unwrap();
                }
                if i % 2_000 == 1_999 {
                    store.seal_async().await.unwrap();
                }
                if i == 3_000 {
                    // Overwrite the first segment's keys and compact it away.
                    for j in 0..2_000u32 {
                        store
                            .put((j % 11) as u16, b"ns", &j.to_le_bytes(), &j.to_be_bytes())
                            .unwrap();
                    }
                    store.seal_async().await.unwrap();
                    assert!(store.compact_async().await.unwrap() >= 1);
                }
            }
            store.delete(3, b"ns", &3u32.to_le_bytes()).unwrap();
            store.sync_async().await.unwrap();
            assert!(!store.sealed_paths().is_empty());
        })
        .unwrap()
        .join()
        .unwrap();
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.len(), 4_999);
    for i in 0..5_000u32 {
        let got = store.get((i % 11) as u16, b"ns", &i.to_le_bytes());
        if i == 3 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some(&i.to_be_bytes()[..]));
        }
    }
}
