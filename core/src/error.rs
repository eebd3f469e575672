//! The engine's error: every failure of a job, with the context that locates it.

use std::path::PathBuf;

use shardflow_shuffle::{ChannelError, FrameError};
use thiserror::Error;

/// Why a job failed.
#[derive(Debug, Error)]
pub enum JobError {
    #[error("invalid job setting: {0}")]
    Config(String),
    #[error("invalid job graph: {0}")]
    Graph(String),
    #[error("cannot start shard {shard}: {message}")]
    Runtime { shard: u32, message: String },
    #[error("{path}: {message}: {source}")]
    Io {
        path: PathBuf,
        message: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: line is not valid UTF-8 (byte offset {offset} in the file)")]
    InvalidUtf8 {
        path: PathBuf,
        line: u64,
        offset: u64,
    },
    #[error("{path}:{line}: line is longer than the limit of {limit_bytes} bytes")]
    LineTooLong {
        path: PathBuf,
        line: u64,
        limit_bytes: usize,
    },
    #[error("socket {address}: {message}: {source}")]
    Socket {
        address: String,
        message: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{channel}: {source}")]
    Frame {
        channel: String,
        #[source]
        source: FrameError,
    },
    #[error("{channel}: {source}")]
    Channel {
        channel: String,
        #[source]
        source: ChannelError,
    },
    #[error("{channel}: batch at offset {offset} does not decode: {message}")]
    Decode {
        channel: String,
        offset: usize,
        message: String,
    },
    #[error("operator '{operator}' on shard {shard}: {message}")]
    Operator {
        operator: String,
        shard: u32,
        message: String,
    },
    #[error("operator '{operator}' on shard {shard} panicked: {message}")]
    Panicked {
        operator: String,
        shard: u32,
        message: String,
    },
    #[error("state on shard {shard}: {message}")]
    State { shard: u32, message: String },
    #[error("the job was cancelled")]
    Cancelled,
    /// A cluster's job manager or task managers: unreachable, lost, or the job failed there.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl JobError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, message: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            message,
            source,
        }
    }

    /// The process exit code the CLI uses for this error: 2 for bad input or settings (the
    /// user can fix them), 1 for failures of the job itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_)
            | Self::Io { .. }
            | Self::InvalidUtf8 { .. }
            | Self::LineTooLong { .. }
            | Self::Socket { .. } => 2,
            _ => 1,
        }
    }
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
