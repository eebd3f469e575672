//! Checkpoints of stores against a model: incremental uploads write what changed, a restore
//! (at the same or another parallelism) gives back exactly the model's entries of the key
//! groups it keeps, partial or corrupt metadata is passed over for the checkpoint before it,
//! a missing segment is an error naming it, and retention keeps what the kept checkpoints
//! need and nothing else.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use shardflow_state::checkpoint::{CheckpointStorage, Metadata};
use shardflow_state::{Store, StoreError, StoreOptions};

type Model = BTreeMap<(u16, Vec<u8>), Vec<u8>>;

const GROUPS: u16 = 128;

fn options() -> StoreOptions {
    // A running job's working store: no log, sealed segments unsynced (the snapshot seals and
    // syncs them).
    StoreOptions {
        sync: false,
        log: false,
        segment_bytes: 4 << 20,
        ..StoreOptions::default()
    }
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Key `i`: 16 bytes, in key group `i % GROUPS`; a 100-byte value made of `version`.
fn key(i: u64) -> (u16, Vec<u8>) {
    let mut k = mix(i).to_le_bytes().to_vec();
    k.extend_from_slice(&i.to_le_bytes());
    ((i % GROUPS as u64) as u16, k)
}

fn value(i: u64, version: u64) -> Vec<u8> {
    let b = mix(i ^ (version << 40)).to_le_bytes();
    b.iter().cycle().take(100).copied().collect()
}

fn put(store: &mut Store, model: &mut Model, i: u64, version: u64) {
    let (kg, k) = key(i);
    let v = value(i, version);
    store.put(kg, b"ns", &k, &v).unwrap();
    model.insert((kg, k), v);
}

fn delete(store: &mut Store, model: &mut Model, i: u64) {
    let (kg, k) = key(i);
    store.delete(kg, b"ns", &k).unwrap();
    model.remove(&(kg, k));
}

/// Snapshots `store`, uploads its segments; returns their names and the bytes added.
fn checkpoint(store: &mut Store, storage: &CheckpointStorage) -> (Vec<String>, u64) {
    let mut added = 0;
    let mut names = Vec::new();
    for h in store.snapshot().unwrap() {
        added += storage.upload(&h).unwrap();
        names.push(h.name.clone());
    }
    (names, added)
}

/// Commits checkpoint `id` of `segments` with `payload`; returns its metadata.
fn commit(
    storage: &CheckpointStorage,
    id: u64,
    segments: Vec<String>,
    payload: Vec<u8>,
) -> Metadata {
    let meta = Metadata {
        id,
        segments,
        payload,
    };
    storage.commit(&meta).unwrap();
    meta
}

fn restore(
    storage: &CheckpointStorage,
    meta: &Metadata,
    dir: &Path,
    keep: &dyn Fn(u16) -> bool,
) -> Result<Store, StoreError> {
    let segments: Vec<(String, std::path::PathBuf)> = meta
        .segments
        .iter()
        .map(|n| (n.clone(), storage.segment_path(n)))
        .collect();
    Store::restore(dir, options(), &segments, keep)
}

/// The restored store holds exactly the model's entries of the groups it keeps.
fn assert_holds(store: &Store, model: &Model, keep: &dyn Fn(u16) -> bool, what: &str) {
    let mut n = 0;
    for ((kg, k), v) in model {
        if keep(*kg) {
            n += 1;
            assert_eq!(store.get(*kg, b"ns", k), Some(&v[..]), "{what}: group {kg}");
        } else {
            assert_eq!(
                store.get(*kg, b"ns", k),
                None,
                "{what}: group {kg} not kept"
            );
        }
    }
    assert_eq!(store.len(), n, "{what}: keys");
}

#[test]
fn an_incremental_checkpoint_writes_what_changed_and_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut store = Store::open(tmp.path().join("store"), options()).unwrap();
    let mut model = Model::new();
    let keys = 100_000;
    for i in 0..keys {
        put(&mut store, &mut model, i, 0);
    }
    let (names, full) = checkpoint(&mut store, &storage);
    commit(&storage, 1, names, b"first".to_vec());
    let first = model.clone();

    // 1% of the keys change, a few are deleted.
    for i in (0..keys).step_by(100) {
        put(&mut store, &mut model, i, 1);
    }
    for i in (7..keys).step_by(1000) {
        delete(&mut store, &mut model, i);
    }
    let (names, added) = checkpoint(&mut store, &storage);
    assert!(full > 10_000_000, "{full} bytes in the first checkpoint");
    assert!(
        added > 0 && added * 100 < full * 3,
        "the second checkpoint added {added} of {full} bytes"
    );
    commit(&storage, 2, names, b"second".to_vec());

    let all = |_: u16| true;
    let (latest, skipped) = storage.latest().unwrap();
    let latest = latest.unwrap();
    assert_eq!((latest.id, skipped.len()), (2, 0));
    assert_eq!(latest.payload, b"second");
    let restored = restore(&storage, &latest, &tmp.path().join("r2"), &all).unwrap();
    assert_holds(&restored, &model, &all, "checkpoint 2");
    let one = storage.read(1).unwrap();
    let restored = restore(&storage, &one, &tmp.path().join("r1"), &all).unwrap();
    assert_holds(&restored, &first, &all, "checkpoint 1");

    // A restored store checkpoints its restored segments under their names: nothing new.
    let mut again = restore(&storage, &latest, &tmp.path().join("r3"), &all).unwrap();
    let (names, added) = checkpoint(&mut again, &storage);
    assert_eq!(added, 0);
    assert_eq!(
        names.iter().collect::<HashSet<_>>(),
        latest.segments.iter().collect::<HashSet<_>>()
    );
}

/// Two shards' stores (key groups split at 64) checkpointed together, restored at P = 1, 2, 3
/// and 4: every new shard holds exactly the model's entries of its range.
#[test]
fn a_checkpoint_restores_at_another_parallelism() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut model = Model::new();
    let mut segments = Vec::new();
    for shard in 0..2u16 {
        let mut store = Store::open(tmp.path().join(format!("s{shard}")), options()).unwrap();
        for i in 0..40_000u64 {
            let (kg, _) = key(i);
            if (kg < 64) == (shard == 0) {
                put(&mut store, &mut model, i, 0);
                if i % 3 == 0 {
                    put(&mut store, &mut model, i, 1);
                }
            }
        }
        segments.extend(checkpoint(&mut store, &storage).0);
    }
    let meta = commit(&storage, 7, segments, Vec::new());
    for p in 1..=4u16 {
        for s in 0..p {
            let (lo, hi) = (GROUPS * s / p, GROUPS * (s + 1) / p);
            let keep = move |kg: u16| kg >= lo && kg < hi;
            let dir = tmp.path().join(format!("p{p}-{s}"));
            let store = restore(&storage, &meta, &dir, &keep).unwrap();
            assert_holds(&store, &model, &keep, &format!("P = {p}, shard {s}"));
        }
    }
}

#[test]
fn partial_or_corrupt_metadata_is_passed_over_and_a_missing_segment_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut store = Store::open(tmp.path().join("store"), options()).unwrap();
    let mut model = Model::new();
    for id in 1..=2u64 {
        for i in 0..5_000 {
            put(&mut store, &mut model, i + id * 1_000, id);
        }
        let (segments, _) = checkpoint(&mut store, &storage);
        commit(&storage, id, segments, vec![id as u8; 10]);
    }
    let path = storage.checkpoint_dir(2).join("_metadata");
    let good = std::fs::read(&path).unwrap();
    // Cut short at every length, and every bit of a few bytes flipped: never checkpoint 2,
    // always checkpoint 1, with checkpoint 2 named as passed over.
    let mut bad: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for at in [0, 9, 20, good.len() / 2, good.len() - 1] {
        for bit in 0..8 {
            let mut b = good.clone();
            b[at] ^= 1 << bit;
            bad.push(b);
        }
    }
    for b in bad {
        std::fs::write(&path, &b).unwrap();
        let (latest, skipped) = storage.latest().unwrap();
        assert_eq!(latest.map(|m| m.id), Some(1));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].path, path);
    }
    // A checkpoint directory with no metadata at all (one that never completed).
    std::fs::remove_file(&path).unwrap();
    let (latest, skipped) = storage.latest().unwrap();
    assert_eq!((latest.map(|m| m.id), skipped.len()), (Some(1), 1));

    let one = storage.read(1).unwrap();
    let gone = storage.segment_path(&one.segments[0]);
    std::fs::remove_file(&gone).unwrap();
    let err = restore(&storage, &one, &tmp.path().join("r"), &|_| true)
        .err()
        .expect("a missing segment fails the restore");
    assert!(
        err.to_string().contains(&gone.display().to_string()),
        "{err}"
    );
    let err = storage.commit(&one).unwrap_err();
    assert!(
        err.to_string().contains(&gone.display().to_string()),
        "{err}"
    );
}

/// Five checkpoints with compactions between (segments replaced by new ones): retaining three
/// removes the two oldest and every segment only they named; each kept checkpoint restores to
/// the model as it was.
#[test]
fn retention_keeps_what_the_kept_checkpoints_need() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut store = Store::open(tmp.path().join("store"), options()).unwrap();
    let mut model = Model::new();
    let mut models = Vec::new();
    for id in 1..=5u64 {
        for i in 0..30_000 {
            if (i + id) % 2 == 0 {
                put(&mut store, &mut model, i, id);
            }
        }
        store.seal().unwrap();
        store.compact().unwrap();
        let (segments, _) = checkpoint(&mut store, &storage);
        commit(&storage, id, segments, Vec::new());
        models.push(model.clone());
    }
    // A segment uploaded for a checkpoint in flight survives too.
    let in_flight: HashSet<String> = ["in-flight.sst".to_string()].into();
    std::fs::write(storage.segment_path("in-flight.sst"), b"x").unwrap();
    let r = storage.retain(3, &in_flight).unwrap();
    assert_eq!(r.kept, [5, 4, 3]);
    assert_eq!(r.checkpoints_removed, 2);
    assert!(r.segments_removed > 0, "{r:?}");
    let mut named: HashSet<String> = in_flight.clone();
    for id in 3..=5 {
        let m = storage.read(id).unwrap();
        named.extend(m.segments.iter().cloned());
        let all = |_: u16| true;
        let s = restore(&storage, &m, &tmp.path().join(format!("r{id}")), &all).unwrap();
        assert_holds(
            &s,
            &models[id as usize - 1],
            &all,
            &format!("checkpoint {id}"),
        );
    }
    let on_disk: HashSet<String> = std::fs::read_dir(storage.dir().join("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, named);
    assert!(storage.read(1).is_err() && storage.read(2).is_err());
}

/// A restored store reopened from its directory holds what it held restored. Its segments were
/// renumbered by the restore, so a compaction's output among them lists as replaced the ids of
/// other restored segments (here the one with every key's newest value): a reopen that took
/// the list at its word deleted them, and gave back older values or none. A rescaled restore
/// reopened keeps to its key groups, and a checkpoint after the reopen names the restored
/// segments as the checkpoint did (nothing uploaded again).
#[test]
fn a_restored_store_reopens_with_what_it_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut store = Store::open(tmp.path().join("store"), options()).unwrap();
    let mut model = Model::new();
    let keys = 2_000;
    // Three versions of every key, a snapshot after each: the first two segments die whole,
    // and a compaction replaces them with an empty segment whose list names them.
    for version in 0..3 {
        for i in 0..keys {
            put(&mut store, &mut model, i, version);
        }
        checkpoint(&mut store, &storage);
    }
    store.install_frozen().unwrap();
    store.compact().unwrap();
    for i in (0..keys).step_by(3) {
        put(&mut store, &mut model, i, 3);
    }
    let (names, _) = checkpoint(&mut store, &storage);
    let meta = commit(&storage, 1, names, Vec::new());

    let all = |_: u16| true;
    let low = |g: u16| g < GROUPS / 2;
    for (name, keep) in [("all", &all as &dyn Fn(u16) -> bool), ("low", &low)] {
        let dir = tmp.path().join(format!("restored-{name}"));
        let restored = restore(&storage, &meta, &dir, keep).unwrap();
        assert_holds(&restored, &model, keep, "restored");
        drop(restored);
        let mut reopened = Store::open(&dir, options()).unwrap();
        assert_holds(&reopened, &model, keep, &format!("{name}: reopened"));
        let (again, added) = checkpoint(&mut reopened, &storage);
        assert_eq!(
            added, 0,
            "{name}: a reopened restored store uploads nothing new"
        );
        assert!(again.iter().all(|n| meta.segments.contains(n)), "{again:?}");
        // And once more, now that the reopen itself wrote nothing the manifest would miss.
        drop(reopened);
        let reopened = Store::open(&dir, options()).unwrap();
        assert_holds(&reopened, &model, keep, &format!("{name}: reopened twice"));
    }
}

/// A damaged manifest of a restored store is an error naming it, the line and the offset.
#[test]
fn a_damaged_restore_manifest_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("restored"),
        "shardflow restored store 1\ngroups 0-63\n1 a-0000000001.sst\nnonsense\n",
    )
    .unwrap();
    let err = Store::open(&dir, options())
        .err()
        .expect("a damaged manifest")
        .to_string();
    assert!(
        err.contains("restored") && err.contains("\"nonsense\"") && err.contains("offset 58"),
        "{err}"
    );
}

/// No compaction while a snapshot's frozen segment is still being written: the frozen segment
/// is older than a segment sealed after it, and comes back beside the compaction's output in
/// the next checkpoint, so a tombstone merged away there would bring a deleted key back to
/// life in every restore. (The store guards this; without the guard this test fails.)
#[test]
fn a_compaction_beside_a_frozen_segment_keeps_its_tombstones() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::new(tmp.path().join("checkpoints")).unwrap();
    let mut store = Store::open(tmp.path().join("store"), options()).unwrap();
    let mut model = Model::new();
    for i in 0..1_000 {
        put(&mut store, &mut model, i, 0);
    }
    // The snapshot freezes the puts; its file is written only later (off the shard).
    let pending = store.snapshot_async().unwrap();
    for i in (0..1_000).step_by(2) {
        delete(&mut store, &mut model, i);
    }
    // The deletes sealed: a segment of tombstones only, nothing live, merged at once.
    store.seal().unwrap();
    store.compact().unwrap();
    pending.finish().unwrap();
    let (names, _) = checkpoint(&mut store, &storage);
    let meta = commit(&storage, 1, names, Vec::new());
    let all = |_: u16| true;
    assert_holds(&store, &model, &all, "the store itself");
    let restored = restore(&storage, &meta, &tmp.path().join("restored"), &all).unwrap();
    assert_holds(&restored, &model, &all, "restored");
}
