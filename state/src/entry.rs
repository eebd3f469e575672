//! The entry of a segment: one put or delete of one (key group, namespace, key).
//!
//! ```text
//! u32 len | u32 crc32 | u16 key_group | u8 op | u8 0 | u32 ns_len | u32 key_len | ns | key | value
//! ```
//! All little-endian. `len` counts the bytes after the crc (from `key_group` to the end of the
//! value) and the crc covers exactly those, so a reader finds the end of every entry from its
//! first 8 bytes and can tell a whole entry from a torn or corrupt one.

/// Bytes before the namespace.
pub const HEADER_BYTES: usize = 20;
/// Bytes from `key_group` to the end of the fixed header (covered by `len` and the crc).
const FIXED_BODY_BYTES: usize = 12;
/// The largest entry body accepted (a corrupt length must not make a reader allocate wildly).
pub const ENTRY_BODY_MAX: usize = 1 << 30;

/// What an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Put = 1,
    /// A tombstone: the key has no value from here on.
    Delete = 2,
}

/// An entry read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub key_group: u16,
    pub op: Op,
    pub namespace: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The bytes an entry takes.
pub fn encoded_len(namespace: &[u8], key: &[u8], value: &[u8]) -> usize {
    HEADER_BYTES + namespace.len() + key.len() + value.len()
}

/// Appends an entry to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    key_group: u16,
    op: Op,
    namespace: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let body = FIXED_BODY_BYTES + namespace.len() + key.len() + value.len();
    assert!(body <= ENTRY_BODY_MAX, "an entry of {body} bytes");
    let start = out.len();
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&key_group.to_le_bytes());
    out.push(op as u8);
    out.push(0);
    out.extend_from_slice(&(namespace.len() as u32).to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(namespace);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at an offset are not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the entry does (a torn write, at the tail).
    Truncated { needed: usize, available: usize },
    /// The entry is whole but its crc does not match, or its fields do not add up.
    Corrupt(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated: the entry needs {needed} bytes, {available} remain"
                )
            }
            DecodeError::Corrupt(why) => write!(f, "corrupt: {why}"),
        }
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// Reads an entry that was checked when written or when its segment was opened (the index
/// points only at those), without computing its crc again. `bytes` is exactly the entry.
#[inline]
pub fn parse_checked(bytes: &[u8]) -> EntryRef<'_> {
    let ns_len = u32_at(bytes, 12) as usize;
    let key_len = u32_at(bytes, 16) as usize;
    let ns_end = HEADER_BYTES + ns_len;
    let key_end = ns_end + key_len;
    EntryRef {
        key_group: u16::from_le_bytes([bytes[8], bytes[9]]),
        op: if bytes[10] == 2 { Op::Delete } else { Op::Put },
        namespace: &bytes[HEADER_BYTES..ns_end],
        key: &bytes[ns_end..key_end],
        value: &bytes[key_end..],
    }
}

/// Reads the entry at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Result<(EntryRef<'_>, usize), DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::Truncated {
            needed: 8,
            available: bytes.len(),
        });
    }
    let body = u32_at(bytes, 0) as usize;
    if !(FIXED_BODY_BYTES..=ENTRY_BODY_MAX).contains(&body) {
        return Err(DecodeError::Corrupt(format!(
            "an entry length of {body} bytes"
        )));
    }
    let total = 8 + body;
    if bytes.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let crc = u32_at(bytes, 4);
    let actual = crc32fast::hash(&bytes[8..total]);
    if crc != actual {
        return Err(DecodeError::Corrupt(format!(
            "crc {actual:#010x} does not match the stored {crc:#010x}"
        )));
    }
    let key_group = u16::from_le_bytes([bytes[8], bytes[9]]);
    let op = match bytes[10] {
        1 => Op::Put,
        2 => Op::Delete,
        other => return Err(DecodeError::Corrupt(format!("unknown op {other}"))),
    };
    let ns_len = u32_at(bytes, 12) as usize;
    let key_len = u32_at(bytes, 16) as usize;
    let rest = total - HEADER_BYTES;
    if ns_len.checked_add(key_len).is_none_or(|n| n > rest) {
        return Err(DecodeError::Corrupt(format!(
            "namespace of {ns_len} and key of {key_len} bytes in a body of {body}"
        )));
    }
    let ns_end = HEADER_BYTES + ns_len;
    let key_end = ns_end + key_len;
    Ok((
        EntryRef {
            key_group,
            op,
            namespace: &bytes[HEADER_BYTES..ns_end],
            key: &bytes[ns_end..key_end],
            value: &bytes[key_end..total],
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_every_cut_or_flip_is_caught() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            4095,
            Op::Put,
            b"window:17",
            b"sensor-9",
            b"the value",
        );
        encode(&mut buf, 3, Op::Delete, b"", b"k", b"");
        let (e, n) = decode(&buf).unwrap();
        assert_eq!(
            e,
            EntryRef {
                key_group: 4095,
                op: Op::Put,
                namespace: b"window:17",
                key: b"sensor-9",
                value: b"the value"
            }
        );
        assert_eq!(n, encoded_len(b"window:17", b"sensor-9", b"the value"));
        let (e2, n2) = decode(&buf[n..]).unwrap();
        assert_eq!((e2.op, e2.key, n + n2), (Op::Delete, &b"k"[..], buf.len()));
        for cut in 0..n {
            assert!(
                matches!(decode(&buf[..cut]), Err(DecodeError::Truncated { .. })),
                "cut {cut}"
            );
        }
        for i in 4..n {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    matches!(decode(&b), Err(DecodeError::Corrupt(_))),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}
