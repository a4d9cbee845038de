//! The shard store of one device: shards named by key, kept in
//! append-only extents as self-describing chunk records, found through an
//! in-memory index made durable by a log and checkpoints in the metadata
//! region.
//!
//! Durability of a batch (group commit): chunk records are written, one
//! flush makes them durable, then the log blocks that reference them are
//! written with FUA; only then are the operations acknowledged and applied
//! to the in-memory index. A crash at any point leaves either the old or
//! the new state of each operation of the batch, never a reference to data
//! that is not on the medium. See `docs/format.md`, "Shard store".
//!
//! This is the synchronous core, driven by one thread that owns the
//! device; reclamation and the device thread with its queue build on it.

pub mod fsck;
pub mod index;
pub mod meta;
pub mod record;
pub mod scrub;
pub mod thread;

use std::collections::HashMap;

use bytes::Bytes;

use crate::constants::BLOCK_SIZE_BYTES;
use crate::device::{BlockDevice, BlockDeviceExt, BufferPool, Completion, IoKind, IoOp};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::superblock::{self, StoreRef, Superblock};
use index::Index;
use meta::{
    CheckpointHeader, Damage, Locator, LogRecord, ScrubCursor, ShardMeta, BLOCK, CHECKPOINT_HEADER_BYTES,
    LOG_PAYLOAD_BYTES_MAX,
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

const _: () = assert!(SHARD_SIZE_BYTES_MAX % CHUNK_SIZE_BYTES_MAX as u64 == 0);
const _: () = assert!(
    crate::constants::EXTENT_SIZE_BYTES_MIN >= 3 * (CHUNK_SIZE_BYTES_MAX as u64 + BLOCK_SIZE_BYTES),
    "every extent holds several of the largest records"
);
const _: () = assert!(
    SHARD_SIZE_BYTES_MAX / CHUNK_SIZE_BYTES_MAX as u64 <= meta::CHUNKS_PER_SHARD_MAX as u64,
    "a put record fits one log block"
);

/// Extents by class: free (nothing written, not open), and emptied
/// (sealed, written, nothing live: reset by the next commit).
#[derive(Debug, Default)]
struct ExtentClasses {
    free: std::collections::BTreeSet<u32>,
    emptied: std::collections::BTreeSet<u32>,
}

impl ExtentClasses {
    fn rebuild(&mut self, extents: &[ExtentInfo], open: Option<u32>) {
        self.free.clear();
        self.emptied.clear();
        for (i, e) in extents.iter().enumerate() {
            self.touch(i as u32, e, open);
        }
    }

    fn touch(&mut self, i: u32, e: &ExtentInfo, open: Option<u32>) {
        let sealed = open != Some(i);
        let (free, emptied) = (sealed && e.write_blocks == 0, sealed && e.write_blocks > 0 && e.live_blocks == 0);
        if free {
            self.free.insert(i);
        } else {
            self.free.remove(&i);
        }
        if emptied {
            self.emptied.insert(i);
        } else {
            self.emptied.remove(&i);
        }
    }
}

/// One extent's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtentInfo {
    pub generation: u32,
    /// Write pointer in blocks: everything below it was written this
    /// generation.
    pub write_blocks: u32,
    /// Blocks of records the index still references.
    pub live_blocks: u32,
    /// Every live byte in the extent was known good (verified by the
    /// scrubber, or written) at or after this time; 0 while it holds
    /// nothing. Writes lower it to their time only when it is 0, so it is
    /// never later than the truth.
    pub checked_ms: u64,
}

impl ExtentInfo {
    /// A record written at `written_ms` landed here.
    fn note_write(&mut self, written_ms: u64) {
        if self.checked_ms == 0 {
            self.checked_ms = written_ms.max(1);
        }
    }
}

/// A write operation for [`Store::commit`]. A put's data is a shared
/// buffer, so a caller (an HTTP body, a benchmark's payload) hands it over
/// without a copy; the store copies it once, into an aligned I/O buffer.
///
/// A put may carry the CRC32C its sender computed (`crc32c`: the client's
/// `x-shard-crc32c`, or the agent's CRC of the body as it arrived): the
/// store compares it with the CRC of the aligned buffer it writes, so the
/// end-to-end check reaches the bytes that go to the medium. A mismatch
/// fails the put with `BadDigest` before anything is written.
#[derive(Debug, Clone)]
pub enum Op {
    Put { key: Vec<u8>, data: Bytes, crc32c: Option<u32> },
    Delete { key: Vec<u8> },
}

impl Op {
    /// A put without a CRC from its sender (the store computes its own).
    pub fn put(key: impl Into<Vec<u8>>, data: impl Into<Bytes>) -> Op {
        Op::Put { key: key.into(), data: data.into(), crc32c: None }
    }
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

/// What `stat` tells about a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStat {
    pub size: u64,
    pub crc32c: u32,
    pub written_unix_ms: u64,
    pub sequence: u64,
    pub chunks: usize,
}

pub fn chunk_count(size: u64) -> usize {
    size.div_ceil(CHUNK_SIZE_BYTES_MAX as u64).max(1) as usize
}

pub fn chunk_len(size: u64, chunk: usize) -> usize {
    let start = chunk as u64 * CHUNK_SIZE_BYTES_MAX as u64;
    (size.saturating_sub(start)).min(CHUNK_SIZE_BYTES_MAX as u64) as usize
}

fn record_blocks(key_len: usize, size: u64, chunk: usize) -> u32 {
    (record_size_bytes(key_len, chunk_len(size, chunk)) / BLOCK_SIZE_BYTES) as u32
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

/// What a checkpoint holds besides the index.
pub(crate) struct CheckpointState<'a> {
    pub epoch: u64,
    pub next_sequence: u64,
    pub extents: &'a [ExtentInfo],
    pub scrub: ScrubCursor,
    pub damaged: &'a std::collections::BTreeMap<Vec<u8>, Damage>,
}

/// The encoded checkpoint for an index, extent table and scrub state.
pub(crate) fn encode_checkpoint(state: &CheckpointState<'_>, index: &Index) -> Vec<u8> {
    let mut body = Vec::with_capacity(state.extents.len() * 16 + index.len() * 64);
    for e in state.extents {
        body.extend_from_slice(&e.generation.to_le_bytes());
        body.extend_from_slice(&e.write_blocks.to_le_bytes());
        body.extend_from_slice(&e.checked_ms.to_le_bytes());
    }
    for (key, meta) in index.iter() {
        meta::encode_entry(key, &meta, &mut body);
    }
    for (key, damage) in state.damaged {
        meta::encode_damage(key, damage, &mut body);
    }
    let header = CheckpointHeader {
        version: meta::CHECKPOINT_VERSION,
        epoch: state.epoch,
        next_sequence: state.next_sequence,
        entry_count: index.len() as u64,
        extent_count: state.extents.len() as u64,
        body_len: body.len() as u64,
        damaged_count: state.damaged.len() as u64,
        scrub: state.scrub,
    };
    let total = (BLOCK + body.len()).next_multiple_of(BLOCK);
    let mut out = vec![0u8; total];
    header.encode(&mut out[..BLOCK]);
    out[BLOCK..BLOCK + body.len()].copy_from_slice(&body);
    out
}

/// Writes the empty checkpoint of a freshly formatted device and returns
/// the reference the first superblock records.
pub(crate) fn write_initial_checkpoint(dev: &mut dyn BlockDevice, layout: &Layout) -> Result<StoreRef> {
    let extents = vec![ExtentInfo::default(); layout.extent_count as usize];
    let state = CheckpointState {
        epoch: 1,
        next_sequence: 1,
        extents: &extents,
        scrub: ScrubCursor::default(),
        damaged: &std::collections::BTreeMap::new(),
    };
    let bytes = encode_checkpoint(&state, &Index::default());
    write_bytes(dev, layout.meta_offset, &bytes)?;
    // The first log block slot after it must not hold an old block that
    // continues the chain by accident: zero it.
    dev.write_at(layout.meta_offset + bytes.len() as u64, &[0u8; BLOCK], false)?;
    Ok(StoreRef { epoch: 1, half: 0, checkpoint_crc: crc32c::crc32c(&bytes), checkpoint_len_bytes: bytes.len() as u64 })
}

fn write_bytes(dev: &mut dyn BlockDevice, offset: u64, bytes: &[u8]) -> Result<()> {
    for (i, piece) in bytes.chunks(CHUNK_SIZE_BYTES_MAX).enumerate() {
        dev.write_at(offset + (i * CHUNK_SIZE_BYTES_MAX) as u64, piece, false)?;
    }
    Ok(())
}

fn read_bytes(dev: &mut dyn BlockDevice, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK_SIZE_BYTES_MAX);
        out.extend_from_slice(dev.read_at(offset + at as u64, n)?.as_slice());
        at += n;
    }
    Ok(out)
}

/// One device's shard store.
pub struct Store {
    dev: Box<dyn BlockDevice>,
    name: String,
    sb: Superblock,
    pool: BufferPool,
    index: Index,
    extents: Vec<ExtentInfo>,
    open_extent: Option<u32>,
    /// Free extents and sealed ones with nothing live, kept up to date as
    /// extents change, so a commit never walks the extent table.
    classes: ExtentClasses,
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
    /// Gets in progress (a slab indexed by the high half of a read token),
    /// chunk reads not yet submitted, and a reusable completion buffer.
    gets: Vec<Option<GetCtx>>,
    get_queue: std::collections::VecDeque<(u32, u32)>,
    get_completions: Vec<Completion>,
    /// Gets finished while a commit drained the device, for the caller.
    finished_gets: Vec<(u64, Result<Vec<u8>>)>,
    /// The background scrubber: its persisted cursor and the pass in
    /// progress.
    scrub: scrub::Background,
    /// Shards the scrubber found damaged (the repair list), by key.
    damaged: std::collections::BTreeMap<Vec<u8>, Damage>,
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
}

/// What reclamation did since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimCounts {
    /// Chunks copied forward in steps riding on group commits.
    pub chunks_moved_along: u64,
    /// Extents reset by those steps.
    pub extents_reset_along: u64,
    /// Whole extents evacuated at once (idle passes, explicit calls, and
    /// the last resort before a batch when free extents ran out).
    pub whole_extents: u64,
}

/// Data writes of one commit in flight: their completions, which
/// operations had a write fail, and whether anything was written.
struct WriteBatch {
    out: Vec<Completion>,
    failed: Vec<bool>,
    any_data: bool,
}

impl WriteBatch {
    fn collect_failures(&mut self) {
        for c in self.out.drain(..) {
            if c.result.is_err() {
                self.failed[c.token as usize] = true;
            }
        }
    }
}

/// A live chunk to move out of an extent being reclaimed: its shard's
/// key, sequence and size, the chunk's number and where it is.
type LiveChunk = (Vec<u8>, u64, usize, Locator, u64);

/// An extent being evacuated across group commits.
#[derive(Debug)]
struct ReclaimPlan {
    victim: u32,
    generation: u32,
    chunks: std::collections::VecDeque<LiveChunk>,
}

/// Group commits start moving live chunks out of the emptiest sealed
/// extent, a little each, once free extents are down to the reserve, what
/// the batch may open, and this many: reclamation keeps ahead of the
/// writes without holding a commit for a whole extent's evacuation, and
/// starts late enough that its victims are mostly dead.
pub const RECLAIM_AHEAD_EXTENTS_COUNT: u32 = 1;

/// At most this many live bytes move with one group commit.
pub const RECLAIM_STEP_BYTES_MAX: u64 = 8 << 20;

/// One get in progress.
#[derive(Debug)]
struct GetCtx {
    id: u64,
    key: Vec<u8>,
    meta: ShardMeta,
    offset: u64,
    end: u64,
    out: Vec<u8>,
    remaining: usize,
    error: Option<Error>,
    /// Verified payload CRC of each chunk, for the whole-shard check.
    chunk_crcs: Vec<u32>,
    started: std::time::Instant,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("device", &self.name).field("shards", &self.index.len()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a formatted device: superblock (repairing stale copies), the
    /// checkpoint in force, then the log after it up to the first block
    /// that does not continue the chain.
    pub fn open(dev: Box<dyn BlockDevice>) -> Result<Store> {
        Store::open_mode(dev, false)
    }

    /// Opens for inspection: recovers the index in memory but writes
    /// nothing (no superblock repair, no in-use mark); every write
    /// operation is refused.
    pub fn open_read_only(dev: Box<dyn BlockDevice>) -> Result<Store> {
        Store::open_mode(dev, true)
    }

    fn open_mode(mut dev: Box<dyn BlockDevice>, read_only: bool) -> Result<Store> {
        let name = dev.info().name.clone();
        let opened = superblock::open(dev.as_mut(), !read_only)?;
        let sb = opened.superblock;
        let opened_clean = sb.clean_shutdown;
        let layout = sb.layout;
        let half_size = layout.meta_size_bytes / 2;
        let half_offset = layout.meta_offset + u64::from(sb.store.half) * half_size;
        let corrupt = |what: String, offset: u64| Error::Corruption { device: name.clone(), what, offset };
        let bytes = read_bytes(dev.as_mut(), half_offset, sb.store.checkpoint_len_bytes as usize)?;
        if crc32c::crc32c(&bytes) != sb.store.checkpoint_crc {
            return Err(corrupt("checkpoint (checksum differs from the superblock's)".to_owned(), half_offset));
        }
        let header = CheckpointHeader::decode(&bytes)
            .filter(|h| h.epoch == sb.store.epoch && h.extent_count == layout.extent_count)
            .ok_or_else(|| corrupt("checkpoint header".to_owned(), half_offset))?;
        let body = bytes
            .get(BLOCK..BLOCK + header.body_len as usize)
            .ok_or_else(|| corrupt("checkpoint length".to_owned(), half_offset))?;
        let mut r = meta::Reader::new(body);
        let mut extents = Vec::with_capacity(layout.extent_count as usize);
        let table = || corrupt("checkpoint extent table".to_owned(), half_offset);
        let per_extent = (layout.extent_size_bytes / BLOCK_SIZE_BYTES) as u32;
        if header.scrub.next_extent as u64 > layout.extent_count {
            return Err(corrupt(
                format!("checkpoint scrub cursor at extent {} of {}", header.scrub.next_extent, layout.extent_count),
                half_offset,
            ));
        }
        for i in 0..layout.extent_count {
            let generation = r.u32().ok_or_else(table)?;
            let write_blocks = r.u32().ok_or_else(table)?;
            if write_blocks > per_extent {
                return Err(corrupt(
                    format!(
                        "checkpoint extent {i}: write pointer {write_blocks} past the extent's {per_extent} blocks"
                    ),
                    half_offset,
                ));
            }
            // A version 1 checkpoint has no verification times: the
            // entries' write times stand in for them below.
            let checked_ms = if header.version >= 2 { r.u64().ok_or_else(table)? } else { 0 };
            extents.push(ExtentInfo { generation, write_blocks, live_blocks: 0, checked_ms });
        }
        let mut store = Store {
            dev,
            name: name.clone(),
            sb,
            pool: BufferPool::new(
                record_size_bytes(KEY_SIZE_BYTES_MAX, CHUNK_SIZE_BYTES_MAX) as usize,
                STORE_QUEUE_DEPTH,
            )?,
            // Room for the checkpoint's entries (never more than its bytes
            // could hold, whatever its header says).
            index: Index::with_capacity(usize::try_from(header.entry_count).unwrap_or(0).min(body.len() / 32)),
            extents,
            open_extent: None,
            classes: ExtentClasses::default(),
            next_sequence: header.next_sequence,
            log_offset: half_offset + bytes.len() as u64,
            log_index: 0,
            log_prev_crc: crc32c::crc32c(&bytes),
            checkpoint_bytes: 0,
            failed: None,
            opened_clean,
            gets: Vec::new(),
            get_queue: std::collections::VecDeque::new(),
            get_completions: Vec::with_capacity(STORE_QUEUE_DEPTH),
            finished_gets: Vec::new(),
            scrub: scrub::Background::new(header.scrub),
            damaged: std::collections::BTreeMap::new(),
            counters: std::sync::Arc::default(),
            plan: None,
            stuck: None,
            reclaim_counts: ReclaimCounts::default(),
        };
        // Fixed buffers when the kernel allows: no read or write pins the
        // pool's pages again.
        store.dev.register_pool(&store.pool);
        for _ in 0..header.entry_count {
            let (key, meta) = r.key_and_meta().ok_or_else(|| corrupt("checkpoint entry".to_owned(), half_offset))?;
            store.check_meta(&key, &meta).map_err(|why| corrupt(format!("checkpoint entry: {why}"), half_offset))?;
            store.load_entry(&key, &meta, header.version);
        }
        for _ in 0..header.damaged_count {
            let (key, damage) =
                r.key_and_damage().ok_or_else(|| corrupt("checkpoint damaged list".to_owned(), half_offset))?;
            store.damaged.insert(key, damage);
        }
        if !r.is_empty() {
            return Err(corrupt("checkpoint trailing bytes".to_owned(), half_offset));
        }
        store.replay_log(half_offset + half_size)?;
        store.classes.rebuild(&store.extents, store.open_extent);
        store.checkpoint_bytes = encode_checkpoint(&store.checkpoint_state(0), &store.index).len() as u64;
        // From now on a crash must be visible at the next open.
        if read_only {
            store.failed = Some("opened read-only".to_owned());
        } else if store.sb.clean_shutdown {
            store.sb = superblock::commit(store.dev.as_mut(), &store.sb, |sb| sb.clean_shutdown = false)?;
        }
        Ok(store)
    }

    fn replay_log(&mut self, half_end: u64) -> Result<()> {
        const READ_BLOCKS: u64 = 64;
        'outer: while self.log_offset < half_end {
            let n = ((half_end - self.log_offset) / BLOCK_SIZE_BYTES).min(READ_BLOCKS);
            let buf = self.dev.read_at(self.log_offset, (n * BLOCK_SIZE_BYTES) as usize)?;
            for block in buf.as_slice().chunks(BLOCK) {
                let Some((crc, records)) =
                    meta::decode_log_block(block, self.sb.store.epoch, self.log_index, self.log_prev_crc)
                else {
                    break 'outer;
                };
                for record in &records {
                    self.check_record(record).map_err(|what| Error::Corruption {
                        device: self.name.clone(),
                        what: format!("log block {}: {what}", self.log_index),
                        offset: self.log_offset,
                    })?;
                    self.apply(record);
                }
                self.log_offset += BLOCK_SIZE_BYTES;
                self.log_index += 1;
                self.log_prev_crc = crc;
            }
        }
        Ok(())
    }

    /// Checks a shard's metadata read back from the medium against the
    /// layout before anything indexes with its numbers: a size the store
    /// accepts, as many chunks as the size needs (at least one), and every
    /// chunk's record inside an extent.
    fn check_meta(&self, key: &[u8], meta: &ShardMeta) -> std::result::Result<(), String> {
        validate_key(key).map_err(|e| e.to_string())?;
        if meta.size > SHARD_SIZE_BYTES_MAX {
            return Err(format!(
                "shard {:?} of {} bytes, over the {SHARD_SIZE_BYTES_MAX} allowed",
                key_text(key),
                meta.size
            ));
        }
        if meta.chunk_count() != chunk_count(meta.size) {
            return Err(format!(
                "shard {:?} of {} bytes with {} chunks (it needs {})",
                key_text(key),
                meta.size,
                meta.chunk_count(),
                chunk_count(meta.size)
            ));
        }
        for (i, l) in meta.locators().enumerate() {
            self.check_locator(l, record_blocks(key.len(), meta.size, i))
                .map_err(|why| format!("shard {:?} chunk {i}: {why}", key_text(key)))?;
        }
        Ok(())
    }

    /// A record of `blocks` at `l` lies inside one extent of the layout.
    fn check_locator(&self, l: Locator, blocks: u32) -> std::result::Result<(), String> {
        let count = self.extents.len();
        if l.extent as usize >= count {
            return Err(format!("extent {} of {count}", l.extent));
        }
        let per = self.blocks_per_extent();
        if l.block.checked_add(blocks).is_none_or(|end| end > per) {
            return Err(format!("blocks {}..+{blocks} past the extent's {per}", l.block));
        }
        Ok(())
    }

    /// Checks a log record against the layout and the index as recovered
    /// so far, so that applying it can neither index out of the extent
    /// table nor take a live count below zero.
    fn check_record(&self, record: &LogRecord) -> std::result::Result<(), String> {
        let count = self.extents.len();
        let extent_in = |e: u32| {
            if (e as usize) < count {
                Ok(())
            } else {
                Err(format!("extent {e} of {count}"))
            }
        };
        match record {
            LogRecord::Put { key, meta } => self.check_meta(key, meta),
            LogRecord::Delete { key, .. } | LogRecord::Damaged { key, .. } => {
                validate_key(key).map_err(|e| e.to_string())
            }
            LogRecord::Relocate { key, sequence, chunk, to } => {
                let Some(m) = self.index.get(key).filter(|m| m.sequence == *sequence) else {
                    // Replaced or deleted since: the record changes nothing.
                    return Ok(());
                };
                if *chunk as usize >= m.chunk_count() {
                    return Err(format!("relocation of chunk {chunk} of a {}-chunk shard", m.chunk_count()));
                }
                self.check_locator(*to, record_blocks(key.len(), m.size, *chunk as usize))
            }
            LogRecord::Reset { extent, .. } => extent_in(*extent),
            LogRecord::Scrubbed { extent, scrub, .. } => {
                extent_in(*extent)?;
                if scrub.next_extent as usize > count {
                    return Err(format!("scrub cursor at extent {} of {count}", scrub.next_extent));
                }
                Ok(())
            }
        }
    }

    /// Loads one shard of a checkpoint: as a logged put, except that a
    /// version 2 checkpoint already holds each extent's verification time.
    fn load_entry(&mut self, key: &[u8], meta: &ShardMeta, version: u32) {
        self.next_sequence = self.next_sequence.max(meta.sequence + 1);
        for (i, l) in meta.locators().enumerate() {
            let blocks = record_blocks(key.len(), meta.size, i);
            let e = &mut self.extents[l.extent as usize];
            e.live_blocks += blocks;
            if version < 2 && e.checked_ms != 0 {
                // No verification times: the oldest write in the extent.
                e.checked_ms = e.checked_ms.min(meta.written_unix_ms.max(1));
            } else {
                e.note_write(meta.written_unix_ms);
            }
        }
        if let Some(old) = self.index.insert(key, meta) {
            self.release(key, &old);
        }
    }

    /// Applies one change to the index and the extent table. Used by
    /// recovery and, after the change is durable, by commit.
    fn apply(&mut self, record: &LogRecord) {
        match record {
            LogRecord::Put { key, meta } => {
                self.next_sequence = self.next_sequence.max(meta.sequence + 1);
                for (i, l) in meta.locators().enumerate() {
                    let blocks = record_blocks(key.len(), meta.size, i);
                    let e = &mut self.extents[l.extent as usize];
                    e.write_blocks = e.write_blocks.max(l.block + blocks);
                    e.live_blocks += blocks;
                    e.note_write(meta.written_unix_ms);
                    self.touch(l.extent);
                }
                if let Some(old) = self.index.insert(key, meta) {
                    self.release(key, &old);
                }
                self.damaged.remove(key.as_slice());
            }
            LogRecord::Delete { key, sequence } => {
                self.next_sequence = self.next_sequence.max(sequence + 1);
                if let Some(old) = self.index.remove(key) {
                    self.release(key, &old);
                }
                self.damaged.remove(key.as_slice());
            }
            LogRecord::Relocate { key, sequence, chunk, to } => {
                if let Some(mut m) = self.index.get(key).filter(|m| m.sequence == *sequence) {
                    let b = record_blocks(key.len(), m.size, *chunk as usize);
                    let from = m.chunk(*chunk as usize);
                    let source = &mut self.extents[from.extent as usize];
                    source.live_blocks = source
                        .live_blocks
                        .checked_sub(b)
                        .unwrap_or_else(|| panic!("extent {} live accounting underflow", from.extent));
                    let e = &mut self.extents[to.extent as usize];
                    e.write_blocks = e.write_blocks.max(to.block + b);
                    e.live_blocks += b;
                    // The copy was verified when read, but its time is not
                    // logged: the shard's write time is earlier, so safe.
                    e.note_write(m.written_unix_ms);
                    m.set_chunk(*chunk as usize, *to);
                    self.index.insert(key, &m);
                    self.touch(from.extent);
                    self.touch(to.extent);
                }
            }
            LogRecord::Reset { extent, generation } => {
                self.extents[*extent as usize] =
                    ExtentInfo { generation: *generation, write_blocks: 0, live_blocks: 0, checked_ms: 0 };
                if self.open_extent == Some(*extent) {
                    self.open_extent = None;
                }
                self.touch(*extent);
            }
            LogRecord::Scrubbed { extent, generation, checked_ms, scrub } => {
                let e = &mut self.extents[*extent as usize];
                if e.generation == *generation && e.checked_ms != 0 {
                    // Everything written before the pass over the extent
                    // started was verified; anything written since is
                    // newer than `checked_ms`.
                    e.checked_ms = e.checked_ms.max(*checked_ms);
                }
                self.scrub.cursor = *scrub;
            }
            LogRecord::Damaged { key, damage } => {
                if self.index.get(key).is_some_and(|m| m.sequence == damage.sequence) {
                    self.damaged.insert(key.clone(), *damage);
                }
            }
        }
    }

    fn checkpoint_state(&self, epoch: u64) -> CheckpointState<'_> {
        CheckpointState {
            epoch,
            next_sequence: self.next_sequence,
            extents: &self.extents,
            scrub: self.scrub.cursor,
            damaged: &self.damaged,
        }
    }

    fn release(&mut self, key: &[u8], old: &ShardMeta) {
        for (i, l) in old.locators().enumerate() {
            let blocks = record_blocks(key.len(), old.size, i);
            let e = &mut self.extents[l.extent as usize];
            assert!(e.live_blocks >= blocks, "extent {} live accounting underflow", l.extent);
            e.live_blocks -= blocks;
            self.touch(l.extent);
        }
    }

    fn blocks_per_extent(&self) -> u32 {
        (self.sb.layout.extent_size_bytes / BLOCK_SIZE_BYTES) as u32
    }

    fn free_extents(&self) -> u32 {
        self.classes.free.len() as u32
    }

    /// Files extent `i` under its class after it (or the open extent) changed.
    fn touch(&mut self, i: u32) {
        self.classes.touch(i, &self.extents[i as usize], self.open_extent);
    }

    /// Space for one record of `blocks`: appended to the open extent, or at
    /// the start of a free one while more than the reserve are free.
    fn allocate(&mut self, blocks: u32) -> Option<Locator> {
        self.allocate_from(blocks, RESERVE_EXTENTS_COUNT)
    }

    /// As `allocate`, keeping `reserve` free extents back (reclamation
    /// passes 0: it is what the reserve is for).
    fn allocate_from(&mut self, blocks: u32, reserve: u32) -> Option<Locator> {
        let per = self.blocks_per_extent();
        assert!(blocks <= per, "a record of {blocks} blocks cannot fit a {per}-block extent");
        if let Some(e) = self.open_extent {
            let info = &mut self.extents[e as usize];
            if info.write_blocks + blocks <= per {
                let block = info.write_blocks;
                info.write_blocks += blocks;
                return Some(Locator { extent: e, block, crc: 0 });
            }
        }
        if self.free_extents() <= reserve {
            return None;
        }
        let e = *self.classes.free.first()?;
        let sealed = self.open_extent.replace(e);
        self.extents[e as usize].write_blocks = blocks;
        self.touch(e);
        if let Some(sealed) = sealed {
            self.touch(sealed);
        }
        Some(Locator { extent: e, block: 0, crc: 0 })
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
        Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Write }
    }

    /// Runs a batch of writes as one group commit and returns one result
    /// per operation, in order. Each is acknowledged only when durable.
    pub fn commit(&mut self, ops: &[Op]) -> Vec<Result<()>> {
        let started = std::time::Instant::now();
        let results = self.commit_batch(ops);
        self.counters.commit_latency.record(started.elapsed(), Self::batch_bytes(ops));
        if results.iter().any(|r| matches!(r, Err(Error::Io { .. } | Error::Poisoned { .. }))) {
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        results
    }

    /// The device's error and latency counters (shared with the caller).
    pub fn counters(&self) -> std::sync::Arc<crate::health::DeviceCounters> {
        std::sync::Arc::clone(&self.counters)
    }

    fn commit_batch(&mut self, ops: &[Op]) -> Vec<Result<()>> {
        assert!(ops.len() <= BATCH_OPS_MAX, "batch of {} operations exceeds {BATCH_OPS_MAX}", ops.len());
        self.quiesce();
        // The last resort: with free extents down to the reserve, whole
        // extents are evacuated before the batch (a failure here leaves
        // puts to find NoSpace). Normally `reclaim_along` keeps ahead.
        let needed = self.extents_needed(ops);
        while self.free_extents() <= RESERVE_EXTENTS_COUNT + needed {
            match self.reclaim() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let reclaimed = self.reclaim_along(ops, needed);
        if let Err(e) = self.check_usable() {
            return ops
                .iter()
                .map(|_| Err(Error::Poisoned { device: e.to_string(), op: crate::error::OpKind::Write }))
                .collect();
        }
        let mut results: Vec<Option<Result<()>>> = (0..ops.len()).map(|_| None).collect();
        let mut staged: Vec<Option<LogRecord>> = (0..ops.len()).map(|_| None).collect();
        let mut exists: HashMap<&[u8], bool> = HashMap::new();
        let mut writes =
            WriteBatch { out: Vec::with_capacity(STORE_QUEUE_DEPTH), failed: vec![false; ops.len()], any_data: false };
        let now = superblock::now_unix_ms();

        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put { key, data, crc32c } => match self.stage_put(i, key, data, *crc32c, now, &mut writes) {
                    Ok(record) => {
                        exists.insert(key.as_slice(), true);
                        staged[i] = Some(record);
                    }
                    Err(e) => results[i] = Some(Err(e)),
                },
                Op::Delete { key } => {
                    if let Err(e) = validate_key(key) {
                        results[i] = Some(Err(e));
                        continue;
                    }
                    let present = exists.get(key.as_slice()).copied().unwrap_or_else(|| self.index.contains_key(key));
                    if !present {
                        results[i] = Some(Err(Error::NotFound(key_text(key))));
                        continue;
                    }
                    exists.insert(key.as_slice(), false);
                    let sequence = self.next_sequence;
                    self.next_sequence += 1;
                    staged[i] = Some(LogRecord::Delete { key: key.clone(), sequence });
                }
            }
        }
        while self.dev.in_flight() > 0 {
            if let Err(e) = self.dev.reap(self.dev.in_flight(), &mut writes.out) {
                let err = self.fail(&format!("reaping writes failed: {e}"));
                return finish(results, |_| {
                    Err(Error::Poisoned { device: err.to_string(), op: crate::error::OpKind::Write })
                });
            }
        }
        writes.collect_failures();
        for (i, failed) in writes.failed.iter().enumerate() {
            if *failed && results[i].is_none() {
                staged[i] = None;
                results[i] = Some(Err(Error::Io {
                    device: self.name.clone(),
                    op: crate::error::OpKind::Write,
                    offset: 0,
                    len: 0,
                    cause: std::io::Error::other(format!("writing shard {} failed", op_key(&ops[i]))),
                }));
            }
        }
        let relocated = reclaimed.iter().any(|r| matches!(r, LogRecord::Relocate { .. }));
        if writes.any_data || relocated {
            if let Err(e) = self.dev.flush() {
                let err = self.fail(&format!("flush failed: {e}"));
                return finish(results, |_| {
                    Err(Error::Poisoned { device: err.to_string(), op: crate::error::OpKind::Flush })
                });
            }
        }
        // Relocations first: a put of the same key later in the batch then
        // replaces the moved chunk, never the other way round.
        let records: Vec<(usize, LogRecord)> = reclaimed
            .into_iter()
            .map(|r| (usize::MAX, r))
            .chain(staged.into_iter().enumerate().filter_map(|(i, r)| r.map(|r| (i, r))))
            .collect();
        if !records.is_empty() {
            if let Err(e) = self.make_durable(&records) {
                for (i, _) in records.iter().filter(|(i, _)| *i != usize::MAX) {
                    results[*i] = Some(Err(match &e {
                        Error::NoSpace(m) => Error::NoSpace(m.clone()),
                        other => Error::Poisoned { device: other.to_string(), op: crate::error::OpKind::Write },
                    }));
                }
                return finish(results, |_| Ok(()));
            }
        }
        finish(results, |_| Ok(()))
    }

    /// Checks a put and submits its chunk records (reaped by the caller);
    /// returns the log record that will make it visible. The CRC of every
    /// aligned buffer that goes to the device is compared with what the
    /// sender vouched for (`expected`) before the buffer is written.
    fn stage_put(
        &mut self,
        i: usize,
        key: &[u8],
        data: &[u8],
        expected: Option<u32>,
        now: u64,
        writes: &mut WriteBatch,
    ) -> Result<LogRecord> {
        validate_key(key)?;
        self.check_usable()?;
        let size = data.len() as u64;
        if size > SHARD_SIZE_BYTES_MAX {
            return Err(Error::TooLarge { size, max: SHARD_SIZE_BYTES_MAX });
        }
        let count = chunk_count(size);
        let bad_digest = |expected: u32, actual: u32| Error::BadDigest { key: key_text(key), expected, actual };
        // A one-chunk shard (nearly all of them) takes its CRC from the copy
        // in the I/O buffer while it is in cache. A longer one needs every
        // chunk's CRC first (each header carries the whole shard's), so it
        // is checked against the sender's before anything is written, and
        // each buffer's copy against its chunk's CRC.
        let chunk_crcs: Vec<u32> = if count == 1 {
            Vec::new()
        } else {
            (0..count)
                .map(|c| {
                    let start = c * CHUNK_SIZE_BYTES_MAX;
                    crc32c::crc32c(&data[start..start + chunk_len(size, c)])
                })
                .collect()
        };
        let mut shard_crc = if count == 1 { 0 } else { combine_crcs(&chunk_crcs, size) };
        if let Some(want) = expected.filter(|&want| count > 1 && want != shard_crc) {
            return Err(bad_digest(want, shard_crc));
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let mut chunks = Vec::with_capacity(count);
        for c in 0..count {
            let start = c * CHUNK_SIZE_BYTES_MAX;
            let payload = &data[start..start + chunk_len(size, c)];
            if self.dev.in_flight() == STORE_QUEUE_DEPTH {
                if let Err(e) = self.dev.reap(1, &mut writes.out) {
                    // The ring itself failed: nothing more can be written.
                    return Err(self.fail(&format!("reaping writes failed: {e}")));
                }
            }
            writes.collect_failures();
            let len = record_size_bytes(key.len(), payload.len()) as usize;
            let Some(mut buf) = self.pool.take(len) else {
                return Err(self.fail("no free I/O buffer with a queue slot free (buffers lost to a failed ring)"));
            };
            let placed_crc = crc32c::crc32c(record::place_payload(payload, buf.as_mut_slice()));
            let payload_crc = if count == 1 {
                shard_crc = placed_crc;
                if let Some(want) = expected.filter(|&want| want != placed_crc) {
                    return Err(bad_digest(want, placed_crc));
                }
                placed_crc
            } else if placed_crc != chunk_crcs[c] {
                return Err(bad_digest(chunk_crcs[c], placed_crc));
            } else {
                placed_crc
            };
            let Some(mut loc) = self.allocate(record_blocks(key.len(), size, c)) else {
                return Err(Error::NoSpace(format!(
                    "{}: no free extent for a {size}-byte shard ({RESERVE_EXTENTS_COUNT} are held back for reclamation)",
                    self.name
                )));
            };
            let header = RecordHeader {
                key: key.to_vec(),
                sequence,
                extent: loc.extent,
                generation: self.extents[loc.extent as usize].generation,
                shard_len: size,
                chunk_offset: start as u64,
                chunk_len: payload.len() as u32,
                payload_crc,
                shard_crc,
                written_unix_ms: now,
            };
            header.encode_header(buf.as_mut_slice());
            loc.crc = payload_crc;
            let offset = self.locator_offset(loc);
            self.dev.submit(IoOp { token: i as u64, kind: IoKind::Write { offset, buf, fua: false } })?;
            writes.any_data = true;
            chunks.push(loc);
        }
        Ok(LogRecord::Put { key: key.to_vec(), meta: ShardMeta::new(size, shard_crc, sequence, now, chunks) })
    }

    /// Logs `records` (already backed by durable data) and applies them.
    /// When the log half is full, a checkpoint takes the log's place.
    fn make_durable(&mut self, records: &[(usize, LogRecord)]) -> Result<()> {
        // The log is written one operation at a time: every read still in
        // flight (a get, a scrub window) finishes first, whichever path
        // (commit, scrub, reclamation) logs.
        self.quiesce();
        self.check_usable()?;
        // Refuse a batch whose checkpoint could not be written later.
        let (mut added, mut removed) = (0u64, 0u64);
        for (_, r) in records {
            let key = match r {
                LogRecord::Put { key, meta } => {
                    added += entry_len(key, meta.chunk_count());
                    key
                }
                LogRecord::Delete { key, .. } => key,
                LogRecord::Damaged { key, .. } => {
                    added += meta::damage_entry_len(key);
                    continue;
                }
                LogRecord::Relocate { .. } | LogRecord::Reset { .. } | LogRecord::Scrubbed { .. } => continue,
            };
            if let Some(old) = self.index.get(key) {
                removed += entry_len(key, old.chunk_count());
            }
        }
        let projected = (self.checkpoint_bytes + added).saturating_sub(removed);
        let half_size = self.sb.layout.meta_size_bytes / 2;
        if added > 0 && projected + BLOCK_SIZE_BYTES > half_size {
            return Err(Error::NoSpace(format!(
                "{}: the index would outgrow the metadata region ({half_size} bytes per checkpoint)",
                self.name
            )));
        }
        let blocks = pack(records.iter().map(|(_, r)| r));
        let half_end = self.half_offset(self.sb.store.half) + half_size;
        if self.log_offset + blocks.len() as u64 * BLOCK_SIZE_BYTES <= half_end {
            self.write_log_blocks(&blocks)?;
            for (_, r) in records {
                self.apply(r);
            }
        } else {
            for (_, r) in records {
                self.apply(r);
            }
            self.checkpoint()?;
        }
        self.checkpoint_bytes = projected;
        Ok(())
    }

    fn half_offset(&self, half: u32) -> u64 {
        self.sb.layout.meta_offset + u64::from(half) * (self.sb.layout.meta_size_bytes / 2)
    }

    fn write_log_blocks(&mut self, blocks: &[(u32, Vec<u8>)]) -> Result<()> {
        let mut bytes = vec![0u8; blocks.len() * BLOCK];
        let mut crc = self.log_prev_crc;
        for (k, (count, payload)) in blocks.iter().enumerate() {
            crc = meta::encode_log_block(
                self.sb.store.epoch,
                self.log_index + k as u64,
                crc,
                *count,
                payload,
                &mut bytes[k * BLOCK..(k + 1) * BLOCK],
            );
        }
        let offset = self.log_offset;
        let result = bytes
            .chunks(CHUNK_SIZE_BYTES_MAX)
            .enumerate()
            .try_for_each(|(i, piece)| self.dev.write_at(offset + (i * CHUNK_SIZE_BYTES_MAX) as u64, piece, true));
        if let Err(e) = result {
            return Err(self.fail(&format!("log write failed: {e}")));
        }
        self.log_offset += bytes.len() as u64;
        self.log_index += blocks.len() as u64;
        self.log_prev_crc = crc;
        Ok(())
    }

    /// Writes the whole index into the inactive half and makes it current
    /// with a superblock commit; the log restarts after it.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.quiesce();
        self.check_usable()?;
        let epoch = self.sb.store.epoch + 1;
        let half = 1 - self.sb.store.half;
        let bytes = encode_checkpoint(&self.checkpoint_state(epoch), &self.index);
        let half_size = self.sb.layout.meta_size_bytes / 2;
        if bytes.len() as u64 + BLOCK_SIZE_BYTES > half_size {
            return Err(Error::NoSpace(format!(
                "{}: checkpoint of {} bytes does not fit the metadata region",
                self.name,
                bytes.len()
            )));
        }
        let offset = self.half_offset(half);
        let store =
            StoreRef { epoch, half, checkpoint_crc: crc32c::crc32c(&bytes), checkpoint_len_bytes: bytes.len() as u64 };
        let result = write_bytes(self.dev.as_mut(), offset, &bytes)
            .and_then(|()| superblock::commit(self.dev.as_mut(), &self.sb, |sb| sb.store = store));
        match result {
            Ok(sb) => {
                self.sb = sb;
                self.log_offset = offset + bytes.len() as u64;
                self.log_index = 0;
                self.log_prev_crc = store.checkpoint_crc;
                self.checkpoint_bytes = bytes.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.fail(&format!("checkpoint failed: {e}"))),
        }
    }

    /// Evacuates the sealed extent with the most dead space (if at least a
    /// quarter of what was written to it is dead): its live chunks are
    /// rewritten elsewhere, the relocations and the extent's reset are
    /// logged in one write after a flush, and only then is it reused.
    /// Returns the extent reclaimed and the live bytes moved, or `None`
    /// when no extent is worth it. A chunk that cannot be read and verified
    /// aborts the pass and leaves the extent untouched: it stays referenced
    /// (and copying a corrupt chunk forward would launder it).
    pub fn reclaim(&mut self) -> Result<Option<(u32, u64)>> {
        self.quiesce();
        self.check_usable()?;
        let Some(victim) = self.victim() else { return Ok(None) };
        let live = self.live_chunks(victim);
        let mut records = Vec::with_capacity(live.len() + 1);
        let mut moved = 0u64;
        // A batch of chunks at a time, its reads and then its writes all in
        // flight: the store thread is away from its queue for as few device
        // round trips as the extent allows.
        let batch_len = STORE_QUEUE_DEPTH.min(self.dev.queue_depth()).max(1);
        for batch in live.chunks(batch_len) {
            let (relocations, bytes) = self.move_chunks(victim, batch)?;
            records.extend(relocations.into_iter().map(|r| (0, r)));
            moved += bytes;
        }
        if !records.is_empty() {
            if let Err(e) = self.dev.flush() {
                return Err(self.fail(&format!("flush failed: {e}")));
            }
        }
        let generation = self.extents[victim as usize].generation.wrapping_add(1);
        records.push((0, LogRecord::Reset { extent: victim, generation }));
        self.make_durable(&records)?;
        self.reclaim_counts.whole_extents += 1;
        debug_assert_eq!(
            self.extents[victim as usize],
            ExtentInfo { generation, write_blocks: 0, live_blocks: 0, checked_ms: 0 }
        );
        Ok(Some((victim, moved)))
    }

    /// The sealed extent with the most dead space, if at least a quarter
    /// of what was written to it is dead (and it is not one whose
    /// evacuation failed as it is now).
    fn victim(&self) -> Option<u32> {
        self.extents
            .iter()
            .enumerate()
            .filter(|(i, e)| e.write_blocks > 0 && self.open_extent != Some(*i as u32))
            .filter(|(_, e)| (e.write_blocks - e.live_blocks) * 4 >= e.write_blocks)
            .filter(|(i, e)| self.stuck != Some((*i as u32, e.generation, e.live_blocks)))
            .max_by_key(|(_, e)| e.write_blocks - e.live_blocks)
            .map(|(i, _)| i as u32)
    }

    /// Every live chunk in `victim` (a walk of the whole index).
    fn live_chunks(&self, victim: u32) -> Vec<LiveChunk> {
        let mut live = Vec::new();
        for (key, m) in self.index.iter() {
            for (c, l) in m.locators().enumerate() {
                if l.extent == victim {
                    live.push((key.to_vec(), m.sequence, c, l, m.size));
                }
            }
        }
        live
    }

    /// Reads `batch` (all in flight), verifies each chunk and writes its
    /// copy elsewhere (all in flight), and returns the relocation records
    /// (not yet durable: the caller flushes, then logs them) and the bytes
    /// moved. A chunk that cannot be read and verified stops the move:
    /// copying it forward would launder the damage.
    fn move_chunks(&mut self, victim: u32, batch: &[LiveChunk]) -> Result<(Vec<LogRecord>, u64)> {
        let mut records = Vec::with_capacity(batch.len());
        let mut moved = 0u64;
        for (i, (key, _, chunk, from, size)) in batch.iter().enumerate() {
            let len = record_size_bytes(key.len(), chunk_len(*size, *chunk));
            let buf = self.pool.take(len as usize).expect("no operations in flight between batches");
            let kind = IoKind::Read { offset: self.locator_offset(*from), buf };
            self.dev.submit(IoOp { token: i as u64, kind })?;
        }
        let mut reads = Vec::with_capacity(batch.len());
        while reads.len() < batch.len() {
            self.dev.reap(batch.len() - reads.len(), &mut reads)?;
        }
        reads.sort_by_key(|c| c.token);
        let mut failure = None;
        for done in reads {
            let (key, sequence, chunk, from, _) = &batch[done.token as usize];
            match self.move_chunk(victim, key, *sequence, *chunk, *from, done) {
                Ok((to, len)) => {
                    moved += len;
                    let chunk = *chunk as u32;
                    records.push(LogRecord::Relocate { key: key.clone(), sequence: *sequence, chunk, to });
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Every write of the batch completes before anything returns:
        // their buffers belong to the device until reaped.
        let mut writes = Vec::new();
        while self.dev.in_flight() > 0 {
            self.dev.reap(self.dev.in_flight(), &mut writes)?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for c in writes {
            c.result?;
        }
        Ok((records, moved))
    }

    /// Reclamation in steps that ride on group commits, so no commit waits
    /// for a whole extent: extents emptied by earlier commits are reset
    /// (their last references left in records already durable), and once
    /// free extents are down to the reserve, the `needed` extents the batch
    /// may open and [`RECLAIM_AHEAD_EXTENTS_COUNT`], live chunks of the emptiest sealed
    /// extent are copied forward, as many bytes as this batch writes times
    /// the victim's live-to-dead ratio (with a quarter to spare, so
    /// reclamation gains on the writes), at most [`RECLAIM_STEP_BYTES_MAX`].
    /// Returns the records to log with the batch (the copies are written;
    /// the batch's flush makes them durable before its log write).
    /// Record bytes a batch writes.
    fn batch_bytes(ops: &[Op]) -> u64 {
        ops.iter()
            .map(|op| match op {
                Op::Put { data, .. } => data.len() as u64 + chunk_count(data.len() as u64) as u64 * BLOCK_SIZE_BYTES,
                Op::Delete { .. } => 0,
            })
            .sum()
    }

    /// New extents a batch may open (at least one).
    fn extents_needed(&self, ops: &[Op]) -> u32 {
        let extent = self.sb.layout.extent_size_bytes;
        u32::try_from(Self::batch_bytes(ops).div_ceil(extent)).unwrap_or(u32::MAX / 2).max(1)
    }

    fn reclaim_along(&mut self, ops: &[Op], needed: u32) -> Vec<LogRecord> {
        let mut records: Vec<LogRecord> = self
            .classes
            .emptied
            .iter()
            .map(|&i| LogRecord::Reset { extent: i, generation: self.extents[i as usize].generation.wrapping_add(1) })
            .collect();
        self.reclaim_counts.extents_reset_along += records.len() as u64;
        let ahead = RESERVE_EXTENTS_COUNT + needed + RECLAIM_AHEAD_EXTENTS_COUNT;
        if self.free_extents() > ahead || self.check_usable().is_err() {
            return records;
        }
        let written = Self::batch_bytes(ops);
        let current = self
            .plan
            .as_ref()
            .is_some_and(|p| !p.chunks.is_empty() && self.extents[p.victim as usize].generation == p.generation);
        if !current {
            self.plan = self.victim().map(|victim| ReclaimPlan {
                victim,
                generation: self.extents[victim as usize].generation,
                chunks: self.live_chunks(victim).into(),
            });
        }
        let Some(plan) = self.plan.as_mut() else { return records };
        let victim = plan.victim;
        let e = self.extents[victim as usize];
        let live = f64::from(e.live_blocks) / f64::from(e.write_blocks.max(1));
        let budget =
            ((written as f64 * live / (1.0 - live).max(0.05) * 1.25) as u64 + (256 << 10)).min(RECLAIM_STEP_BYTES_MAX);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < budget {
            let Some(c) = plan.chunks.pop_front() else { break };
            // Still where the plan found it (not replaced or deleted since)?
            let (key, sequence, chunk, from, _) = &c;
            if self.index.get(key).is_some_and(|m| m.sequence == *sequence && m.chunk(*chunk) == *from) {
                bytes += record_size_bytes(key.len(), chunk_len(c.4, *chunk));
                batch.push(c);
            }
        }
        let batch_len = STORE_QUEUE_DEPTH.min(self.dev.queue_depth()).max(1);
        let moved = batch.chunks(batch_len).try_for_each(|part| {
            let (relocations, _) = self.move_chunks(victim, part)?;
            self.reclaim_counts.chunks_moved_along += relocations.len() as u64;
            records.extend(relocations);
            Ok::<(), Error>(())
        });
        match moved {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(device = %self.name, extent = victim, error = %e, "reclamation skips an extent it cannot evacuate");
                self.stuck =
                    Some((victim, self.extents[victim as usize].generation, self.extents[victim as usize].live_blocks));
                self.plan = None;
            }
        }
        records
    }

    /// Verifies a chunk read back for reclamation and submits its copy at
    /// a new place (the write is reaped by the caller). Returns the new
    /// locator and the record's bytes; an unreadable or damaged chunk is
    /// not moved (copying it forward would launder the damage).
    fn move_chunk(
        &mut self,
        victim: u32,
        key: &[u8],
        sequence: u64,
        chunk: usize,
        from: Locator,
        done: Completion,
    ) -> Result<(Locator, u64)> {
        let damaged = |why: String| Error::Corruption {
            device: self.name.clone(),
            what: format!("shard {:?} chunk {chunk} (not moved; extent {victim} kept): {why}", key_text(key)),
            offset: self.locator_offset(from),
        };
        if let Err(e) = &done.result {
            return Err(damaged(format!("unreadable: {e}")));
        }
        let mut buf = done.buf.expect("reads return their buffer");
        let header =
            RecordHeader::verify(buf.as_slice(), from.crc)
                .and_then(|(h, _)| {
                    if h.key == key && h.sequence == sequence {
                        Ok(h)
                    } else {
                        Err(record::RecordProblem::Mismatch)
                    }
                })
                .map_err(|p| damaged(p.to_string()))?;
        let len = buf.len() as u64;
        let blocks = (len / BLOCK_SIZE_BYTES) as u32;
        let Some(mut to) = self.allocate_from(blocks, 0) else {
            return Err(Error::NoSpace(format!("{}: no room to evacuate extent {victim}", self.name)));
        };
        assert_ne!(to.extent, victim, "the victim is sealed, never the open extent");
        let start = record::HEADER_BLOCK_BYTES;
        let payload = buf.as_slice()[start..start + header.chunk_len as usize].to_vec();
        let moved_header =
            RecordHeader { extent: to.extent, generation: self.extents[to.extent as usize].generation, ..header };
        moved_header.encode(&payload, buf.as_mut_slice());
        to.crc = moved_header.payload_crc;
        let offset = self.locator_offset(to);
        self.dev.submit(IoOp { token: u64::from(chunk as u32), kind: IoKind::Write { offset, buf, fua: false } })?;
        Ok((to, len))
    }

    pub fn put(&mut self, key: &[u8], data: &[u8]) -> Result<()> {
        self.commit(&[Op::put(key, Bytes::copy_from_slice(data))]).pop().expect("one result")
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.commit(&[Op::Delete { key: key.to_vec() }]).pop().expect("one result")
    }

    pub fn stat(&self, key: &[u8]) -> Option<ShardStat> {
        self.index.get(key).map(|m| ShardStat {
            size: m.size,
            crc32c: m.crc,
            written_unix_ms: m.written_unix_ms,
            sequence: m.sequence,
            chunks: m.chunk_count(),
        })
    }

    /// Keys with `prefix`, after `start_after`, at most `limit`, in order,
    /// with their sizes.
    pub fn list(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, u64)> {
        let start = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        self.index
            .sizes_from(start)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, size)| (k.to_vec(), size))
            .collect()
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Vec<u8>> {
        let size = self.index.get(key).ok_or_else(|| Error::NotFound(key_text(key)))?.size;
        self.get_range(key, 0, size)
    }

    /// Reads `len` bytes from `offset` of a shard (clamped to its end),
    /// verifying every chunk it touches; a whole-shard read also checks the
    /// shard's CRC32C.
    pub fn get_range(&mut self, key: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
        const SYNC_ID: u64 = u64::MAX;
        self.start_get(SYNC_ID, key, offset, len)?;
        let mut done = Vec::with_capacity(1);
        loop {
            self.poll_gets(true, &mut done)?;
            if let Some(pos) = done.iter().position(|(id, _)| *id == SYNC_ID) {
                return done.swap_remove(pos).1;
            }
        }
    }

    /// Starts an asynchronous get identified by `id`; its result comes out
    /// of [`Store::poll_gets`]. Errors known before any I/O (not found, a
    /// range past the end) are returned at once.
    pub fn start_get(&mut self, id: u64, key: &[u8], offset: u64, len: u64) -> Result<()> {
        let meta = self.index.get(key).ok_or_else(|| Error::NotFound(key_text(key)))?;
        if let Some(d) = self.damage_of(key, meta.sequence) {
            let kind = scrub::FindingKind::from_code(d.kind).map_or("damage", scrub::FindingKind::name);
            return Err(Error::Corruption {
                device: self.name.clone(),
                what: format!(
                    "shard {:?} chunk {}: on the repair list ({kind} found by the scrubber)",
                    key_text(key),
                    d.chunk
                ),
                offset: d.offset,
            });
        }
        if offset > meta.size {
            return Err(Error::InvalidArgument(format!(
                "range starts at {offset}, past the end of a {}-byte shard",
                meta.size
            )));
        }
        let end = offset.saturating_add(len).min(meta.size);
        let chunk_size = CHUNK_SIZE_BYTES_MAX as u64;
        let first = (offset / chunk_size) as usize;
        let last = if end == offset { first } else { ((end - 1) / chunk_size) as usize };
        let slot = if let Some(free) = self.gets.iter().position(Option::is_none) {
            free
        } else {
            self.gets.push(None);
            self.gets.len() - 1
        };
        for chunk in first..=last {
            self.get_queue.push_back((slot as u32, chunk as u32));
        }
        self.gets[slot] = Some(GetCtx {
            id,
            key: key.to_vec(),
            meta,
            offset,
            end,
            // A one-chunk get takes its bytes straight from the read
            // buffer when it completes (no zeroing first).
            out: if first == last { Vec::new() } else { vec![0u8; (end - offset) as usize] },
            remaining: last - first + 1,
            error: None,
            chunk_crcs: vec![0; last - first + 1],
            started: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth, collects what has
    /// completed (if `wait` and any are in flight, waiting for at least one
    /// completion or a call of the [`Store::waker`]), and appends finished
    /// gets to `done`.
    pub fn poll_gets(&mut self, wait: bool, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> Result<()> {
        self.submit_gets(done);
        self.reap_gets(wait, done)?;
        while self.finish_next_read(done) {}
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth (the device hands
    /// them to the kernel at its next enter at the latest). Gets that end
    /// without I/O go to `done`.
    pub fn submit_gets(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        // Reaped reads not yet finished still hold their buffers: a read
        // goes out only when a buffer is free for it.
        while self.dev.in_flight() + self.get_completions.len() < STORE_QUEUE_DEPTH {
            let Some((slot, chunk)) = self.get_queue.pop_front() else { break };
            let ctx = self.gets[slot as usize].as_mut().expect("queued chunk of a live get");
            let loc = ctx.meta.chunk(chunk as usize);
            let len = record::payload_size_bytes(chunk_len(ctx.meta.size, chunk as usize)) as usize;
            if len == 0 {
                // An empty shard: no bytes to read; its CRC is that of nothing.
                let first = (ctx.offset / CHUNK_SIZE_BYTES_MAX as u64) as usize;
                ctx.chunk_crcs[chunk as usize - first] = loc.crc;
                let result = if loc.crc == 0 {
                    Ok(())
                } else {
                    Err(Error::Corruption {
                        device: self.name.clone(),
                        what: format!("shard {:?}: an empty chunk with a non-empty checksum", key_text(&ctx.key)),
                        offset: 0,
                    })
                };
                self.finish_chunk(slot, result, done);
                continue;
            }
            let buf = self.pool.take(len).expect("a free buffer for every queue slot");
            let at = self.payload_offset(loc);
            let token = (u64::from(slot) << 32) | u64::from(chunk);
            if let Err(e) = self.dev.submit(IoOp { token, kind: IoKind::Read { offset: at, buf } }) {
                self.finish_chunk(slot, Err(e), done);
            }
        }
    }

    /// Collects completed reads (if `wait` and any are in flight, waiting
    /// for at least one or a call of the [`Store::waker`]) for
    /// [`Store::finish_next_read`]; submits what the device still holds.
    pub fn reap_gets(&mut self, wait: bool, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> Result<()> {
        if self.dev.in_flight() == 0 {
            return Ok(());
        }
        let mut completions = std::mem::take(&mut self.get_completions);
        let reaped = if wait { self.dev.reap_or_wake(&mut completions) } else { self.dev.reap(0, &mut completions) };
        if let Err(e) = reaped {
            // The ring itself failed: no get in progress can finish. Answer
            // them all and stop serving, rather than wait forever.
            let why = format!("reaping reads failed: {e}");
            let _ = self.fail(&why);
            self.get_queue.clear();
            self.scrub.abandon_windows();
            for ctx in self.gets.iter_mut().filter_map(Option::take) {
                done.push((
                    ctx.id,
                    Err(Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Read }),
                ));
            }
            // Reads reaped before the failure belong to the gets just answered.
            completions.clear();
            self.get_completions = completions;
            return Err(e);
        }
        // Finished first in, first out: `finish_next_read` pops.
        completions.reverse();
        self.get_completions = completions;
        Ok(())
    }

    /// Verifies the next reaped read and finishes its get (or scrub window)
    /// when it was the last piece; false when none is left. A thread serving
    /// clients answers a finished get before it verifies the next read, so
    /// the client's next request can go to the device sooner.
    pub fn finish_next_read(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> bool {
        let Some(c) = self.get_completions.pop() else { return false };
        let slot = (c.token >> 32) as u32;
        if slot == scrub::SCRUB_TOKEN_SLOT {
            self.scrub_window_done((c.token & 0xFFFF_FFFF) as usize, c);
            return true;
        }
        let chunk = (c.token & 0xFFFF_FFFF) as usize;
        let result = self.verify_chunk(slot, chunk, c);
        self.finish_chunk(slot, result, done);
        true
    }

    /// Gets that finished while a commit or checkpoint drained the device.
    pub fn take_finished_gets(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        done.append(&mut self.finished_gets);
    }

    /// A handle that ends a waiting [`Store::poll_gets`] early from another
    /// thread (`None` when the device's waits are never long).
    pub fn waker(&mut self) -> Result<Option<std::sync::Arc<dyn crate::device::Wake>>> {
        self.dev.waker()
    }

    /// Whether any read (a get, or a scrub window) is still in progress.
    pub fn gets_pending(&self) -> bool {
        self.scrub.in_flight() > 0 || self.gets.iter().any(Option::is_some)
    }

    fn verify_chunk(&mut self, slot: u32, chunk: usize, c: Completion) -> Result<()> {
        let at = {
            let ctx = self.gets[slot as usize].as_ref().expect("completion of a live get");
            self.payload_offset(ctx.meta.chunk(chunk))
        };
        let ctx = self.gets[slot as usize].as_mut().expect("completion of a live get");
        let loc = ctx.meta.chunk(chunk);
        let corrupt = |why: String| Error::Corruption {
            device: self.name.clone(),
            what: format!("shard {:?} chunk {chunk}: {why}", key_text(&ctx.key)),
            offset: at,
        };
        if let Err(e) = c.result {
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(corrupt(format!("unreadable: {e}")));
        }
        let buf = c.buf.expect("reads return their buffer");
        let payload = &buf.as_slice()[..chunk_len(ctx.meta.size, chunk)];
        if let Err(p) = record::verify_payload(payload, loc.crc) {
            self.counters.checksum_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(corrupt(p.to_string()));
        }
        let first = (ctx.offset / CHUNK_SIZE_BYTES_MAX as u64) as usize;
        ctx.chunk_crcs[chunk - first] = loc.crc;
        let chunk_size = CHUNK_SIZE_BYTES_MAX as u64;
        let chunk_start = chunk as u64 * chunk_size;
        let from = ctx.offset.max(chunk_start);
        let to = ctx.end.min(chunk_start + payload.len() as u64);
        if from < to {
            let bytes = &payload[(from - chunk_start) as usize..(to - chunk_start) as usize];
            if ctx.out.is_empty() {
                ctx.out = bytes.to_vec();
            } else {
                ctx.out[(from - ctx.offset) as usize..(to - ctx.offset) as usize].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    fn finish_chunk(&mut self, slot: u32, result: Result<()>, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        let ctx = self.gets[slot as usize].as_mut().expect("chunk of a live get");
        if let Err(e) = result {
            ctx.error.get_or_insert(e);
        }
        ctx.remaining -= 1;
        if ctx.remaining > 0 {
            return;
        }
        let ctx = self.gets[slot as usize].take().expect("checked above");
        self.counters.read_latency.record(ctx.started.elapsed(), ctx.end - ctx.offset);
        let result = match ctx.error {
            Some(e) => Err(e),
            // Each chunk's payload was checked against its CRC; the chunk
            // CRCs must also combine into the shard's end-to-end CRC.
            None if ctx.offset == 0
                && ctx.end == ctx.meta.size
                && combine_crcs(&ctx.chunk_crcs, ctx.meta.size) != ctx.meta.crc =>
            {
                Err(Error::Corruption {
                    device: self.name.clone(),
                    what: format!("shard {:?}: whole-shard checksum mismatch", key_text(&ctx.key)),
                    offset: self.locator_offset(ctx.meta.chunk(0)),
                })
            }
            None => Ok(ctx.out),
        };
        done.push((ctx.id, result));
    }

    /// Completes every get in progress, keeping their results for
    /// `take_finished_gets`: commits, checkpoints and reclamation use the
    /// device one operation at a time and must have it to themselves.
    fn quiesce(&mut self) {
        let mut finished = std::mem::take(&mut self.finished_gets);
        while self.gets_pending() {
            if let Err(e) = self.poll_gets(true, &mut finished) {
                let _ = self.fail(&format!("reading failed: {e}"));
                break;
            }
        }
        self.finished_gets = finished;
        // What the blocking paths after this rely on: the device is ours
        // alone (or the store is failed and writes nothing more).
        assert!(
            self.failed.is_some() || self.dev.in_flight() == 0,
            "{}: {} operations in flight after every get and scrub read finished",
            self.name,
            self.dev.in_flight()
        );
    }

    /// Device offset of a chunk's payload (after its header block).
    fn payload_offset(&self, loc: Locator) -> u64 {
        self.locator_offset(loc) + record::HEADER_BLOCK_BYTES as u64
    }

    fn locator_offset(&self, loc: Locator) -> u64 {
        self.sb.layout.data_offset
            + u64::from(loc.extent) * self.sb.layout.extent_size_bytes
            + u64::from(loc.block) * BLOCK_SIZE_BYTES
    }

    /// Where each chunk's data lives: (device offset of its payload,
    /// payload bytes). The chunk's header block is the 4 KiB before it.
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

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn extents(&self) -> &[ExtentInfo] {
        &self.extents
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn usage(&self) -> Usage {
        let block = BLOCK_SIZE_BYTES;
        let extent = self.sb.layout.extent_size_bytes;
        let open_left = self
            .open_extent
            .map_or(0, |e| u64::from(self.blocks_per_extent() - self.extents[e as usize].write_blocks) * block);
        let free = u64::from(self.free_extents().saturating_sub(RESERVE_EXTENTS_COUNT)) * extent + open_left;
        Usage {
            capacity_bytes: self.sb.layout.extent_count * extent,
            free_bytes: free,
            live_bytes: self.extents.iter().map(|e| u64::from(e.live_blocks) * block).sum(),
            shards: self.index.len() as u64,
        }
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
        for (key, m) in self.index.iter() {
            assert_eq!(m.chunk_count(), chunk_count(m.size), "shard {key:?} chunk count");
            for (i, l) in m.locators().enumerate() {
                let b = record_blocks(key.len(), m.size, i);
                assert!(
                    l.block + b <= self.extents[l.extent as usize].write_blocks,
                    "shard {key:?} chunk {i} beyond write pointer"
                );
                live[l.extent as usize] += b;
            }
        }
        for (i, e) in self.extents.iter().enumerate() {
            assert_eq!(e.live_blocks, live[i], "extent {i} live blocks");
            assert!(e.write_blocks <= self.blocks_per_extent(), "extent {i} write pointer past its end");
        }
        let mut recomputed = ExtentClasses::default();
        recomputed.rebuild(&self.extents, self.open_extent);
        assert!(recomputed.free == self.classes.free, "free extents kept as they changed differ from the table");
        assert!(
            recomputed.emptied == self.classes.emptied,
            "emptied extents kept as they changed differ from the table"
        );
    }

    /// Checkpoints and records a clean shutdown.
    pub fn close(mut self) -> Result<()> {
        self.close_in_place()
    }

    /// As `close`, for an owner that drops the store afterwards itself.
    pub fn close_in_place(&mut self) -> Result<()> {
        self.checkpoint()?;
        let sb = superblock::commit(self.dev.as_mut(), &self.sb, |sb| sb.clean_shutdown = true)?;
        self.sb = sb;
        Ok(())
    }
}

/// The CRC32C of a shard from the CRCs of its chunks, in order.
fn combine_crcs(chunk_crcs: &[u32], size: u64) -> u32 {
    let mut crc = chunk_crcs[0];
    for (c, &next) in chunk_crcs.iter().enumerate().skip(1) {
        crc = crc32c::crc32c_combine(crc, next, chunk_len(size, c));
    }
    crc
}

/// Bytes of one index entry in a checkpoint: key length, key, sequence,
/// size, CRC, time, chunk count, 12 bytes per locator.
fn entry_len(key: &[u8], chunks: usize) -> u64 {
    (1 + key.len() + 32 + 12 * chunks) as u64
}

fn op_key(op: &Op) -> String {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key_text(key),
    }
}

fn finish(results: Vec<Option<Result<()>>>, default: impl Fn(usize) -> Result<()>) -> Vec<Result<()>> {
    results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| default(i))).collect()
}

/// Packs records into log block payloads: (record count, bytes).
fn pack<'a>(records: impl Iterator<Item = &'a LogRecord>) -> Vec<(u32, Vec<u8>)> {
    let mut blocks: Vec<(u32, Vec<u8>)> = vec![(0, Vec::with_capacity(LOG_PAYLOAD_BYTES_MAX))];
    let mut scratch = Vec::with_capacity(1100);
    for r in records {
        scratch.clear();
        r.encode(&mut scratch);
        if blocks.last().expect("one block").1.len() + scratch.len() > LOG_PAYLOAD_BYTES_MAX {
            blocks.push((0, Vec::with_capacity(LOG_PAYLOAD_BYTES_MAX)));
        }
        let last = blocks.last_mut().expect("one block");
        last.0 += 1;
        last.1.extend_from_slice(&scratch);
    }
    blocks
}

const _: () = assert!(CHECKPOINT_HEADER_BYTES <= BLOCK);
