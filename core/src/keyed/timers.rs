//! Timers per key and namespace, in event time and in processing time.
//!
//! A timer is (timestamp, key, namespace); registering one that exists does nothing (so a window
//! can register its end on every element), deleting one that does not exist does nothing. Due
//! timers come out in timestamp order, and in registration order among equal timestamps.
//!
//! Timers are kept by timestamp: a sorted map from each distinct time to its timers in
//! registration order, beside a hash set of the live ones. Windows make many timers at few
//! times (every key's window ends at the same instant), so registering is a hash insert and a
//! push, and firing takes them in runs without a heap's cache misses (measured: a binary heap of
//! single timers was 10% of the windows benchmark). Deletion is lazy: the run keeps the entry
//! and skips it when it comes out.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use hashbrown::HashTable;

use crate::key::key_hash;

/// One time domain's timers.
pub struct TimerQueue<K, N> {
    /// Per time, its timers with their registration numbers, in registration order.
    by_time: BTreeMap<i64, VecDeque<(K, N, u64)>>,
    /// The live timers and their registration numbers (a run entry whose number differs was
    /// deleted, and perhaps registered again later).
    live: HashTable<(i64, K, N, u64)>,
    seq: u64,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            live: HashTable::new(),
            seq: 0,
        }
    }
}

#[inline]
fn timer_hash<K: Hash, N: Hash>(at: i64, key: &K, namespace: &N) -> u64 {
    crate::key::state_hash(key_hash(&(at, key, namespace)))
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerQueue<K, N> {
    /// Live timers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Registers a timer; false if it was there already.
    pub fn register(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        let hash = timer_hash(at, key, namespace);
        match self.live.entry(
            hash,
            |t| t.0 == at && t.1 == *key && t.2 == *namespace,
            |t| timer_hash(t.0, &t.1, &t.2),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                self.seq += 1;
                v.insert((at, key.clone(), namespace.clone(), self.seq));
                self.by_time.entry(at).or_default().push_back((
                    key.clone(),
                    namespace.clone(),
                    self.seq,
                ));
                true
            }
        }
    }

    /// Deletes a timer; false if there was none.
    pub fn delete(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        match self.live.find_entry(timer_hash(at, key, namespace), |t| {
            t.0 == at && t.1 == *key && t.2 == *namespace
        }) {
            Ok(o) => {
                o.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the earliest live timer at or before `time`.
    pub fn pop_due(&mut self, time: i64) -> Option<(i64, K, N)> {
        loop {
            let mut run = self.by_time.first_entry()?;
            let at = *run.key();
            if at > time {
                return None;
            }
            let Some((key, namespace, seq)) = run.get_mut().pop_front() else {
                run.remove();
                continue;
            };
            if run.get().is_empty() {
                run.remove();
            }
            // Fired only if this is the registration that is live.
            if let Ok(o) = self.live.find_entry(timer_hash(at, &key, &namespace), |t| {
                t.0 == at && t.1 == key && t.2 == namespace && t.3 == seq
            }) {
                o.remove();
                return Some((at, key, namespace));
            }
        }
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<i64> {
        loop {
            let mut run = self.by_time.first_entry()?;
            let at = *run.key();
            let front_live = match run.get().front() {
                Some((k, n, seq)) => self
                    .live
                    .find(timer_hash(at, k, n), |t| {
                        t.0 == at && t.1 == *k && t.2 == *n && t.3 == *seq
                    })
                    .is_some(),
                None => {
                    run.remove();
                    continue;
                }
            };
            if front_live {
                return Some(at);
            }
            run.get_mut().pop_front();
            if run.get().is_empty() {
                run.remove();
            }
        }
    }
}

/// Event-time and processing-time timers of one keyed operator on one shard.
pub struct TimerService<K, N> {
    pub event: TimerQueue<K, N>,
    pub processing: TimerQueue<K, N>,
}

impl<K, N> Default for TimerService<K, N> {
    fn default() -> Self {
        Self {
            event: TimerQueue::default(),
            processing: TimerQueue::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Random registrations and deletions against a sorted list: due timers come out once, in
    /// (time, registration) order.
    #[test]
    fn timers_come_out_once_in_time_order() {
        for seed in 0..20 {
            let mut rng = SplitMix64::new(seed);
            let mut q: TimerQueue<u32, u8> = TimerQueue::default();
            // The model: live timers with the registration number of their live registration.
            let mut model: Vec<(i64, u64, u32, u8)> = Vec::new();
            let mut reg = 0u64;
            let mut fired = Vec::new();
            let mut expected = Vec::new();
            let mut now = 0i64;
            for _ in 0..2000 {
                let at = now + (rng.next_u64() % 50) as i64;
                let key = (rng.next_u64() % 8) as u32;
                let ns = (rng.next_u64() % 2) as u8;
                match rng.next_u64() % 4 {
                    0 | 1 => {
                        let new = q.register(at, &key, &ns);
                        let exists = model.iter().any(|m| (m.0, m.2, m.3) == (at, key, ns));
                        assert_eq!(new, !exists);
                        if new {
                            reg += 1;
                            model.push((at, reg, key, ns));
                        }
                    }
                    2 => {
                        let before = model.len();
                        model.retain(|m| (m.0, m.2, m.3) != (at, key, ns));
                        assert_eq!(q.delete(at, &key, &ns), model.len() < before);
                    }
                    _ => {
                        now += (rng.next_u64() % 20) as i64;
                        model.sort();
                        let (due, rest): (Vec<(i64, u64, u32, u8)>, Vec<_>) =
                            model.iter().partition(|m| m.0 <= now);
                        expected.extend(due.iter().map(|m| (m.0, m.2, m.3)));
                        model = rest;
                        while let Some(t) = q.pop_due(now) {
                            fired.push(t);
                        }
                        assert_eq!(fired, expected, "seed {seed}");
                        assert_eq!(q.len(), model.len());
                    }
                }
            }
        }
    }
}
