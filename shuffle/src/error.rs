//! Errors of the shuffle crate. Every one names the channel it happened on.

use thiserror::Error;

/// A frame that failed validation, or could not be written.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error(
        "channel {channel}: frame at offset {offset} is truncated: {available_bytes} bytes left, a header needs {needed_bytes}"
    )]
    Truncated {
        channel: u32,
        offset: usize,
        needed_bytes: usize,
        available_bytes: usize,
    },
    #[error(
        "channel {channel}: frame at offset {offset} has a bad length: {length} payload bytes claimed, {available_bytes} follow its header"
    )]
    BadLength {
        channel: u32,
        offset: usize,
        length: usize,
        available_bytes: usize,
    },
    #[error(
        "channel {channel}: frame at offset {offset} fails its crc: header says {expected:#010x}, bytes give {actual:#010x}"
    )]
    BadCrc {
        channel: u32,
        offset: usize,
        expected: u32,
        actual: u32,
    },
    #[error(
        "channel {channel}: frame at offset {offset} carries no crc, and bytes from outside the process must"
    )]
    MissingCrc { channel: u32, offset: usize },
    #[error("channel {channel}: frame at offset {offset} has padding that is not zero")]
    BadPadding { channel: u32, offset: usize },
    #[error("channel {channel}: frame at offset {offset} has unknown kind {kind}")]
    UnknownKind {
        channel: u32,
        offset: usize,
        kind: u16,
    },
    #[error("channel {channel}: frame at offset {offset} has unknown flags {flags:#06x}")]
    BadFlags {
        channel: u32,
        offset: usize,
        flags: u16,
    },
    #[error("channel {channel}: frame at offset {offset} belongs to channel {found}")]
    WrongChannel {
        channel: u32,
        offset: usize,
        found: u32,
    },
    #[error(
        "channel {channel}: a payload of {payload_bytes} bytes exceeds the frame limit of {limit_bytes} bytes"
    )]
    TooLarge {
        channel: u32,
        payload_bytes: usize,
        limit_bytes: usize,
    },
}

/// A channel that can no longer carry frames.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("channel {channel} was closed by its peer before end of input")]
    Closed { channel: u32 },
    /// The transport's own bookkeeping (not a frame) is broken: a peer wrote what no sender of
    /// ours writes.
    #[error("channel {channel}: {detail}")]
    Malformed { channel: u32, detail: String },
    /// The transport under the channel failed (a peer lost, or one that sent what it must not).
    #[error("channel {channel}: {reason}")]
    Disconnected { channel: u32, reason: String },
}
