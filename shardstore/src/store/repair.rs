//! The repair list: shards found damaged (by the scrubber, or when what
//! locates them was lost), each with the write sequence it was found at.
//! A listed shard answers `Corruption` until it is put again or deleted,
//! which takes it off. Durable through `Damaged` log records and the
//! checkpoint's damaged list.

use std::collections::BTreeMap;

use super::meta::Damage;

#[derive(Debug, Default, Clone)]
pub(super) struct RepairList {
    damaged: BTreeMap<Vec<u8>, Damage>,
}

impl RepairList {
    /// The damage recorded for `key` as written at `sequence` (a later
    /// write of the key is not damaged).
    pub(super) fn get(&self, key: &[u8], sequence: u64) -> Option<Damage> {
        self.damaged.get(key).filter(|d| d.sequence == sequence).copied()
    }

    /// Whether `key` is listed, at any sequence.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.damaged.contains_key(key)
    }

    pub(super) fn insert(&mut self, key: Vec<u8>, damage: Damage) {
        self.damaged.insert(key, damage);
    }

    /// The key was put again or deleted: whatever was damaged is gone.
    pub(super) fn remove(&mut self, key: &[u8]) {
        self.damaged.remove(key);
    }

    pub(super) fn len(&self) -> usize {
        self.damaged.len()
    }

    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = (&Vec<u8>, &Damage)> {
        self.damaged.iter()
    }
}
