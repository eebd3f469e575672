//! Record field types the engine provides.

use std::hash::{Hash, Hasher};

use rkyv::{Archive, Deserialize, Serialize};

/// Bytes a [`ShortString`] holds without allocating: 14, so that the whole value is 24 bytes
/// (the inline form fits beside the niche of the heap form), like a `String`.
pub const SHORT_STRING_INLINE_BYTES: usize = 14;

/// A string that keeps up to 14 bytes inline, for keys such as words, symbols and sensor ids.
///
/// Making, cloning and dropping a short one costs no allocation, and its record archives without
/// an out-of-line part. Longer strings live on the heap as a `String` would. The form is
/// canonical (inline exactly when the string fits, unused bytes zero), so equality compares the
/// raw representation and never needs to look at the heap for short strings.
///
/// ```
/// use shardflow::types::ShortString;
///
/// let w = ShortString::from("shardflow");
/// assert_eq!(w.as_str(), "shardflow");
/// assert!(w.is_inline());
/// assert!(!ShortString::from("a string longer than fourteen bytes").is_inline());
/// ```
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum ShortString {
    Inline {
        len: u8,
        bytes: [u8; SHORT_STRING_INLINE_BYTES],
    },
    Heap(String),
}

impl ShortString {
    /// The string, lowercased if ASCII (`str::to_lowercase` otherwise), without allocating when
    /// the result fits inline.
    #[inline]
    pub fn lowercase(s: &str) -> Self {
        let src = s.as_bytes();
        if src.len() <= SHORT_STRING_INLINE_BYTES {
            // Copy into two zero-padded words with overlapping loads (no `memcpy` call for a
            // handful of bytes), then lowercase and test for non-ASCII 8 bytes at a time.
            let mut buf = [0u8; 16];
            copy_short(src, &mut buf);
            let lo = u64::from_le_bytes(buf[..8].try_into().unwrap());
            let hi = u64::from_le_bytes(buf[8..].try_into().unwrap());
            if (lo | hi) & HIGH_BITS == 0 {
                buf[..8].copy_from_slice(&ascii_lowercase_word(lo).to_le_bytes());
                buf[8..].copy_from_slice(&ascii_lowercase_word(hi).to_le_bytes());
                let mut bytes = [0u8; SHORT_STRING_INLINE_BYTES];
                bytes.copy_from_slice(&buf[..SHORT_STRING_INLINE_BYTES]);
                return Self::Inline {
                    len: src.len() as u8,
                    bytes,
                };
            }
        }
        Self::from(s.to_lowercase().as_str())
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            // SAFETY: inline bytes are only ever copied whole from a `&str` (or lowercased as
            // ASCII, which keeps them UTF-8), `len` bytes of them.
            Self::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            Self::Heap(s) => s,
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self, Self::Inline { .. })
    }

    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// Copies `src` (at most 16 bytes) to the start of `dst` with at most two overlapping loads.
#[inline(always)]
fn copy_short(src: &[u8], dst: &mut [u8; 16]) {
    let n = src.len();
    debug_assert!(n <= 16);
    if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..n].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// Lowercases the ASCII letters of eight ASCII bytes at once (SWAR): a byte gets 0x20 added
/// exactly when it lies in `A..=Z`.
#[inline(always)]
fn ascii_lowercase_word(w: u64) -> u64 {
    let at_least_a = w + (0x80 - b'A' as u64) * ONES;
    let above_z = w + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = at_least_a & !above_z & HIGH_BITS;
    w | (upper >> 2)
}

impl From<&str> for ShortString {
    #[inline]
    fn from(s: &str) -> Self {
        if s.len() <= SHORT_STRING_INLINE_BYTES {
            let mut bytes = [0u8; SHORT_STRING_INLINE_BYTES];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Self::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(s.to_owned())
        }
    }
}

impl From<String> for ShortString {
    fn from(s: String) -> Self {
        if s.len() <= SHORT_STRING_INLINE_BYTES {
            Self::from(s.as_str())
        } else {
            Self::Heap(s)
        }
    }
}

/// Hashes as the `str` it holds: a `ShortString` key lands in the same key group as the same
/// `String` key.
impl Hash for ShortString {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for ShortString {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortString {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::ops::Deref for ShortString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ShortString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ShortString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardflow_core::key::key_hash;

    #[test]
    fn canonical_at_every_length_and_hashes_as_str() {
        let base = "abcdefghijklmnopqrstuvwxyzABCDEFGH";
        for n in 0..base.len() {
            let s = &base[..n];
            let a = ShortString::from(s);
            let b = ShortString::from(s.to_string());
            assert_eq!(a, b);
            assert_eq!(a.as_str(), s);
            assert_eq!(a.is_inline(), n <= SHORT_STRING_INLINE_BYTES);
            assert_eq!(key_hash(&a), key_hash(s));
            let l = ShortString::lowercase(s);
            assert_eq!(l.as_str(), s.to_lowercase());
            assert_eq!(l, ShortString::from(s.to_lowercase()));
        }
        // Every byte value in every position of a short string: the SWAR path agrees with
        // `str::to_lowercase`.
        for b in 0u8..128 {
            for n in 1..=SHORT_STRING_INLINE_BYTES {
                for at in [0, n / 2, n - 1] {
                    let mut v = vec![b'Q'; n];
                    v[at] = b;
                    let s = std::str::from_utf8(&v).unwrap();
                    assert_eq!(
                        ShortString::lowercase(s).as_str(),
                        s.to_lowercase(),
                        "{v:?}"
                    );
                }
            }
        }
        let multi = ShortString::lowercase("ÉCOLE");
        assert_eq!(multi.as_str(), "école");
        assert_eq!(multi, ShortString::from("école"));
    }

    #[test]
    fn round_trips_through_an_archived_batch() {
        let records: Vec<(ShortString, u64)> = ["", "word", "a much longer word than fits inline"]
            .iter()
            .map(|s| (ShortString::from(*s), s.len() as u64))
            .collect();
        let buf =
            shardflow_core::data::archive_batch(&records, rkyv::util::AlignedVec::new()).unwrap();
        let mut out: Vec<(ShortString, u64)> = Vec::new();
        shardflow_core::data::unarchive_batch(&buf, false, &mut out).unwrap();
        assert_eq!(out, records);
    }
}
