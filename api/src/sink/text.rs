//! `write_as_text`: one line per record, one file per shard.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use shardflow_core::JobError;
use shardflow_core::operator::OperatorContext;
use shardflow_core::operator::sink::SinkFunction;

/// What a file sink does when its part file exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Fail the job, naming the file (Flink's default).
    #[default]
    NoOverwrite,
    /// Replace the file.
    Overwrite,
}

const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Creates `dir` and opens this shard's part file in it.
pub(crate) fn open_part(
    dir: &Path,
    suffix: &str,
    mode: WriteMode,
    ctx: &OperatorContext,
) -> Result<(PathBuf, BufWriter<File>), JobError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| JobError::io(dir, "cannot create output directory", e))?;
    let path = dir.join(format!("part-{:05}{suffix}", ctx.runtime.shard));
    let mut opts = OpenOptions::new();
    opts.write(true);
    match mode {
        WriteMode::NoOverwrite => opts.create_new(true),
        WriteMode::Overwrite => opts.create(true).truncate(true),
    };
    let file = opts.open(&path).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "output file exists (choose WriteMode::Overwrite to replace it)"
        } else {
            "cannot create output file"
        };
        JobError::io(&path, message, e)
    })?;
    Ok((path, BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)))
}

pub struct TextSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TextSink {
    pub fn open(dir: &Path, mode: WriteMode, ctx: &OperatorContext) -> Result<Self, JobError> {
        let (path, out) = open_part(dir, "", mode, ctx)?;
        Ok(Self { path, out })
    }
}

impl<T: std::fmt::Display + 'static> SinkFunction<T> for TextSink {
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        for r in batch.drain(..) {
            writeln!(self.out, "{r}")
                .map_err(|e| JobError::io(&self.path, "cannot write output", e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.out
            .flush()
            .map_err(|e| JobError::io(&self.path, "cannot write output", e))
    }
}
