//! Recovery: opening a store from the superblock in force, its
//! checkpoint and the log after it, checking every decoded structure
//! against the layout before its numbers index anything (a violation is
//! `Corruption` with the offset, never a panic).

use super::tail::{Held, Tail};
use super::{
    checkpoint_len, chunk_count, encode_checkpoint, key_text, live_blocks, meta, read_bytes, record_size_bytes, scrub,
    span_blocks, superblock, validate_key, write_bytes, BlockDevice, BlockDeviceExt, BufferPool, CheckpointHeader,
    Error, ExtentInfo, ExtentTable, Index, Locator, LogRecord, ReadPipeline, ReclaimCounts, RepairList, Result,
    ShardMeta, Store, BLOCK, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX, SHARD_SIZE_BYTES_MAX,
    STORE_QUEUE_DEPTH,
};

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

    pub(super) fn open_mode(mut dev: Box<dyn BlockDevice>, read_only: bool) -> Result<Store> {
        let name = dev.info().name.clone();
        // Stalls are watched from the first read on (a device that hangs
        // while the store opens says so in the log).
        let counters = std::sync::Arc::<crate::health::DeviceCounters>::default();
        dev.watch_stalls(std::sync::Arc::clone(&counters.io_stall));
        let opened = superblock::open(dev.as_mut(), !read_only)?;
        let sb = opened.superblock;
        let opened_clean = sb.clean_shutdown;
        let layout = sb.layout;
        let half_size = layout.meta_size_bytes / 2;
        let half_offset = layout.meta_offset + u64::from(sb.store.half) * half_size;
        let corrupt = |what: String, offset: u64| Error::Corruption { device: name.clone(), what, offset };
        let mut repairs = Vec::new();
        let bytes = read_checkpoint(dev.as_mut(), &sb, half_offset, &mut repairs)
            .map_err(|why| corrupt(format!("checkpoint: {why}"), half_offset))?;
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
        // Other threads read placed shards through a duplicate of the
        // device's descriptor (none for an inspection).
        let file = if read_only { None } else { dev.try_clone_file().and_then(Result::ok) };
        let placed = std::sync::Arc::new(super::placed::Placements::new(file, std::sync::Arc::clone(&counters)));
        let mut store = Store {
            dev,
            placed,
            name: name.clone(),
            sb,
            pool: BufferPool::new(
                record_size_bytes(KEY_SIZE_BYTES_MAX, CHUNK_SIZE_BYTES_MAX) as usize,
                STORE_QUEUE_DEPTH,
            )?,
            // Room for the checkpoint's entries (never more than its bytes
            // could hold, whatever its header says).
            index: Index::with_capacity(usize::try_from(header.entry_count).unwrap_or(0).min(body.len() / 32)),
            extents: ExtentTable::new(extents, per_extent),
            next_sequence: header.next_sequence,
            log_offset: half_offset + bytes.len() as u64,
            log_index: 0,
            log_prev_crc: crc32c::crc32c(&bytes),
            checkpoint_bytes: 0,
            failed: None,
            opened_clean,
            reads: ReadPipeline::new(),
            scrub: scrub::Background::new(header.scrub),
            damaged: RepairList::default(),
            read_cache: std::sync::Arc::new(super::cache::ReadCache::new(super::cache::ReadCacheSettings::OFF)),
            tombstones: std::collections::BTreeMap::new(),
            counters,
            plan: None,
            stuck: None,
            reclaim_counts: ReclaimCounts::default(),
            checkpoints_written: 0,
            checkpoint_last_micros: 0,
            beside: None,
            checkpoint_slice_entries: super::checkpoint::CHECKPOINT_SLICE_ENTRIES,
            reclaim_list_step_entries: super::reclaim::RECLAIM_LIST_STEP_ENTRIES,
            logged_during_checkpoint: 0,
            completed_at_open: Vec::new(),
            reverted_at_open: Vec::new(),
            one_flush_commits: 0,
            vouching: false,
            vouched_end: None,
            vouched_commits: 0,
            confirmations: 0,
            resets_applied: 0,
            log_buffers: BufferPool::new(super::LOG_BUFFER_SIZE_BYTES, super::LOG_BUFFERS_COUNT)?,
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
        for _ in 0..header.tombstone_count {
            let (key, sequence) =
                r.key_and_sequence().ok_or_else(|| corrupt("checkpoint tombstones".to_owned(), half_offset))?;
            validate_key(&key).map_err(|e| corrupt(format!("checkpoint tombstone: {e}"), half_offset))?;
            store.next_sequence = store.next_sequence.max(sequence + 1);
            store.tombstones.insert(key, sequence);
        }
        if !r.is_empty() {
            return Err(corrupt("checkpoint trailing bytes".to_owned(), half_offset));
        }
        let mut tail = store.replay_log(half_offset + half_size, &mut repairs)?;
        store.repair_metadata(repairs, read_only)?;
        let held = tail.held.take();
        store.complete_tail(tail, read_only)?;
        let left_out = match held {
            Some(held) => store.settle_vouched(held)?,
            None => false,
        };
        store.extents.recovered();
        store.checkpoint_bytes = checkpoint_len(&store.checkpoint_state(0), &store.index);
        debug_assert_eq!(
            store.checkpoint_bytes,
            encode_checkpoint(&store.checkpoint_state(0), &store.index).len() as u64,
            "the checkpoint's length as computed and as encoded"
        );
        // From now on a crash must be visible at the next open.
        if read_only {
            store.failed = Some("opened read-only".to_owned());
        } else {
            // Before anything this build writes: the device says it holds
            // records older builds cannot read (superblock::FORMAT_VERSION).
            let upgrade = (superblock::FORMAT_VERSION_UPGRADED_FROM..superblock::FORMAT_VERSION)
                .contains(&store.sb.format_version);
            if store.sb.clean_shutdown || upgrade {
                store.sb = superblock::commit(store.dev.as_mut(), &store.sb, |sb| {
                    sb.clean_shutdown = false;
                    if upgrade {
                        sb.format_version = superblock::FORMAT_VERSION;
                    }
                })?;
            }
            // Records of the last write left out must not come back when a
            // later write proves that write durable: the store as recovered
            // becomes the checkpoint in force.
            if left_out {
                store.checkpoint()?;
            }
        }
        Ok(store)
    }

    /// Replays the log after the checkpoint: each block from the first
    /// copy of the metadata region that continues the chain. Every copy
    /// of every block is read, and a copy that does not hold the block
    /// replayed is queued in `repairs`, so that after open every block of
    /// the log is whole in every copy again. The log ends at the first
    /// block no copy continues: a torn tail, unless a later block proves
    /// otherwise (see `lost_block`).
    /// Returns the payload copies of the last log write (see `tail.rs`).
    pub(super) fn replay_log(&mut self, half_end: u64, repairs: &mut Vec<MetaRepair>) -> Result<Tail> {
        const READ_BLOCKS: u64 = 64;
        let mut mismatched = Vec::new();
        // Where the last log write replayed began.
        let mut last_write_start = 0;
        let mut tail = Tail::default();
        'outer: while self.log_offset < half_end {
            let n = ((half_end - self.log_offset) / BLOCK_SIZE_BYTES).min(READ_BLOCKS);
            let len = (n * BLOCK_SIZE_BYTES) as usize;
            // Each copy's run of blocks; an unreadable run reads as zeros
            // (no valid block), so the other copies decide.
            let runs: Vec<Vec<u8>> = self
                .meta_copies_of(self.log_offset)
                .into_iter()
                .map(|at| self.dev.read_at(at, len).map_or_else(|_| vec![0u8; len], |b| b.as_slice().to_vec()))
                .collect();
            for i in 0..n as usize {
                let expect = (self.sb.store.epoch, self.log_index, self.log_prev_crc);
                let blocks: Vec<&[u8]> = runs.iter().map(|r| &r[i * BLOCK..(i + 1) * BLOCK]).collect();
                let decoded: Vec<_> =
                    blocks.iter().map(|b| meta::decode_log_block(b, expect.0, expect.1, expect.2)).collect();
                let Some(good) = decoded.iter().position(Option::is_some) else {
                    self.lost_block()?;
                    break 'outer;
                };
                let bad: Vec<usize> = (0..blocks.len()).filter(|&c| decoded[c].is_none()).collect();
                let position = meta::log_block_write_position(blocks[good]);
                last_write_start = self.log_index.saturating_sub(u64::from(position));
                if position == 0 {
                    // A vouched write followed by another was durable.
                    if let Some(held) = tail.restart() {
                        for (index, offset, record) in held.records {
                            self.check_and_apply(index, offset, &record)?;
                        }
                    }
                }
                for c in bad {
                    mismatched.push((self.log_index, c, blocks[good].to_vec()));
                }
                let (crc, records) = decoded.into_iter().nth(good).flatten().expect("found above");
                for (n, record) in records.into_iter().enumerate() {
                    if let LogRecord::Vouch { records: vouched } = record {
                        if position != 0 || n != 0 {
                            return Err(Error::Corruption {
                                device: self.name.clone(),
                                what: format!("log block {}: a vouch that does not open its log write", self.log_index),
                                offset: self.log_offset,
                            });
                        }
                        tail.held = Some(Held { vouched, records: Vec::new() });
                        continue;
                    }
                    if let Some(held) = &mut tail.held {
                        held.records.push((self.log_index, self.log_offset, record));
                        continue;
                    }
                    tail.note(&record);
                    self.check_and_apply(self.log_index, self.log_offset, &record)?;
                }
                self.log_offset += BLOCK_SIZE_BYTES;
                self.log_index += 1;
                self.log_prev_crc = crc;
            }
        }
        for (index, copy, bytes) in mismatched {
            let offset = self.meta_copies_of(self.log_offset - (self.log_index - index) * BLOCK_SIZE_BYTES)[copy];
            // After a crash, the blocks of the last log write may be
            // missing from any copy (the write was cut short in some copy
            // and never acknowledged): not damage, but still made whole.
            // Anything else missing from a copy is damage: a log write
            // starts only once the one before completed in every copy.
            let crash_tail = !self.opened_clean && index >= last_write_start;
            let detail = format!("log block {index} of metadata copy {copy} rewritten from another copy");
            repairs.push(MetaRepair {
                offset,
                bytes,
                kind: scrub::FindingKind::LogBlock,
                detail: if crash_tail { format!("{detail} (the end of a write cut short by a crash)") } else { detail },
                damage: !crash_tail,
            });
        }
        Ok(tail)
    }

    /// Checks a record of log block `index` (at device `offset`) against
    /// the layout and the index as recovered so far, then applies it.
    fn check_and_apply(&mut self, index: u64, offset: u64, record: &LogRecord) -> Result<()> {
        self.check_record(record).map_err(|what| Error::Corruption {
            device: self.name.clone(),
            what: format!("log block {index}: {what}"),
            offset,
        })?;
        self.apply(record);
        Ok(())
    }

    /// No copy continues the chain at the log's end position. After a
    /// crash that is the torn tail of an unacknowledged write. With a
    /// mirrored metadata region, the next block proves otherwise when it
    /// is valid and identical in every copy and starts a log write of its
    /// own: a log write starts only once the one before completed in every
    /// copy, so this block was durable in all of them and was destroyed
    /// afterwards; the changes it held are lost. The store refuses to open
    /// rather than serve a state older than what it acknowledged.
    fn lost_block(&mut self) -> Result<()> {
        // The lost block may be its half's last: no block after it to ask
        // (the second half's end is the end of the metadata region).
        let next_at = self.log_offset + BLOCK_SIZE_BYTES;
        if next_at >= self.half_offset(self.sb.store.half) + self.sb.layout.meta_size_bytes / 2 {
            return Ok(());
        }
        let copies = self.meta_copies_of(next_at);
        if copies.len() < 2 {
            return Ok(());
        }
        let mut next = Vec::with_capacity(copies.len());
        for at in copies {
            let Ok(buf) = self.dev.read_at(at, BLOCK) else { return Ok(()) };
            next.push(buf.as_slice().to_vec());
        }
        let written = next.iter().all(|b| {
            b == &next[0]
                && meta::log_block_position(b) == Some((self.sb.store.epoch, self.log_index + 1))
                && meta::log_block_write_position(b) == 0
        });
        if !written {
            return Ok(());
        }
        Err(Error::Corruption {
            device: self.name.clone(),
            what: format!(
                "log block {} is damaged in every copy of the metadata region while the block after it was \
                 written in all of them: acknowledged changes it held are lost (run `shardctl fsck`)",
                self.log_index
            ),
            offset: self.log_offset,
        })
    }

    /// Rewrites the copies of metadata recovery found damaged (read-write
    /// opens only), each reported as a finding: counted, logged, listed.
    fn repair_metadata(&mut self, repairs: Vec<MetaRepair>, read_only: bool) -> Result<()> {
        for r in repairs {
            if !r.damage {
                if !read_only {
                    write_bytes(self.dev.as_mut(), r.offset, &r.bytes)?;
                    self.dev.flush()?;
                }
                tracing::info!(device = %self.name, offset = r.offset, detail = %r.detail, "metadata copy completed at open");
                continue;
            }
            let finding = scrub::Finding {
                kind: r.kind,
                key: None,
                offset: r.offset,
                len: r.bytes.len() as u64,
                detail: if read_only { format!("{} (not repaired: opened read-only)", r.detail) } else { r.detail },
            };
            if !read_only {
                write_bytes(self.dev.as_mut(), r.offset, &r.bytes)?;
                self.dev.flush()?;
            }
            tracing::warn!(device = %self.name, offset = finding.offset, detail = %finding.detail, "metadata copy repaired at open");
            self.note_finding(finding);
        }
        Ok(())
    }

    /// Checks a shard's metadata read back from the medium against the
    /// layout before anything indexes with its numbers: a size the store
    /// accepts, as many chunks as the size needs (at least one), and every
    /// chunk's record inside an extent.
    pub(super) fn check_meta(&self, key: &[u8], meta: &ShardMeta) -> std::result::Result<(), String> {
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
            self.check_locator(l, span_blocks(l, meta.size, i))
                .map_err(|why| format!("shard {:?} chunk {i}: {why}", key_text(key)))?;
        }
        Ok(())
    }

    /// A record of `blocks` at `l` lies inside one extent of the layout.
    pub(super) fn check_locator(&self, l: Locator, blocks: u32) -> std::result::Result<(), String> {
        let count = self.extents.len();
        if l.extent as usize >= count {
            return Err(format!("extent {} of {count}", l.extent));
        }
        let per = self.extents.blocks_per_extent();
        if l.block.checked_add(blocks).is_none_or(|end| end > per) {
            return Err(format!("blocks {}..+{blocks} past the extent's {per}", l.block));
        }
        Ok(())
    }

    /// Checks a log record against the layout and the index as recovered
    /// so far, so that applying it can neither index out of the extent
    /// table nor take a live count below zero.
    pub(super) fn check_record(&self, record: &LogRecord) -> std::result::Result<(), String> {
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
            LogRecord::Delete { key, .. }
            | LogRecord::Damaged { key, .. }
            | LogRecord::Tombstone { key, .. }
            | LogRecord::Purge { key, .. } => validate_key(key).map_err(|e| e.to_string()),
            LogRecord::Payload { key, chunk, offset, bytes, .. } => {
                validate_key(key).map_err(|e| e.to_string())?;
                if *chunk as usize >= meta::CHUNKS_PER_SHARD_MAX
                    || *offset as usize + bytes.len() > CHUNK_SIZE_BYTES_MAX
                {
                    return Err(format!(
                        "payload piece of chunk {chunk} at {offset}+{} outside any chunk",
                        bytes.len()
                    ));
                }
                Ok(())
            }
            LogRecord::Relocate { key, sequence, chunk, to } => {
                let Some(m) = self.index.get(key).filter(|m| m.sequence == *sequence) else {
                    // Replaced or deleted since: the record changes nothing.
                    return Ok(());
                };
                if *chunk as usize >= m.chunk_count() {
                    return Err(format!("relocation of chunk {chunk} of a {}-chunk shard", m.chunk_count()));
                }
                self.check_locator(*to, span_blocks(*to, m.size, *chunk as usize))
            }
            LogRecord::Reset { extent, .. } => {
                extent_in(*extent)?;
                // Only an emptied extent is ever reset (its relocations
                // come first in the same write): a reset under live data
                // would drop shards the index still points into.
                match self.extents.get(*extent).live_blocks {
                    0 => Ok(()),
                    live => Err(format!("reset of extent {extent}, which still holds {live} live blocks")),
                }
            }
            LogRecord::Vouch { .. } => Ok(()),
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
    pub(super) fn load_entry(&mut self, key: &[u8], meta: &ShardMeta, version: u32) {
        self.next_sequence = self.next_sequence.max(meta.sequence + 1);
        for (i, l) in meta.locators().enumerate() {
            self.extents.load_live(l.extent, live_blocks(l, meta.size, i), meta.written_unix_ms, version);
        }
        if let Some(old) = self.index.insert(key, meta) {
            self.release(&old);
        }
    }
}

/// A damaged copy of metadata found at open, and the bytes to rewrite it
/// with (from a copy that is intact).
#[derive(Debug)]
pub(super) struct MetaRepair {
    offset: u64,
    bytes: Vec<u8>,
    kind: scrub::FindingKind,
    detail: String,
    /// Damage (reported as a finding), rather than the expected end of a
    /// write a crash cut short (completed quietly).
    damage: bool,
}

/// Differing blocks between the copies of a damaged checkpoint that a
/// splice tries every combination of (2^n candidates, each checked
/// against the superblock's CRC).
const SPLICE_BLOCKS_MAX: usize = 8;

/// The checkpoint in force, read from every copy of the metadata region
/// (so that a damaged copy is found and repaired at open, not left for
/// the scrubber): the first copy matching the superblock's CRC; every
/// other is queued for repair. When no copy matches whole (each damaged
/// in a different place), the copies are spliced block by block: of the
/// blocks where they differ (at most `SPLICE_BLOCKS_MAX`), the
/// combination whose CRC is the superblock's is the checkpoint.
fn read_checkpoint(
    dev: &mut dyn BlockDevice,
    sb: &crate::superblock::Superblock,
    offset: u64,
    repairs: &mut Vec<MetaRepair>,
) -> std::result::Result<Vec<u8>, String> {
    let len = sb.store.checkpoint_len_bytes as usize;
    let mut good: Option<(usize, Vec<u8>)> = None;
    let mut problems = Vec::new();
    let mut damaged = Vec::new();
    for (copy, at) in super::meta_copies_of(&sb.layout, offset).into_iter().enumerate() {
        match read_bytes(dev, at, len) {
            Ok(bytes) if crc32c::crc32c(&bytes) == sb.store.checkpoint_crc => {
                good.get_or_insert((copy, bytes));
            }
            Ok(bytes) => {
                problems.push((at, "checksum differs from the superblock's".to_owned()));
                damaged.push(bytes);
            }
            Err(e) => problems.push((at, format!("unreadable: {e}"))),
        }
    }
    let (source, bytes) = if let Some((copy, bytes)) = good {
        (format!("copy {copy}"), bytes)
    } else if let Some(bytes) = splice(&damaged, sb.store.checkpoint_crc) {
        ("blocks of every copy".to_owned(), bytes)
    } else {
        let detail: Vec<String> = problems.iter().map(|(at, why)| format!("copy at {at}: {why}")).collect();
        return Err(format!("no copy matches the superblock ({})", detail.join("; ")));
    };
    for (bad, why) in problems {
        repairs.push(MetaRepair {
            offset: bad,
            bytes: bytes.clone(),
            kind: scrub::FindingKind::Checkpoint,
            detail: format!("checkpoint copy at offset {bad} ({why}) repaired from {source}"),
            damage: true,
        });
    }
    Ok(bytes)
}

/// The combination of two copies' blocks whose CRC is `crc`, if the
/// copies differ in few enough blocks to try them all.
fn splice(copies: &[Vec<u8>], crc: u32) -> Option<Vec<u8>> {
    let [a, b] = copies else { return None };
    let differing: Vec<usize> =
        a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect();
    if differing.is_empty() || differing.len() > SPLICE_BLOCKS_MAX {
        return None;
    }
    let mut candidate = a.clone();
    for pick in 0u32..1 << differing.len() {
        for (bit, &block) in differing.iter().enumerate() {
            let from = if pick & (1 << bit) == 0 { a } else { b };
            candidate[block * BLOCK..(block + 1) * BLOCK].copy_from_slice(&from[block * BLOCK..(block + 1) * BLOCK]);
        }
        if crc32c::crc32c(&candidate) == crc {
            return Some(candidate);
        }
    }
    None
}
