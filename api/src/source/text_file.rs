//! `read_text_file`: the lines of a file, or of every file of a directory, split across shards
//! by byte ranges.
//!
//! The files are seen as one byte space, in name order; shard `i` of `P` owns the bytes
//! `[i*N/P, (i+1)*N/P)`, and a line belongs to the shard that owns its first byte. A shard
//! starts reading one byte before its range and skips to the first line that starts inside it,
//! and reads past its end to finish its last line — the split rule of Hadoop and Flink, so every
//! line is read exactly once whatever P is.
//!
//! Reads go through glommio (io_uring) in 1 MiB chunks: the shard never blocks its executor on
//! the disk. A line that is not UTF-8 fails the job, or is skipped and counted, as the options
//! say; either way its file and line number are known (the line number is counted only when
//! needed, on the error path).

use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, ReadResult};
use shardflow_core::operator::OperatorContext;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;
use shardflow_core::{JobError, OnMalformed};

use super::split_range;

/// Bytes read per request.
const CHUNK_BYTES: usize = 1 << 20;

/// How `read_text_file` treats its input.
#[derive(Debug, Clone)]
pub struct TextFileOptions {
    /// A line that is not valid UTF-8: fail the job (default) or skip and count it.
    pub on_invalid_utf8: OnMalformed,
    /// The longest line accepted; a longer one fails the job with its file and line.
    pub line_bytes_max: usize,
}

impl Default for TextFileOptions {
    fn default() -> Self {
        Self {
            on_invalid_utf8: OnMalformed::Fail,
            line_bytes_max: 16 << 20,
        }
    }
}

/// The files behind `path`: the file itself, or the regular files of the directory whose names
/// do not start with `.` or `_` (Flink's default filter), in name order; with their sizes.
pub fn list_input_files(path: &Path) -> Result<Vec<(PathBuf, u64)>, JobError> {
    let meta = std::fs::metadata(path).map_err(|e| JobError::io(path, "cannot read input", e))?;
    if meta.is_file() {
        return Ok(vec![(path.to_path_buf(), meta.len())]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| JobError::io(path, "cannot list input directory", e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JobError::io(path, "cannot list input directory", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let p = entry.path();
        let m = std::fs::metadata(&p).map_err(|e| JobError::io(&p, "cannot read input", e))?;
        if m.is_file() {
            files.push((p, m.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// A line with where it lies: the index of its file in [`list_input_files`]'s order and the byte
/// offset of its first byte. Read with `read_text_file_located`, for jobs that report bad lines
/// by file and line (see [`line_number_at`]).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Line {
    pub file: u32,
    pub offset: u64,
    pub text: String,
}

/// What a text source makes of each line it reads.
pub trait FromLine: Sized + 'static {
    fn from_line(file: u32, offset: u64, text: &str) -> Self;
}

impl FromLine for String {
    #[inline]
    fn from_line(_file: u32, _offset: u64, text: &str) -> Self {
        text.to_owned()
    }
}

impl FromLine for Line {
    #[inline]
    fn from_line(file: u32, offset: u64, text: &str) -> Self {
        Line {
            file,
            offset,
            text: text.to_owned(),
        }
    }
}

/// The 1-based line numbers of the lines starting at `offsets` (sorted) of the file at `path`, by
/// one pass over the file. For reports after a job, off the data path.
pub fn line_number_at(path: &Path, offsets: &[u64]) -> std::io::Result<Vec<u64>> {
    use std::io::Read;
    debug_assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let (mut pos, mut newlines, mut next) = (0u64, 0u64, 0usize);
    let mut out = Vec::with_capacity(offsets.len());
    while next < offsets.len() {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let mut from = 0usize;
        while next < offsets.len() && offsets[next] < pos + n as u64 {
            let upto = (offsets[next] - pos) as usize;
            newlines += memchr::memchr_iter(b'\n', &chunk[from..upto]).count() as u64;
            from = upto;
            out.push(newlines + 1);
            next += 1;
        }
        newlines += memchr::memchr_iter(b'\n', &chunk[from..]).count() as u64;
        pos += n as u64;
    }
    // Offsets past the end (there should be none) get the last line.
    out.resize(offsets.len(), newlines + 1);
    Ok(out)
}

/// One file's part of a shard's byte range.
struct Split {
    path: PathBuf,
    /// The file's index among the input files.
    index: u32,
    start: u64,
    end: u64,
    /// `start` is where a line begins (a checkpoint's position): read from there, skip
    /// nothing. Otherwise the line `start` falls in belongs to the previous shard.
    exact: bool,
}

struct OpenSplit {
    file: BufferedFile,
    path: PathBuf,
    index: u32,
    /// Bytes before this offset have been read.
    read_offset: u64,
    /// Lines that start at or after this offset belong to the next shard.
    end: u64,
    /// The bytes of the last read, as glommio returned them (read in place, never copied).
    chunk: Option<ReadResult>,
    chunk_pos: usize,
    eof: bool,
    /// File offset of the first byte of the line being assembled.
    line_start: u64,
    /// The first line read is the tail of the previous shard's last line.
    skip_first: bool,
}

pub struct TextFileSource<R = String> {
    /// The input files, in order (a restored position names them by index).
    files: Vec<PathBuf>,
    splits: std::vec::IntoIter<Split>,
    current: Option<OpenSplit>,
    carry: Vec<u8>,
    options: TextFileOptions,
    ctx: OperatorContext,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<R: FromLine> TextFileSource<R> {
    pub fn open(
        path: &Path,
        options: TextFileOptions,
        ctx: &OperatorContext,
    ) -> Result<Self, JobError> {
        let files = list_input_files(path)?;
        let total: u64 = files.iter().map(|f| f.1).sum();
        let mine = split_range(0, total, ctx.runtime.shard, ctx.runtime.parallelism);
        let mut splits = Vec::new();
        let mut base = 0u64;
        let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
        for (index, (p, len)) in files.into_iter().enumerate() {
            let (a, b) = (mine.start.max(base), mine.end.min(base + len));
            if a < b {
                splits.push(Split {
                    path: p,
                    index: index as u32,
                    start: a - base,
                    end: b - base,
                    exact: false,
                });
            }
            base += len;
        }
        Ok(Self {
            files: paths,
            splits: splits.into_iter(),
            current: None,
            carry: Vec::new(),
            options,
            ctx: ctx.clone(),
            _r: std::marker::PhantomData,
        })
    }

    async fn open_next(&mut self) -> Result<bool, JobError> {
        let Some(split) = self.splits.next() else {
            return Ok(false);
        };
        let file = BufferedFile::open(&split.path)
            .await
            .map_err(|e| JobError::io(&split.path, "cannot open input", e.into()))?;
        let read_from = if split.exact {
            split.start
        } else {
            split.start.saturating_sub(1)
        };
        self.carry.clear();
        self.current = Some(OpenSplit {
            file,
            path: split.path,
            index: split.index,
            read_offset: read_from,
            end: split.end,
            chunk: None,
            chunk_pos: 0,
            eof: false,
            line_start: read_from,
            skip_first: !split.exact && split.start > 0,
        });
        Ok(true)
    }

    /// The error (or the skip) for a line that is not UTF-8.
    async fn malformed(&mut self, line_start: u64) -> Result<(), JobError> {
        match self.options.on_invalid_utf8 {
            OnMalformed::SkipAndCount => {
                self.ctx.counters.add_skipped(1);
                Ok(())
            }
            OnMalformed::Fail => {
                let split = self
                    .current
                    .as_ref()
                    .expect("a line comes from an open split");
                let line = line_number(&split.file, &split.path, line_start).await?;
                Err(JobError::InvalidUtf8 {
                    path: split.path.clone(),
                    line,
                    offset: line_start,
                })
            }
        }
    }
}

/// A line as text: without its `\r` if it had one; `None` if it is not UTF-8.
#[inline]
fn line_text(mut bytes: &[u8]) -> Option<&str> {
    if bytes.last() == Some(&b'\r') {
        bytes = &bytes[..bytes.len() - 1];
    }
    std::str::from_utf8(bytes).ok()
}

/// The 1-based number of the line starting at `offset`: one plus the newlines before it.
async fn line_number(file: &BufferedFile, path: &Path, offset: u64) -> Result<u64, JobError> {
    let mut newlines = 0u64;
    let mut pos = 0u64;
    while pos < offset {
        let want = ((offset - pos) as usize).min(CHUNK_BYTES);
        let chunk = file
            .read_at(pos, want)
            .await
            .map_err(|e| JobError::io(path, "cannot read input", e.into()))?;
        if chunk.is_empty() {
            break;
        }
        newlines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        pos += chunk.len() as u64;
    }
    Ok(newlines + 1)
}

impl<R: FromLine> Source<R> for TextFileSource<R> {
    async fn next_batch(
        &mut self,
        out: &mut Vec<R>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        while out.len() < max_records {
            let Some(split) = self.current.as_mut() else {
                if self.open_next().await? {
                    continue;
                }
                return Ok(SourceStatus::End);
            };
            let chunk: &[u8] = split.chunk.as_deref().unwrap_or(&[]);
            if split.chunk_pos == chunk.len() {
                if split.eof {
                    // The file's last line has no newline.
                    let line_start = split.line_start;
                    let own = !split.skip_first && line_start < split.end && !self.carry.is_empty();
                    if own {
                        match line_text(&self.carry) {
                            Some(text) => out.push(R::from_line(split.index, line_start, text)),
                            None => self.malformed(line_start).await?,
                        }
                    }
                    self.current = None;
                    continue;
                }
                let next = split
                    .file
                    .read_at(split.read_offset, CHUNK_BYTES)
                    .await
                    .map_err(|e| JobError::io(&split.path, "cannot read input", e.into()))?;
                split.read_offset += next.len() as u64;
                split.eof = next.is_empty();
                split.chunk = Some(next);
                split.chunk_pos = 0;
                continue;
            }
            let rest = &chunk[split.chunk_pos..];
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    // A line wholly inside the chunk is read where it lies; only a line that
                    // spans two reads is assembled in `carry`.
                    let line_start = split.line_start;
                    let len = self.carry.len() + i;
                    split.line_start += len as u64 + 1;
                    split.chunk_pos += i + 1;
                    let skipped = std::mem::replace(&mut split.skip_first, false);
                    let split_done = split.line_start >= split.end;
                    if !skipped {
                        debug_assert!(line_start < split.end);
                        let bytes: &[u8] = if self.carry.is_empty() {
                            &rest[..i]
                        } else {
                            self.carry.extend_from_slice(&rest[..i]);
                            &self.carry
                        };
                        match line_text(bytes) {
                            Some(text) => out.push(R::from_line(split.index, line_start, text)),
                            None => self.malformed(line_start).await?,
                        }
                    }
                    self.carry.clear();
                    if split_done {
                        // The next line starts in the next shard's range.
                        self.current = None;
                    }
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    split.chunk_pos = chunk.len();
                    if self.carry.len() > self.options.line_bytes_max {
                        let (path, line_start) = (split.path.clone(), split.line_start);
                        let line = line_number(&split.file, &path, line_start).await?;
                        return Err(JobError::LineTooLong {
                            path,
                            line,
                            limit_bytes: self.options.line_bytes_max,
                        });
                    }
                }
            }
        }
        Ok(SourceStatus::More)
    }

    /// The position: per split not finished, `(file index, start, end, start is a line
    /// start)` — the open split from the line it has not emitted yet.
    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        let positions = state.list_state::<(u32, u64, u64, bool)>("position")?;
        positions.clear();
        if let Some(s) = &self.current {
            positions.push(if s.skip_first {
                // No line taken yet: the split as it was.
                (s.index, s.line_start + 1, s.end, false)
            } else {
                (s.index, s.line_start, s.end, true)
            });
        }
        positions.extend(
            self.splits
                .as_slice()
                .iter()
                .map(|s| (s.index, s.start, s.end, s.exact)),
        );
        Ok(())
    }

    /// A restored position replaces the shard's splits (the same files; after a rescale, the
    /// splits left are dealt round robin to the new shards).
    fn initialize_state(&mut self, state: &mut OperatorStateStore) -> Result<(), JobError> {
        if !state.is_restored() {
            return Ok(());
        }
        let positions = state
            .list_state::<(u32, u64, u64, bool)>("position")?
            .clone();
        let mut splits = Vec::with_capacity(positions.len());
        for (index, start, end, exact) in positions {
            let path = self.files.get(index as usize).cloned().ok_or_else(|| {
                JobError::Config(format!(
                    "the checkpoint reads input file {index}; only {} are there now",
                    self.files.len()
                ))
            })?;
            splits.push(Split {
                path,
                index,
                start,
                end,
                exact,
            });
        }
        self.current = None;
        self.splits = splits.into_iter();
        Ok(())
    }
}
