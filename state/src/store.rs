//! The store: segments, index, sealing, compaction, recovery.
//!
//! Files in the store's directory:
//! - `seg-<id>.log`: the active segment, entries in the order they were written. At most one.
//! - `seg-<id>.sst`: a sealed segment: the live entries of the segment(s) it was made from,
//!   sorted by (key group, namespace, key), then a footer (below). Immutable; read through a map.
//! - `restored`: in a store made by [`Store::restore`], which of its segments came from
//!   checkpoints, their names there, and which key groups of them the store holds (text, written
//!   once, before the segments are first read):
//!   ```text
//!   shardflow restored store 1
//!   groups <first>-<last> ...      (the key-group ranges kept; `groups all` for every one)
//!   <id> <name>                    (one line per restored segment)
//!   ```
//!   A reopen reads it: a restored segment's `replaced` list names segments of the store that
//!   wrote it (ids this directory gives to other segments), so it is ignored; its entries of
//!   other key groups stay unindexed; and it keeps its checkpoint name.
//!
//! A sealed segment's footer, at its end:
//! ```text
//! (u16 key_group, u64 offset)* | u64 order | u64 entries | (u32 replaced_id)* | u32 groups | u32 replaced | u32 crc | b"SFSEG001"
//! ```
//! `order` places the segment among the others when the index is rebuilt (a compaction's output
//! takes the order of the newest segment it merged); `replaced` lists the segments it replaces,
//! which a reopen deletes if a crash left them behind.
//!
//! The index ([`crate::index`]) holds, per key, where its newest entry is. Deletes append tombstones; a tombstone outlives compaction as long as an older
//! segment might still hold a value it shadows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::entry::{self, DecodeError, EntryRef, Op};
use crate::index::{Index, Loc, index_key, key_group_of, with_index_key};

const MAGIC: &[u8; 8] = b"SFSEG001";

/// Errors of the store: each names the file, and the offset where the bytes are wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, what, source }
}

/// How a store treats its segments.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The active segment is sealed once it holds this many bytes.
    pub segment_bytes: usize,
    /// `compact` rewrites sealed segments whose live bytes fell below this share of their size.
    pub compact_live_ratio: f64,
    /// Flush the active segment to its file every time it grew by this many bytes (`usize::MAX`:
    /// never by itself; the owner calls `flush` or `flush_async`).
    pub flush_bytes: usize,
    /// Sync sealed segments and the directory as they are installed (a crash then finds every
    /// sealed segment whole). Off for a running job's working store, whose contents a crash
    /// loses anyway: a checkpoint syncs what it keeps.
    pub sync: bool,
    /// Write the active segment to its file as it fills (a log: a reopen after a crash finds
    /// every entry written). Off for a running job's working store, which a crash loses anyway
    /// (the job resumes from a checkpoint): its appends then reach the disk only sealed.
    pub log: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            compact_live_ratio: 0.5,
            flush_bytes: 1 << 20,
            sync: true,
            log: true,
        }
    }
}

struct Active {
    id: u32,
    path: PathBuf,
    file: File,
    bytes: Vec<u8>,
    /// Bytes written to the file so far.
    flushed: usize,
    /// Keys whose newest word is a tombstone in this segment (sealing keeps those).
    tombstones: BTreeSet<Vec<u8>>,
    /// The same file opened through glommio, for `flush_async` (on a shard's executor).
    async_file: Option<glommio::io::BufferedFile>,
}

/// Where the write of a frozen segment leaves its outcome: the sealed file, open (a later
/// snapshot naming the segment takes it from here, even if a compaction removed its name), or
/// why it failed.
type WriteSlot = std::sync::Arc<std::sync::OnceLock<Result<std::sync::Arc<File>, String>>>;

/// An active segment frozen by [`Store::snapshot_async`]: its bytes, read in place until its
/// sealed file is written (elsewhere) and installed.
struct Frozen {
    bytes: std::sync::Arc<Vec<u8>>,
    /// Live bytes in it.
    live: u64,
    order: u64,
    written: WriteSlot,
    /// Its write failed: the next snapshot writes it again.
    rewrite: bool,
    /// Its write syncs it.
    sync: bool,
}

impl Frozen {
    /// What writing it as segment `id` takes.
    fn write(&self, id: u32) -> FrozenWrite {
        FrozenWrite {
            id,
            bytes: self.bytes.clone(),
            order: self.order,
            written: self.written.clone(),
            sync: self.sync,
        }
    }
}

/// A snapshot taken by [`Store::snapshot_async`], finished by [`finish`](Self::finish), on any
/// thread: it writes the frozen segment (if any) as a sealed file, syncs what needs it, and
/// opens every segment of the snapshot.
pub struct AsyncSnapshot {
    dir: PathBuf,
    /// Every sealed segment of the snapshot, open: (name in checkpoints, file, open file).
    sealed: Vec<(String, PathBuf, File)>,
    /// Every frozen segment of the snapshot: (name, file, where its write leaves it). Written
    /// by this snapshot or an earlier one (finished first).
    frozen: Vec<(String, PathBuf, WriteSlot)>,
    /// Files a working store never synced.
    to_sync: Vec<PathBuf>,
    writes: Vec<FrozenWrite>,
}

struct FrozenWrite {
    id: u32,
    bytes: std::sync::Arc<Vec<u8>>,
    order: u64,
    written: WriteSlot,
    /// Synced when written (a snapshot's); else a later snapshot syncs it.
    sync: bool,
}

impl AsyncSnapshot {
    /// The names of the snapshot's segments in checkpoints.
    pub fn names(&self) -> Vec<String> {
        self.sealed
            .iter()
            .map(|s| s.0.clone())
            .chain(self.frozen.iter().map(|f| f.0.clone()))
            .collect()
    }

    /// Writes, syncs and opens the snapshot's segments (blocking file I/O: off the shard).
    pub fn finish(self) -> Result<Vec<SegmentHandle>, StoreError> {
        let sync_dir = !self.writes.is_empty() || !self.to_sync.is_empty();
        let mut failed = None;
        for w in &self.writes {
            let r = write_frozen(&self.dir, w);
            let _ = w.written.set(match &r {
                Ok(f) => Ok(f.clone()),
                Err(e) => Err(e.to_string()),
            });
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for (_, p, f) in &self.sealed {
            if self.to_sync.contains(p) {
                f.sync_all()
                    .map_err(io(p, "cannot sync a sealed segment"))?;
            }
        }
        if sync_dir {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir, "cannot sync the store directory"))?;
        }
        let mut out = Vec::with_capacity(self.sealed.len() + self.frozen.len());
        let mut opened = Vec::with_capacity(out.capacity());
        for (name, path, file) in self.sealed {
            opened.push((name, path, file));
        }
        for (name, path, slot) in self.frozen {
            let file = match slot.get() {
                Some(Ok(f)) => f
                    .try_clone()
                    .map_err(io(&path, "cannot open a sealed segment"))?,
                Some(Err(e)) => {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: 0,
                        reason: format!("the frozen segment was not written: {e}"),
                    });
                }
                None => {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: 0,
                        reason: "not written yet: snapshots of a store must finish in order".into(),
                    });
                }
            };
            opened.push((name, path, file));
        }
        for (name, path, file) in opened {
            let bytes = file
                .metadata()
                .map_err(io(&path, "cannot open a sealed segment"))?
                .len();
            out.push(SegmentHandle {
                name,
                path,
                bytes,
                file,
            });
        }
        Ok(out)
    }
}

/// A frozen active segment as a sealed file: its entries as they were appended (a reopen
/// applies them in order, so a key's last entry wins), then a footer with no key-group
/// offsets. Written, synced and renamed into place.
fn write_frozen(dir: &Path, w: &FrozenWrite) -> Result<std::sync::Arc<File>, StoreError> {
    let path = segment_path(dir, w.id, true);
    // The entries were checked as they were appended (or read back from the log).
    let mut entries = 0u64;
    let mut at = 0;
    while at < w.bytes.len() {
        let (_, n) = entry::decode(&w.bytes[at..]).map_err(|err| corrupt(&path, at, err))?;
        at += n;
        entries += 1;
    }
    let mut footer = Vec::with_capacity(40);
    footer.extend_from_slice(&w.order.to_le_bytes());
    footer.extend_from_slice(&entries.to_le_bytes());
    footer.extend_from_slice(&0u32.to_le_bytes()); // key-group offsets
    footer.extend_from_slice(&0u32.to_le_bytes()); // replaced segments
    let crc = crc32fast::hash(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    footer.extend_from_slice(MAGIC);
    let tmp = dir.join(format!("seg-{:010}.sst.tmp", w.id));
    let mut f = File::create(&tmp).map_err(io(&tmp, "cannot create a sealed segment"))?;
    f.write_all(&w.bytes)
        .and_then(|_| f.write_all(&footer))
        .and_then(|_| if w.sync { f.sync_all() } else { Ok(()) })
        .map_err(io(&tmp, "cannot write a sealed segment"))?;
    std::fs::rename(&tmp, &path).map_err(io(&path, "cannot install a sealed segment"))?;
    Ok(std::sync::Arc::new(f))
}

struct Sealed {
    path: PathBuf,
    map: Mmap,
    /// Where the entries end (the footer starts).
    entries_end: usize,
    order: u64,
    /// Entries in the segment, as its footer says (a reopen checks it against what it reads).
    entries: u64,
    /// Bytes of entries the index points to.
    live: u64,
    /// On disk for sure (synced when written, or found there): a checkpoint need not sync it.
    synced: bool,
}

/// A log-structured store of `(key group, namespace, key) → value` in one directory.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    next_id: u32,
    next_order: u64,
    active: Active,
    sealed: BTreeMap<u32, Sealed>,
    /// Active segments frozen by an asynchronous snapshot, until their sealed file is written.
    frozen: BTreeMap<u32, Frozen>,
    index: Index,
    /// Live bytes of the active segment.
    active_live: u64,
    /// Values compaction dropped as expired, ever.
    expired: u64,
    /// Names this store's segments in checkpoints (`<uid>-<id>`): unique per opening, so a
    /// segment of another run never takes the name of one of this run.
    uid: u64,
    /// Segments restored from a checkpoint, by id: the names they have there (a checkpoint of
    /// this store refers to them again instead of uploading them anew).
    origins: std::collections::HashMap<u32, String>,
}

/// A sealed segment as a checkpoint takes it: immutable, synced, and held open (a compaction
/// may remove the store's name for it; the open file keeps its bytes until dropped).
#[derive(Debug)]
pub struct SegmentHandle {
    /// The segment's name in checkpoint storage: the same for the same segment at every
    /// checkpoint, different for any other segment.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub file: File,
}

/// Writes all of `bytes` at `offset` of `file` through glommio, a MiB at a time (glommio's
/// writes take owned buffers, and the shard's other tasks run between the writes).
async fn write_all_at(
    file: &glommio::io::BufferedFile,
    bytes: &[u8],
    offset: u64,
    path: &Path,
    what: &'static str,
) -> Result<(), StoreError> {
    let err = |source| StoreError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + (1 << 20)).min(bytes.len());
        let n = file
            .write_at(bytes[at..end].to_vec(), offset + at as u64)
            .await
            .map_err(|e| err(e.into()))?;
        if n == 0 {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "wrote nothing",
            )));
        }
        at += n;
    }
    Ok(())
}

fn segment_path(dir: &Path, id: u32, sealed: bool) -> PathBuf {
    dir.join(format!(
        "seg-{id:010}.{}",
        if sealed { "sst" } else { "log" }
    ))
}

/// The manifest of a store made from checkpointed segments (see the module docs): the ids of
/// those segments with their names, and the key groups of them the store holds.
#[derive(Debug, Default)]
struct Restored {
    /// Key-group ranges kept (inclusive); None: every key group.
    groups: Option<Vec<(u16, u16)>>,
    names: BTreeMap<u32, String>,
}

const RESTORED_FILE: &str = "restored";
const RESTORED_HEADER: &str = "shardflow restored store 1";

impl Restored {
    fn of(keep: &dyn Fn(u16) -> bool, names: BTreeMap<u32, String>) -> Self {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for g in 0..=u16::MAX {
            if !keep(g) {
                continue;
            }
            match ranges.last_mut() {
                Some(r) if r.1 + 1 == g => r.1 = g,
                _ => ranges.push((g, g)),
            }
        }
        let all = ranges == [(0, u16::MAX)];
        Self {
            groups: (!all).then_some(ranges),
            names,
        }
    }

    fn keeps(&self, group: u16) -> bool {
        self.groups.as_ref().is_none_or(|ranges| {
            let i = ranges.partition_point(|r| r.1 < group);
            ranges.get(i).is_some_and(|r| r.0 <= group)
        })
    }

    /// Written whole beside the segments (a temporary file synced, renamed, the directory
    /// synced): a reopen finds it complete or not at all.
    fn write(&self, dir: &Path) -> Result<(), StoreError> {
        use std::fmt::Write as _;
        let mut text = format!("{RESTORED_HEADER}\ngroups");
        match &self.groups {
            None => text.push_str(" all"),
            Some(ranges) => {
                for (a, b) in ranges {
                    let _ = write!(text, " {a}-{b}");
                }
            }
        }
        text.push('\n');
        for (id, name) in &self.names {
            let _ = writeln!(text, "{id} {name}");
        }
        let path = dir.join(RESTORED_FILE);
        let tmp = dir.join(format!("{RESTORED_FILE}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| File::open(dir)?.sync_all())
            .map_err(io(&path, "cannot write the restored store's manifest"))
    }

    /// The directory's manifest; empty if it has none (a store not made by a restore).
    fn read(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(RESTORED_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(&path, "cannot read the restored store's manifest")(e)),
        };
        let mut offset = 0u64;
        let bad = |offset: u64, line: &str, reason: String| StoreError::Corrupt {
            path: path.clone(),
            offset,
            reason: format!("line {line:?}: {reason}"),
        };
        if text.is_empty() {
            return Err(bad(0, "", "empty".into()));
        }
        let mut restored = Self::default();
        for (n, line) in text.lines().enumerate() {
            match n {
                0 if line == RESTORED_HEADER => {}
                0 => return Err(bad(offset, line, format!("expected {RESTORED_HEADER:?}"))),
                1 => {
                    let Some(spec) = line.strip_prefix("groups") else {
                        return Err(bad(offset, line, "expected the key groups".into()));
                    };
                    if spec.trim() != "all" {
                        let mut ranges = Vec::new();
                        for r in spec.split_whitespace() {
                            let parsed = r.split_once('-').and_then(|(a, b)| {
                                Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                            });
                            match parsed {
                                Some((a, b)) if a <= b => ranges.push((a, b)),
                                _ => {
                                    return Err(bad(
                                        offset,
                                        line,
                                        format!("{r:?} is no key-group range"),
                                    ));
                                }
                            }
                        }
                        restored.groups = Some(ranges);
                    }
                }
                _ => {
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(id, name)| Some((id.parse::<u32>().ok()?, name)));
                    match parsed {
                        Some((id, name)) if !name.is_empty() => {
                            restored.names.insert(id, name.to_string());
                        }
                        _ => {
                            return Err(bad(
                                offset,
                                line,
                                "expected a segment id and its name".into(),
                            ));
                        }
                    }
                }
            }
            offset += line.len() as u64 + 1;
        }
        Ok(restored)
    }
}

fn parse_segment_name(name: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix("seg-")?;
    let (id, ext) = rest.split_once('.')?;
    let id = id.parse().ok()?;
    match ext {
        "log" => Some((id, false)),
        "sst" => Some((id, true)),
        _ => None,
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, rebuilding its index from the segments: sealed
    /// ones in order (a corrupt one is an error naming it and the offset), then the active one,
    /// whose torn tail (a crash mid-write) is cut off at the last whole entry.
    pub fn open(dir: impl Into<PathBuf>, options: StoreOptions) -> Result<Store, StoreError> {
        Self::open_dir(dir.into(), options)
    }

    /// A new store in `dir` (which must hold no segments) from segments of checkpoints: each
    /// `(name, file)` is linked into the directory (copied if it is on another file system),
    /// and only the entries of the key groups `keep` accepts are indexed (a rescale restores
    /// the key groups a shard now owns from the segments of the shards that owned them; the
    /// others are dead and go at the next compaction). A segment that is missing or corrupt is
    /// an error naming it.
    pub fn restore(
        dir: impl Into<PathBuf>,
        options: StoreOptions,
        segments: &[(String, PathBuf)],
        keep: &dyn Fn(u16) -> bool,
    ) -> Result<Store, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir, "cannot create the store directory"))?;
        let mut names = BTreeMap::new();
        for (i, (name, from)) in segments.iter().enumerate() {
            let id = i as u32 + 1;
            let to = segment_path(&dir, id, true);
            if std::fs::hard_link(from, &to).is_err() {
                std::fs::copy(from, &to)
                    .map_err(io(from, "cannot restore a checkpointed segment"))?;
            }
            names.insert(id, name.clone());
        }
        Restored::of(keep, names).write(&dir)?;
        Self::open(dir, options)
    }

    fn open_dir(dir: PathBuf, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir, "cannot create the store directory"))?;
        let restored = Restored::read(&dir)?;
        let mut logs = Vec::new();
        let mut sealed = BTreeMap::new();
        // A restored segment's id is never given again, even once it is gone (the manifest
        // still names it).
        let mut max_id = restored.names.keys().last().copied().unwrap_or(0);
        for e in std::fs::read_dir(&dir).map_err(io(&dir, "cannot list the store directory"))? {
            let e = e.map_err(io(&dir, "cannot list the store directory"))?;
            let name = e.file_name();
            let Some((id, is_sealed)) = parse_segment_name(&name.to_string_lossy()) else {
                continue;
            };
            max_id = max_id.max(id);
            if is_sealed {
                sealed.insert(id, open_sealed(&e.path())?);
            } else {
                logs.push((id, e.path()));
            }
        }
        // Segments a compaction replaced, left behind by a crash before their deletion. Not the
        // lists of restored segments: they name segments of the stores that wrote them, by ids
        // this directory gives to others.
        let replaced: BTreeSet<u32> = sealed
            .iter()
            .filter(|(id, _)| !restored.names.contains_key(id))
            .flat_map(|(_, s): (_, &(Sealed, Vec<u32>))| s.1.iter().copied())
            .collect();
        let mut segments: BTreeMap<u32, Sealed> = BTreeMap::new();
        for (id, (s, _)) in sealed {
            if replaced.contains(&id) {
                std::fs::remove_file(&s.path)
                    .map_err(io(&s.path, "cannot remove a replaced segment"))?;
            } else {
                segments.insert(id, s);
            }
        }
        // A log whose sealed segment exists was sealed: the crash came before its removal.
        let mut kept_logs = Vec::new();
        for (id, path) in logs {
            if segments.contains_key(&id) {
                std::fs::remove_file(&path).map_err(io(&path, "cannot remove a sealed log"))?;
            } else {
                kept_logs.push((id, path));
            }
        }
        let mut logs = kept_logs;
        logs.sort();
        let mut next_order = segments.values().map(|s| s.order + 1).max().unwrap_or(0);
        let mut store_index = Index::default();
        // The key arena sized from the footers' entry counts (an upper bound: a key in several
        // segments counts once per segment). The table grows as it goes: reserving it whole
        // up front measured slower (its pages all touched at once).
        let entries: u64 = segments.values().map(|s| s.entries).sum();
        store_index.reserve_key_bytes(entries as usize * 24);
        let mut order: Vec<(u64, u32)> = segments.iter().map(|(id, s)| (s.order, *id)).collect();
        order.sort();
        for &(_, id) in &order {
            let s = &segments[&id];
            let mut offset = 0usize;
            let mut count = 0u64;
            while offset < s.entries_end {
                let (e, n) = entry::decode(&s.map[offset..s.entries_end])
                    .map_err(|err| corrupt(&s.path, offset, err))?;
                if !restored.names.contains_key(&id) || restored.keeps(e.key_group) {
                    apply(
                        &mut store_index,
                        e,
                        Loc {
                            segment: id,
                            offset: offset as u64,
                            len: n as u32,
                        },
                        None,
                    );
                }
                offset += n;
                count += 1;
            }
            if count != s.entries {
                return Err(StoreError::Corrupt {
                    path: s.path.clone(),
                    offset: s.entries_end as u64,
                    reason: format!(
                        "the footer counts {} entries, the segment holds {count}",
                        s.entries
                    ),
                });
            }
        }
        // More than one log: the older ones were being sealed when the process died; their
        // entries are older than the newest log's. Replay them all, in order, into the last.
        let active_id = logs.last().map_or(max_id + 1, |l| l.0);
        let active_path = segment_path(&dir, active_id, false);
        let mut bytes = Vec::new();
        for (_, path) in &logs {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io(path, "cannot read a segment"))?;
            // The log is trusted up to its last whole entry.
            let mut offset = 0;
            while offset < data.len() {
                match entry::decode(&data[offset..]) {
                    Ok((_, n)) => offset += n,
                    Err(_) => break,
                }
            }
            bytes.extend_from_slice(&data[..offset]);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&active_path)
            .map_err(io(&active_path, "cannot open the active segment"))?;
        if logs.len() > 1 {
            // Several logs merge into the newest: written whole beside it, then renamed over it,
            // and only then are the older ones removed (a crash meanwhile loses nothing).
            let tmp = dir.join(format!("seg-{active_id:010}.log.tmp"));
            std::fs::write(&tmp, &bytes)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .map_err(io(&tmp, "cannot write the recovered log"))?;
            std::fs::rename(&tmp, &active_path)
                .and_then(|_| File::open(&dir)?.sync_all())
                .map_err(io(&active_path, "cannot install the recovered log"))?;
            for (id, path) in &logs {
                if *id != active_id {
                    std::fs::remove_file(path).map_err(io(path, "cannot remove an old log"))?;
                }
            }
            file = OpenOptions::new()
                .write(true)
                .open(&active_path)
                .map_err(io(&active_path, "cannot open the active segment"))?;
        } else {
            // One log: cut its torn tail, if it has one (whole entries stay where they are).
            let len = file
                .metadata()
                .map_err(io(&active_path, "cannot read the active segment"))?
                .len();
            if len != bytes.len() as u64 {
                file.set_len(bytes.len() as u64)
                    .and_then(|_| file.sync_data())
                    .map_err(io(
                        &active_path,
                        "cannot cut the torn tail of the active segment",
                    ))?;
            }
        }
        let mut tombstones = BTreeSet::new();
        let mut offset = 0usize;
        while offset < bytes.len() {
            let (e, n) = entry::decode(&bytes[offset..]).expect("recovered entries are whole");
            apply(
                &mut store_index,
                e,
                Loc {
                    segment: active_id,
                    offset: offset as u64,
                    len: n as u32,
                },
                Some(&mut tombstones),
            );
            offset += n;
        }
        next_order = next_order.max(1);
        let flushed = bytes.len();
        let origins = restored
            .names
            .into_iter()
            .filter(|(id, _)| segments.contains_key(id))
            .collect();
        let mut store = Store {
            dir,
            options,
            // Past every id in use: a compaction's output may be newer than the active log.
            next_id: max_id.max(active_id) + 1,
            next_order,
            active: Active {
                id: active_id,
                path: active_path,
                file,
                bytes,
                flushed,
                tombstones,
                async_file: None,
            },
            sealed: segments,
            frozen: BTreeMap::new(),
            index: store_index,
            active_live: 0,
            expired: 0,
            uid: unique_id(),
            origins,
        };
        store.recount_live();
        Ok(store)
    }

    fn recount_live(&mut self) {
        for s in self.sealed.values_mut() {
            s.live = 0;
        }
        self.active_live = 0;
        for loc in self.index.values() {
            if loc.segment == self.active.id {
                self.active_live += loc.len as u64;
            } else if let Some(s) = self.sealed.get_mut(&loc.segment) {
                s.live += loc.len as u64;
            }
        }
    }

    /// The value of a key, if it has one.
    pub fn get(&self, key_group: u16, namespace: &[u8], key: &[u8]) -> Option<&[u8]> {
        let loc = with_index_key(key_group, namespace, key, |k| {
            self.index.get_by_entry(k, |loc| {
                let e = self.entry_at(*loc);
                e.key_group == key_group && e.namespace == namespace && e.key == key
            })
        })?;
        Some(self.entry_at(loc).value)
    }

    #[inline]
    fn entry_at(&self, loc: Loc) -> EntryRef<'_> {
        let bytes: &[u8] = if loc.segment == self.active.id {
            &self.active.bytes
        } else if let Some(s) = self.sealed.get(&loc.segment) {
            &s.map
        } else {
            &self.frozen[&loc.segment].bytes
        };
        let at = loc.offset as usize;
        // The index points only at entries checked when written or opened.
        entry::parse_checked(&bytes[at..at + loc.len as usize])
    }

    fn forget(&mut self, loc: Loc) {
        if loc.segment == self.active.id {
            self.active_live -= loc.len as u64;
        } else if let Some(s) = self.sealed.get_mut(&loc.segment) {
            s.live -= loc.len as u64;
        } else if let Some(f) = self.frozen.get_mut(&loc.segment) {
            f.live -= loc.len as u64;
        }
    }

    /// Sets the value of a key.
    pub fn put(
        &mut self,
        key_group: u16,
        namespace: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.append(key_group, Op::Put, namespace, key, value)
    }

    /// Removes a key (a tombstone is appended).
    pub fn delete(
        &mut self,
        key_group: u16,
        namespace: &[u8],
        key: &[u8],
    ) -> Result<(), StoreError> {
        // One probe: the key leaves the index here, and the tombstone is appended only if it
        // was there.
        let Some(old) = with_index_key(key_group, namespace, key, |k| {
            let old = self.index.remove(k);
            if old.is_some() && self.options.log {
                self.active.tombstones.insert(k.to_vec());
            }
            old
        }) else {
            return Ok(());
        };
        self.forget(old);
        self.append(key_group, Op::Delete, namespace, key, &[])
    }

    fn append(
        &mut self,
        key_group: u16,
        op: Op,
        namespace: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let offset = self.active.bytes.len();
        entry::encode(&mut self.active.bytes, key_group, op, namespace, key, value);
        let len = (self.active.bytes.len() - offset) as u32;
        let loc = Loc {
            segment: self.active.id,
            offset: offset as u64,
            len,
        };
        let old = with_index_key(key_group, namespace, key, |k| match op {
            Op::Put => {
                if !self.active.tombstones.is_empty() {
                    self.active.tombstones.remove(k);
                }
                self.index.insert(k, loc)
            }
            // `delete` took the key out of the index (and noted its tombstone) already.
            Op::Delete => None,
        });
        if op == Op::Put {
            self.active_live += len as u64;
        }
        if let Some(old) = old {
            self.forget(old);
        }
        if self.options.log
            && self.active.bytes.len() - self.active.flushed >= self.options.flush_bytes
        {
            self.flush()?;
        }
        if self.active.bytes.len() >= self.options.segment_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// As [`flush`](Self::flush), through glommio's file I/O (io_uring): for a store used on a
    /// shard's executor, which must never block on the disk. Set `flush_bytes` to `usize::MAX`
    /// so that appends never flush by themselves, and call this (and `sync_async`) instead.
    pub async fn flush_async(&mut self) -> Result<(), StoreError> {
        let a = &mut self.active;
        if !self.options.log || a.flushed == a.bytes.len() {
            return Ok(());
        }
        if a.async_file.is_none() {
            let f = glommio::io::OpenOptions::new()
                .write(true)
                .buffered_open(&a.path)
                .await
                .map_err(|e| StoreError::Io {
                    path: a.path.clone(),
                    what: "cannot open the active segment",
                    source: e.into(),
                })?;
            a.async_file = Some(f);
        }
        let file = a.async_file.as_ref().expect("opened above");
        let (from, to) = (a.flushed, a.bytes.len());
        write_all_at(
            file,
            &a.bytes[from..to],
            from as u64,
            &a.path,
            "cannot append to the active segment",
        )
        .await?;
        a.flushed = to;
        Ok(())
    }

    /// As [`sync`](Self::sync), through glommio.
    pub async fn sync_async(&mut self) -> Result<(), StoreError> {
        self.flush_async().await?;
        if let Some(f) = &self.active.async_file {
            f.fdatasync().await.map_err(|e| StoreError::Io {
                path: self.active.path.clone(),
                what: "cannot sync the active segment",
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Writes what the active segment took since the last flush to its file.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let a = &mut self.active;
        if self.options.log && a.flushed < a.bytes.len() {
            // At its offset, not appended: a write handed out by `unflushed_chunk` may still be
            // in flight, and writing the same bytes at the same place twice is harmless.
            a.file
                .write_all_at(&a.bytes[a.flushed..], a.flushed as u64)
                .map_err(io(&a.path, "cannot append to the active segment"))?;
            a.flushed = a.bytes.len();
        }
        Ok(())
    }

    /// Bytes of the active segment not yet written to its file.
    pub fn unflushed_bytes(&self) -> usize {
        if !self.options.log {
            return 0;
        }
        self.active.bytes.len() - self.active.flushed
    }

    /// Up to `max` bytes of the active segment not yet written to its file, copied, with the
    /// file and the offset they go to: for a write the owner runs (through io_uring) while the
    /// store goes on taking appends. [`mark_flushed`](Self::mark_flushed) says when it is done.
    pub fn unflushed_chunk(&self, max: usize) -> Option<(PathBuf, u64, Vec<u8>)> {
        let a = &self.active;
        let end = a.bytes.len().min(a.flushed + max);
        (end > a.flushed).then(|| {
            (
                a.path.clone(),
                a.flushed as u64,
                a.bytes[a.flushed..end].to_vec(),
            )
        })
    }

    /// The file `path` holds the active segment's bytes up to `to` (a write of an
    /// [`unflushed_chunk`](Self::unflushed_chunk) finished). Ignored if the segment was sealed
    /// meanwhile (its log is gone; the sealed segment holds its entries).
    pub fn mark_flushed(&mut self, path: &Path, to: usize) {
        let a = &mut self.active;
        if a.path == path && to > a.flushed && to <= a.bytes.len() {
            a.flushed = to;
        }
    }

    /// Makes the flushed bytes durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        self.active
            .file
            .sync_data()
            .map_err(io(&self.active.path, "cannot sync the active segment"))
    }

    /// Entries of key groups `groups` whose namespace is `namespace`, in key order: calls `f`
    /// with (key group, key, value) of each.
    pub fn scan(
        &self,
        groups: std::ops::Range<u16>,
        namespace: Option<&[u8]>,
        f: impl FnMut(u16, &[u8], &[u8]),
    ) {
        self.scan_prefix(groups, namespace, &[], f)
    }

    /// As [`scan`](Self::scan), of the keys that start with `key_prefix` (a map state's entries
    /// under one key, say).
    pub fn scan_prefix(
        &self,
        groups: std::ops::Range<u16>,
        namespace: Option<&[u8]>,
        key_prefix: &[u8],
        mut f: impl FnMut(u16, &[u8], &[u8]),
    ) {
        let prefix_ok = |k: &[u8]| {
            let kg = key_group_of(k);
            if !groups.contains(&kg) {
                return false;
            }
            let n = u32::from_be_bytes([k[2], k[3], k[4], k[5]]) as usize;
            if namespace.is_some_and(|ns| n != ns.len() || &k[6..6 + n] != ns) {
                return false;
            }
            k[6 + n..].starts_with(key_prefix)
        };
        for (k, loc) in self.index.sorted(|k, _| prefix_ok(k)) {
            let e = self.entry_at(loc);
            f(key_group_of(k), e.key, e.value);
        }
    }

    /// Entries whose namespace starts with `namespace_prefix` (every namespace of one state,
    /// say), in (key group, namespace, key) order: calls `f` with (key group, namespace, key,
    /// value) of each.
    pub fn scan_namespaces(
        &self,
        namespace_prefix: &[u8],
        mut f: impl FnMut(u16, &[u8], &[u8], &[u8]),
    ) {
        let p = namespace_prefix;
        let ok = |k: &[u8]| {
            let n = u32::from_be_bytes([k[2], k[3], k[4], k[5]]) as usize;
            n >= p.len() && &k[6..6 + p.len()] == p
        };
        for (k, loc) in self.index.sorted(|k, _| ok(k)) {
            let e = self.entry_at(loc);
            f(key_group_of(k), e.namespace, e.key, e.value);
        }
    }

    /// The number of sealed segments.
    pub fn segments(&self) -> usize {
        self.sealed.len()
    }

    /// The number of keys with a value.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Seals the active segment: its live entries and needed tombstones, sorted by key, go to
    /// a sealed segment with a footer of key-group offsets; a new active segment begins.
    pub fn seal(&mut self) -> Result<(), StoreError> {
        if !self.options.log {
            // A working store keeps no tombstone set: its segment is sealed as it was
            // appended (a snapshot's frozen segment, written here and now).
            if let Some(w) = self.freeze_active(self.options.sync)? {
                let r = write_frozen(&self.dir, &w);
                let _ = w.written.set(match &r {
                    Ok(f) => Ok(f.clone()),
                    Err(e) => Err(e.to_string()),
                });
                r?;
            }
            return self.install_frozen();
        }
        self.flush()?;
        let (id, order, entries) = self.prepare_seal();
        let written = self.write_sealed(id, order, &entries, &[])?;
        std::fs::remove_file(&self.active.path)
            .map_err(io(&self.active.path, "cannot remove a sealed log"))?;
        self.finish_seal(id, written, &entries)
    }

    /// As [`seal`](Self::seal), writing through glommio (on a shard's executor). With
    /// `segment_bytes` at `usize::MAX` appends never seal by themselves: the owner calls this
    /// when [`active_bytes`](Self::active_bytes) says so.
    pub async fn seal_async(&mut self) -> Result<(), StoreError> {
        self.flush_async().await?;
        let (id, order, entries) = self.prepare_seal();
        let written = self.write_sealed_async(id, order, &entries, &[]).await?;
        if let Some(f) = self.active.async_file.take() {
            let _ = f.close().await;
        }
        glommio::io::remove(&self.active.path)
            .await
            .map_err(|e| StoreError::Io {
                path: self.active.path.clone(),
                what: "cannot remove a sealed log",
                source: e.into(),
            })?;
        self.finish_seal(id, written, &entries)
    }

    /// The store's contents as immutable files, for a checkpoint: seals the active segment if
    /// it holds anything, syncs the sealed segments not synced yet (and the directory), and
    /// hands every sealed segment over, open. Its cost follows what changed since the last
    /// snapshot: what the active segment gathered, and segments compaction wrote.
    pub fn snapshot(&mut self) -> Result<Vec<SegmentHandle>, StoreError> {
        let handles = self.snapshot_async()?.finish()?;
        self.install_frozen()?;
        Ok(handles)
    }

    /// The synchronous half of a snapshot, for a shard that must not wait for the disk: the
    /// active segment is frozen as it is (its bytes stay readable in memory, where the index
    /// points) and a new one begins; the returned [`AsyncSnapshot`] writes the frozen segment
    /// as a sealed file, syncs, and opens every segment, on another thread. Its cost here is
    /// a vector's hand-over: no sort, no copy, no write. The sealed file keeps the entries in
    /// the order they were appended, so nothing is reindexed when it is installed (at the next
    /// snapshot, compaction or [`install_frozen`](Self::install_frozen)). A store that logs
    /// (`StoreOptions::log`) seals here instead, as [`snapshot`](Self::snapshot) does.
    ///
    /// Snapshots of one store must be finished in the order they were taken (a later one names
    /// the segments an earlier one writes).
    pub fn snapshot_async(&mut self) -> Result<AsyncSnapshot, StoreError> {
        self.install_frozen()?;
        // A logging store is reopened after a crash from its logs, which it takes to be newer
        // than every sealed segment: a frozen segment's log is not (a later seal may be newer).
        // It seals here, as `seal` does; a working store (no log) freezes.
        if self.options.log && !self.active.bytes.is_empty() {
            self.seal()?;
        }
        let write = self.freeze_active(true)?;
        // Sealed segments are opened now: a compaction may remove their names before the
        // snapshot is finished.
        let mut sealed = Vec::with_capacity(self.sealed.len());
        for (id, s) in &self.sealed {
            let file = File::open(&s.path).map_err(io(&s.path, "cannot open a sealed segment"))?;
            sealed.push((self.segment_name(*id), s.path.clone(), file));
        }
        let frozen: Vec<(String, PathBuf, WriteSlot)> = self
            .frozen
            .iter()
            .map(|(id, f)| {
                (
                    self.segment_name(*id),
                    segment_path(&self.dir, *id, true),
                    f.written.clone(),
                )
            })
            .collect();
        let mut to_sync = Vec::new();
        for s in self.sealed.values_mut() {
            if !s.synced {
                to_sync.push(s.path.clone());
                s.synced = true;
            }
        }
        // Frozen segments whose write failed are written again.
        let mut writes: Vec<FrozenWrite> = write.into_iter().collect();
        for (id, f) in &mut self.frozen {
            if f.rewrite {
                f.rewrite = false;
                f.sync = true;
                writes.push(f.write(*id));
            }
        }
        Ok(AsyncSnapshot {
            dir: self.dir.clone(),
            sealed,
            frozen,
            to_sync,
            writes,
        })
    }

    /// Freezes the active segment (if it holds anything) and begins a new one; what writing
    /// the frozen one takes.
    fn freeze_active(&mut self, sync: bool) -> Result<Option<FrozenWrite>, StoreError> {
        if self.active.bytes.is_empty() {
            return Ok(None);
        }
        let id = self.active.id;
        let bytes = std::sync::Arc::new(std::mem::take(&mut self.active.bytes));
        let written = WriteSlot::default();
        let order = self.next_order;
        self.next_order += 1;
        let frozen = Frozen {
            bytes,
            live: self.active_live,
            order,
            written,
            rewrite: false,
            sync,
        };
        let write = frozen.write(id);
        self.frozen.insert(id, frozen);
        self.start_active()?;
        Ok(Some(write))
    }

    fn segment_name(&self, id: u32) -> String {
        match self.origins.get(&id) {
            Some(n) => n.clone(),
            None => format!("{:016x}-{id:010}.sst", self.uid),
        }
    }

    /// Installs the frozen segments whose sealed files are written: read through their maps
    /// from now on, their memory freed. A write that failed is an error here (the segment
    /// stays frozen and readable; the next snapshot writes it again).
    pub fn install_frozen(&mut self) -> Result<(), StoreError> {
        let done: Vec<u32> = self
            .frozen
            .iter()
            .filter(|(_, f)| f.written.get().is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let f = self.frozen.remove(&id).expect("listed");
            if let Some(Err(e)) = f.written.get() {
                let path = segment_path(&self.dir, id, true);
                let e = StoreError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("the frozen segment was not written: {e}"),
                };
                // Written again by the next snapshot.
                self.frozen.insert(
                    id,
                    Frozen {
                        written: WriteSlot::default(),
                        rewrite: true,
                        ..f
                    },
                );
                return Err(e);
            }
            let path = segment_path(&self.dir, id, true);
            let (mut sealed, _) = open_sealed(&path)?;
            sealed.live = f.live;
            sealed.synced = f.sync;
            self.sealed.insert(id, sealed);
            // The log it was (a working store's is empty), sealed now.
            let _ = std::fs::remove_file(segment_path(&self.dir, id, false));
        }
        Ok(())
    }

    /// Bytes the active segment holds.
    pub fn active_bytes(&self) -> usize {
        self.active.bytes.len()
    }

    /// What sealing the active segment writes: its live puts and the tombstones older segments
    /// need, sorted by key.
    #[allow(clippy::type_complexity)]
    fn prepare_seal(&mut self) -> (u32, u64, Vec<(Vec<u8>, Option<Loc>)>) {
        let id = self.active.id;
        // The active segment's live puts, and its tombstones (they shadow older segments).
        let mut entries: Vec<(Vec<u8>, Option<Loc>)> = self
            .index
            .sorted(|_, l| l.segment == id)
            .into_iter()
            .map(|(k, l)| (k.to_vec(), Some(l)))
            .collect();
        // (Only a logging store seals sorted, and it never freezes.)
        if !self.sealed.is_empty() {
            entries.extend(self.active.tombstones.iter().map(|k| (k.clone(), None)));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let order = self.next_order;
        self.next_order += 1;
        (id, order, entries)
    }

    /// Installs the sealed segment in place of the active log, and starts a new log.
    fn finish_seal(
        &mut self,
        id: u32,
        written: Vec<Loc>,
        entries: &[(Vec<u8>, Option<Loc>)],
    ) -> Result<(), StoreError> {
        self.install_sealed(id, written, entries)?;
        self.start_active()
    }

    /// Begins a new, empty active segment.
    fn start_active(&mut self) -> Result<(), StoreError> {
        let next = self.next_id;
        self.next_id += 1;
        let path = segment_path(&self.dir, next, false);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path, "cannot create the active segment"))?;
        self.active = Active {
            id: next,
            path,
            file,
            bytes: Vec::new(),
            flushed: 0,
            tombstones: BTreeSet::new(),
            async_file: None,
        };
        self.active_live = 0;
        Ok(())
    }

    /// Writes a sealed segment of `entries` (index keys, with the location of a put or None for
    /// a tombstone); returns the new locations, in the same order.
    fn write_sealed(
        &self,
        id: u32,
        order: u64,
        entries: &[(Vec<u8>, Option<Loc>)],
        replaced: &[u32],
    ) -> Result<Vec<Loc>, StoreError> {
        let (out, locs) = self.build_sealed(id, order, entries, replaced);
        // Write, sync, rename, sync the directory: a sealed segment exists whole or not at all.
        let path = segment_path(&self.dir, id, true);
        let tmp = self.dir.join(format!("seg-{id:010}.sst.tmp"));
        let mut f = File::create(&tmp).map_err(io(&tmp, "cannot create a sealed segment"))?;
        let sync = self.options.sync;
        f.write_all(&out)
            .and_then(|_| if sync { f.sync_all() } else { Ok(()) })
            .map_err(io(&tmp, "cannot write a sealed segment"))?;
        std::fs::rename(&tmp, &path).map_err(io(&path, "cannot install a sealed segment"))?;
        if sync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir, "cannot sync the store directory"))?;
        }
        Ok(locs)
    }

    /// As `write_sealed`, through glommio: the shard goes on running its other tasks while the
    /// segment is written and synced.
    async fn write_sealed_async(
        &self,
        id: u32,
        order: u64,
        entries: &[(Vec<u8>, Option<Loc>)],
        replaced: &[u32],
    ) -> Result<Vec<Loc>, StoreError> {
        let (out, locs) = self.build_sealed(id, order, entries, replaced);
        let path = segment_path(&self.dir, id, true);
        let tmp = self.dir.join(format!("seg-{id:010}.sst.tmp"));
        let gio = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |e: glommio::GlommioError<()>| StoreError::Io {
                path: p,
                what,
                source: e.into(),
            }
        };
        let f = glommio::io::BufferedFile::create(&tmp)
            .await
            .map_err(gio("cannot create a sealed segment", &tmp))?;
        write_all_at(&f, &out, 0, &tmp, "cannot write a sealed segment").await?;
        if self.options.sync {
            f.fdatasync()
                .await
                .map_err(gio("cannot sync a sealed segment", &tmp))?;
        }
        f.close()
            .await
            .map_err(gio("cannot close a sealed segment", &tmp))?;
        glommio::io::rename(&tmp, &path)
            .await
            .map_err(gio("cannot install a sealed segment", &path))?;
        if self.options.sync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir, "cannot sync the store directory"))?;
        }
        Ok(locs)
    }

    /// The bytes of a sealed segment of `entries`, and their new locations.
    fn build_sealed(
        &self,
        id: u32,
        order: u64,
        entries: &[(Vec<u8>, Option<Loc>)],
        replaced: &[u32],
    ) -> (Vec<u8>, Vec<Loc>) {
        let mut out = Vec::new();
        let mut groups: Vec<(u16, u64)> = Vec::new();
        let mut locs = Vec::with_capacity(entries.len());
        for (k, loc) in entries {
            let kg = key_group_of(k);
            if groups.last().is_none_or(|g| g.0 != kg) {
                groups.push((kg, out.len() as u64));
            }
            let offset = out.len();
            match loc {
                Some(l) => {
                    let e = self.entry_at(*l);
                    entry::encode(&mut out, e.key_group, Op::Put, e.namespace, e.key, e.value);
                }
                None => {
                    let ns_len = u32::from_be_bytes([k[2], k[3], k[4], k[5]]) as usize;
                    let (ns, key) = k[6..].split_at(ns_len);
                    entry::encode(&mut out, kg, Op::Delete, ns, key, &[]);
                }
            }
            locs.push(Loc {
                segment: id,
                offset: offset as u64,
                len: (out.len() - offset) as u32,
            });
        }
        let footer_start = out.len();
        for (kg, off) in &groups {
            out.extend_from_slice(&kg.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&order.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for r in replaced {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        out.extend_from_slice(&(replaced.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&out[footer_start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(MAGIC);
        (out, locs)
    }

    fn install_sealed(
        &mut self,
        id: u32,
        locs: Vec<Loc>,
        entries: &[(Vec<u8>, Option<Loc>)],
    ) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, id, true);
        let (mut sealed, _) = open_sealed(&path)?;
        sealed.live = 0;
        sealed.synced = self.options.sync;
        for ((k, old), new) in entries.iter().zip(locs) {
            if old.is_some() {
                self.index.insert(k, new);
                sealed.live += new.len as u64;
            }
        }
        self.sealed.insert(id, sealed);
        Ok(())
    }

    /// Rewrites the sealed segments whose live share fell below the threshold into one, dropping
    /// what no key needs. Returns how many segments it merged.
    pub fn compact(&mut self) -> Result<usize, StoreError> {
        Ok(self.compact_expiring(false, |_, _| false)?.0)
    }

    /// As [`compact`](Self::compact) (or, if `full`, of every sealed segment whatever its live
    /// share), also dropping the values `expired(namespace, value)` says have outlived their
    /// time to live (the keys then read as absent). Returns how many segments it merged and
    /// how many values expired.
    pub fn compact_expiring(
        &mut self,
        full: bool,
        mut expired: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(usize, u64), StoreError> {
        let dropped_before = self.expired;
        // Not while a frozen segment waits for its file: tombstones merged now might shadow
        // its entries, and it is not among the segments compaction weighs.
        self.install_frozen()?;
        if !self.frozen.is_empty() {
            return Ok((0, 0));
        }
        let Some((id, order, victims, entries)) = self.prepare_compaction(full, &mut expired)?
        else {
            return Ok((0, 0));
        };
        let locs = self.write_sealed(id, order, &entries, &victims)?;
        self.install_sealed(id, locs, &entries)?;
        for v in &victims {
            let s = self.sealed.remove(v).expect("a victim is sealed");
            std::fs::remove_file(&s.path)
                .map_err(io(&s.path, "cannot remove a compacted segment"))?;
        }
        Ok((victims.len(), self.expired - dropped_before))
    }

    /// As [`compact`](Self::compact), writing through glommio (on a shard's executor).
    pub async fn compact_async(&mut self) -> Result<usize, StoreError> {
        let Some((id, order, victims, entries)) =
            self.prepare_compaction(false, &mut |_, _| false)?
        else {
            return Ok(0);
        };
        let locs = self
            .write_sealed_async(id, order, &entries, &victims)
            .await?;
        self.install_sealed(id, locs, &entries)?;
        for v in &victims {
            let s = self.sealed.remove(v).expect("a victim is sealed");
            drop(s.map);
            glommio::io::remove(&s.path)
                .await
                .map_err(|e| StoreError::Io {
                    path: s.path.clone(),
                    what: "cannot remove a compacted segment",
                    source: e.into(),
                })?;
        }
        Ok(victims.len())
    }

    /// What a compaction writes: the new segment's id and order, the segments it replaces, and
    /// their entries still needed, sorted by key. None: no segment fell below the ratio.
    #[allow(clippy::type_complexity)]
    fn prepare_compaction(
        &mut self,
        full: bool,
        expired: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<Option<(u32, u64, Vec<u32>, Vec<(Vec<u8>, Option<Loc>)>)>, StoreError> {
        let ratio = self.options.compact_live_ratio;
        let victims: Vec<u32> = self
            .sealed
            .iter()
            .filter(|(_, s)| full || (s.live as f64) < ratio * s.entries_end.max(1) as f64)
            .map(|(id, _)| *id)
            .collect();
        if victims.is_empty() {
            return Ok(None);
        }
        let newest_order = victims
            .iter()
            .map(|id| self.sealed[id].order)
            .max()
            .unwrap_or(0);
        // Tombstones may go only if no segment older than the merge's newest is left out.
        let keep_tombstones = self
            .sealed
            .iter()
            .any(|(id, s)| s.order < newest_order && !victims.contains(id));
        let mut entries: Vec<(Vec<u8>, Option<Loc>)> = Vec::new();
        for id in &victims {
            let s = &self.sealed[id];
            let mut offset = 0usize;
            while offset < s.entries_end {
                let (e, n) = entry::decode(&s.map[offset..s.entries_end])
                    .map_err(|err| corrupt(&s.path, offset, err))?;
                let k = index_key(e.key_group, e.namespace, e.key);
                let here = Loc {
                    segment: *id,
                    offset: offset as u64,
                    len: n as u32,
                };
                match e.op {
                    // Live if the index points here: comparing locations is enough (the entry
                    // here has this key), and reads no key bytes.
                    Op::Put if self.index.get_by_entry(&k, |l| *l == here).is_some() => {
                        if expired(e.namespace, e.value) {
                            // Gone from the index now; a tombstone shadows older values of the
                            // key in segments left out of the merge.
                            self.index.remove(&k);
                            self.expired += 1;
                            if keep_tombstones {
                                entries.push((k, None));
                            }
                        } else {
                            entries.push((k, Some(here)));
                        }
                    }
                    Op::Delete if keep_tombstones && !self.index.contains_key(&k) => {
                        entries.push((k, None))
                    }
                    _ => {}
                }
                offset += n;
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        let id = self.next_id;
        self.next_id += 1;
        Ok(Some((id, newest_order, victims, entries)))
    }

    /// Bytes of the sealed segments, and of those the index still points to.
    pub fn sealed_bytes(&self) -> (u64, u64) {
        let total = self.sealed.values().map(|s| s.entries_end as u64).sum();
        let live = self.sealed.values().map(|s| s.live).sum();
        (total, live)
    }

    /// The sealed segments' files.
    pub fn sealed_paths(&self) -> Vec<PathBuf> {
        self.sealed.values().map(|s| s.path.clone()).collect()
    }

    /// The active segment's file.
    pub fn active_path(&self) -> &Path {
        &self.active.path
    }
}

/// Applies an entry to the index while rebuilding it.
fn apply(index: &mut Index, e: EntryRef<'_>, loc: Loc, tombstones: Option<&mut BTreeSet<Vec<u8>>>) {
    with_index_key(e.key_group, e.namespace, e.key, |k| match e.op {
        Op::Put => {
            if let Some(t) = tombstones
                && !t.is_empty()
            {
                t.remove(k);
            }
            index.insert(k, loc);
        }
        Op::Delete => {
            index.remove(k);
            if let Some(t) = tombstones {
                t.insert(k.to_vec());
            }
        }
    });
}

fn corrupt(path: &Path, offset: usize, err: DecodeError) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: err.to_string(),
    }
}

/// Maps a sealed segment and checks its footer; returns it and the segments it replaces. Its
/// entries are checked by whoever reads them (the open that rebuilds the index reads all).
fn open_sealed(path: &Path) -> Result<(Sealed, Vec<u32>), StoreError> {
    let file = File::open(path).map_err(io(path, "cannot open a sealed segment"))?;
    // SAFETY: sealed segments are never written again once renamed into place; the store is the
    // only writer of its directory.
    let map = unsafe { Mmap::map(&file) }.map_err(io(path, "cannot map a sealed segment"))?;
    let bad = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let n = map.len();
    if n < 28 || &map[n - 8..] != MAGIC {
        return Err(bad(
            n.saturating_sub(8),
            "no sealed-segment footer (magic missing)".into(),
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(map[i..i + 4].try_into().expect("4 bytes"));
    let crc = u32_at(n - 12);
    let replaced_n = u32_at(n - 16) as usize;
    let groups_n = u32_at(n - 20) as usize;
    let footer_len = groups_n
        .checked_mul(10)
        .and_then(|g| g.checked_add(16 + replaced_n.checked_mul(4)? + 8))
        .filter(|&l| l + 12 <= n)
        .ok_or_else(|| {
            bad(
                n - 20,
                format!("a footer of {groups_n} groups and {replaced_n} replaced segments"),
            )
        })?;
    let footer_start = n - 12 - footer_len;
    if crc32fast::hash(&map[footer_start..n - 12]) != crc {
        return Err(bad(footer_start, "the footer's crc does not match".into()));
    }
    let order_at = footer_start + groups_n * 10;
    let order = u64::from_le_bytes(map[order_at..order_at + 8].try_into().expect("8 bytes"));
    let entries = u64::from_le_bytes(
        map[order_at + 8..order_at + 16]
            .try_into()
            .expect("8 bytes"),
    );
    let replaced = (0..replaced_n)
        .map(|i| u32_at(order_at + 16 + i * 4))
        .collect();
    Ok((
        Sealed {
            path: path.to_path_buf(),
            map,
            entries_end: footer_start,
            order,
            entries,
            live: 0,
            synced: true,
        },
        replaced,
    ))
}

/// An id unlikely to repeat across openings: the clock, the process and a counter, mixed.
fn unique_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
