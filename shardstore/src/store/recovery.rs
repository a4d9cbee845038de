//! Recovery: opening a store from the superblock in force, its
//! checkpoint and the log after it, checking every decoded structure
//! against the layout before its numbers index anything (a violation is
//! `Corruption` with the offset, never a panic).

use super::{
    chunk_count, encode_checkpoint, key_text, meta, read_bytes, record_blocks, record_size_bytes, scrub, superblock,
    validate_key, BlockDevice, BlockDeviceExt, BufferPool, CheckpointHeader, Error, ExtentInfo, ExtentTable, Index,
    Locator, LogRecord, ReadPipeline, ReclaimCounts, RepairList, Result, ShardMeta, Store, BLOCK, BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX, SHARD_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
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
        store.extents.recovered();
        store.checkpoint_bytes = encode_checkpoint(&store.checkpoint_state(0), &store.index).len() as u64;
        // From now on a crash must be visible at the next open.
        if read_only {
            store.failed = Some("opened read-only".to_owned());
        } else if store.sb.clean_shutdown {
            store.sb = superblock::commit(store.dev.as_mut(), &store.sb, |sb| sb.clean_shutdown = false)?;
        }
        Ok(store)
    }

    pub(super) fn replay_log(&mut self, half_end: u64) -> Result<()> {
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
            self.check_locator(l, record_blocks(key.len(), meta.size, i))
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
    pub(super) fn load_entry(&mut self, key: &[u8], meta: &ShardMeta, version: u32) {
        self.next_sequence = self.next_sequence.max(meta.sequence + 1);
        for (i, l) in meta.locators().enumerate() {
            self.extents.load_live(l.extent, record_blocks(key.len(), meta.size, i), meta.written_unix_ms, version);
        }
        if let Some(old) = self.index.insert(key, meta) {
            self.release(key, &old);
        }
    }
}
