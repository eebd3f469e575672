//! Checkpoint storage: segments shared between checkpoints, and each checkpoint's metadata.
//!
//! ```text
//! <dir>/shared/<name>.sst     sealed segments, each uploaded once, named by the store
//! <dir>/chk-<id>/_metadata    one complete checkpoint: the segments it needs, and a payload
//! ```
//!
//! A checkpoint is incremental: [`CheckpointStorage::upload`] puts a segment into `shared/`
//! only if no earlier checkpoint put it there (a store names a segment the same at every
//! snapshot, see [`crate::store::SegmentHandle`]), so a checkpoint writes what changed since
//! the last one. Uploading is a hard link when the checkpoint directory is on the store's file
//! system (no bytes copied), a copy and a sync otherwise.
//!
//! The metadata is written atomically (write, sync, rename, sync the directory), so a
//! `chk-<id>` directory without a whole, valid `_metadata` is a checkpoint that never
//! completed: [`CheckpointStorage::latest`] passes over it, saying why, and takes the one
//! before. [`CheckpointStorage::retain`] keeps the newest k complete checkpoints and removes
//! the older ones and every shared segment none of the kept ones (nor one in flight) names:
//! shared segments are reference-counted by the metadata that lists them.
//!
//! `_metadata`:
//! ```text
//! b"SFCHK001" | u64 id | u32 segments | (u16 len | name)* | u64 payload len | payload | u32 crc
//! ```
//! all little-endian; the crc (crc32fast) covers everything before it. The payload is the
//! engine's (operators' positions and snapshots); this crate does not read it.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::{SegmentHandle, StoreError};

const MAGIC: &[u8; 8] = b"SFCHK001";

/// What a complete checkpoint is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub id: u64,
    /// Names of shared segments (under `shared/`).
    pub segments: Vec<String>,
    /// The engine's own record of the checkpoint.
    pub payload: Vec<u8>,
}

/// A checkpoint directory's id, with its metadata or why it has none.
pub type Listed = (u64, Result<Metadata, Skipped>);

/// A checkpoint directory passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What [`CheckpointStorage::retain`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retained {
    pub kept: Vec<u64>,
    pub checkpoints_removed: usize,
    pub segments_removed: usize,
}

/// A directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    dir: PathBuf,
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, what, source }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot sync a checkpoint directory"))
}

impl CheckpointStorage {
    /// The storage in `dir` (created, with `shared/`, if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let shared = dir.join("shared");
        std::fs::create_dir_all(&shared)
            .map_err(io(&shared, "cannot create the checkpoint directory"))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where shared segment `name` lives.
    pub fn segment_path(&self, name: &str) -> PathBuf {
        self.dir.join("shared").join(name)
    }

    /// Where checkpoint `id` lives.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("chk-{id}"))
    }

    /// Puts a store's segment into the shared directory unless an earlier checkpoint did;
    /// returns the bytes this checkpoint adds (0 for a segment already shared).
    pub fn upload(&self, segment: &SegmentHandle) -> Result<u64, StoreError> {
        let to = self.segment_path(&segment.name);
        if to.exists() {
            return Ok(0);
        }
        // Linked or copied under a temporary name and renamed: a crash never leaves half a
        // segment under its name.
        let tmp = self
            .dir
            .join("shared")
            .join(format!("{}.tmp", segment.name));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&segment.path, &tmp).is_err() {
            // Another file system, or the store's name is gone (a compaction replaced the
            // segment since the snapshot): copy from the open file.
            let mut from = &segment.file;
            let mut out = File::create(&tmp).map_err(io(&tmp, "cannot create a segment copy"))?;
            std::io::Seek::seek(&mut from, std::io::SeekFrom::Start(0))
                .and_then(|_| std::io::copy(&mut from, &mut out))
                .and_then(|_| out.sync_all())
                .map_err(io(&tmp, "cannot copy a segment into the checkpoint"))?;
        }
        std::fs::rename(&tmp, &to).map_err(io(&to, "cannot install a shared segment"))?;
        Ok(segment.bytes)
    }

    /// Makes checkpoint `meta.id` complete: its `_metadata`, written whole or not at all.
    /// Every segment it names must be in the shared directory already (an error names the
    /// first that is not).
    pub fn commit(&self, meta: &Metadata) -> Result<PathBuf, StoreError> {
        for name in &meta.segments {
            let p = self.segment_path(name);
            if !p.exists() {
                return Err(StoreError::Io {
                    path: p,
                    what: "a segment of the checkpoint is missing",
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
        }
        sync_dir(&self.dir.join("shared"))?;
        let dir = self.checkpoint_dir(meta.id);
        std::fs::create_dir_all(&dir).map_err(io(&dir, "cannot create a checkpoint"))?;
        let tmp = dir.join("_metadata.tmp");
        let path = dir.join("_metadata");
        let mut f = File::create(&tmp).map_err(io(&tmp, "cannot create the metadata"))?;
        f.write_all(&encode(meta))
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp, "cannot write the metadata"))?;
        std::fs::rename(&tmp, &path).map_err(io(&path, "cannot install the metadata"))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Every checkpoint directory, newest first, each with its metadata or why it has none.
    pub fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir, "cannot list checkpoints"))? {
            let e = e.map_err(io(&self.dir, "cannot list checkpoints"))?;
            let name = e.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids.into_iter().map(|id| (id, self.read(id))).collect())
    }

    /// The metadata of checkpoint `id`, or why it is not a complete checkpoint.
    pub fn read(&self, id: u64) -> Result<Metadata, Skipped> {
        let path = self.checkpoint_dir(id).join("_metadata");
        let skipped = |reason: String| Skipped {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| skipped(format!("cannot read it: {e}")))?;
        let meta = decode(&bytes).map_err(skipped)?;
        if meta.id != id {
            return Err(skipped(format!("it says it is checkpoint {}", meta.id)));
        }
        Ok(meta)
    }

    /// The newest complete checkpoint, and the newer directories passed over (partial or
    /// corrupt metadata), with why.
    pub fn latest(&self) -> Result<(Option<Metadata>, Vec<Skipped>), StoreError> {
        let mut skipped = Vec::new();
        for (_, m) in self.list()? {
            match m {
                Ok(m) => return Ok((Some(m), skipped)),
                Err(s) => skipped.push(s),
            }
        }
        Ok((None, skipped))
    }

    /// Keeps the newest `keep` complete checkpoints; removes older checkpoint directories and
    /// the shared segments that neither a kept checkpoint nor `in_flight` (segments uploaded
    /// for checkpoints not complete yet) names. Directories newer than the newest complete
    /// checkpoint are left alone: they may be checkpoints in progress.
    pub fn retain(&self, keep: usize, in_flight: &HashSet<String>) -> Result<Retained, StoreError> {
        let mut r = Retained::default();
        let all = self.list()?;
        let complete: Vec<&Metadata> = all.iter().filter_map(|(_, m)| m.as_ref().ok()).collect();
        let kept: Vec<&Metadata> = complete.iter().take(keep.max(1)).copied().collect();
        r.kept = kept.iter().map(|m| m.id).collect();
        let Some(oldest_kept) = r.kept.last().copied() else {
            return Ok(r);
        };
        for (id, _) in &all {
            if *id < oldest_kept {
                let d = self.checkpoint_dir(*id);
                std::fs::remove_dir_all(&d).map_err(io(&d, "cannot remove a checkpoint"))?;
                r.checkpoints_removed += 1;
            }
        }
        let named: HashSet<&str> = kept
            .iter()
            .flat_map(|m| m.segments.iter().map(String::as_str))
            .collect();
        let shared = self.dir.join("shared");
        for e in std::fs::read_dir(&shared).map_err(io(&shared, "cannot list shared segments"))? {
            let e = e.map_err(io(&shared, "cannot list shared segments"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || named.contains(name.as_str()) || in_flight.contains(&name)
            {
                continue;
            }
            std::fs::remove_file(e.path()).map_err(io(&e.path(), "cannot remove a segment"))?;
            r.segments_removed += 1;
        }
        Ok(r)
    }
}

fn encode(meta: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta.id.to_le_bytes());
    out.extend_from_slice(&(meta.segments.len() as u32).to_le_bytes());
    for s in &meta.segments {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&(meta.payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta.payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Metadata, String> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err("no checkpoint magic at offset 0".into());
    }
    let body = &bytes[..bytes.len() - 4];
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(format!(
            "the crc at offset {} does not match (a partial or corrupt write)",
            bytes.len() - 4
        ));
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body
            .get(at..at + n)
            .ok_or_else(|| format!("cut short at offset {at}"))?;
        at += n;
        Ok(s)
    };
    let id = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let mut segments = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let name = std::str::from_utf8(take(len)?)
            .map_err(|_| "a segment name is not UTF-8".to_string())?;
        segments.push(name.to_string());
    }
    let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
    let payload = take(len)?.to_vec();
    if at != body.len() {
        return Err(format!("{} bytes after the payload", body.len() - at));
    }
    Ok(Metadata {
        id,
        segments,
        payload,
    })
}
