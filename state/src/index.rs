//! The in-memory index: per key (key group, namespace, key, encoded by [`index_key`]), where its
//! newest entry lies.
//!
//! A hash table on a word-at-a-time hash of the encoded key, looked up by a key composed on the
//! stack (no allocation per get), and holding each key once. Point operations are what the
//! store does all day; scans (restore, rescale, tests) collect their keys and sort them.

use hashbrown::HashTable;

/// Where an entry lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
}

/// The index key of (key group, namespace, key): sorts by key group, then namespace length,
/// then namespace, then key.
pub fn index_key(key_group: u16, namespace: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + namespace.len() + key.len());
    write_key(&mut k, key_group, namespace, key);
    k
}

fn write_key(out: &mut Vec<u8>, key_group: u16, namespace: &[u8], key: &[u8]) {
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    out.extend_from_slice(namespace);
    out.extend_from_slice(key);
}

/// Calls `f` with the index key of (key group, namespace, key), composed on the stack when it
/// is short (as keys of keyed state are).
#[inline]
pub fn with_index_key<R>(
    key_group: u16,
    namespace: &[u8],
    key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let len = 6 + namespace.len() + key.len();
    if len <= 128 {
        let mut buf = [0u8; 128];
        buf[..2].copy_from_slice(&key_group.to_be_bytes());
        buf[2..6].copy_from_slice(&(namespace.len() as u32).to_be_bytes());
        buf[6..6 + namespace.len()].copy_from_slice(namespace);
        buf[6 + namespace.len()..len].copy_from_slice(key);
        f(&buf[..len])
    } else {
        f(&index_key(key_group, namespace, key))
    }
}

/// The key group of an index key.
#[inline]
pub fn key_group_of(k: &[u8]) -> u16 {
    u16::from_be_bytes([k[0], k[1]])
}

/// The hash of an index key as the table files it: 32 bits of [`hash64`], spread back over 64
/// (slots keep only the 32 bits, so a slot is 32 bytes; growing the table recomputes the spread
/// from them without reading the key).
#[cfg(test)]
fn hash(k: &[u8]) -> u64 {
    spread(hash32(k))
}

#[inline]
fn hash32(k: &[u8]) -> u32 {
    (hash64(k) >> 32) as u32
}

/// The table takes its bucket from the low bits and its tag from the top 7: both come from the
/// 32 bits (they overlap only past 2^25 buckets).
#[inline]
fn spread(h: u32) -> u64 {
    ((h as u64) << 32) | h as u64
}

/// A word-at-a-time hash of an index key (not stable across versions; in memory only).
#[inline]
fn hash64(k: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (k.len() as u64).wrapping_mul(K);
    let mut chunks = k.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// A key (in the arena) with its hash (kept, so growing the table rehashes nothing and a probe
/// compares the hash before the bytes).
#[derive(Clone, Copy)]
struct Slot {
    hash: u32,
    len: u32,
    at: u64,
    loc: Loc,
}

/// The index: slots in a hash table, keys in one arena (no allocation per key; a removed key's
/// bytes stay until the arena is rewritten, once they are half of it).
#[derive(Default)]
pub struct Index {
    table: HashTable<Slot>,
    arena: Vec<u8>,
    garbage: usize,
}

impl Index {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    #[inline]
    fn key_of<'a>(arena: &'a [u8], s: &Slot) -> &'a [u8] {
        &arena[s.at as usize..s.at as usize + s.len as usize]
    }

    #[inline]
    pub fn get(&self, k: &[u8]) -> Option<&Loc> {
        let h = hash32(k);
        let arena = &self.arena;
        self.table
            .find(spread(h), |e| e.hash == h && Self::key_of(arena, e) == k)
            .map(|e| &e.loc)
    }

    /// As [`get`](Self::get), with the key compared by `eq` against the entry the slot points
    /// to (the caller reads that entry anyway: comparing the arena's copy of the key would cost
    /// a second cache miss).
    #[inline]
    pub fn get_by_entry(&self, k: &[u8], mut eq: impl FnMut(&Loc) -> bool) -> Option<Loc> {
        let h = hash32(k);
        let len = k.len() as u32;
        self.table
            .find(spread(h), |e| e.hash == h && e.len == len && eq(&e.loc))
            .map(|e| e.loc)
    }

    pub fn contains_key(&self, k: &[u8]) -> bool {
        self.get(k).is_some()
    }

    /// Points `k` at `loc`; returns where it pointed before.
    #[inline]
    pub fn insert(&mut self, k: &[u8], loc: Loc) -> Option<Loc> {
        let h = hash32(k);
        let arena = &mut self.arena;
        match self.table.entry(
            spread(h),
            |e| e.hash == h && Self::key_of(arena, e) == k,
            |e| spread(e.hash),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(&mut o.get_mut().loc, loc))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let at = arena.len() as u64;
                arena.extend_from_slice(k);
                v.insert(Slot {
                    hash: h,
                    at,
                    len: k.len() as u32,
                    loc,
                });
                None
            }
        }
    }

    pub fn remove(&mut self, k: &[u8]) -> Option<Loc> {
        let h = hash32(k);
        let arena = &self.arena;
        let removed = match self
            .table
            .find_entry(spread(h), |e| e.hash == h && Self::key_of(arena, e) == k)
        {
            Ok(o) => o.remove().0,
            Err(_) => return None,
        };
        self.garbage += removed.len as usize;
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.rewrite_arena();
        }
        Some(removed.loc)
    }

    /// Copies the live keys into a fresh arena.
    fn rewrite_arena(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for s in self.table.iter_mut() {
            let at = arena.len() as u64;
            arena.extend_from_slice(Self::key_of(&self.arena, s));
            s.at = at;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    pub fn values(&self) -> impl Iterator<Item = &Loc> {
        self.table.iter().map(|e| &e.loc)
    }

    /// Every (key, location) that `keep` accepts, in key order.
    pub fn sorted(&self, mut keep: impl FnMut(&[u8], &Loc) -> bool) -> Vec<(&[u8], Loc)> {
        let arena = &self.arena;
        let mut out: Vec<(&[u8], Loc)> = self
            .table
            .iter()
            .map(|e| (Self::key_of(arena, e), e.loc))
            .filter(|(k, l)| keep(k, l))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Room for `bytes` more key bytes.
    pub fn reserve_key_bytes(&mut self, bytes: usize) {
        self.arena.reserve(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys that differ in a few bytes spread over the table: no more than a few percent of
    /// 1<<16 keys share their top 16 bits (a uniform hash: about 1 - (1 - 2^-16)^65535 ≈ 37% of
    /// buckets empty, so a spread near that).
    #[test]
    fn the_hash_spreads_similar_keys() {
        let mut seen = std::collections::HashSet::new();
        let n = 1u64 << 16;
        for i in 0..n {
            let k = index_key((i % 4096) as u16, b"v", &i.to_le_bytes());
            seen.insert(hash(&k) >> 48);
            assert_eq!(hash(&k), spread(hash32(&k)));
        }
        let distinct = seen.len() as f64 / n as f64;
        assert!(
            distinct > 0.6,
            "only {distinct} of the top-16-bit values are distinct"
        );
        let mut low = std::collections::HashSet::new();
        for i in 0..n {
            let k = index_key((i % 4096) as u16, b"v", &i.to_le_bytes());
            low.insert(hash(&k) & 0xffff);
        }
        assert!(low.len() as f64 / n as f64 > 0.6);
    }
}
