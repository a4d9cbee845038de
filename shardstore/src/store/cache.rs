//! The read cache: whole small shards as a get read and verified them,
//! kept in memory so that a hot shard is answered without a trip to the
//! store thread or the device.
//!
//! The store reads with `O_DIRECT`, so the kernel's page cache never holds
//! a shard: without this cache every GET of a hot shard pays a device read
//! and two thread hand-offs. Callers on any thread look shards up
//! ([`ReadCache::get`]); only the store thread changes the cache, which
//! keeps it exact:
//!
//! - a shard enters when a whole-shard get of it finishes verified and the
//!   index still holds that very write (same sequence) and no damage is
//!   recorded for it ([`Store::finish_chunk`](super::Store));
//! - every change the index makes to a key (a put, delete or tombstone
//!   applied, damage recorded) removes it first, before the change is
//!   answered to anyone; relocation keeps it (the bytes are the same);
//! - a store that fails or closes empties it (a failed one adds nothing
//!   more);
//! - a hit is checked against the shard's CRC before it is returned (as a
//!   device read is): a bit flipped in memory costs a device read, never a
//!   wrong answer.
//!
//! So a caller that sees a shard here sees what the store's index holds at
//! that moment; a write acknowledged before the lookup began is never
//! hidden by an older copy. Eviction is CLOCK: a hit sets the entry's
//! reference bit, the hand clears bits until it finds an entry not used
//! since its last pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::ShardStat;

/// What an entry costs beyond its key and bytes (the slot, the map's
/// entry, the allocations' headers), counted against the capacity.
const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// How large the cache is and what it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCacheSettings {
    /// Memory for entries (bytes, keys and overhead); 0 turns it off.
    pub capacity_bytes: u64,
    /// Largest shard kept (a larger one would push out many small ones).
    pub shard_bytes_max: u64,
}

impl ReadCacheSettings {
    pub const OFF: ReadCacheSettings = ReadCacheSettings { capacity_bytes: 0, shard_bytes_max: 0 };
}

impl Default for ReadCacheSettings {
    /// Off: a store caches nothing unless asked to (the agent does).
    fn default() -> Self {
        ReadCacheSettings::OFF
    }
}

/// A cached shard: its stat and all of its bytes (a reference, not a copy).
#[derive(Debug, Clone)]
pub struct Cached {
    pub stat: ShardStat,
    pub bytes: Bytes,
}

/// Counters and gauges, read without the lock.
#[derive(Debug, Default)]
pub struct ReadCacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub inserts: AtomicU64,
    pub evictions: AtomicU64,
    /// Entries removed because their key changed.
    pub invalidations: AtomicU64,
    /// Entries whose bytes no longer matched their CRC when looked up.
    pub corrupt: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
}

#[derive(Debug)]
pub struct ReadCache {
    settings: ReadCacheSettings,
    clock: Mutex<Clock>,
    stats: ReadCacheStats,
}

#[derive(Debug, Default)]
struct Clock {
    by_key: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: u64,
}

#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    entry: Cached,
    referenced: bool,
}

fn cost(key: &[u8], bytes: &[u8]) -> u64 {
    (key.len() + bytes.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

impl ReadCache {
    pub fn new(settings: ReadCacheSettings) -> ReadCache {
        ReadCache { settings, clock: Mutex::new(Clock::default()), stats: ReadCacheStats::default() }
    }

    pub fn settings(&self) -> ReadCacheSettings {
        self.settings
    }

    pub fn enabled(&self) -> bool {
        self.settings.capacity_bytes > 0
    }

    pub fn stats(&self) -> &ReadCacheStats {
        &self.stats
    }

    /// The shard of `key` if it is cached (counted as a hit or a miss).
    pub fn get(&self, key: &[u8]) -> Option<Cached> {
        if !self.enabled() {
            return None;
        }
        let found = {
            let mut clock = self.clock.lock().expect("read cache lock");
            let at = clock.by_key.get(key).copied();
            at.map(|at| {
                let slot = clock.slots[at].as_mut().expect("the map points at live slots");
                slot.referenced = true;
                slot.entry.clone()
            })
        };
        // Every answer is verified, from memory too: bytes that no longer
        // match the shard's CRC (a flipped bit in RAM) are dropped and
        // read from the device again.
        let found = found.filter(|hit| {
            let intact = crc32c::crc32c(&hit.bytes) == hit.stat.crc32c;
            if !intact {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                self.drop_entry(key);
            }
            intact
        });
        let counter = if found.is_some() { &self.stats.hits } else { &self.stats.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether a shard of `size` bytes would be kept.
    pub(super) fn takes(&self, size: u64) -> bool {
        self.enabled() && size <= self.settings.shard_bytes_max
    }

    /// Keeps a copy of a verified shard (the store thread, once the index
    /// was checked to still hold this write of it).
    pub(super) fn insert(&self, key: &[u8], stat: ShardStat, bytes: &[u8]) {
        let need = cost(key, bytes);
        if !self.takes(stat.size) || need > self.settings.capacity_bytes {
            return;
        }
        let mut clock = self.clock.lock().expect("read cache lock");
        let same = clock
            .by_key
            .get(key)
            .is_some_and(|&at| clock.slots[at].as_ref().is_some_and(|slot| slot.entry.stat.sequence == stat.sequence));
        if same {
            // Already kept (two reads of it were in flight together).
            return;
        }
        let entry = Cached { stat, bytes: Bytes::copy_from_slice(bytes) };
        clock.remove(key);
        let mut evicted = 0;
        while clock.bytes + need > self.settings.capacity_bytes {
            clock.evict_one();
            evicted += 1;
        }
        let slot = Slot { key: key.into(), entry, referenced: false };
        let at = if let Some(at) = clock.free.pop() {
            clock.slots[at] = Some(slot);
            at
        } else {
            clock.slots.push(Some(slot));
            clock.slots.len() - 1
        };
        clock.by_key.insert(key.into(), at);
        clock.bytes += need;
        self.publish(&clock);
        drop(clock);
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Drops `key`'s entry: the index is about to change what it holds.
    /// (A removal is safe from any thread: it can only turn a hit into a
    /// miss; `get` drops entries whose bytes fail their check.)
    pub(super) fn forget(&self, key: &[u8]) {
        if self.enabled() && self.drop_entry(key) {
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drop_entry(&self, key: &[u8]) -> bool {
        let mut clock = self.clock.lock().expect("read cache lock");
        let dropped = clock.remove(key);
        if dropped {
            self.publish(&clock);
        }
        dropped
    }

    /// Drops everything (the store failed or closed).
    pub(super) fn clear(&self) {
        let mut clock = self.clock.lock().expect("read cache lock");
        *clock = Clock::default();
        self.publish(&clock);
    }

    fn publish(&self, clock: &Clock) {
        self.stats.bytes.store(clock.bytes, Ordering::Relaxed);
        self.stats.entries.store(clock.by_key.len() as u64, Ordering::Relaxed);
    }
}

impl Clock {
    fn remove(&mut self, key: &[u8]) -> bool {
        let Some(at) = self.by_key.remove(key) else { return false };
        let slot = self.slots[at].take().expect("the map points at live slots");
        self.bytes -= cost(&slot.key, &slot.entry.bytes);
        self.free.push(at);
        true
    }

    /// Evicts the first entry the hand finds not used since its last pass
    /// (at most two turns: the first clears every reference bit).
    fn evict_one(&mut self) {
        assert!(!self.by_key.is_empty(), "eviction from an empty cache");
        loop {
            self.hand = (self.hand + 1) % self.slots.len();
            let Some(slot) = self.slots[self.hand].as_mut() else { continue };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let key = slot.key.clone();
            self.remove(&key);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(bytes: &[u8], sequence: u64) -> ShardStat {
        ShardStat { size: bytes.len() as u64, crc32c: crc32c::crc32c(bytes), written_unix_ms: 0, sequence, chunks: 1 }
    }

    fn cache(capacity_bytes: u64) -> ReadCache {
        ReadCache::new(ReadCacheSettings { capacity_bytes, shard_bytes_max: 1000 })
    }

    #[test]
    fn a_shard_is_found_until_forgotten() {
        let c = cache(10_000);
        c.insert(b"a", stat_of(b"abc", 1), b"abc");
        let hit = c.get(b"a").expect("cached");
        assert_eq!((hit.stat.sequence, &hit.bytes[..]), (1, &b"abc"[..]));
        c.insert(b"a", stat_of(b"xy", 2), b"xy");
        assert_eq!(&c.get(b"a").unwrap().bytes[..], b"xy");
        c.forget(b"a");
        assert!(c.get(b"a").is_none());
        assert_eq!(c.stats().bytes.load(Ordering::Relaxed), 0);
        assert_eq!((c.stats().hits.load(Ordering::Relaxed), c.stats().misses.load(Ordering::Relaxed)), (2, 1));
    }

    #[test]
    fn bytes_changed_in_memory_are_never_returned() {
        let c = cache(10_000);
        c.insert(b"a", stat_of(b"abc", 1), b"abc");
        {
            let mut clock = c.clock.lock().unwrap();
            let at = clock.by_key[&b"a"[..]];
            clock.slots[at].as_mut().unwrap().entry.bytes = Bytes::from_static(b"abd");
        }
        assert!(c.get(b"a").is_none(), "bytes that fail their CRC were returned");
        assert_eq!(c.stats().corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(c.stats().entries.load(Ordering::Relaxed), 0, "the bad entry stays");
        assert_eq!(c.stats().invalidations.load(Ordering::Relaxed), 0, "memory damage is not a change of the key");
        assert_eq!(c.stats().misses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn too_large_shards_and_a_cache_turned_off_keep_nothing() {
        let c = cache(10_000);
        c.insert(b"big", stat_of(&[0; 1001], 1), &[0; 1001]);
        assert!(c.get(b"big").is_none());
        let off = ReadCache::new(ReadCacheSettings::OFF);
        off.insert(b"a", stat_of(b"a", 1), b"a");
        assert!(off.get(b"a").is_none());
        assert_eq!(off.stats().misses.load(Ordering::Relaxed), 0, "a cache turned off is not consulted");
    }

    #[test]
    fn eviction_keeps_within_capacity_and_spares_what_was_used() {
        // Room for three entries of 100 bytes with a 1-byte key.
        let each = cost(b"k", &[0; 100]);
        let c = cache(3 * each);
        for k in [b"a", b"b", b"c"] {
            c.insert(k, stat_of(&[k[0]; 100], 1), &[k[0]; 100]);
        }
        // Used since it entered: the hand passes it by.
        assert!(c.get(b"a").is_some());
        c.insert(b"d", stat_of(&[b'd'; 100], 1), &[b'd'; 100]);
        assert!(c.get(b"a").is_some(), "a used entry was evicted before unused ones");
        assert_eq!(c.stats().entries.load(Ordering::Relaxed), 3);
        assert!(c.stats().bytes.load(Ordering::Relaxed) <= 3 * each);
        assert_eq!(c.stats().evictions.load(Ordering::Relaxed), 1);
        let kept: Vec<bool> = [b"b", b"c", b"d"].iter().map(|k| c.get(*k).is_some()).collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), 2, "{kept:?}");
        assert!(kept[2], "the newest entry is kept");
    }

    #[test]
    fn a_model_of_inserts_and_forgets_never_disagrees() {
        // Every lookup answers what was last inserted for the key and not
        // forgotten since, or nothing (evicted); memory stays in bounds.
        let c = cache(2000);
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut rng = crate::rng::Rng::new(7);
        for step in 0..20_000u64 {
            let key = vec![b'k', rng.below(24) as u8];
            match rng.below(3) {
                0 => {
                    let bytes = vec![step as u8; rng.below(300) as usize];
                    c.insert(&key, stat_of(&bytes, step), &bytes);
                    model.insert(key, bytes);
                }
                1 => {
                    c.forget(&key);
                    model.remove(&key);
                }
                _ => {
                    if let Some(hit) = c.get(&key) {
                        assert_eq!(Some(&hit.bytes[..]), model.get(&key).map(Vec::as_slice), "step {step}");
                    }
                }
            }
            assert!(c.stats().bytes.load(Ordering::Relaxed) <= 2000);
        }
        // The lookups were answered, not all missed: the comparison ran.
        let (hits, misses) = (c.stats().hits.load(Ordering::Relaxed), c.stats().misses.load(Ordering::Relaxed));
        assert!(hits > 500, "{hits} hits, {misses} misses");
    }
}
