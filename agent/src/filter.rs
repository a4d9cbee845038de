//! Which devices may hold a key: one Bloom filter per device, so a read or
//! delete asks only the devices whose filter matches (nearly always one)
//! instead of every device on the host.
//!
//! A filter is built from its store's key list when the agent starts and
//! gains each key put on the device; keys are never removed (a Bloom filter
//! cannot forget), so deletes only leave false positives, which cost one
//! extra in-memory lookup on the store thread, never a wrong answer. When
//! the keys added since the last build pass the capacity the filter was
//! sized for, it is rebuilt from the store's key list, larger.

use std::sync::atomic::{AtomicU64, Ordering};

/// Filter bits per key of capacity: about 1% false positives with
/// `HASHES` probes.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// The smallest capacity a filter is sized for, in keys.
pub const CAPACITY_MIN: u64 = 1 << 16;

/// A Bloom filter whose bits are set and tested without a lock.
#[derive(Debug)]
pub struct KeyFilter {
    words: Vec<AtomicU64>,
    capacity: u64,
    added: AtomicU64,
}

impl KeyFilter {
    /// A filter for `capacity` keys (at least `CAPACITY_MIN`).
    pub fn new(capacity: u64) -> KeyFilter {
        let capacity = capacity.max(CAPACITY_MIN);
        let words = (capacity * BITS_PER_KEY).div_ceil(64);
        KeyFilter { words: (0..words).map(|_| AtomicU64::new(0)).collect(), capacity, added: AtomicU64::new(0) }
    }

    fn probes(&self, key: &[u8]) -> impl Iterator<Item = u64> + '_ {
        // Double hashing over two independent CRC32C-based hashes.
        let h1 = u64::from(crc32c::crc32c(key));
        let h2 = u64::from(crc32c::crc32c_append(0x9E37_79B9, key)) | 1;
        let bits = self.words.len() as u64 * 64;
        (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2))) % bits)
    }

    pub fn insert(&self, key: &[u8]) {
        for bit in self.probes(key) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets every bit: the filter then matches every key.
    pub fn fill(&self) {
        for w in &self.words {
            w.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// False means the key is certainly not on the device.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.probes(key).all(|bit| self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
    }

    /// Whether more keys were added than the filter was sized for.
    pub fn is_overfull(&self) -> bool {
        self.added.load(Ordering::Relaxed) > self.capacity
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_added_key_matches_and_few_others_do() {
        let f = KeyFilter::new(10_000);
        for i in 0..10_000 {
            f.insert(format!("in/{i}").as_bytes());
        }
        assert!((0..10_000).all(|i| f.may_contain(format!("in/{i}").as_bytes())));
        let false_positives = (0..100_000).filter(|i| f.may_contain(format!("out/{i}").as_bytes())).count();
        // Sized for CAPACITY_MIN keys and holding 10 000: well under 1%.
        assert!(false_positives < 1_000, "{false_positives} false positives in 100 000");
        assert!(!f.is_overfull());
    }

    #[test]
    fn a_filter_knows_when_it_is_overfull() {
        let f = KeyFilter::new(0);
        assert_eq!(f.capacity(), CAPACITY_MIN);
        for i in 0..=CAPACITY_MIN {
            f.insert(&i.to_le_bytes());
        }
        assert!(f.is_overfull());
    }
}
