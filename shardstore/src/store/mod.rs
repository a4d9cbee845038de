//! The shard store of one device: shards named by key, kept in
//! append-only extents as self-describing chunk records, found through an
//! in-memory index made durable by a log and checkpoints in the metadata
//! region.
//!
//! Durability of a batch (group commit): chunk records are written, one
//! flush makes them durable, then the log blocks that reference them are
//! written to every copy of the metadata region and a second flush makes
//! them durable; only then are the operations acknowledged and applied
//! to the in-memory index. A crash at any point leaves either the old or
//! the new state of each operation of the batch, never a reference to data
//! that is not on the medium. See `docs/format.md`, "Shard store".
//!
//! This is the synchronous core, driven by one thread that owns the
//! device; reclamation and the device thread with its queue build on it.

pub mod cache;
mod checkpoint;
mod commit;
mod extents;
pub mod fsck;
pub mod index;
pub mod meta;
pub mod placed;
mod put_data;
mod reads;
mod reclaim;
pub mod record;
mod recovery;
mod repair;
pub mod scrub;
mod stage;
mod stats;
mod tail;
pub mod thread;

pub(crate) use checkpoint::write_initial_checkpoint;
use checkpoint::{checkpoint_len, encode_checkpoint, read_bytes, write_bytes};
pub use checkpoint::{CheckpointCounts, CHECKPOINT_DUE_LOG_USED_PCT};
pub use commit::Pump;
pub use extents::ExtentInfo;
use extents::ExtentTable;
pub use put_data::{Landed, Landing, PutData};
pub use reads::FinishedGet;
use reads::{ReadPipeline, ReadToken, COMMIT_LOG_OP};
use reclaim::ReclaimPlan;
pub use reclaim::{
    Pace, ReclaimCounts, RECLAIM_AHEAD_EXTENTS_COUNT, RECLAIM_BACKGROUND_BATCH_BYTES_MAX, RECLAIM_IN_FLIGHT_MAX,
    RECLAIM_STEP_BYTES_MAX,
};
use repair::RepairList;

use std::collections::HashMap;

use bytes::Bytes;

use crate::constants::BLOCK_SIZE_BYTES;
use crate::device::{BlockDevice, BlockDeviceExt, BufferPool, Completion, IoKind, IoOp};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::superblock::{self, StoreRef, Superblock};
use index::Index;
use meta::{
    CheckpointHeader, Locator, LogRecord, ScrubCursor, ShardMeta, BLOCK, CHECKPOINT_HEADER_BYTES, LOG_PAYLOAD_BYTES_MAX,
};
use record::{record_size_bytes, RecordHeader, CHUNK_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX};

/// Largest shard the store accepts.
pub const SHARD_SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Free extents held back from puts so reclamation can always evacuate.
pub const RESERVE_EXTENTS_COUNT: u32 = 2;
/// Data-path I/Os in flight per store, and buffer-pool slots.
pub const STORE_QUEUE_DEPTH: usize = 32;
/// Operations in one group commit at most.
pub const BATCH_OPS_MAX: usize = 1024;
/// Log write buffers kept for reuse: one per copy of the metadata region
/// for two log writes' worth of 64 KiB pieces; a larger log write (a big
/// batch) takes fresh ones for the rest.
pub const LOG_BUFFERS_COUNT: usize = 8;
pub const LOG_BUFFER_SIZE_BYTES: usize = 64 * 1024;
/// Record bytes (payload plus a 4 KiB header block per chunk: eight 4 KiB
/// puts) up to which a group commit is made durable by one flush (chunk
/// records, a copy of their payload in the log, and the log written
/// together). A larger batch writes its data, flushes, writes the log and
/// flushes again: its time goes to moving bytes, and copying them into the
/// log would cost more than the second flush saves.
pub const ONE_FLUSH_BATCH_BYTES_MAX: u64 = 64 * 1024;

const _: () = assert!(SHARD_SIZE_BYTES_MAX % CHUNK_SIZE_BYTES_MAX as u64 == 0);
const _: () = assert!(
    crate::constants::EXTENT_SIZE_BYTES_MIN >= 3 * (CHUNK_SIZE_BYTES_MAX as u64 + BLOCK_SIZE_BYTES),
    "every extent holds several of the largest records"
);
const _: () = assert!(
    SHARD_SIZE_BYTES_MAX / CHUNK_SIZE_BYTES_MAX as u64 <= meta::CHUNKS_PER_SHARD_MAX as u64,
    "a put record fits one log block"
);

/// A write operation for [`Store::commit`]. A put's data is a shared
/// buffer, so a caller (an HTTP body, a benchmark's payload) hands it over
/// without a copy; the store copies it once, into an aligned I/O buffer.
///
/// A put may carry the CRC32C its sender computed (`crc32c`: the client's
/// `x-shard-crc32c`, or the agent's CRC of the body as it arrived): the
/// store compares it with the CRC of the aligned buffer it writes, so the
/// end-to-end check reaches the bytes that go to the medium. A mismatch
/// fails the put with `BadDigest` before anything is written.
///
/// A put or tombstone may carry a host-wide `version` (the agent's hybrid
/// logical clock): the write's sequence on the device is then at least
/// that, so that copies of one key on two devices of a host compare by
/// sequence (`Store::lookup`).
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: Vec<u8>,
        data: PutData,
        crc32c: Option<u32>,
        version: Option<u64>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Deletes every copy of the key older than `version` on this device
    /// and keeps a tombstone, so that an older copy on a device that could
    /// not be asked never comes back (see `LogRecord::Tombstone`).
    Tombstone {
        key: Vec<u8>,
        version: u64,
    },
    /// Drops the key's tombstone if it is still the one at `version`.
    Purge {
        key: Vec<u8>,
        version: u64,
    },
}

impl Op {
    /// A put without a CRC from its sender (the store computes its own).
    pub fn put(key: impl Into<Vec<u8>>, data: impl Into<Bytes>) -> Op {
        Op::Put { key: key.into(), data: PutData::from(data.into()), crc32c: None, version: None }
    }

    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Tombstone { key, .. } | Op::Purge { key, .. } => key,
        }
    }
}

/// What a device knows of a key (`Store::lookup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Shard(ShardStat),
    /// Deleted at this sequence while a device may have held an older copy.
    Tombstone(u64),
    Absent,
}

/// A byte range of a shard as a client asks for it, resolved against the
/// shard's size where the size is known (the store thread, for `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Bytes FIRST to LAST, inclusive (LAST past the end: to the end).
    FromTo(u64, u64),
    /// From FIRST to the end.
    From(u64),
    /// The last N bytes (N > 0).
    Suffix(u64),
}

impl ByteRange {
    /// (offset, length) in a shard of `size` bytes; `None` when nothing of
    /// it is there (it starts past the end, ends before it starts, or the
    /// shard is empty).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let last = size.checked_sub(1)?;
        let (start, end) = match self {
            ByteRange::Suffix(n) => (size.saturating_sub(n), last),
            ByteRange::From(first) => (first, last),
            ByteRange::FromTo(first, end) => (first, end.min(last)),
        };
        (start <= end).then(|| (start, end - start + 1))
    }
}

/// What a `read` found: the shard (its stat and the bytes asked for, all
/// verified), or why there are none.
#[derive(Debug)]
pub enum Read {
    Shard {
        stat: ShardStat,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The range asked for is not in the shard (of this stat).
    OutOfRange(ShardStat),
    Tombstone(u64),
    Absent,
}

/// Space and contents of a store, for placement, status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of the data region (all extents).
    pub capacity_bytes: u64,
    /// Bytes a put could still use: free extents beyond the reclamation
    /// reserve, plus what is left of the open extent.
    pub free_bytes: u64,
    /// Bytes of records the index references (headers and padding
    /// included).
    pub live_bytes: u64,
    pub shards: u64,
}

/// One key of a device's listing (`Store::list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Vec<u8>,
    /// The shard's sequence, or the tombstone's: copies of a key on two
    /// devices of a host compare by it (the newest wins).
    pub sequence: u64,
    /// The shard's size; `None` for a tombstone (the key was deleted at
    /// `sequence`).
    pub size: Option<u64>,
}

/// What `stat` tells about a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStat {
    pub size: u64,
    pub crc32c: u32,
    pub written_unix_ms: u64,
    pub sequence: u64,
    pub chunks: usize,
}

fn stat_of(m: &ShardMeta) -> ShardStat {
    ShardStat {
        size: m.size,
        crc32c: m.crc,
        written_unix_ms: m.written_unix_ms,
        sequence: m.sequence,
        chunks: m.chunk_count(),
    }
}

pub fn chunk_count(size: u64) -> usize {
    size.div_ceil(CHUNK_SIZE_BYTES_MAX as u64).max(1) as usize
}

pub fn chunk_len(size: u64, chunk: usize) -> usize {
    let start = chunk as u64 * CHUNK_SIZE_BYTES_MAX as u64;
    (size.saturating_sub(start)).min(CHUNK_SIZE_BYTES_MAX as u64) as usize
}

/// Blocks from chunk `chunk`'s header block (at `l`) to its payload's
/// end: what must lie inside the extent, below its write pointer.
fn span_blocks(l: Locator, size: u64, chunk: usize) -> u32 {
    record::span_blocks(l.distance, chunk_len(size, chunk))
}

/// Blocks chunk `chunk` (at `l`) keeps live in its extent: its payload,
/// and its header block unless it is a later member of a group (the
/// group's first member, at distance 1, counts the shared header block).
fn live_blocks(l: Locator, size: u64, chunk: usize) -> u32 {
    span_blocks(l, size, chunk) - u32::from(l.distance) + u32::from(l.distance == 1)
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

pub fn validate_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > KEY_SIZE_BYTES_MAX {
        return Err(Error::InvalidKey(format!("a key is 1 to {KEY_SIZE_BYTES_MAX} bytes, this one is {}", key.len())));
    }
    Ok(())
}

/// One device's shard store.
pub struct Store {
    dev: Box<dyn BlockDevice>,
    name: String,
    sb: Superblock,
    pool: BufferPool,
    index: Index,
    /// Every extent's state, and allocation (`extents.rs`).
    extents: ExtentTable,
    next_sequence: u64,
    /// Absolute offset of the next log block, its index and the CRC of the
    /// block before it.
    log_offset: u64,
    log_index: u64,
    log_prev_crc: u32,
    /// Encoded size of the index in a checkpoint, kept up to date so a
    /// batch that would not fit is refused before anything changes.
    checkpoint_bytes: u64,
    /// Set when durable state may differ from memory (a failed flush or
    /// metadata write): every later operation fails until reopened.
    failed: Option<String>,
    /// Whether the previous run shut down cleanly.
    opened_clean: bool,
    /// Gets in progress, their chunk reads, and finished gets
    /// (`reads.rs`).
    reads: ReadPipeline,
    /// The background scrubber: its persisted cursor and the pass in
    /// progress.
    scrub: scrub::Background,
    /// Shards the scrubber found damaged (the repair list), by key.
    damaged: RepairList,
    /// Keys deleted while a device that may hold an older copy could not
    /// be asked, with the sequence of the delete.
    tombstones: std::collections::BTreeMap<Vec<u8>, u64>,
    /// Errors and latencies, for whoever watches the drive's health.
    counters: std::sync::Arc<crate::health::DeviceCounters>,
    /// The extent being evacuated a little with every group commit, and
    /// its live chunks still to move (see [`Store::reclaim_along`]).
    plan: Option<ReclaimPlan>,
    /// An extent whose evacuation failed (a chunk that cannot be read and
    /// verified), with its generation and live blocks then: not chosen
    /// again until one of them changes.
    stuck: Option<(u32, u32, u32)>,
    /// What reclamation did since open (see [`ReclaimCounts`]).
    reclaim_counts: ReclaimCounts,
    /// A checkpoint being written beside commits (`checkpoint::Beside`).
    beside: Option<checkpoint::Beside>,
    /// Log bytes written in the half in force while the last checkpoint
    /// beside commits was encoded and written (`checkpoint_due`).
    logged_during_checkpoint: u64,
    /// Index entries a checkpoint encodes between two looks at the device
    /// (`checkpoint::CHECKPOINT_SLICE_ENTRIES`; tests make it small).
    checkpoint_slice_entries: usize,
    /// Index entries a reclamation plan lists at a time
    /// (`reclaim::RECLAIM_LIST_STEP_ENTRIES`; tests make it small).
    reclaim_list_step_entries: usize,
    /// Checkpoints made current since open, and the last one's time (µs).
    checkpoints_written: u64,
    checkpoint_last_micros: u64,
    /// Keys whose chunk records open rewrote from the log (`tail.rs`).
    completed_at_open: Vec<String>,
    /// Keys whose put in the last, vouched, commit before a crash was not
    /// applied at open (`tail.rs`).
    reverted_at_open: Vec<String>,
    /// Group commits made durable by one flush since open.
    one_flush_commits: u64,
    /// Whether larger batches are vouched commits (`commit_vouched`).
    vouching: bool,
    /// Where the last vouched commit's log write ended (epoch, log index):
    /// unconfirmed while the log still ends there.
    vouched_end: Option<(u64, u64)>,
    /// Vouched commits, and empty log writes confirming one, since open.
    vouched_commits: u64,
    confirmations: u64,
    /// Extents reset since open: a get that started before the last reset
    /// may hold locators into an extent a commit can now reuse.
    resets_applied: u64,
    /// Aligned buffers for log writes, reused (a fresh mapping per log
    /// write cost a map and an unmap for each copy of every commit).
    log_buffers: BufferPool,
    /// Whole small shards as gets verified them (`cache.rs`), shared with
    /// the store thread's callers.
    read_cache: std::sync::Arc<cache::ReadCache>,
    /// Where hot small shards are, for reads on other threads
    /// (`placed.rs`), shared with them.
    placed: std::sync::Arc<placed::Placements>,
}

impl Drop for Store {
    /// However the store goes (closed, or dropped by a thread that
    /// panicked), other threads read nothing more through its placements,
    /// and the device's descriptor is not held open by them.
    fn drop(&mut self) {
        self.placed.close();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("device", &self.name).field("shards", &self.index.len()).finish_non_exhaustive()
    }
}

impl Store {
    /// Applies one change to the index and the extent table. Used by
    /// recovery and, after the change is durable, by commit.
    fn apply(&mut self, record: &LogRecord) {
        match record {
            LogRecord::Put { key, meta } => {
                self.key_changes(key);
                self.next_sequence = self.next_sequence.max(meta.sequence + 1);
                for (i, l) in meta.locators().enumerate() {
                    let (span, live) = (span_blocks(l, meta.size, i), live_blocks(l, meta.size, i));
                    self.extents.add_live(l, span, live, meta.written_unix_ms);
                }
                if let Some(old) = self.index.insert(key, meta) {
                    self.release(&old);
                }
                self.damaged.remove(key);
                // A later write of the key on this device supersedes its
                // tombstone (sequences only grow on a device).
                self.tombstones.remove(key);
            }
            LogRecord::Delete { key, sequence } => {
                self.key_changes(key);
                self.next_sequence = self.next_sequence.max(sequence + 1);
                if let Some(old) = self.index.remove(key) {
                    self.release(&old);
                }
                self.damaged.remove(key);
            }
            LogRecord::Relocate { key, sequence, chunk, to } => {
                // The bytes stay the same (the cache keeps them); the place
                // does not.
                self.placed.forget(key);
                if let Some(mut m) = self.index.get(key).filter(|m| m.sequence == *sequence) {
                    let c = *chunk as usize;
                    let from = m.chunk(c);
                    self.extents.release(from.extent, live_blocks(from, m.size, c));
                    // The copy was verified when read, but its time is not
                    // logged: the shard's write time is earlier, so safe.
                    self.extents.add_live(
                        *to,
                        span_blocks(*to, m.size, c),
                        live_blocks(*to, m.size, c),
                        m.written_unix_ms,
                    );
                    m.set_chunk(*chunk as usize, *to);
                    self.index.insert(key, &m);
                }
            }
            LogRecord::Reset { extent, generation } => {
                self.extents.reset(*extent, *generation);
                self.resets_applied += 1;
                self.placed.reset_applied();
            }
            LogRecord::Scrubbed { extent, generation, checked_ms, scrub } => {
                self.extents.scrubbed(*extent, *generation, *checked_ms);
                self.scrub.set_cursor(*scrub);
            }
            LogRecord::Tombstone { key, sequence } => {
                self.key_changes(key);
                self.next_sequence = self.next_sequence.max(sequence + 1);
                if let Some(old) = self.index.get(key).filter(|m| m.sequence < *sequence) {
                    self.index.remove(key);
                    self.release(&old);
                    self.damaged.remove(key);
                }
                let at = self.tombstones.entry(key.clone()).or_insert(*sequence);
                *at = (*at).max(*sequence);
            }
            LogRecord::Purge { key, sequence } => {
                if self.tombstones.get(key) == Some(sequence) {
                    self.tombstones.remove(key);
                }
            }
            LogRecord::Damaged { key, damage } => {
                self.key_changes(key);
                if self.index.get(key).is_some_and(|m| m.sequence == damage.sequence) {
                    self.damaged.insert(key.clone(), *damage);
                }
            }
            // Read by recovery for the last log write only (`tail.rs`).
            LogRecord::Payload { .. } | LogRecord::Vouch { .. } => {}
        }
    }

    /// What others see of `key` (cached bytes, a place) goes before the
    /// index changes it.
    fn key_changes(&self, key: &[u8]) {
        self.read_cache.forget(key);
        self.placed.forget(key);
    }

    fn release(&mut self, old: &ShardMeta) {
        for (i, l) in old.locators().enumerate() {
            self.extents.release(l.extent, live_blocks(l, old.size, i));
        }
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => {
                Err(Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Write })
            }
            None => Ok(()),
        }
    }

    fn fail(&mut self, why: &str) -> Error {
        self.failed = Some(why.to_owned());
        // Nothing more from memory (gets still read the device, and add
        // nothing to the cache: `offer_to_cache`).
        self.read_cache.clear();
        self.placed.close();
        Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Write }
    }

    /// Turns the read cache on (or off, or resizes it), empty.
    pub fn set_read_cache(&mut self, settings: cache::ReadCacheSettings) {
        self.read_cache = std::sync::Arc::new(cache::ReadCache::new(settings));
    }

    /// The read cache, for callers on other threads to look shards up in.
    pub fn read_cache(&self) -> std::sync::Arc<cache::ReadCache> {
        std::sync::Arc::clone(&self.read_cache)
    }

    /// The placements, for callers on other threads to read shards from.
    pub fn placements(&self) -> std::sync::Arc<placed::Placements> {
        std::sync::Arc::clone(&self.placed)
    }

    /// The device's error and latency counters (shared with the caller).
    pub fn counters(&self) -> std::sync::Arc<crate::health::DeviceCounters> {
        std::sync::Arc::clone(&self.counters)
    }

    /// Where `offset` (a place in the first copy of the metadata region)
    /// is in every copy: one in format version 1, two in version 2.
    fn meta_copies_of(&self, offset: u64) -> Vec<u64> {
        meta_copies_of(&self.sb.layout, offset)
    }

    fn half_offset(&self, half: u32) -> u64 {
        self.sb.layout.meta_offset + u64::from(half) * (self.sb.layout.meta_size_bytes / 2)
    }

    pub fn put(&mut self, key: &[u8], data: &[u8]) -> Result<()> {
        self.commit(&[Op::put(key, Bytes::copy_from_slice(data))]).pop().expect("one result")
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.commit(&[Op::Delete { key: key.to_vec() }]).pop().expect("one result")
    }

    pub fn stat(&self, key: &[u8]) -> Option<ShardStat> {
        self.index.get(key).map(|m| stat_of(&m))
    }

    /// Keys with `prefix`, after `start_after`, at most `limit`, in order:
    /// each key's shard or, where it has none, its tombstone (so that a
    /// caller merging the listings of several devices can tell a key
    /// deleted here from one this device never held).
    pub fn list(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Vec<Listed> {
        let start = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        let mut shards = self
            .index
            .listing_from(start)
            .take_while(|(k, ..)| k.starts_with(prefix))
            .map(|(key, size, sequence)| Listed { key: key.to_vec(), sequence, size: Some(size) })
            .peekable();
        let mut tombstones = self
            .tombstones
            .range::<[u8], _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(key, &sequence)| Listed { key: key.clone(), sequence, size: None })
            .peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let next = match (shards.peek(), tombstones.peek()) {
                (Some(s), Some(t)) if s.key == t.key => {
                    // Both only when the tombstone is older (a newer one
                    // removes the shard): the newest is the key's.
                    let t = tombstones.next().expect("peeked");
                    let s = shards.next().expect("peeked");
                    if t.sequence > s.sequence {
                        t
                    } else {
                        s
                    }
                }
                (Some(s), Some(t)) if t.key < s.key => tombstones.next().expect("peeked"),
                (Some(_), _) => shards.next().expect("peeked"),
                (None, Some(_)) => tombstones.next().expect("peeked"),
                (None, None) => break,
            };
            out.push(next);
        }
        out
    }

    /// Device offset of a chunk's payload (after its header block).
    fn payload_offset(&self, loc: Locator) -> u64 {
        self.locator_offset(loc) + u64::from(loc.distance) * BLOCK_SIZE_BYTES
    }

    fn locator_offset(&self, loc: Locator) -> u64 {
        self.sb.layout.data_offset
            + u64::from(loc.extent) * self.sb.layout.extent_size_bytes
            + u64::from(loc.block) * BLOCK_SIZE_BYTES
    }

    /// Where each chunk's data lives: (device offset of its payload,
    /// payload bytes). The chunk's header block is the 4 KiB before it,
    /// or, for a later member of a record group, the block the group
    /// starts with (docs/format.md, "Record group").
    pub fn chunk_locations(&self, key: &[u8]) -> Option<Vec<(u64, u64)>> {
        self.index.get(key).map(|m| {
            m.locators().enumerate().map(|(i, l)| (self.payload_offset(l), chunk_len(m.size, i) as u64)).collect()
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// What reclamation did since the store opened.
    pub fn reclaim_counts(&self) -> ReclaimCounts {
        self.reclaim_counts
    }

    /// Checkpoints since the store opened (see [`CheckpointCounts`]).
    pub fn checkpoint_counts(&self) -> CheckpointCounts {
        CheckpointCounts {
            written: self.checkpoints_written,
            last_micros: self.checkpoint_last_micros,
            next_bytes: self.checkpoint_bytes,
            half_bytes: self.sb.layout.meta_size_bytes / 2,
        }
    }

    /// Sets how many index entries a checkpoint encodes at a time
    /// (at least one): tests make a checkpoint beside commits take many
    /// steps with few shards.
    #[doc(hidden)]
    pub fn set_checkpoint_slice_entries(&mut self, entries: usize) {
        self.checkpoint_slice_entries = entries.max(1);
    }

    /// Sets how many index entries a reclamation plan lists at a time (at
    /// least one): tests make the listing of a victim's chunks span many
    /// commits with few shards.
    #[doc(hidden)]
    pub fn set_reclaim_list_step_entries(&mut self, entries: usize) {
        self.reclaim_list_step_entries = entries.max(1);
    }

    /// Writes the device sent in pieces to let reads pass.
    pub fn writes_split(&self) -> u64 {
        self.dev.writes_split()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn extents(&self) -> &[ExtentInfo] {
        self.extents.all()
    }

    /// The key's shard, its tombstone, or neither.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        match (self.stat(key), self.tombstones.get(key)) {
            (Some(stat), _) => Lookup::Shard(stat),
            (None, Some(&sequence)) => Lookup::Tombstone(sequence),
            (None, None) => Lookup::Absent,
        }
    }

    /// Every tombstone: key and sequence.
    pub fn tombstones(&self) -> Vec<(Vec<u8>, u64)> {
        self.tombstones.iter().map(|(k, s)| (k.clone(), *s)).collect()
    }

    /// The sequence the next write gets at least.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn usage(&self) -> Usage {
        let block = BLOCK_SIZE_BYTES;
        let extent = self.sb.layout.extent_size_bytes;
        let open_left = u64::from(self.extents.open_blocks_left()) * block;
        let free = u64::from(self.extents.free_count().saturating_sub(RESERVE_EXTENTS_COUNT)) * extent + open_left;
        Usage {
            capacity_bytes: self.sb.layout.extent_count * extent,
            free_bytes: free,
            live_bytes: self.extents.live_blocks() * block,
            shards: self.index.len() as u64,
        }
    }

    /// Where the metadata in force lies in each copy of the metadata
    /// region: (device offset, bytes) of the checkpoint and the log after
    /// it (for tools and fault-injection tests).
    pub fn metadata_in_use(&self) -> Vec<(u64, u64)> {
        let start = self.half_offset(self.sb.store.half);
        let len = self.log_offset - start;
        self.meta_copies_of(start).into_iter().map(|at| (at, len)).collect()
    }

    /// Heap bytes the index holds (an estimate: see `Index::memory_bytes`).
    pub fn index_memory_bytes(&self) -> u64 {
        self.index.memory_bytes()
    }

    /// Index statistics: shard count, total shard bytes, chunk count.
    pub fn index_stats(&self) -> (u64, u64, u64) {
        self.index
            .iter()
            .map(|(_, m)| m)
            .fold((0, 0, 0), |(n, bytes, chunks), m| (n + 1, bytes + m.size, chunks + m.chunk_count() as u64))
    }

    /// Whether the previous run closed the store cleanly.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// Checks the index against the extent accounting; panics on a broken
    /// invariant (tests call it after every step).
    pub fn check_invariants(&self) {
        let mut live = vec![0u32; self.extents.len()];
        let mut chunks = vec![0u32; self.extents.len()];
        for (key, m) in self.index.iter() {
            assert_eq!(m.chunk_count(), chunk_count(m.size), "shard {key:?} chunk count");
            for (i, l) in m.locators().enumerate() {
                assert!(
                    l.block + span_blocks(l, m.size, i) <= self.extents.get(l.extent).write_blocks,
                    "shard {key:?} chunk {i} beyond write pointer"
                );
                live[l.extent as usize] += live_blocks(l, m.size, i);
                chunks[l.extent as usize] += 1;
            }
        }
        self.extents.check(&live, &chunks);
    }

    /// Checkpoints and records a clean shutdown.
    pub fn close(mut self) -> Result<()> {
        self.close_in_place()
    }

    /// As `close`, for an owner that drops the store afterwards itself.
    pub fn close_in_place(&mut self) -> Result<()> {
        self.read_cache.clear();
        self.placed.close();
        self.checkpoint()?;
        let sb = superblock::commit(self.dev.as_mut(), &self.sb, |sb| sb.clean_shutdown = true)?;
        self.sb = sb;
        Ok(())
    }
}

/// Where `offset` (a place in the first copy of the metadata region) is
/// in every copy of it.
fn meta_copies_of(layout: &Layout, offset: u64) -> Vec<u64> {
    debug_assert!(offset >= layout.meta_offset && offset < layout.meta_offset + layout.meta_size_bytes);
    layout.meta_copies().iter().map(|base| base + (offset - layout.meta_offset)).collect()
}

/// The CRC32C of a shard from the CRCs of its chunks, in order.
fn combine_crcs(chunk_crcs: &[u32], size: u64) -> u32 {
    let mut crc = chunk_crcs[0];
    for (c, &next) in chunk_crcs.iter().enumerate().skip(1) {
        crc = crc32c::crc32c_combine(crc, next, chunk_len(size, c));
    }
    crc
}

const _: () = assert!(CHECKPOINT_HEADER_BYTES <= BLOCK);
