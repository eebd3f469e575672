//! Timers per key and namespace, in event time and in processing time.
//!
//! A timer is (timestamp, key, namespace); registering one that exists does nothing (so a window
//! can register its end on every element), deleting one that does not exist does nothing. Due
//! timers come out in timestamp order, and in registration order among equal timestamps.
//!
//! Timers are kept in runs by time: a sorted map from each distinct time to the timers due then,
//! in registration order, with a hash index over the run for registration and deletion. Windows
//! make many timers at few times (every key's window ends at the same instant), so registering
//! is a hash probe and a push, and firing a run is a walk down a vector, with no hashing at all.
//! (Measured on the windows benchmark: a binary heap entry per timer was 10% of the time; runs
//! with a global set of live timers still spent 5% in that set's lookups when firing.)

use std::collections::BTreeMap;
use std::hash::Hash;

use hashbrown::HashTable;

use crate::key::key_hash;

/// The timers due at one time.
struct Run<K, N> {
    /// In registration order; a deleted or fired timer leaves `None`.
    timers: Vec<Option<(K, N)>>,
    /// Positions in `timers`, by the hash of (key, namespace). May hold positions that were
    /// emptied; a lookup checks the timer there.
    index: HashTable<u32>,
    /// Timers before this position have been taken.
    next: usize,
    live: usize,
}

impl<K, N> Default for Run<K, N> {
    fn default() -> Self {
        Self {
            timers: Vec::new(),
            index: HashTable::new(),
            next: 0,
            live: 0,
        }
    }
}

#[inline]
fn timer_hash<K: Hash, N: Hash>(key: &K, namespace: &N) -> u64 {
    crate::key::state_hash(key_hash(&(key, namespace)))
}

impl<K: Hash + Eq, N: Hash + Eq> Run<K, N> {
    /// The position of the live timer (key, namespace), if there is one.
    fn find(&self, hash: u64, key: &K, namespace: &N) -> Option<usize> {
        let timers = &self.timers;
        self.index
            .find(hash, |&p| {
                timers[p as usize]
                    .as_ref()
                    .is_some_and(|(k, n)| k == key && n == namespace)
            })
            .map(|&p| p as usize)
    }
}

/// One time domain's timers.
pub struct TimerQueue<K, N> {
    by_time: BTreeMap<i64, Run<K, N>>,
    live: usize,
}

impl<K, N> Default for TimerQueue<K, N> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            live: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, N: Hash + Eq + Clone> TimerQueue<K, N> {
    /// Live timers.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Registers a timer; false if it was there already.
    pub fn register(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        let hash = timer_hash(key, namespace);
        let run = self.by_time.entry(at).or_default();
        if run.find(hash, key, namespace).is_some() {
            return false;
        }
        let pos = run.timers.len() as u32;
        run.timers.push(Some((key.clone(), namespace.clone())));
        let timers = &run.timers;
        run.index.insert_unique(hash, pos, |&p| {
            // A position emptied by firing stays indexed (firing does not hash); its entry is
            // dead and may go anywhere.
            timers[p as usize]
                .as_ref()
                .map_or(0, |(k, n)| timer_hash(k, n))
        });
        run.live += 1;
        self.live += 1;
        true
    }

    /// Deletes a timer; false if there was none.
    pub fn delete(&mut self, at: i64, key: &K, namespace: &N) -> bool {
        let Some(run) = self.by_time.get_mut(&at) else {
            return false;
        };
        let hash = timer_hash(key, namespace);
        let Some(pos) = run.find(hash, key, namespace) else {
            return false;
        };
        run.timers[pos] = None;
        if let Ok(o) = run.index.find_entry(hash, |&p| p as usize == pos) {
            o.remove();
        }
        run.live -= 1;
        self.live -= 1;
        if run.live == 0 {
            self.by_time.remove(&at);
        }
        true
    }

    /// Takes the earliest live timer at or before `time`.
    pub fn pop_due(&mut self, time: i64) -> Option<(i64, K, N)> {
        loop {
            let mut entry = self.by_time.first_entry()?;
            let at = *entry.key();
            if at > time {
                return None;
            }
            let run = entry.get_mut();
            while run.next < run.timers.len() {
                let taken = run.timers[run.next].take();
                run.next += 1;
                if let Some((key, namespace)) = taken {
                    run.live -= 1;
                    self.live -= 1;
                    if run.live == 0 && run.next == run.timers.len() {
                        entry.remove();
                    }
                    return Some((at, key, namespace));
                }
            }
            entry.remove();
        }
    }

    /// The earliest live timer's time.
    pub fn next_time(&mut self) -> Option<i64> {
        loop {
            let entry = self.by_time.first_entry()?;
            if entry.get().live > 0 {
                return Some(*entry.key());
            }
            entry.remove();
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

    /// Timers registered while their time's run is being fired (a callback registering again)
    /// come out after the run's others, once each, even when the run's index grows meanwhile.
    #[test]
    fn timers_registered_during_firing_come_out_once_after_the_others() {
        let mut q: TimerQueue<u32, ()> = TimerQueue::default();
        for k in 0..1_000 {
            assert!(q.register(5, &k, &()));
        }
        let mut fired = Vec::new();
        for _ in 0..500 {
            fired.push(q.pop_due(5).unwrap().1);
        }
        // Re-register fired ones and new ones at the same time: the index grows past its
        // stale entries.
        for k in 0..3_000 {
            q.register(5, &k, &());
        }
        assert_eq!(q.len(), 500 + 3_000 - 500);
        while let Some((at, k, ())) = q.pop_due(5) {
            assert_eq!(at, 5);
            fired.push(k);
        }
        let mut want: Vec<u32> = (0..1_000).collect();
        want.extend(0..500);
        want.extend(1_000..3_000);
        assert_eq!(fired, want);
        assert!(q.is_empty());
        assert_eq!(q.next_time(), None);
    }

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
