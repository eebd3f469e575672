//! Watermark alignment (Flink's FLIP-182): the shards reading one group of inputs keep within a
//! bounded drift of each other's event time, the ones ahead pausing until the others catch up.
//!
//! Without it, nothing holds a fast shard back in event time: in a replay one shard's source can
//! run tens of seconds of event time ahead of another's, and everything downstream of both that
//! waits for the slower one's watermark (a window, a join) holds the faster one's records
//! meanwhile, in memory and in every checkpoint. Measured on the windows benchmark at P = 2:
//! one shard 30-60 windows ahead of the other, the window operators holding 150-300 thousand
//! (key, window) entries at each barrier instead of a few thousand.
//!
//! Each member (an assigner of the group on one shard) publishes its position, the highest
//! timestamp it has assigned, once per batch (a relaxed atomic store); before each batch it
//! reads the others' (one load each) and waits while its own is more than the drift ahead of
//! the lowest. A member that has assigned nothing yet, or is idle, or whose input ended holds
//! nobody back (an input that never sends would otherwise stop the group for good). The lowest
//! member never waits, so the group always moves.
//!
//! Positions are shared among the shards of one process: in a job spread over processes, each
//! process's shards align among themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A member that has assigned no timestamp yet.
const NOT_STARTED: i64 = i64::MIN;
/// A member that is idle or whose input ended.
const NOT_HOLDING: i64 = i64::MAX;

/// The members of one alignment group in this process.
#[derive(Default)]
pub struct AlignmentGroup {
    /// Each member's position, by (operator node, shard): a member built again (after a
    /// restart) takes its slot over, reset.
    members: Mutex<BTreeMap<(u32, u32), Arc<AtomicI64>>>,
    /// Bumped at every registration: members re-read the list when it changed.
    version: AtomicUsize,
}

impl AlignmentGroup {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The member of operator `node` on `shard`, its position reset.
    pub fn join(self: &Arc<Self>, node: u32, shard: u32, max_drift_ms: i64) -> AlignmentMember {
        let mine = {
            let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let slot = m
                .entry((node, shard))
                .or_insert_with(|| Arc::new(AtomicI64::new(NOT_STARTED)))
                .clone();
            slot.store(NOT_STARTED, Ordering::Relaxed);
            slot
        };
        self.version.fetch_add(1, Ordering::Release);
        AlignmentMember {
            group: self.clone(),
            mine,
            others: Vec::new(),
            seen: usize::MAX,
            max_drift_ms,
            position: NOT_STARTED,
        }
    }
}

/// One member's view of its group.
pub struct AlignmentMember {
    group: Arc<AlignmentGroup>,
    mine: Arc<AtomicI64>,
    /// Every member's slot (this one's too), as of registration `seen`.
    others: Vec<Arc<AtomicI64>>,
    seen: usize,
    max_drift_ms: i64,
    /// The highest timestamp this member assigned (NOT_STARTED: none yet).
    position: i64,
}

impl AlignmentMember {
    /// This member assigned timestamps up to `ts`.
    #[inline]
    pub fn advance(&mut self, ts: i64) {
        if ts > self.position {
            self.position = ts;
            self.mine.store(ts, Ordering::Relaxed);
        }
    }

    /// This member holds nobody back (`true`: idle, or its input ended) or does again.
    pub fn set_holding(&mut self, holding: bool) {
        let v = if holding { self.position } else { NOT_HOLDING };
        self.mine.store(v, Ordering::Relaxed);
    }

    /// Whether this member is more than the drift ahead of the lowest member holding the group.
    pub fn ahead(&mut self) -> bool {
        let me = self.mine.load(Ordering::Relaxed);
        if me == NOT_STARTED || me == NOT_HOLDING {
            return false;
        }
        let version = self.group.version.load(Ordering::Acquire);
        if version != self.seen {
            self.seen = version;
            let m = self.group.members.lock().unwrap_or_else(|e| e.into_inner());
            self.others = m.values().cloned().collect();
        }
        let lowest = self
            .others
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&p| p != NOT_STARTED && p != NOT_HOLDING)
            .min()
            .unwrap_or(me);
        me.saturating_sub(lowest) > self.max_drift_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_ahead_waits_until_the_lowest_catches_up() {
        let g = AlignmentGroup::new();
        let mut a = g.join(1, 0, 1_000);
        let mut b = g.join(1, 1, 1_000);
        // Neither has started: nobody waits.
        assert!(!a.ahead() && !b.ahead());
        a.advance(5_000);
        // b has assigned nothing: it holds nobody back.
        assert!(!a.ahead());
        b.advance(3_000);
        assert!(a.ahead(), "2 s ahead of b, drift 1 s");
        assert!(!b.ahead(), "the lowest never waits");
        b.advance(4_000);
        assert!(!a.ahead(), "exactly the drift ahead may go on");
        b.set_holding(false);
        a.advance(60_000);
        assert!(!a.ahead(), "an idle member holds nobody back");
        b.set_holding(true);
        assert!(a.ahead());
        // b built again (a restart): its old position no longer counts.
        let _b2 = g.join(1, 1, 1_000);
        assert!(!a.ahead());
    }
}
