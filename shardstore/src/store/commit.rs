//! Group commit: a batch of puts and deletes made durable in three steps
//! (chunk records, one flush, the log blocks that reference them), and
//! only then applied to the index and acknowledged. See `docs/format.md`,
//! "Group commit and what a crash leaves".

use super::{
    chunk_count, chunk_len, combine_crcs, key_text, meta, record, record_blocks, record_size_bytes, superblock,
    validate_key, BlockDeviceExt, Completion, Error, HashMap, IoKind, IoOp, LogRecord, Op, RecordHeader, Result,
    ShardMeta, Store, BATCH_OPS_MAX, BLOCK, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX, LOG_PAYLOAD_BYTES_MAX,
    ONE_FLUSH_BATCH_BYTES_MAX, RESERVE_EXTENTS_COUNT, SHARD_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
};

/// Data writes of one commit in flight: their completions, which
/// operations had a write fail, and whether anything was written.
pub(super) struct WriteBatch {
    pub(super) out: Vec<Completion>,
    pub(super) failed: Vec<bool>,
    pub(super) any_data: bool,
}

impl WriteBatch {
    pub(super) fn collect_failures(&mut self) {
        for c in self.out.drain(..) {
            if c.result.is_err() {
                if let Some(failed) = self.failed.get_mut(c.token as usize) {
                    *failed = true;
                }
            }
        }
    }
}

/// Bytes of one index entry in a checkpoint: key length, key, sequence,
/// size, CRC, time, chunk count, 12 bytes per locator.
pub(super) fn entry_len(key: &[u8], chunks: usize) -> u64 {
    (1 + key.len() + 32 + 12 * chunks) as u64
}

pub(super) fn op_key(op: &Op) -> String {
    match op {
        Op::Put { key, .. } | Op::Delete { key } | Op::Tombstone { key, .. } | Op::Purge { key, .. } => key_text(key),
    }
}

pub(super) fn finish(results: Vec<Option<Result<()>>>, default: impl Fn(usize) -> Result<()>) -> Vec<Result<()>> {
    results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| default(i))).collect()
}

/// Packs records into log block payloads: (record count, bytes).
pub(super) fn pack<'a>(records: impl Iterator<Item = &'a LogRecord>) -> Vec<(u32, Vec<u8>)> {
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

impl Store {
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

    pub(super) fn commit_batch(&mut self, ops: &[Op]) -> Vec<Result<()>> {
        assert!(ops.len() <= BATCH_OPS_MAX, "batch of {} operations exceeds {BATCH_OPS_MAX}", ops.len());
        self.quiesce();
        // The last resort: with free extents down to the reserve, whole
        // extents are evacuated before the batch (a failure here leaves
        // puts to find NoSpace). Normally `reclaim_along` keeps ahead.
        let needed = self.extents_needed(ops);
        while self.extents.free_count() <= RESERVE_EXTENTS_COUNT + needed {
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
                Op::Put { key, .. } => match self.stage_put(i, op, now, &mut writes) {
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
                Op::Tombstone { key, version } | Op::Purge { key, version } => {
                    if let Err(e) = validate_key(key) {
                        results[i] = Some(Err(e));
                        continue;
                    }
                    staged[i] = Some(if matches!(op, Op::Tombstone { .. }) {
                        exists.insert(key.as_slice(), false);
                        let sequence = self.next_sequence.max(*version);
                        self.next_sequence = sequence + 1;
                        LogRecord::Tombstone { key: key.clone(), sequence }
                    } else {
                        LogRecord::Purge { key: key.clone(), sequence: *version }
                    });
                }
            }
        }
        // Resets need no data; relocated chunks must be durable before the
        // log moves them, which is the two-flush path's order.
        let relocated = reclaimed.iter().any(|r| matches!(r, LogRecord::Relocate { .. }));
        if !relocated && Self::batch_bytes(ops) <= ONE_FLUSH_BATCH_BYTES_MAX {
            if let Some(done) = self.commit_one_flush(ops, &reclaimed, &mut staged, &mut results, &mut writes) {
                return done;
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
    pub(super) fn stage_put(&mut self, i: usize, put: &Op, now: u64, writes: &mut WriteBatch) -> Result<LogRecord> {
        let Op::Put { key, data, crc32c: expected, version } = put else { unreachable!("stage_put stages puts") };
        let (key, data): (&[u8], &[u8]) = (key, data);
        let (expected, version) = (*expected, *version);
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
        let sequence = self.next_sequence.max(version.unwrap_or(0));
        self.next_sequence = sequence + 1;
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
            let Some(mut loc) = self.extents.allocate_put(record_blocks(key.len(), size, c)) else {
                return Err(Error::NoSpace(format!(
                    "{}: no free extent for a {size}-byte shard ({RESERVE_EXTENTS_COUNT} are held back for reclamation)",
                    self.name
                )));
            };
            let header = RecordHeader {
                key: key.to_vec(),
                sequence,
                extent: loc.extent,
                generation: self.extents.get(loc.extent).generation,
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
    pub(super) fn make_durable(&mut self, records: &[(usize, LogRecord)]) -> Result<()> {
        // The log is written one operation at a time: every read still in
        // flight (a get, a scrub window) finishes first, whichever path
        // (commit, scrub, reclamation) logs.
        self.quiesce();
        self.check_usable()?;
        let projected = self.projected_checkpoint_bytes(records.iter().map(|(_, r)| r))?;
        let blocks = pack(records.iter().map(|(_, r)| r));
        if self.log_has_room(blocks.len()) {
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

    /// The checkpoint's size once `records` are applied, or `NoSpace` when
    /// it would no longer fit a half of the metadata region: a batch whose
    /// checkpoint could not be written later is refused before anything
    /// changes.
    fn projected_checkpoint_bytes<'a>(&self, records: impl Iterator<Item = &'a LogRecord>) -> Result<u64> {
        let (mut added, mut removed) = (0u64, 0u64);
        for r in records {
            let key = match r {
                LogRecord::Put { key, meta } => {
                    added += entry_len(key, meta.chunk_count());
                    key
                }
                LogRecord::Delete { key, .. } => key,
                LogRecord::Tombstone { key, .. } => {
                    added += meta::tombstone_entry_len(key);
                    key
                }
                LogRecord::Damaged { key, .. } => {
                    added += meta::damage_entry_len(key);
                    continue;
                }
                LogRecord::Relocate { .. }
                | LogRecord::Reset { .. }
                | LogRecord::Scrubbed { .. }
                | LogRecord::Purge { .. }
                | LogRecord::Payload { .. } => continue,
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
        Ok(projected)
    }

    /// Whether `blocks` more log blocks fit the active half.
    fn log_has_room(&self, blocks: usize) -> bool {
        let half_end = self.half_offset(self.sb.store.half) + self.sb.layout.meta_size_bytes / 2;
        self.log_offset + blocks as u64 * BLOCK_SIZE_BYTES <= half_end
    }

    /// The single writer's commit: the batch's chunk records, a copy of
    /// their payload in the log (`Payload` records before each `Put`) and
    /// the log blocks are written together, to every copy of the metadata
    /// region, and made durable by one flush. A crash before the flush may
    /// leave the log without the data: recovery then rewrites the chunk
    /// from the log's copy (`complete_tail`), so a put whose log landed is
    /// whole whether the crash tore it or its data rotted after it was
    /// acknowledged, and the rot is reported. `None` when the batch needs
    /// the two-flush path (nothing staged, the log half full, the index
    /// outgrowing the region): the caller takes it with `staged` intact.
    fn commit_one_flush(
        &mut self,
        ops: &[Op],
        resets: &[LogRecord],
        staged: &mut [Option<LogRecord>],
        results: &mut [Option<Result<()>>],
        writes: &mut WriteBatch,
    ) -> Option<Vec<Result<()>>> {
        let mut pieces: Vec<Vec<LogRecord>> = (0..ops.len()).map(|_| Vec::new()).collect();
        for (i, record) in staged.iter().enumerate() {
            if let (Some(LogRecord::Put { key, meta }), Op::Put { data, .. }) = (record, &ops[i]) {
                pieces[i] = payload_pieces(key, meta, data);
            }
        }
        // Resets first, as on the two-flush path.
        let in_order = || resets.iter().chain(staged.iter().zip(&pieces).flat_map(|(r, p)| p.iter().chain(r.iter())));
        if staged.iter().all(Option::is_none) {
            return None;
        }
        let projected = self.projected_checkpoint_bytes(in_order()).ok()?;
        let blocks = pack(in_order());
        if !self.log_has_room(blocks.len()) {
            return None;
        }
        let (bytes, crc) = self.encode_log(&blocks);
        let mut poisoned = |store: &mut Store, what: String, op| {
            let err = store.fail(&what);
            let results = results.iter_mut().map(Option::take).collect();
            Some(finish(results, |_| Err(Error::Poisoned { device: err.to_string(), op })))
        };
        let submitted = self.submit_copies(&bytes, &mut writes.out);
        // Whatever was submitted completes before anything returns: the
        // device owns those buffers until then.
        while self.dev.in_flight() > 0 {
            if let Err(e) = self.dev.reap(self.dev.in_flight(), &mut writes.out) {
                return poisoned(self, format!("reaping writes failed: {e}"), crate::error::OpKind::Write);
            }
        }
        if let Err(e) = submitted {
            return poisoned(self, format!("log write failed: {e}"), crate::error::OpKind::Write);
        }
        // A failed chunk write whose `Put` went to the log with it cannot
        // be answered for that operation alone: the store stops, and the
        // next open completes the put from the log's copy or finds the
        // log without it (old or new, never anything else).
        if let Some(failed) = writes.out.iter().find_map(|c| c.result.as_ref().err()) {
            let what = format!("a write of a one-flush commit failed: {failed}");
            return poisoned(self, what, crate::error::OpKind::Write);
        }
        if let Err(e) = self.dev.flush() {
            return poisoned(self, format!("flush failed: {e}"), crate::error::OpKind::Flush);
        }
        self.advance_log(bytes.len(), blocks.len(), crc);
        for r in resets.iter().chain(staged.iter().flatten()) {
            self.apply(r);
        }
        self.checkpoint_bytes = projected;
        self.one_flush_commits += 1;
        let results = results.iter_mut().map(Option::take).collect();
        Some(finish(results, |_| Ok(())))
    }

    pub(super) fn write_log_blocks(&mut self, blocks: &[(u32, Vec<u8>)]) -> Result<()> {
        let (bytes, crc) = self.encode_log(blocks);
        // Every copy at once, then one flush for all of them: the batch is
        // acknowledged when all are durable, at the cost of one write and
        // one flush rather than one barrier per copy. A log write is never
        // started before the previous one completed in every copy, which
        // is what recovery's argument rests on (docs/format.md, "Metadata
        // that survives rot").
        if let Err(e) = self.write_copies(&bytes) {
            return Err(self.fail(&format!("log write failed: {e}")));
        }
        self.advance_log(bytes.len(), blocks.len(), crc);
        Ok(())
    }

    /// Encodes log block payloads as the blocks that continue the chain;
    /// returns them and the last block's CRC.
    fn encode_log(&self, blocks: &[(u32, Vec<u8>)]) -> (Vec<u8>, u32) {
        let mut bytes = vec![0u8; blocks.len() * BLOCK];
        let mut crc = self.log_prev_crc;
        for (k, (count, payload)) in blocks.iter().enumerate() {
            crc = meta::encode_log_block_in_write(
                self.sb.store.epoch,
                self.log_index + k as u64,
                crc,
                *count,
                k as u32,
                payload,
                &mut bytes[k * BLOCK..(k + 1) * BLOCK],
            );
        }
        (bytes, crc)
    }

    /// The log's end moves past a durable log write.
    fn advance_log(&mut self, len: usize, blocks: usize, crc: u32) {
        self.log_offset += len as u64;
        self.log_index += blocks as u64;
        self.log_prev_crc = crc;
    }

    /// Writes `bytes` at the log's end in every copy of the metadata
    /// region, all in flight at once, waits for every one, then flushes
    /// once so that all are durable.
    fn write_copies(&mut self, bytes: &[u8]) -> Result<()> {
        debug_assert_eq!(self.dev.in_flight(), 0, "log writes start on an idle device");
        let mut done = Vec::new();
        let submitted = self.submit_copies(bytes, &mut done);
        // Whatever was submitted completes before anything returns: the
        // device owns those buffers until then.
        while self.dev.in_flight() > 0 {
            if let Err(e) = self.dev.reap(self.dev.in_flight(), &mut done) {
                return Err(submitted.err().unwrap_or(e));
            }
        }
        submitted?;
        done.into_iter().try_for_each(|c| c.result)?;
        self.dev.flush()
    }

    /// Submits `bytes` at the log's end in every copy of the metadata
    /// region (reaping into `done` when the queue is full); the caller
    /// reaps the rest.
    fn submit_copies(&mut self, bytes: &[u8], done: &mut Vec<Completion>) -> Result<()> {
        for offset in self.meta_copies_of(self.log_offset) {
            for (i, piece) in bytes.chunks(CHUNK_SIZE_BYTES_MAX).enumerate() {
                let mut buf = crate::device::IoBuf::standalone(piece.len())?;
                buf.as_mut_slice().copy_from_slice(piece);
                if self.dev.in_flight() == STORE_QUEUE_DEPTH {
                    self.dev.reap(1, done)?;
                }
                let at = offset + (i * CHUNK_SIZE_BYTES_MAX) as u64;
                self.dev.submit(IoOp { token: u64::MAX, kind: IoKind::Write { offset: at, buf, fua: false } })?;
            }
        }
        Ok(())
    }
}

/// A put's payload as `Payload` records, each filling a log block.
fn payload_pieces(key: &[u8], meta: &ShardMeta, data: &[u8]) -> Vec<LogRecord> {
    let step = meta::payload_piece_bytes_max(key.len());
    let mut out = Vec::new();
    for c in 0..meta.chunk_count() {
        let start = c * CHUNK_SIZE_BYTES_MAX;
        let payload = &data[start..start + chunk_len(meta.size, c)];
        // An empty payload still gets its (empty) piece: the chunk record's
        // header is completed like any other.
        let pieces: Vec<&[u8]> = if payload.is_empty() { vec![payload] } else { payload.chunks(step).collect() };
        for (p, piece) in pieces.into_iter().enumerate() {
            out.push(LogRecord::Payload {
                key: key.to_vec(),
                sequence: meta.sequence,
                chunk: c as u32,
                offset: (p * step) as u32,
                bytes: piece.to_vec(),
            });
        }
    }
    out
}
