//! Timers per key and namespace, in event time and in processing time.
//!
//! A timer is (timestamp, key, namespace); registering one that exists does nothing (so a window
//! can register its end on every element), deleting one that does not exist does nothing. Due
//! timers come out in timestamp order, and in registration order among equal timestamps.
//! Deletion is lazy: the heap keeps the entry and skips it when it surfaces.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::hash::Hash;

use hashbrown::HashTable;

use crate::key::key_hash;

struct Queued<K, N> {
    at: i64,
    seq: u64,
    key: K,
    namespace: N,
}

impl<K, N> PartialEq for Queued<K, N> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<K, N> Eq for Queued<K, N> {}
impl<K, N> PartialOrd for Queued<K, N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K, N> Ord for Queued<K, N> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One time domain's timers.
pub struct TimerQueue<K, N> {
    heap: BinaryHeap<Reverse<Queued<K, N>>>,
    /// The live timers (the heap may also hold deleted ones).
    live: HashTable<(i64, K, N)>,
    seq: u64,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
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
                v.insert((at, key.clone(), namespace.clone()));
                self.seq += 1;
                self.heap.push(Reverse(Queued {
                    at,
                    seq: self.seq,
                    key: key.clone(),
                    namespace: namespace.clone(),
                }));
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
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > time {
                return None;
            }
            let Reverse(t) = self.heap.pop().expect("peeked");
            if self.delete(t.at, &t.key, &t.namespace) {
                return Some((t.at, t.key, t.namespace));
            }
        }
        None
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<i64> {
        while let Some(Reverse(top)) = self.heap.peek() {
            let live = self
                .live
                .find(timer_hash(top.at, &top.key, &top.namespace), |t| {
                    t.0 == top.at && t.1 == top.key && t.2 == top.namespace
                })
                .is_some();
            if live {
                return Some(top.at);
            }
            self.heap.pop();
        }
        None
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
