//! Keys, key groups and shards.
//!
//! A key's hash is [`StableHasher`]: fixed seed, platform-independent (integers are hashed as
//! little-endian, `usize` as `u64`), the same on every host, in every process and every run — never
//! `std`'s randomized hasher. `key_group = hash % max_parallelism`; shard `i` of `P` owns the
//! contiguous range `[i*M/P, (i+1)*M/P)` ([`KeyGroupRange::of_shard`]). A key's state and timers
//! live only on the shard that owns its group; rescaling reassigns ranges.

use std::hash::{Hash, Hasher};

/// The default (and usual) number of key groups: the most shards a job can ever be rescaled to.
pub const MAX_PARALLELISM_DEFAULT: u32 = 4096;
/// The most key groups a job may have (key groups are stored as u16 in state entries).
pub const MAX_PARALLELISM_LIMIT: u32 = 1 << 15;
/// The seed of the key hash. Changing it moves every key to another key group: never change it.
pub const KEY_HASH_SEED: u64 = 0x5348_4152_4446_4c57; // "SHARDFLW"

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// Folded multiply: the high and low halves of the 128-bit product, xored. Mixes every input
/// bit into every output bit in one `mul` instruction.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The fixed, seeded, platform-independent hasher of keys.
///
/// Fast on short keys (one folded multiply per 8 bytes) and finalized with murmur3's fmix64, so
/// the low bits used for `hash % max_parallelism` are as good as the high ones.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher {
    state: u64,
    len: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        Self {
            state: KEY_HASH_SEED,
            len: 0,
        }
    }
}

impl StableHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.state = fold_mul(self.state ^ word, MUL);
    }
}

impl Hasher for StableHasher {
    /// Hashes bytes in 8-byte words. A tail shorter than a word is read with overlapping loads
    /// (two 4-byte loads, or three single bytes), never copied into a scratch word: a `memcpy`
    /// followed by a word load stalls on store forwarding, which profiling found to be the
    /// single largest cost of keyed lookups on short string keys.
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        self.len = self.len.wrapping_add(len as u64);
        let marker = (len as u64) << 56;
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as u64;
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        if len <= 8 {
            let word = if len >= 4 {
                u32_at(0) | (u32_at(len - 4) << 32)
            } else if len > 0 {
                ((bytes[0] as u64) << 16) | ((bytes[len / 2] as u64) << 8) | bytes[len - 1] as u64
            } else {
                0
            };
            // With the length, the (possibly overlapping) windows determine the bytes.
            self.mix(word ^ marker);
            return;
        }
        let mut i = 0;
        while i + 8 <= len {
            self.mix(u64_at(i));
            i += 8;
        }
        if i < len {
            // The last 8 bytes, overlapping the previous word.
            self.mix(u64_at(len - 8) ^ marker);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(i as u64 | 1 << 60);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(i as u64 | 2 << 60);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(i as u64 | 4 << 60);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_i8(&mut self, i: i8) {
        self.write_u8(i as u8)
    }
    #[inline]
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16)
    }
    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32)
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128)
    }
    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.state ^ self.len;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The stable hash of a key.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The hash an in-memory state table files a key under, from its stable hash.
///
/// Not the stable hash itself: a shard owns a range of key groups (`hash % max_parallelism`),
/// so on one shard the low bits of its keys' hashes are not random (at P = 2 with 4096 groups,
/// bit 11 is the same for every key), and a hash table that takes its bucket from the low bits
/// (hashbrown does) would use only part of its buckets. Measured: the windows benchmark's
/// window operator spent twice as long per record at P = 2 as at P = 1 on its probes. Rotating
/// the high half down decorrelates the two.
#[inline]
pub fn state_hash(stable_hash: u64) -> u64 {
    stable_hash.rotate_left(32)
}

/// The key group of a hash.
#[inline]
pub fn key_group_of_hash(hash: u64, max_parallelism: u32) -> u32 {
    (hash % max_parallelism as u64) as u32
}

/// The key group of a key.
#[inline]
pub fn key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    key_group_of_hash(key_hash(key), max_parallelism)
}

/// The shard (of `parallelism`) that owns `key_group`: the one `i` with
/// `i*M/P <= key_group < (i+1)*M/P`.
#[inline]
pub fn shard_of_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    debug_assert!(key_group < max_parallelism);
    (((key_group as u64 + 1) * parallelism as u64 - 1) / max_parallelism as u64) as u32
}

/// Routes hashes to shards for one (max parallelism, parallelism): the owner of every key group
/// precomputed in a table (8 KiB for 4096 groups, L1-resident), and `hash % max_parallelism` a
/// mask when the number of groups is a power of two, as the default is. Two integer divisions
/// per record (~40 cycles) become a mask and a load.
#[derive(Debug, Clone)]
pub struct KeyGroupRouter {
    max_parallelism: u32,
    /// `max_parallelism - 1` when it is a power of two.
    mask: Option<u64>,
    owner: Vec<u16>,
}

impl KeyGroupRouter {
    pub fn new(max_parallelism: u32, parallelism: u32) -> Self {
        assert!((1..=MAX_PARALLELISM_LIMIT).contains(&max_parallelism));
        assert!(
            parallelism >= 1 && parallelism <= max_parallelism && parallelism <= u16::MAX as u32
        );
        Self {
            max_parallelism,
            mask: max_parallelism
                .is_power_of_two()
                .then_some(max_parallelism as u64 - 1),
            owner: (0..max_parallelism)
                .map(|kg| shard_of_key_group(kg, max_parallelism, parallelism) as u16)
                .collect(),
        }
    }

    #[inline]
    pub fn key_group(&self, hash: u64) -> u32 {
        match self.mask {
            Some(mask) => (hash & mask) as u32,
            None => key_group_of_hash(hash, self.max_parallelism),
        }
    }

    #[inline]
    pub fn shard(&self, hash: u64) -> u32 {
        let kg = self.key_group(hash) as usize;
        // SAFETY-free: the table has max_parallelism entries and kg < max_parallelism.
        self.owner[kg] as u32
    }
}

/// A contiguous range of key groups, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    /// The range shard `shard` of `parallelism` owns out of `max_parallelism` key groups.
    pub fn of_shard(shard: u32, parallelism: u32, max_parallelism: u32) -> Self {
        assert!(shard < parallelism && parallelism <= max_parallelism);
        let m = max_parallelism as u64;
        let p = parallelism as u64;
        Self {
            start: (shard as u64 * m / p) as u32,
            end: ((shard as u64 + 1) * m / p) as u32,
        }
    }

    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group < self.end
    }

    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl std::fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// How a keyed operator finds a record's key.
///
/// [`KeyByValue`] computes an owned key (`|r| r.id % 10`); [`KeyByRef`] borrows it from the
/// record (`|r| &r.word`), so that looking a record up in keyed state costs no clone of the key:
/// the key is cloned only when a new key enters the state.
pub trait KeySelector<T>: Clone + Send + Sync + 'static {
    /// Keys are data: keyed state files its values under them in the store.
    type Key: Hash + Eq + crate::Data;

    /// Calls `f` with the record's key.
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&Self::Key) -> R) -> R;

    /// The stable hash of the record's key.
    #[inline]
    fn hash(&self, record: &T) -> u64 {
        self.with_key(record, key_hash)
    }
}

/// A key selector returning an owned key.
pub struct KeyByValue<F, K>(pub F, std::marker::PhantomData<fn() -> K>);

impl<F, K> KeyByValue<F, K> {
    pub fn new(f: F) -> Self {
        Self(f, std::marker::PhantomData)
    }
}

impl<F: Clone, K> Clone for KeyByValue<F, K> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<T, K, F> KeySelector<T> for KeyByValue<F, K>
where
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    K: Hash + Eq + crate::Data,
{
    type Key = K;

    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f(&(self.0)(record))
    }
}

/// A key selector borrowing the key from the record.
pub struct KeyByRef<F, K: ?Sized>(pub F, std::marker::PhantomData<fn() -> Box<K>>);

impl<F, K: ?Sized> KeyByRef<F, K> {
    pub fn new(f: F) -> Self {
        Self(f, std::marker::PhantomData)
    }
}

impl<F: Clone, K: ?Sized> Clone for KeyByRef<F, K> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<T, K, F> KeySelector<T> for KeyByRef<F, K>
where
    F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
    K: Hash + Eq + crate::Data,
{
    type Key = K;

    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f((self.0)(record))
    }
}

/// The hasher of in-memory keyed state maps (fast, and the same hash the key groups use).
pub type KeyedMapHasher = std::hash::BuildHasherDefault<StableHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn owner_matches_the_range_definition_for_every_group() {
        for m in [1u32, 7, 128, 4096] {
            for p in 1..=m.min(64) {
                let ranges: Vec<_> = (0..p).map(|i| KeyGroupRange::of_shard(i, p, m)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[p as usize - 1].end, m);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "ranges are contiguous");
                }
                for kg in 0..m {
                    let owner = shard_of_key_group(kg, m, p);
                    let brute = ranges.iter().position(|r| r.contains(kg)).unwrap() as u32;
                    assert_eq!(owner, brute, "m={m} p={p} kg={kg}");
                }
            }
        }
    }

    #[test]
    fn the_router_agrees_with_the_definitions() {
        let mut rng = SplitMix64::new(3);
        for (m, p) in [
            (4096, 1),
            (4096, 3),
            (4096, 8),
            (1000, 7),
            (7, 7),
            (1, 1),
            (128, 5),
        ] {
            let r = KeyGroupRouter::new(m, p);
            for _ in 0..20_000 {
                let h = rng.next_u64();
                assert_eq!(r.key_group(h), key_group_of_hash(h, m));
                assert_eq!(
                    r.shard(h),
                    shard_of_key_group(key_group_of_hash(h, m), m, p)
                );
            }
        }
    }

    #[test]
    fn hash_is_fixed_across_platforms_and_runs() {
        // Pinned values: a change here moves every key of every saved job to another group.
        assert_eq!(key_hash(&0u64), key_hash(&0usize));
        assert_eq!(key_hash("shardflow"), key_hash(&String::from("shardflow")));
        let pinned = [key_hash(&42u64), key_hash("word"), key_hash(&(1u32, "a"))];
        let again = [key_hash(&42u64), key_hash("word"), key_hash(&(1u32, "a"))];
        assert_eq!(pinned, again);
        assert_ne!(key_hash("ab"), key_hash("ab\0"));
        // Every length from 0 to 40 around the word boundaries: distinct strings, distinct hashes.
        let text = "the quick brown fox jumps over the lazy dog";
        let mut seen = std::collections::HashSet::new();
        for a in 0..8 {
            for b in a..text.len() {
                seen.insert(key_hash(&text[a..b]));
            }
        }
        let distinct: std::collections::HashSet<&str> = (0..8)
            .flat_map(|a| (a..text.len()).map(move |b| &text[a..b]))
            .collect();
        assert_eq!(seen.len(), distinct.len());
        assert_ne!(key_hash(&1u8), key_hash(&1u32));
    }

    #[test]
    fn key_groups_are_spread_evenly() {
        // 200k random string keys into 64 groups: every group within 10% of the mean.
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 64];
        for _ in 0..200_000 {
            let key = format!("key-{}", rng.next_u64() % 1_000_000_007);
            counts[key_group(key.as_str(), 64) as usize] += 1;
        }
        let mean = 200_000.0 / 64.0;
        for c in counts {
            assert!((c as f64 - mean).abs() < mean * 0.1, "{counts:?}");
        }
    }
}
