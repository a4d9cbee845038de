//! A store whose log half in force is full: the next commit that logs
//! anything checkpoints first.

use std::collections::BTreeMap;

use shardstore::rng::Rng;
use shardstore::store::Store;

/// Bytes left in the log half in force.
pub fn log_room(store: &Store) -> u64 {
    let half = store.superblock().layout.meta_size_bytes / 2;
    half - store.metadata_in_use()[0].1
}

/// Fills the log half in force to its last block with puts of keys
/// `fill/N` (added to `model`), without checkpointing: puts of 60 KiB
/// (each carries a copy of its payload in the log) while there is room,
/// then puts of 100 bytes (a log block each).
pub fn fill_log(store: &mut Store, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let epoch = store.superblock().store.epoch;
    let mut rng = Rng::new(store.len() as u64);
    let mut n = 0u64;
    while log_room(store) > 0 {
        let len = if log_room(store) > 128 << 10 { 60_000 } else { 100 };
        let key = format!("fill/{n}").into_bytes();
        let value: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        store.put(&key, &value).unwrap();
        model.insert(key, value);
        n += 1;
    }
    assert_eq!(store.superblock().store.epoch, epoch, "filling the log checkpointed");
}
