//! The in-memory index: shard key to metadata, ordered by key, with a
//! hash table beside the order for point lookups.
//!
//! Its entries are the store's whole memory cost per shard, so each entry
//! is a single heap allocation holding the shard's metadata followed by
//! its key, and the B-tree and the hash table each hold only a thin
//! (8-byte) pointer to it. The B-tree owns the allocation; the hash
//! table's pointer is a second handle on the same entry, added and removed
//! with it. A get is one hash probe (one entry read to confirm the key)
//! instead of a descent through the B-tree that reads an entry at every
//! comparison (about 30 cache misses at a million shards); listing and the
//! scrubber's cursor walk the B-tree in key order. Lookups borrow the key
//! part, so neither is searched by building an entry. Measured by
//! `tests/store_memory.rs`. A full hash table grows into one twice its
//! size a few handles per insert (`grow_step`): every insert, and so
//! every commit, stays short at any shard count.
//!
//! Entry layout (little-endian):
//!
//! ```text
//! 0   size u64 | 8 crc u32 | 12 sequence u64 | 20 written_unix_ms u64
//! 28  chunk count u32 | 32 key length u8 | 33 locators, 12 bytes each
//! ..  (extent, block and distance packed, crc) | key
//! ```

use std::alloc::Layout;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::ptr::NonNull;

use super::meta::{Locator, ShardMeta};

const FIXED_BYTES: usize = 33;
const LOCATOR_BYTES: usize = 12;
/// What the allocator adds to each entry allocation (glibc: 8 bytes of
/// header, rounded up to 16-byte granules).
const ALLOC_OVERHEAD_BYTES: usize = 12;

/// Bytes of one entry's allocation.
fn entry_len(key_len: usize, chunks: usize) -> usize {
    FIXED_BYTES + chunks * LOCATOR_BYTES + key_len
}

/// A pointer to an entry allocation (see the module comment). Copying it
/// does not copy the entry: [`Entry`] owns the allocation, [`Handle`] only
/// refers to one.
#[derive(Clone, Copy)]
struct Raw(NonNull<u8>);

// SAFETY: an entry is never written after it is built, and it is freed
// only by its owning `Entry`, through `&mut Index`.
#[allow(unsafe_code)]
unsafe impl Send for Raw {}
// SAFETY: as above: shared access only ever reads.
#[allow(unsafe_code)]
unsafe impl Sync for Raw {}

impl Raw {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, 1).expect("an entry is far smaller than isize::MAX")
    }

    /// Builds the entry of `key` and `meta` in a new allocation.
    fn new(key: &[u8], meta: &ShardMeta) -> Raw {
        let n = meta.chunk_count();
        let key_len = u8::try_from(key.len()).expect("keys are at most 255 bytes (validated before the index)");
        let mut b = Vec::with_capacity(FIXED_BYTES + n * LOCATOR_BYTES + key.len());
        b.extend_from_slice(&meta.size.to_le_bytes());
        b.extend_from_slice(&meta.crc.to_le_bytes());
        b.extend_from_slice(&meta.sequence.to_le_bytes());
        b.extend_from_slice(&meta.written_unix_ms.to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        b.push(key_len);
        for l in meta.locators() {
            b.extend_from_slice(&l.extent.to_le_bytes());
            b.extend_from_slice(&l.packed_block().to_le_bytes());
            b.extend_from_slice(&l.crc.to_le_bytes());
        }
        b.extend_from_slice(key);
        let layout = Raw::layout(b.len());
        // SAFETY: the layout is non-zero (at least FIXED_BYTES) and the
        // copy writes exactly its size into the fresh allocation.
        #[allow(unsafe_code)]
        unsafe {
            let p = std::alloc::alloc(layout);
            let Some(p) = NonNull::new(p) else { std::alloc::handle_alloc_error(layout) };
            std::ptr::copy_nonoverlapping(b.as_ptr(), p.as_ptr(), b.len());
            Raw(p)
        }
    }

    /// The whole entry.
    fn bytes(&self) -> &[u8] {
        // SAFETY: the pointer is to a live entry (see `Send` above), whose
        // first FIXED_BYTES hold its chunk count and key length, from which
        // its length follows; it outlives `&self` because entries are freed
        // only through `&mut Index`.
        #[allow(unsafe_code)]
        unsafe {
            let fixed = std::slice::from_raw_parts(self.0.as_ptr(), FIXED_BYTES);
            let n = u32::from_le_bytes(fixed[28..32].try_into().expect("4 bytes")) as usize;
            let len = FIXED_BYTES + n * LOCATOR_BYTES + usize::from(fixed[32]);
            std::slice::from_raw_parts(self.0.as_ptr(), len)
        }
    }

    fn u32_at(self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes()[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes()[at..at + 8].try_into().expect("8 bytes"))
    }

    fn chunk_count(self) -> usize {
        self.u32_at(28) as usize
    }

    fn key(&self) -> &[u8] {
        &self.bytes()[FIXED_BYTES + self.chunk_count() * LOCATOR_BYTES..]
    }

    fn size(self) -> u64 {
        self.u64_at(0)
    }

    fn locator(self, i: usize) -> Locator {
        let at = FIXED_BYTES + i * LOCATOR_BYTES;
        Locator::unpack(self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8)).expect("packed from a locator")
    }

    fn meta(self) -> ShardMeta {
        let (size, crc, sequence, written) = (self.size(), self.u32_at(8), self.u64_at(12), self.u64_at(20));
        match self.chunk_count() {
            1 => ShardMeta::with_one_chunk(size, crc, sequence, written, self.locator(0)),
            n => ShardMeta::new(size, crc, sequence, written, (0..n).map(|i| self.locator(i)).collect()),
        }
    }
}

/// The owner of an entry: the B-tree's element. Ordered and compared by key.
struct Entry(Raw);

impl Drop for Entry {
    fn drop(&mut self) {
        let layout = Raw::layout(self.0.bytes().len());
        // SAFETY: allocated by `Raw::new` with this layout, owned only by
        // this `Entry`; its `Handle` left the hash tables before (see
        // `Index::insert` and `Index::remove`).
        #[allow(unsafe_code)]
        unsafe {
            std::alloc::dealloc(self.0 .0.as_ptr(), layout);
        }
    }
}

/// Appends `e`'s checkpoint entry, copied field by field from its bytes
/// (the encoding of `meta::encode_entry`: key length, key, sequence, size,
/// CRC, time, chunk count, locators packed as here).
fn encode_entry(e: Raw, out: &mut Vec<u8>) {
    let b = e.bytes();
    let locators_end = FIXED_BYTES + e.chunk_count() * LOCATOR_BYTES;
    out.push(b[32]);
    out.extend_from_slice(&b[locators_end..]);
    out.extend_from_slice(&b[12..20]);
    out.extend_from_slice(&b[0..12]);
    out.extend_from_slice(&b[20..32]);
    out.extend_from_slice(&b[FIXED_BYTES..locators_end]);
}

/// A second pointer to an entry owned by the B-tree: the hash table's
/// element. Hashed and compared by key, as the key slice is.
#[derive(Clone, Copy)]
struct Handle(Raw);

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.0.key()
    }
}

impl Borrow<[u8]> for Handle {
    fn borrow(&self) -> &[u8] {
        self.0.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0.key() == other.0.key()
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
        self.0.key().cmp(other.0.key())
    }
}

impl PartialEq for Handle {
    fn eq(&self, other: &Handle) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Handle {}

impl Hash for Handle {
    /// As `[u8]` hashes, so the table can be searched with a borrowed key.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

/// Shard key to metadata, in key order.
///
/// This is the index's whole interface (lookup, insert and remove, ordered
/// range and iteration, memory used): the store uses nothing else, so an
/// on-disk index (an LSM tree, as ShardStore keeps) can replace this one
/// when index memory becomes the limit (ARCHITECTURE.md, "Known limits").
#[derive(Default)]
pub struct Index {
    /// Declared first, dropped first: its handles point into `entries`.
    by_key: HashSet<Handle>,
    /// The hash table `by_key` replaced when it was full, while its
    /// handles are copied into `by_key` a few at each insert
    /// (`grow_step`): growing a table of a million handles at once held
    /// the store thread for about 0.1 s, twice that at two million.
    outgrown: Option<Outgrown>,
    entries: BTreeSet<Entry>,
    /// Bytes of all entry allocations.
    entry_bytes: usize,
    /// The index as it stood when a checkpoint began encoding it, while
    /// it is encoded in slices between commits (`begin_snapshot`).
    snapshot: Option<Snapshot>,
}

/// A full hash table being replaced by one twice its size: every key up
/// to `copied` (in key order, walking the B-tree) is in the new table,
/// the rest in this one unless a change since moved it. Every change
/// removes its key from this table, so it never holds a handle to an
/// entry freed since.
struct Outgrown {
    table: HashSet<Handle>,
    copied: Option<Vec<u8>>,
}

/// Handles copied into the new hash table at each insert while the index
/// grows (`Outgrown`): the old table's are all copied before a sixty-fourth
/// of its size has been added, well before the new one (twice its size)
/// fills. Each step starts with a descent of the B-tree to where the last
/// one stopped (about 2 µs at a million shards, an entry read per
/// comparison): at 4 handles a step, that descent made a million-shard
/// fill 0.94x as fast; at 64 it is paid once per 64 handles.
const GROW_STEP_ENTRIES: usize = 64;

/// Tables holding fewer handles than this grow at once, as a `HashSet`
/// does: copying them takes microseconds.
const GROW_IN_STEPS_MIN: usize = 1 << 14;

/// The index as it stood at one moment, kept while it changes: keys up to
/// `encoded` have been encoded already; of each key after it that changed
/// since, what it held then (`None`: absent). What no change touched is
/// read from the index itself.
#[derive(Default)]
struct Snapshot {
    encoded: Option<Vec<u8>>,
    before: BTreeMap<Vec<u8>, Option<Entry>>,
}

impl Snapshot {
    /// Keeps what `key` held before its first change since the snapshot,
    /// unless it was encoded already.
    fn keep(&mut self, key: &[u8], old: Option<Entry>) {
        if self.encoded.as_deref().is_some_and(|done| key <= done) || self.before.contains_key(key) {
            return;
        }
        self.before.insert(key.to_vec(), old);
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("shards", &self.entries.len()).finish_non_exhaustive()
    }
}

impl Index {
    /// An empty index with room for `n` entries in its hash table (a
    /// recovery knows how many the checkpoint holds).
    pub fn with_capacity(n: usize) -> Index {
        Index {
            by_key: HashSet::with_capacity(n),
            outgrown: None,
            entries: BTreeSet::new(),
            entry_bytes: 0,
            snapshot: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<ShardMeta> {
        self.handle(key).map(|h| h.0.meta())
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.handle(key).is_some()
    }

    /// The hash table's handle of `key`: in the table in use, or, while
    /// the index grows, in the one it replaces.
    fn handle(&self, key: &[u8]) -> Option<&Handle> {
        self.by_key.get(key).or_else(|| self.outgrown.as_ref()?.table.get(key))
    }

    /// Starts replacing a full hash table by one twice its size, or moves
    /// a replacement under way on by `GROW_STEP_ENTRIES` handles.
    fn grow_step(&mut self) {
        if self.outgrown.is_none() {
            let (len, capacity) = (self.by_key.len(), self.by_key.capacity());
            if len < capacity || capacity < GROW_IN_STEPS_MIN {
                return;
            }
            let table = std::mem::replace(&mut self.by_key, HashSet::with_capacity(capacity * 2));
            self.outgrown = Some(Outgrown { table, copied: None });
        }
        let outgrown = self.outgrown.as_mut().expect("a replacement under way");
        let start = outgrown.copied.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut last = None;
        for e in self.entries.range::<[u8], _>((start, Bound::Unbounded)).take(GROW_STEP_ENTRIES) {
            self.by_key.replace(Handle(e.0));
            last = Some(e.0.key());
        }
        if let Some(key) = last {
            let copied = outgrown.copied.get_or_insert_with(Vec::new);
            copied.clear();
            copied.extend_from_slice(key);
        }
        // Every handle is in the new table (the walk may never find the
        // end of the order while keys are added behind it): the old one
        // goes.
        if self.by_key.len() == self.entries.len() {
            self.outgrown = None;
        }
    }

    /// Sets `key` to `meta`, returning what it replaced.
    pub fn insert(&mut self, key: &[u8], meta: &ShardMeta) -> Option<ShardMeta> {
        self.grow_step();
        let entry = Entry(Raw::new(key, meta));
        self.entry_bytes += entry_len(key.len(), meta.chunk_count());
        // The table's handle moves to the new entry before the B-tree lets
        // go of (and frees) the old one.
        self.by_key.replace(Handle(entry.0));
        if let Some(outgrown) = &mut self.outgrown {
            outgrown.table.remove(key);
        }
        let old = self.entries.replace(entry);
        let meta = old.as_ref().map(|old| old.0.meta());
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.keep(key, old);
        }
        let meta = meta?;
        self.entry_bytes -= entry_len(key.len(), meta.chunk_count());
        Some(meta)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<ShardMeta> {
        self.by_key.remove(key);
        if let Some(outgrown) = &mut self.outgrown {
            outgrown.table.remove(key);
        }
        let old = self.entries.take(key)?;
        let meta = old.0.meta();
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.keep(key, Some(old));
        }
        self.entry_bytes -= entry_len(key.len(), meta.chunk_count());
        Some(meta)
    }

    /// Starts keeping the index as it is now, to be encoded in slices
    /// (`encode_snapshot`) while it changes: each key's first change after
    /// this keeps what it held, until the key is encoded. Replaces a
    /// snapshot under way.
    pub fn begin_snapshot(&mut self) {
        self.snapshot = Some(Snapshot::default());
    }

    /// Drops the snapshot and what it kept.
    pub fn end_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Whether a snapshot is under way.
    pub fn snapshot_under_way(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Appends the checkpoint entries of up to `max` more shards of the
    /// snapshot, in key order, after those appended before (as
    /// `encode_entries` does, each shard as it stood when the snapshot
    /// began); the count, and whether every shard has been appended.
    pub fn encode_snapshot(&mut self, max: usize, out: &mut Vec<u8>) -> (usize, bool) {
        let snapshot = self.snapshot.as_mut().expect("a snapshot under way");
        let start = snapshot.encoded.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut now = self.entries.range::<[u8], _>((start, Bound::Unbounded)).peekable();
        let mut kept = snapshot.before.range::<[u8], _>((start, Bound::Unbounded)).peekable();
        let (mut count, mut last): (usize, Option<&[u8]>) = (0, None);
        while count < max {
            // The lower key of the two; a key that changed is read from
            // what was kept of it.
            let take_kept = match (now.peek(), kept.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(e), Some((k, _))) => k.as_slice() <= e.0.key(),
            };
            if take_kept {
                let (key, old) = kept.next().expect("peeked");
                if now.peek().is_some_and(|e| e.0.key() == key.as_slice()) {
                    now.next();
                }
                if let Some(old) = old {
                    encode_entry(old.0, out);
                    count += 1;
                }
                last = Some(key.as_slice());
            } else {
                let e = now.next().expect("peeked");
                encode_entry(e.0, out);
                count += 1;
                last = Some(e.0.key());
            }
        }
        let done = now.peek().is_none() && kept.peek().is_none();
        if let Some(last) = last {
            let last = last.to_vec();
            snapshot.encoded = Some(last);
        }
        (count, done)
    }

    /// Heap bytes the index holds, estimated: the entries, the
    /// allocator's own overhead per entry (`ALLOC_OVERHEAD_BYTES`, glibc's),
    /// the hash table (a pointer and a control byte per slot) and the
    /// B-tree (a pointer per entry in nodes about two-thirds full).
    pub fn memory_bytes(&self) -> u64 {
        let n = self.entries.len();
        let outgrown = self.outgrown.as_ref().map_or(0, |o| o.table.capacity() * 9);
        (self.entry_bytes + n * ALLOC_OVERHEAD_BYTES + self.by_key.capacity() * 9 + outgrown + n * 12) as u64
    }

    /// Every shard in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], ShardMeta)> + '_ {
        self.entries.iter().map(|e| (e.0.key(), e.0.meta()))
    }

    /// Keys and shards from `start` on, in key order.
    pub fn iter_from<'a>(&'a self, start: Bound<&'a [u8]>) -> impl Iterator<Item = (&'a [u8], ShardMeta)> + 'a {
        self.entries.range::<[u8], _>((start, Bound::Unbounded)).map(|e| (e.0.key(), e.0.meta()))
    }

    /// Appends the checkpoint entries of every shard, in key order,
    /// copied field by field from their bytes here (`encode_entry`), and
    /// returns how many. A million entries encode in a fraction of the
    /// time a `ShardMeta` for each would take. (A checkpoint written while
    /// the store serves encodes a snapshot in slices: `encode_snapshot`.)
    pub fn encode_entries(&self, out: &mut Vec<u8>) -> usize {
        for e in &self.entries {
            encode_entry(e.0, out);
        }
        self.entries.len()
    }

    /// The bytes of every shard's checkpoint entry (`meta::encode_entry`),
    /// kept as entries come and go.
    pub fn entry_bytes(&self) -> u64 {
        self.entry_bytes as u64
    }

    /// Keys, sizes and sequences from `start` on, in key order.
    pub fn listing_from<'a>(&'a self, start: Bound<&'a [u8]>) -> impl Iterator<Item = (&'a [u8], u64, u64)> + 'a {
        self.entries.range::<[u8], _>((start, Bound::Unbounded)).map(|e| (e.0.key(), e.0.size(), e.0.u64_at(12)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(size: u64, crc: u32, chunks: u32) -> ShardMeta {
        ShardMeta::new(
            size,
            crc,
            7,
            1234,
            (0..chunks)
                .map(|i| Locator { extent: i, block: 2 * i, distance: 1 + (i % 3) as u8, crc: crc + i })
                .collect(),
        )
    }

    #[test]
    fn entries_encode_from_their_bytes_as_a_shard_meta_would() {
        let mut index = Index::default();
        let metas = [meta(10, 5, 1), meta(3 << 20, 6, 3), meta(0, 0, 1), meta(u64::MAX >> 8, u32::MAX - 64, 64)];
        let keys: [&[u8]; 4] = [b"b", b"a", &[0xff; 255], b"c/d"];
        for (key, m) in keys.iter().zip(&metas) {
            index.insert(key, m);
        }
        let mut want = Vec::new();
        let mut sorted: Vec<_> = keys.iter().zip(&metas).collect();
        sorted.sort_by_key(|(k, _)| **k);
        for (key, m) in &sorted {
            crate::store::meta::encode_entry(key, m, &mut want);
        }
        assert_eq!(want.len() as u64, index.entry_bytes());
        // In one go, and as a snapshot in slices of one.
        let mut got = Vec::new();
        assert_eq!(index.encode_entries(&mut got), 4);
        assert_eq!(got, want);
        let mut sliced = Vec::new();
        index.begin_snapshot();
        while !index.encode_snapshot(1, &mut sliced).1 {}
        index.end_snapshot();
        assert_eq!(sliced, want);
    }

    /// A snapshot encoded in slices while keys are put, replaced and
    /// removed between them, before and after the slices reach them,
    /// encodes the index as it stood when the snapshot began.
    #[test]
    fn a_snapshot_encodes_the_index_as_it_stood_while_it_changes() {
        let mut rng = crate::rng::Rng::new(9);
        for round in 0..200u64 {
            let mut index = Index::default();
            let key = |n: u64| format!("k{:03}", n % 40).into_bytes();
            for n in 0..rng.next_u64() % 30 {
                index.insert(&key(rng.next_u64()), &meta(n, n as u32, 1 + (n % 3) as u32));
            }
            let mut want = Vec::new();
            let count = index.encode_entries(&mut want);
            index.begin_snapshot();
            let (mut got, mut got_count) = (Vec::new(), 0);
            let slice = 1 + (round % 5) as usize;
            loop {
                for _ in 0..rng.next_u64() % 4 {
                    let k = key(rng.next_u64());
                    if rng.next_u64() % 3 == 0 {
                        index.remove(&k);
                    } else {
                        let n = rng.next_u64() % 1000;
                        index.insert(&k, &meta(n, 7, 1 + (n % 2) as u32));
                    }
                }
                let (n, done) = index.encode_snapshot(slice, &mut got);
                assert!(n <= slice);
                got_count += n;
                if done {
                    break;
                }
            }
            assert_eq!((got_count, &got), (count, &want), "round {round}");
            index.end_snapshot();
            assert!(!index.snapshot_under_way());
        }
    }

    /// Past `GROW_IN_STEPS_MIN` handles the hash table grows a few handles
    /// at each insert; lookups, replacements and removals during the
    /// growth (of keys copied and not yet copied) answer as a map would,
    /// and no lookup ever finds a removed or replaced entry.
    #[test]
    fn the_hash_table_grows_in_steps_and_answers_throughout() {
        let mut rng = crate::rng::Rng::new(5);
        let mut index = Index::default();
        let mut model = BTreeMap::new();
        let (mut grew, mut steps_seen) = (0, 0);
        for n in 0..(GROW_IN_STEPS_MIN as u64 * 5) {
            let key = format!("k{:06}", rng.below(GROW_IN_STEPS_MIN as u64 * 4)).into_bytes();
            let growing = index.outgrown.is_some();
            if rng.below(10) == 0 {
                assert_eq!(index.remove(&key), model.remove(&key));
            } else {
                let m = meta(n, n as u32, 1 + (n % 3) as u32);
                assert_eq!(index.insert(&key, &m), model.insert(key.clone(), m));
            }
            if !growing && index.outgrown.is_some() {
                grew += 1;
            }
            if index.outgrown.is_some() {
                steps_seen += 1;
                // The copy has passed some keys and not others: look both up.
                for _ in 0..4 {
                    let probe = format!("k{:06}", rng.below(GROW_IN_STEPS_MIN as u64 * 4)).into_bytes();
                    assert_eq!(index.get(&probe), model.get(&probe).cloned());
                }
            }
        }
        // Grown once in steps (28 672 handles, the first table past the
        // minimum), and done.
        assert!(grew == 1 && steps_seen > 100, "grew {grew} times in {steps_seen} steps");
        assert!(index.outgrown.is_none(), "still growing");
        for (key, m) in &model {
            assert_eq!(index.get(key).as_ref(), Some(m));
        }
        assert_eq!(index.len(), model.len());
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
        let from_b: Vec<(&[u8], u64, u64)> = index.listing_from(Bound::Excluded(b"a")).collect();
        assert_eq!(from_b, [(&b"b"[..], 11, 7), (b"c", 0, 7)]);
        assert_eq!(index.remove(b"a"), Some(meta(3 << 20, 6, 3)));
        assert!(!index.contains_key(b"a"));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(b"a"), None);
    }

    /// The hash table and the B-tree agree through every kind of change
    /// (a stale handle would be read after its entry was freed: Miri or a
    /// sanitizer would see it; here, wrong answers would).
    #[test]
    fn lookups_and_order_agree_through_replacements_and_removals() {
        let mut index = Index::default();
        let mut model = std::collections::BTreeMap::new();
        let mut rng = crate::rng::Rng::new(11);
        for step in 0..20_000u64 {
            let key = format!("k{:03}", rng.below(300)).into_bytes();
            if rng.below(4) == 0 {
                assert_eq!(index.remove(&key), model.remove(&key));
            } else {
                let m = meta(step, step as u32, 1 + (step % 3) as u32);
                assert_eq!(index.insert(&key, &m), model.insert(key.clone(), m));
            }
            assert_eq!(index.get(&key), model.get(&key).cloned());
        }
        assert_eq!(index.len(), model.len());
        for (k, m) in &model {
            assert_eq!(index.get(k).as_ref(), Some(m));
        }
        let keys: Vec<Vec<u8>> = index.iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
        let longest = vec![b'z'; 255];
        index.insert(&longest, &meta(1, 2, 1));
        assert_eq!(index.get(&longest), Some(meta(1, 2, 1)));
    }
}
