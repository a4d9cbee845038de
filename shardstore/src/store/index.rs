//! The in-memory index: shard key to metadata, ordered by key.
//!
//! Its entries are the store's whole memory cost per shard, so each entry
//! is a single heap allocation holding the shard's metadata followed by
//! its key, and the B-tree holds only that allocation's pointer and
//! length. Lookups borrow the key part, so the tree is searched by key
//! without building an entry. Measured by `tests/store_memory.rs`.
//!
//! Entry layout (little-endian):
//!
//! ```text
//! 0   size u64 | 8 crc u32 | 12 sequence u64 | 20 written_unix_ms u64
//! 28  chunk count u32 | 32 locators, 12 bytes each (extent, block, crc)
//! ..  key
//! ```

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::ops::Bound;

use super::meta::{Locator, ShardMeta};

const FIXED_BYTES: usize = 32;
const LOCATOR_BYTES: usize = 12;

/// Metadata then key, in one allocation; ordered and compared by key.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(key: &[u8], meta: &ShardMeta) -> Entry {
        let n = meta.chunk_count();
        let mut b = Vec::with_capacity(FIXED_BYTES + n * LOCATOR_BYTES + key.len());
        b.extend_from_slice(&meta.size.to_le_bytes());
        b.extend_from_slice(&meta.crc.to_le_bytes());
        b.extend_from_slice(&meta.sequence.to_le_bytes());
        b.extend_from_slice(&meta.written_unix_ms.to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        for l in meta.locators() {
            b.extend_from_slice(&l.extent.to_le_bytes());
            b.extend_from_slice(&l.block.to_le_bytes());
            b.extend_from_slice(&l.crc.to_le_bytes());
        }
        b.extend_from_slice(key);
        Entry(b.into_boxed_slice())
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }

    fn chunk_count(&self) -> usize {
        self.u32_at(28) as usize
    }

    fn key(&self) -> &[u8] {
        &self.0[FIXED_BYTES + self.chunk_count() * LOCATOR_BYTES..]
    }

    fn size(&self) -> u64 {
        self.u64_at(0)
    }

    fn locator(&self, i: usize) -> Locator {
        let at = FIXED_BYTES + i * LOCATOR_BYTES;
        Locator { extent: self.u32_at(at), block: self.u32_at(at + 4), crc: self.u32_at(at + 8) }
    }

    fn meta(&self) -> ShardMeta {
        let (size, crc, sequence, written) = (self.size(), self.u32_at(8), self.u64_at(12), self.u64_at(20));
        match self.chunk_count() {
            1 => ShardMeta::with_one_chunk(size, crc, sequence, written, self.locator(0)),
            n => ShardMeta::new(size, crc, sequence, written, (0..n).map(|i| self.locator(i)).collect()),
        }
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

/// Shard key to metadata, in key order.
#[derive(Default)]
pub struct Index {
    entries: BTreeSet<Entry>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("shards", &self.entries.len()).finish()
    }
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<ShardMeta> {
        self.entries.get(key).map(Entry::meta)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.entries.contains(key)
    }

    /// Sets `key` to `meta`, returning what it replaced.
    pub fn insert(&mut self, key: &[u8], meta: &ShardMeta) -> Option<ShardMeta> {
        self.entries.replace(Entry::new(key, meta)).map(|old| old.meta())
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<ShardMeta> {
        self.entries.take(key).map(|old| old.meta())
    }

    /// Every shard in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], ShardMeta)> + '_ {
        self.entries.iter().map(|e| (e.key(), e.meta()))
    }

    /// Keys and shards from `start` on, in key order.
    pub fn iter_from<'a>(&'a self, start: Bound<&'a [u8]>) -> impl Iterator<Item = (&'a [u8], ShardMeta)> + 'a {
        self.entries.range::<[u8], _>((start, Bound::Unbounded)).map(|e| (e.key(), e.meta()))
    }

    /// Keys and sizes from `start` on, in key order.
    pub fn sizes_from<'a>(&'a self, start: Bound<&'a [u8]>) -> impl Iterator<Item = (&'a [u8], u64)> + 'a {
        self.entries.range::<[u8], _>((start, Bound::Unbounded)).map(|e| (e.key(), e.size()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, crc: u32, chunks: u32) -> ShardMeta {
        ShardMeta::new(
            size,
            crc,
            7,
            1234,
            (0..chunks).map(|i| Locator { extent: i, block: 2 * i, crc: crc + i }).collect(),
        )
    }

    #[test]
    fn entries_round_trip_and_order_by_key() {
        let mut index = Index::default();
        assert_eq!(index.insert(b"b", &meta(10, 5, 1)), None);
        assert_eq!(index.insert(b"a", &meta(3 << 20, 6, 3)), None);
        assert_eq!(index.insert(b"c", &meta(0, 0, 1)), None);
        assert_eq!(index.get(b"a"), Some(meta(3 << 20, 6, 3)));
        assert_eq!(index.insert(b"b", &meta(11, 8, 1)), Some(meta(10, 5, 1)));
        assert_eq!(index.get(b"b"), Some(meta(11, 8, 1)));
        let keys: Vec<&[u8]> = index.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
        let from_b: Vec<(&[u8], u64)> = index.sizes_from(Bound::Excluded(b"a")).collect();
        assert_eq!(from_b, [(&b"b"[..], 11), (b"c", 0)]);
        assert_eq!(index.remove(b"a"), Some(meta(3 << 20, 6, 3)));
        assert!(!index.contains_key(b"a"));
        assert_eq!(index.len(), 2);
    }
}
