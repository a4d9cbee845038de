//! A writer that overwrites shards with numbered versions while readers
//! check what they see (the store thread's and the read cache's race
//! tests).

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use shardstore::store::thread::StoreHandle;

/// A shard of `key` at `version`: every 8-byte word is (key, version), so a
/// reader can tell a whole version of its own key from anything else.
pub fn versioned(key: u32, version: u32) -> Vec<u8> {
    let word = (u64::from(key) << 32 | u64::from(version)).to_le_bytes();
    word.iter().copied().cycle().take(4096).collect()
}

/// What is wrong with `bytes`, read as `k{key}` after version `at_least`
/// of it was acknowledged: `None` when they are a whole version of that
/// key, no older.
pub fn problem(key: u32, bytes: &[u8], at_least: u32) -> Option<String> {
    let Some(first) = bytes.get(..8) else { return Some(format!("{} bytes, not a shard", bytes.len())) };
    let word = u64::from_le_bytes(first.try_into().expect("8 bytes"));
    let version = word as u32;
    if (word >> 32) as u32 != key || bytes != versioned(key, version) {
        Some("bytes of another shard, or torn".to_owned())
    } else if version < at_least {
        Some(format!("version {version}, {at_least} was acknowledged before"))
    } else {
        None
    }
}

/// Puts `k{key}` at ever newer versions, keys `stride` apart in turn
/// among `acked.len()`, until `stop`; each acknowledged version is
/// recorded in `acked[key]` after its put returns. Returns the puts made.
pub fn overwrite_until(store: &StoreHandle, acked: &[AtomicU32], stride: u32, stop: impl Fn() -> bool) -> u32 {
    let keys = acked.len() as u32;
    let mut puts = 0u32;
    while !stop() {
        let key = (puts * stride) % keys;
        let version = puts / keys + 1;
        store.put(format!("k{key}").as_bytes(), versioned(key, version)).unwrap();
        acked[key as usize].fetch_max(version, SeqCst);
        puts += 1;
    }
    puts
}
