//! Operator (non-keyed) state, as Flink's `OperatorStateStore`: what a non-keyed function or a
//! source keeps per shard — an offset, a buffer of records not yet written, a rule table — and
//! how it is redistributed when a job restarts at another parallelism.
//!
//! The function keeps the state in its own fields and hands it over when asked, as a Flink
//! `CheckpointedFunction` does: in `snapshot_state` it writes its fields into named states of
//! an [`OperatorStateStore`]; in `initialize_state` (before `open`) it reads back what the store
//! holds, restored and redistributed, if anything. Three kinds, by how they are redistributed:
//!
//! - [`list_state`](OperatorStateStore::list_state): the elements of all old shards' lists are
//!   split among the new shards, round-robin (each element lands on exactly one);
//! - [`union_list_state`](OperatorStateStore::union_list_state): every new shard gets every old
//!   shard's elements (a source re-reading its splits' offsets and keeping its own);
//! - [`broadcast_state`](OperatorStateStore::broadcast_state): a map the same on every shard;
//!   every new shard gets old shard 0's copy.
//!
//! A snapshot is bytes ([`OperatorStateSnapshot`]: each element or map entry rkyv-archived), so
//! that the engine can write it to the shard's store, redistribute it without knowing the
//! types ([`redistribute`]), and give each new shard its share.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::data::Data;
use crate::error::JobError;

/// How a state is split when the job's parallelism changes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum Redistribution {
    /// Elements split round-robin among the new shards.
    Split,
    /// Every new shard gets every element.
    Union,
    /// A map every shard holds the same copy of.
    Broadcast,
}

/// One state of a shard's snapshot: its elements (or a map's entries as key, value), archived.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StateSnapshot {
    pub name: String,
    pub mode: Redistribution,
    /// List elements (values only), or map entries (key and value).
    pub items: Items,
}

/// Archived (key, value) pairs: a list's elements have empty keys.
pub type Items = Vec<(Vec<u8>, Vec<u8>)>;

/// Archives a typed state (its type is known where the function pointer is made).
type Snapshotter = fn(&dyn Any) -> Result<Items, rancor::Error>;

/// Everything one shard's operator state holds, as bytes.
pub type OperatorStateSnapshot = Vec<StateSnapshot>;

struct Typed {
    name: String,
    mode: Redistribution,
    type_id: TypeId,
    value: Box<dyn Any>,
    snapshot: Snapshotter,
}

/// A shard's operator state: named lists and maps, each of one type.
#[derive(Default)]
pub struct OperatorStateStore {
    states: Vec<Typed>,
    /// What a restore handed over, not yet claimed by a typed accessor.
    restored: Vec<StateSnapshot>,
    was_restored: bool,
}

fn archive<T: Data>(x: &T) -> Result<Vec<u8>, rancor::Error> {
    rkyv::to_bytes::<rancor::Error>(x).map(|b| b.to_vec())
}

fn unarchive<T: Data>(aligned: &mut AlignedVec<16>, bytes: &[u8]) -> Result<T, rancor::Error> {
    aligned.clear();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(aligned)
}

fn snapshot_list<T: Data>(v: &dyn Any) -> Result<Items, rancor::Error> {
    let list = v.downcast_ref::<Vec<T>>().expect("typed at registration");
    list.iter().map(|x| Ok((Vec::new(), archive(x)?))).collect()
}

fn snapshot_map<K: Data, V: Data>(v: &dyn Any) -> Result<Items, rancor::Error> {
    let map = v
        .downcast_ref::<HashMap<K, V>>()
        .expect("typed at registration");
    map.iter()
        .map(|(k, v)| Ok((archive(k)?, archive(v)?)))
        .collect()
}

impl OperatorStateStore {
    /// A store holding a restored shard's share (see [`redistribute`]).
    pub fn restored(snapshot: OperatorStateSnapshot) -> Self {
        Self {
            states: Vec::new(),
            restored: snapshot,
            was_restored: true,
        }
    }

    /// Whether the job resumed from a snapshot (Flink's `isRestored`).
    pub fn is_restored(&self) -> bool {
        self.was_restored
    }

    /// A list whose elements are split among the shards on a rescale.
    pub fn list_state<T: Data>(&mut self, name: &str) -> Result<&mut Vec<T>, JobError> {
        self.list(name, Redistribution::Split)
    }

    /// A list every shard gets all of on a restore.
    pub fn union_list_state<T: Data>(&mut self, name: &str) -> Result<&mut Vec<T>, JobError> {
        self.list(name, Redistribution::Union)
    }

    /// A map that is the same on every shard (the function keeps it so).
    pub fn broadcast_state<K: Data + Hash + Eq, V: Data>(
        &mut self,
        name: &str,
    ) -> Result<&mut HashMap<K, V>, JobError> {
        let i = match self.find::<HashMap<K, V>>(name, Redistribution::Broadcast)? {
            Some(i) => i,
            None => {
                let mut map: HashMap<K, V> = HashMap::new();
                if let Some(s) = self.take_restored(name, Redistribution::Broadcast)? {
                    let mut aligned = AlignedVec::new();
                    for (k, v) in &s.items {
                        let k =
                            unarchive::<K>(&mut aligned, k).map_err(|e| undecodable(name, e))?;
                        let v =
                            unarchive::<V>(&mut aligned, v).map_err(|e| undecodable(name, e))?;
                        map.insert(k, v);
                    }
                }
                self.push(name, Redistribution::Broadcast, map, snapshot_map::<K, V>)
            }
        };
        Ok(self.states[i]
            .value
            .downcast_mut()
            .expect("typed at registration"))
    }

    fn list<T: Data>(&mut self, name: &str, mode: Redistribution) -> Result<&mut Vec<T>, JobError> {
        let i = match self.find::<Vec<T>>(name, mode)? {
            Some(i) => i,
            None => {
                let mut list: Vec<T> = Vec::new();
                if let Some(s) = self.take_restored(name, mode)? {
                    let mut aligned = AlignedVec::new();
                    for (_, v) in &s.items {
                        list.push(
                            unarchive::<T>(&mut aligned, v).map_err(|e| undecodable(name, e))?,
                        );
                    }
                }
                self.push(name, mode, list, snapshot_list::<T>)
            }
        };
        Ok(self.states[i]
            .value
            .downcast_mut()
            .expect("typed at registration"))
    }

    /// The index of state `name` if it was registered (with this type and mode, else an error).
    fn find<X: 'static>(
        &self,
        name: &str,
        mode: Redistribution,
    ) -> Result<Option<usize>, JobError> {
        let Some(i) = self.states.iter().position(|s| s.name == name) else {
            return Ok(None);
        };
        let s = &self.states[i];
        if s.type_id != TypeId::of::<X>() || s.mode != mode {
            return Err(JobError::Config(format!(
                "operator state '{name}' is used as two different kinds or types"
            )));
        }
        Ok(Some(i))
    }

    fn take_restored(
        &mut self,
        name: &str,
        mode: Redistribution,
    ) -> Result<Option<StateSnapshot>, JobError> {
        let Some(i) = self.restored.iter().position(|s| s.name == name) else {
            return Ok(None);
        };
        let s = self.restored.swap_remove(i);
        if s.mode != mode {
            return Err(JobError::Config(format!(
                "operator state '{name}' was saved as {:?} state and is read as {mode:?}",
                s.mode
            )));
        }
        Ok(Some(s))
    }

    fn push<X: 'static>(
        &mut self,
        name: &str,
        mode: Redistribution,
        value: X,
        snapshot: Snapshotter,
    ) -> usize {
        self.states.push(Typed {
            name: name.to_string(),
            mode,
            type_id: TypeId::of::<X>(),
            value: Box::new(value),
            snapshot,
        });
        self.states.len() - 1
    }

    /// Every state as bytes: the ones the function registered, and restored ones it did not
    /// claim (state of a job is never dropped because one run did not look at it).
    pub fn snapshot(&self) -> Result<OperatorStateSnapshot, JobError> {
        let mut out = Vec::with_capacity(self.states.len() + self.restored.len());
        for s in &self.states {
            let items = (s.snapshot)(s.value.as_ref()).map_err(|e| {
                JobError::Config(format!("operator state '{}' does not archive: {e}", s.name))
            })?;
            out.push(StateSnapshot {
                name: s.name.clone(),
                mode: s.mode,
                items,
            });
        }
        out.extend(self.restored.iter().cloned());
        Ok(out)
    }
}

impl OperatorStateStore {
    /// The snapshot, archived: the bytes an operator hands its checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>, JobError> {
        archive(&self.snapshot()?)
            .map_err(|e| JobError::Config(format!("the operator state does not archive: {e}")))
    }
}

fn undecodable(name: &str, e: rancor::Error) -> JobError {
    JobError::Config(format!(
        "operator state '{name}': a restored element does not decode: {e}"
    ))
}

/// Redistributes the snapshots of a job's old shards (in shard order) among `parallelism` new
/// ones: split lists round-robin over all old elements in order, union lists whole to each, and
/// broadcast maps as old shard 0 had them.
pub fn redistribute(old: &[OperatorStateSnapshot], parallelism: u32) -> Vec<OperatorStateSnapshot> {
    let p = parallelism.max(1) as usize;
    let mut new: Vec<OperatorStateSnapshot> = vec![Vec::new(); p];
    // State names in order of first appearance.
    let mut names: Vec<(&str, Redistribution)> = Vec::new();
    for shard in old {
        for s in shard {
            if !names.iter().any(|(n, _)| *n == s.name) {
                names.push((&s.name, s.mode));
            }
        }
    }
    for (name, mode) in names {
        let parts = old
            .iter()
            .filter_map(|shard| shard.iter().find(|s| s.name == name));
        let share: Vec<Items> = match mode {
            Redistribution::Split => {
                let mut shares = vec![Vec::new(); p];
                for (i, item) in parts.flat_map(|s| s.items.iter()).enumerate() {
                    shares[i % p].push(item.clone());
                }
                shares
            }
            Redistribution::Union => {
                let all: Vec<_> = parts.flat_map(|s| s.items.iter().cloned()).collect();
                vec![all; p]
            }
            Redistribution::Broadcast => {
                let first = parts
                    .into_iter()
                    .next()
                    .map(|s| s.items.clone())
                    .unwrap_or_default();
                vec![first; p]
            }
        };
        for (shard, items) in new.iter_mut().zip(share) {
            shard.push(StateSnapshot {
                name: name.to_string(),
                mode,
                items,
            });
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// What a function keeps: a buffer (split), its offsets (union), and rules (broadcast).
    fn fill(store: &mut OperatorStateStore, shard: u64, rng: &mut SplitMix64) {
        let n = rng.below(20) as usize;
        store
            .list_state::<(u64, String)>("buffer")
            .unwrap()
            .extend((0..n).map(|i| (shard, format!("record {i}"))));
        store
            .union_list_state::<u64>("offsets")
            .unwrap()
            .push(shard * 100 + n as u64);
        let rules = store.broadcast_state::<String, u32>("rules").unwrap();
        for r in 0..5u32 {
            rules.insert(format!("rule {r}"), r * 7);
        }
    }

    /// Snapshots of P shards restored at P' shards, for several P and P': split lists keep
    /// every element exactly once, union lists give each shard all of them, broadcast maps
    /// arrive whole on every shard; restored state nobody reads survives the next snapshot.
    #[test]
    fn operator_state_redistributes_on_rescale() {
        for (old_p, new_p) in [(1, 1), (2, 1), (2, 3), (4, 2), (3, 7)] {
            let mut rng = SplitMix64::new(old_p * 10 + new_p);
            let mut snaps = Vec::new();
            let mut all_buffer = Vec::new();
            let mut all_offsets = Vec::new();
            for shard in 0..old_p {
                let mut store = OperatorStateStore::default();
                assert!(!store.is_restored());
                fill(&mut store, shard, &mut rng);
                all_buffer.extend(store.list_state::<(u64, String)>("buffer").unwrap().clone());
                all_offsets.extend(store.union_list_state::<u64>("offsets").unwrap().clone());
                snaps.push(store.snapshot().unwrap());
            }
            let shares = redistribute(&snaps, new_p as u32);
            assert_eq!(shares.len(), new_p as usize);
            let mut got_buffer = Vec::new();
            for share in shares {
                let mut store = OperatorStateStore::restored(share);
                assert!(store.is_restored());
                got_buffer.extend(store.list_state::<(u64, String)>("buffer").unwrap().clone());
                let mut offsets = store.union_list_state::<u64>("offsets").unwrap().clone();
                offsets.sort();
                let mut want = all_offsets.clone();
                want.sort();
                assert_eq!(offsets, want);
                let rules = store.broadcast_state::<String, u32>("rules").unwrap();
                assert_eq!(rules.len(), 5);
                assert_eq!(rules.get("rule 3"), Some(&21));
                // The wrong kind is an error, not a silent empty state.
                assert!(store.list_state::<u64>("offsets").is_err());
                // Restored state the function does not read is kept.
                let again = OperatorStateStore::restored(store.snapshot().unwrap()).snapshot();
                assert_eq!(again.unwrap().len(), 3);
            }
            got_buffer.sort();
            all_buffer.sort();
            assert_eq!(got_buffer, all_buffer, "{old_p} -> {new_p}");
        }
    }
}
