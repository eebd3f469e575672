//! The frame: the one unit every exchange carries, whatever its transport.
//!
//! ```text
//! offset 0   u32 length    payload bytes (not counting the header or the padding after the payload)
//! offset 4   u32 crc32     crc32fast over bytes 8..16+length (kind, flags, channel, payload);
//!                          0 when FLAG_CRC_UNSET is set (frames that never leave the process)
//! offset 8   u16 kind      FrameKind
//! offset 10  u16 flags     FLAG_*
//! offset 12  u32 channel   which (exchange, sender, receiver) this frame belongs to
//! offset 16  payload       `length` bytes, 16-byte aligned (rkyv reads it in place)
//!            padding       zeros up to the next multiple of 16, so the next frame is aligned too
//! ```
//!
//! All integers are little-endian. Several frames may share one buffer: a data batch and the
//! end-of-input frame that follows it travel together.

use crate::error::FrameError;

/// Bytes of the frame header; the payload starts this far into the frame.
pub const HEADER_BYTES: usize = 16;
/// Frames start (and payloads start) on this alignment.
pub const FRAME_ALIGN: usize = 16;
/// The largest payload a frame may carry. A larger batch is an error, never a truncation.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// The checksum field was not computed: the frame never left the process.
pub const FLAG_CRC_UNSET: u16 = 1 << 0;
const FLAGS_KNOWN: u16 = FLAG_CRC_UNSET;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameKind {
    /// An rkyv-archived batch of records.
    Data = 1,
    /// An event-time watermark: payload is an i64 (little-endian).
    Watermark = 2,
    /// A checkpoint barrier: payload is the checkpoint id as u64.
    Barrier = 3,
    /// End of input on this channel: no frame follows.
    End = 4,
    /// Flow-control credit (buffers granted) for transports that cannot return buffers by hand.
    Credit = 5,
    /// The event timestamps of the records of the DATA frame that follows: payload is one i64
    /// (little-endian) per record.
    Timestamps = 6,
    /// The sender's watermark status: payload is one byte, 1 idle (its watermark no longer holds
    /// event time back), 0 active again.
    Status = 7,
}

impl FrameKind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Watermark,
            3 => Self::Barrier,
            4 => Self::End,
            5 => Self::Credit,
            6 => Self::Timestamps,
            7 => Self::Status,
            _ => return None,
        })
    }
}

/// Whether a frame's crc is computed when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Compute and later verify the crc: bytes that cross a process boundary (or a test that
    /// wants the check exercised in process).
    Compute,
    /// Leave the crc unset (flag `FLAG_CRC_UNSET`): memory is not a channel that corrupts.
    #[default]
    Skip,
}

/// A frame read in place from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub flags: u16,
    pub channel: u32,
    pub payload: &'a [u8],
}

/// Rounds `n` up to the frame alignment.
#[inline]
pub const fn align_up(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Starts a frame at the end of `buf`: pads `buf` to the frame alignment and reserves the header.
/// Returns the frame's start offset, to be passed to [`end_frame`] once the payload is written.
#[inline]
pub fn begin_frame(buf: &mut rkyv::util::AlignedVec<16>) -> usize {
    let start = align_up(buf.len());
    buf.resize(start + HEADER_BYTES, 0);
    start
}

/// Seals the frame begun at `start`: everything written after its header is the payload.
/// Fills the header, computes the crc if asked, and pads the buffer to the next frame.
pub fn end_frame(
    buf: &mut rkyv::util::AlignedVec<16>,
    start: usize,
    kind: FrameKind,
    channel: u32,
    checksum: Checksum,
) -> Result<(), FrameError> {
    let payload_bytes = buf.len() - start - HEADER_BYTES;
    if payload_bytes > PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge {
            channel,
            payload_bytes,
            limit_bytes: PAYLOAD_BYTES_MAX,
        });
    }
    let flags = match checksum {
        Checksum::Compute => 0,
        Checksum::Skip => FLAG_CRC_UNSET,
    };
    let header = &mut buf[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    header[8..10].copy_from_slice(&(kind as u16).to_le_bytes());
    header[10..12].copy_from_slice(&flags.to_le_bytes());
    header[12..16].copy_from_slice(&channel.to_le_bytes());
    let crc = match checksum {
        Checksum::Compute => crc32fast::hash(&buf[start + 8..]),
        Checksum::Skip => 0,
    };
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let end = align_up(buf.len());
    buf.resize(end, 0);
    Ok(())
}

/// Appends a whole frame whose payload is `payload`.
pub fn write_frame(
    buf: &mut rkyv::util::AlignedVec<16>,
    kind: FrameKind,
    channel: u32,
    payload: &[u8],
    checksum: Checksum,
) -> Result<(), FrameError> {
    let start = begin_frame(buf);
    buf.extend_from_slice(payload);
    end_frame(buf, start, kind, channel, checksum)
}

/// Reads the frames of a buffer in order, validating each before it is handed out.
///
/// A frame that fails its length, kind, flags, channel or crc check ends the iteration with an
/// error naming the channel and the offset in the buffer; nothing after it is read.
pub struct FrameReader<'a> {
    buf: &'a [u8],
    offset: usize,
    expected_channel: u32,
    require_crc: bool,
    failed: bool,
}

impl<'a> FrameReader<'a> {
    /// Reads `buf`, whose frames must all belong to `expected_channel`.
    pub fn new(buf: &'a [u8], expected_channel: u32) -> Self {
        Self {
            buf,
            offset: 0,
            expected_channel,
            require_crc: false,
            failed: false,
        }
    }

    /// Rejects frames without a crc: bytes that crossed a process boundary must carry one, so
    /// that a flipped flag bit cannot switch the check off.
    pub fn require_crc(mut self, require: bool) -> Self {
        self.require_crc = require;
        self
    }

    fn read_one(&mut self) -> Result<Frame<'a>, FrameError> {
        let at = self.offset;
        let channel = self.expected_channel;
        let rest = &self.buf[at..];
        if rest.len() < HEADER_BYTES {
            return Err(FrameError::Truncated {
                channel,
                offset: at,
                needed_bytes: HEADER_BYTES,
                available_bytes: rest.len(),
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(rest[i..i + 2].try_into().unwrap());
        let length = u32_at(0) as usize;
        let crc = u32_at(4);
        let kind_raw = u16_at(8);
        let flags = u16_at(10);
        let frame_channel = u32_at(12);
        if length > PAYLOAD_BYTES_MAX || HEADER_BYTES + length > rest.len() {
            return Err(FrameError::BadLength {
                channel,
                offset: at,
                length,
                available_bytes: rest.len().saturating_sub(HEADER_BYTES),
            });
        }
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FrameError::BadFlags {
                channel,
                offset: at,
                flags,
            });
        }
        let body = &rest[8..HEADER_BYTES + length];
        if flags & FLAG_CRC_UNSET != 0 && (crc != 0 || self.require_crc) {
            // An unset crc is written as 0; anything else means the flag itself was corrupted.
            return Err(FrameError::MissingCrc {
                channel,
                offset: at,
            });
        }
        if flags & FLAG_CRC_UNSET == 0 {
            let actual = crc32fast::hash(body);
            if actual != crc {
                return Err(FrameError::BadCrc {
                    channel,
                    offset: at,
                    expected: crc,
                    actual,
                });
            }
        }
        let kind = FrameKind::from_u16(kind_raw).ok_or(FrameError::UnknownKind {
            channel,
            offset: at,
            kind: kind_raw,
        })?;
        if frame_channel != channel {
            return Err(FrameError::WrongChannel {
                channel,
                offset: at,
                found: frame_channel,
            });
        }
        let end = (at + align_up(HEADER_BYTES + length)).min(self.buf.len());
        // The padding is outside the crc: it must be the zeros the writer put there, so that
        // damage to it is caught too (a frame's bytes are all accounted for).
        if self.buf[at + HEADER_BYTES + length..end]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(FrameError::BadPadding {
                channel,
                offset: at,
            });
        }
        self.offset = end;
        Ok(Frame {
            kind,
            flags,
            channel: frame_channel,
            payload: &rest[HEADER_BYTES..HEADER_BYTES + length],
        })
    }
}

impl<'a> Iterator for FrameReader<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let r = self.read_one();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkyv::util::AlignedVec;

    fn two_frames(checksum: Checksum) -> AlignedVec<16> {
        let mut buf = AlignedVec::<16>::new();
        write_frame(&mut buf, FrameKind::Data, 7, b"hello, frames", checksum).unwrap();
        write_frame(&mut buf, FrameKind::End, 7, &[], checksum).unwrap();
        buf
    }

    #[test]
    fn frames_round_trip_with_and_without_crc() {
        for checksum in [Checksum::Compute, Checksum::Skip] {
            let buf = two_frames(checksum);
            assert_eq!(buf.len() % FRAME_ALIGN, 0);
            let frames: Vec<_> = FrameReader::new(&buf, 7).collect::<Result<_, _>>().unwrap();
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].kind, FrameKind::Data);
            assert_eq!(frames[0].payload, b"hello, frames");
            assert_eq!(frames[0].payload.as_ptr() as usize % FRAME_ALIGN, 0);
            assert_eq!(frames[1].kind, FrameKind::End);
            assert!(frames[1].payload.is_empty());
            assert_eq!(
                frames[0].flags & FLAG_CRC_UNSET != 0,
                checksum == Checksum::Skip
            );
        }
    }

    #[test]
    fn every_flipped_payload_or_header_bit_is_caught_by_the_crc() {
        let clean = two_frames(Checksum::Compute);
        // Every bit of the first frame's checked region (kind..payload) and its crc field.
        for byte in 4..HEADER_BYTES + 13 {
            for bit in 0..8 {
                let mut buf = clean.clone();
                buf[byte] ^= 1 << bit;
                let first = FrameReader::new(&buf, 7).next().unwrap();
                assert!(first.is_err(), "flip of byte {byte} bit {bit} was accepted");
            }
        }
    }

    #[test]
    fn a_reader_of_foreign_bytes_rejects_frames_without_crc() {
        let buf = two_frames(Checksum::Skip);
        let err = FrameReader::new(&buf, 7)
            .require_crc(true)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::MissingCrc {
                    channel: 7,
                    offset: 0
                }
            ),
            "{err}"
        );
        assert!(FrameReader::new(&buf, 7).next().unwrap().is_ok());
    }

    #[test]
    fn wrong_crc_names_channel_and_offset() {
        let mut buf = two_frames(Checksum::Compute);
        let second = align_up(HEADER_BYTES + 13);
        buf[second + 4] ^= 0xff;
        let mut reader = FrameReader::new(&buf, 7);
        assert!(reader.next().unwrap().is_ok());
        let err = reader.next().unwrap().unwrap_err();
        assert!(matches!(err, FrameError::BadCrc { channel: 7, offset, .. } if offset == second));
        let msg = err.to_string();
        assert!(
            msg.contains("channel 7") && msg.contains(&format!("offset {second}")),
            "{msg}"
        );
        assert!(
            reader.next().is_none(),
            "reading stops at the first bad frame"
        );
    }

    #[test]
    fn length_past_the_buffer_is_rejected() {
        for checksum in [Checksum::Compute, Checksum::Skip] {
            let mut buf = two_frames(checksum);
            buf[0..4].copy_from_slice(&10_000u32.to_le_bytes());
            let err = FrameReader::new(&buf, 7).next().unwrap().unwrap_err();
            assert!(
                matches!(err, FrameError::BadLength { length: 10_000, .. }),
                "{err}"
            );
        }
        let short = [0u8; 9];
        let err = FrameReader::new(&short, 3).next().unwrap().unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { channel: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn foreign_channel_and_unknown_kind_are_rejected() {
        let buf = two_frames(Checksum::Skip);
        let err = FrameReader::new(&buf, 8).next().unwrap().unwrap_err();
        assert!(
            matches!(err, FrameError::WrongChannel { found: 7, .. }),
            "{err}"
        );
        let mut buf = two_frames(Checksum::Skip);
        buf[8] = 99;
        let err = FrameReader::new(&buf, 7).next().unwrap().unwrap_err();
        assert!(
            matches!(err, FrameError::UnknownKind { kind: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn oversized_payload_is_an_error_not_a_truncation() {
        let mut buf = AlignedVec::<16>::new();
        let start = begin_frame(&mut buf);
        buf.resize(start + HEADER_BYTES + PAYLOAD_BYTES_MAX + 1, 0);
        let err = end_frame(&mut buf, start, FrameKind::Data, 1, Checksum::Skip).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }
}

#[cfg(test)]
mod garbage {
    use super::*;

    /// SplitMix64, so the shuffle crate needs no generator of its own.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn random_bytes_never_panic_and_never_pass_unchecked() {
        // 20,000 random buffers, and 20,000 valid frames with random damage: the reader returns
        // frames or an error, never panics, never reads out of bounds, and with the crc required
        // accepts nothing that was damaged.
        let mut seed = 0x5eed_u64;
        for round in 0..20_000 {
            let len = (next(&mut seed) % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
            for f in FrameReader::new(&bytes, (round % 3) as u32).flatten() {
                assert!(f.payload.len() <= len);
            }
            let mut buf = rkyv::util::AlignedVec::<16>::new();
            let payload: Vec<u8> = (0..next(&mut seed) % 100)
                .map(|_| next(&mut seed) as u8)
                .collect();
            write_frame(&mut buf, FrameKind::Data, 5, &payload, Checksum::Compute).unwrap();
            let clean = buf.clone();
            let at = (next(&mut seed) as usize) % buf.len();
            buf[at] ^= 1 << (next(&mut seed) % 8);
            let damaged_in_checked_region = at >= 4 && at < HEADER_BYTES + payload.len();
            let first = FrameReader::new(&buf, 5).require_crc(true).next();
            if damaged_in_checked_region {
                assert!(
                    matches!(first, Some(Err(_))),
                    "round {round}: damage at {at} passed"
                );
            } else if at < 4 {
                // The length field: either an error, or (when it still fits) a crc mismatch.
                assert!(!matches!(first, Some(Ok(f)) if f.payload != payload.as_slice()));
            }
            assert!(FrameReader::new(&clean, 5).all(|f| f.is_ok()));
        }
    }
}
