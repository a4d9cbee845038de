//! Group commit: a batch of puts and deletes made durable in three steps
//! (chunk records, one flush, the log blocks that reference them), and
//! only then applied to the index and acknowledged. See `docs/format.md`,
//! "Group commit and what a crash leaves".

use super::stage::Run;
use super::{
    chunk_len, key_text, meta, superblock, validate_key, Completion, Error, HashMap, IoKind, IoOp, LogRecord, Op,
    PutData, ReadToken, Result, ShardMeta, Store, BATCH_OPS_MAX, BLOCK, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX,
    COMMIT_LOG_OP, LOG_BUFFER_SIZE_BYTES, LOG_PAYLOAD_BYTES_MAX, ONE_FLUSH_BATCH_BYTES_MAX, RESERVE_EXTENTS_COUNT,
    STORE_QUEUE_DEPTH,
};

/// A group commit's own operations on the device: how many are in
/// flight, which of the batch's operations had a write fail, why a log
/// write or a flush failed, and whether any data was written.
pub(super) struct WriteBatch {
    outstanding: usize,
    pub(super) failed: Vec<bool>,
    batch_failure: Option<String>,
    pub(super) any_data: bool,
    scratch: Vec<Completion>,
    /// Records gathered and not yet written (`stage_put`).
    pub(super) run: Option<Run>,
    /// The operations of each run written, by its number.
    runs: Vec<Vec<u32>>,
    /// Whether small records share header blocks (`Group`): only in a
    /// commit that flushes its data before its log (`commit_batch`).
    pub(super) groups: bool,
}

impl WriteBatch {
    pub(super) fn new(ops: usize) -> WriteBatch {
        WriteBatch {
            outstanding: 0,
            failed: vec![false; ops],
            batch_failure: None,
            any_data: false,
            scratch: Vec::with_capacity(STORE_QUEUE_DEPTH),
            run: None,
            runs: Vec::new(),
            groups: false,
        }
    }

    /// A write or flush submitted for `op` failed: its operation, every
    /// operation of its run, or (the log's writes and flushes) the batch.
    fn write_failed(&mut self, op: u32, why: &dyn std::fmt::Display) {
        if op != COMMIT_LOG_OP && op & RUN_OP_FLAG != 0 {
            for &i in &self.runs[(op & !RUN_OP_FLAG) as usize] {
                self.failed[i as usize] = true;
            }
            return;
        }
        match self.failed.get_mut(op as usize) {
            Some(failed) => *failed = true,
            None => {
                self.batch_failure.get_or_insert_with(|| why.to_string());
            }
        }
    }
}
/// The `Commit` token's operation for a run's write: this flag and the
/// run's number in `WriteBatch::runs`.
const RUN_OP_FLAG: u32 = 1 << 31;

/// What a commit runs while it waits for the device: the store thread
/// answers finished gets and starts new ones there, so reads keep
/// flowing through a commit's writes and flushes.
pub type Pump<'a> = &'a mut dyn FnMut(&mut Store);

/// Bytes of one index entry in a checkpoint: key length, key, sequence,
/// size, CRC, time, chunk count, 12 bytes per locator.
pub(super) fn entry_len(key: &[u8], chunks: usize) -> u64 {
    (1 + key.len() + 32 + 12 * chunks) as u64
}

pub(super) fn op_key(op: &Op) -> String {
    key_text(op.key())
}

pub(super) fn finish(results: Vec<Option<Result<()>>>, default: impl Fn(usize) -> Result<()>) -> Vec<Result<()>> {
    results.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| default(i))).collect()
}

/// Encodes log block payloads (`pack`) as one log write of `epoch`
/// whose blocks continue a chain at block `first_index` after a block (or
/// checkpoint) of CRC `prev_crc`; returns the bytes and the last CRC.
pub(super) fn encode_log_blocks(
    epoch: u64,
    first_index: u64,
    prev_crc: u32,
    blocks: &[(u32, Vec<u8>)],
) -> (Vec<u8>, u32) {
    let mut bytes = vec![0u8; blocks.len() * BLOCK];
    let mut crc = prev_crc;
    for (k, (count, payload)) in blocks.iter().enumerate() {
        crc = meta::encode_log_block_in_write(
            epoch,
            first_index + k as u64,
            crc,
            *count,
            k as u32,
            payload,
            &mut bytes[k * BLOCK..(k + 1) * BLOCK],
        );
    }
    (bytes, crc)
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
        self.commit_with(ops, &mut |_| {})
    }

    /// As [`Store::commit`], running `pump` each time the commit's I/O
    /// completes something while it waits for its writes and flushes.
    /// `pump` may start and finish gets (never of a key in the batch: the
    /// caller holds those back until the commit answers) and must not
    /// commit.
    pub fn commit_with(&mut self, ops: &[Op], pump: Pump<'_>) -> Vec<Result<()>> {
        let started = std::time::Instant::now();
        let results = self.commit_batch(ops, pump);
        self.counters.commit_latency.record(started.elapsed(), Self::batch_bytes(ops));
        if results.iter().any(|r| matches!(r, Err(Error::Io { .. } | Error::Poisoned { .. }))) {
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        results
    }

    pub(super) fn commit_batch(&mut self, ops: &[Op], pump: Pump<'_>) -> Vec<Result<()>> {
        assert!(ops.len() <= BATCH_OPS_MAX, "batch of {} operations exceeds {BATCH_OPS_MAX}", ops.len());
        let needed = self.extents_needed(ops);
        // Gets in flight keep going through the commit and the chunks its
        // reclamation step moves (their completions are verified as its
        // own are reaped), unless one of them could read what the batch
        // writes: a get that started before an extent was reset (its
        // locators may point into it, and the batch may write there now);
        // or scrub windows are out. Then every read finishes first. (A
        // chunk being moved stays where gets find it until the batch's
        // log names its copy; its extent is reset a commit later.)
        if self.scrub.in_flight() > 0 || self.reads.started_before(self.resets_applied) {
            self.quiesce();
        }
        // Reads reaped and not yet verified hold I/O buffers staging needs.
        self.finish_reaped_reads();
        // The last resort: with free extents down to the reserve, whole
        // extents are evacuated before the batch (a failure here leaves
        // puts to find NoSpace). Normally `reclaim_along` keeps ahead.
        while self.extents.free_count() <= RESERVE_EXTENTS_COUNT + needed {
            match self.reclaim_with(&mut *pump, super::Pace::Foreground, &|| false) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let reclaimed = self.reclaim_along(ops, needed, &mut *pump);
        if let Err(e) = self.check_usable() {
            return ops
                .iter()
                .map(|_| Err(Error::Poisoned { device: e.to_string(), op: crate::error::OpKind::Write }))
                .collect();
        }
        let mut results: Vec<Option<Result<()>>> = (0..ops.len()).map(|_| None).collect();
        let mut staged: Vec<Option<LogRecord>> = (0..ops.len()).map(|_| None).collect();
        let mut exists: HashMap<&[u8], bool> = HashMap::new();
        let mut writes = WriteBatch::new(ops.len());
        let now = superblock::now_unix_ms();
        // Resets need no data; relocated chunks must be durable before the
        // log moves them, which is the two-flush path's order.
        let relocated = reclaimed.iter().any(|r| matches!(r, LogRecord::Relocate { .. }));
        // A landed put's records went to the device whole, so the log
        // cannot carry copies of their payload: two flushes (a landed body
        // is larger than a one-flush batch anyway).
        let landed = ops.iter().any(|op| matches!(op, Op::Put { data, .. } if data.is_landed()));
        // With commits vouched, every batch with a put is (its log carries
        // no payload: a third less written for a lone 4 KiB put); a batch
        // of deletes alone still takes the one-flush path, which needs no
        // confirmation.
        let puts = ops.iter().any(|op| matches!(op, Op::Put { .. }));
        let vouched_instead = self.vouching && puts;
        let one_flush = !(relocated || landed || vouched_instead || Self::batch_bytes(ops) > ONE_FLUSH_BATCH_BYTES_MAX);
        // Small records share header blocks only where the data is durable
        // before the log names it: recovery rewrites a one-flush commit's
        // records from the log's copy one by one (`complete_tail`), which
        // a group's shared header block would not survive.
        writes.groups = !one_flush;

        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put { key, .. } => match self.stage_put(i, op, now, &mut writes, &mut *pump) {
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
        self.submit_run(&mut writes);
        if one_flush {
            if let Some(done) = self.commit_one_flush(ops, &reclaimed, &mut staged, &mut results, &mut writes, pump) {
                return done;
            }
        } else if self.vouching {
            if let Some(done) = self.commit_vouched(ops, &reclaimed, &mut staged, &mut results, &mut writes, pump) {
                return done;
            }
        }
        if let Err(e) = self.await_commit_io(&mut writes, pump) {
            let err = self.fail(&format!("reaping writes failed: {e}"));
            return finish(results, |_| {
                Err(Error::Poisoned { device: err.to_string(), op: crate::error::OpKind::Write })
            });
        }
        self.fail_failed_writes(ops, &writes, &mut staged, &mut results);
        if writes.any_data || relocated {
            if let Err(e) = self.flush_commit(&mut writes, pump) {
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
            if let Err(e) = self.log_records(&records, &mut writes, pump) {
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

    /// Submits one of the commit's writes or flushes (for operation `op`
    /// of the batch, or `COMMIT_LOG_OP`), first making room on the device
    /// when the queue is full.
    pub(super) fn submit_commit_io(&mut self, op: u32, kind: IoKind, writes: &mut WriteBatch) -> Result<()> {
        self.submit_commit_io_then(op, kind, writes, false)
    }

    /// `submit_commit_io`; `with_wait`: handed to the kernel by the wait
    /// that follows (the commit waits for it next: one system call for
    /// both, and the writes so gathered reach the device together).
    fn submit_commit_io_then(&mut self, op: u32, kind: IoKind, writes: &mut WriteBatch, with_wait: bool) -> Result<()> {
        // A wake-up (a request arrived) ends a wait without freeing a slot.
        while self.dev.in_flight() >= STORE_QUEUE_DEPTH {
            self.reap_commit_io(writes)?;
        }
        let io = IoOp { token: ReadToken::Commit { op }.encode(), kind };
        if with_wait {
            self.dev.submit_with_next_reap(io)?;
        } else {
            self.dev.submit(io)?;
        }
        writes.outstanding += 1;
        Ok(())
    }

    /// Writes the gathered run, if any. A write that cannot be submitted
    /// fails the run's operations, as a failed write would.
    pub(super) fn submit_run(&mut self, writes: &mut WriteBatch) {
        let Some(Run { buf, offset, ops, .. }) = writes.run.take() else { return };
        let op = RUN_OP_FLAG | writes.runs.len() as u32;
        writes.runs.push(ops);
        if let Err(e) = self.submit_commit_io(op, IoKind::Write { offset, buf, fua: false }, writes) {
            writes.write_failed(op, &e);
        }
    }

    /// Waits for at least one completion, or for the store's waker (a
    /// request arriving while the thread waits here: a get must not wait
    /// for a flush it has nothing to do with). The commit's own are
    /// counted off (a failure noted against its operation, or the batch);
    /// reads go to the read pipeline and are verified at once, their gets
    /// left finished for the thread to answer.
    pub(super) fn reap_commit_io(&mut self, writes: &mut WriteBatch) -> Result<()> {
        self.collect_commit_io(writes, true)
    }

    /// As [`Store::reap_commit_io`], without waiting: what has completed
    /// by now.
    pub(super) fn poll_commit_io(&mut self, writes: &mut WriteBatch) -> Result<()> {
        self.collect_commit_io(writes, false)
    }

    fn collect_commit_io(&mut self, writes: &mut WriteBatch, wait: bool) -> Result<()> {
        let mut got = std::mem::take(&mut writes.scratch);
        let reaped = self.reap_sorting(wait, &mut got, |c| match ReadToken::decode(c.token) {
            ReadToken::Commit { op } => {
                writes.outstanding -= 1;
                if let Err(e) = &c.result {
                    writes.write_failed(op, e);
                }
                None
            }
            _ => Some(c),
        });
        writes.scratch = got;
        reaped
    }

    /// Waits until every operation the commit submitted has completed,
    /// running `pump` after each completion.
    pub(super) fn await_commit_io(&mut self, writes: &mut WriteBatch, pump: Pump<'_>) -> Result<()> {
        while writes.outstanding > 0 {
            self.reap_commit_io(writes)?;
            pump(self);
        }
        Ok(())
    }

    /// One flush, pumping while it runs; fails if it (or a write before
    /// it) failed. A flush covers only the writes that completed before
    /// it was submitted (a drive may run a flush beside a write still in
    /// flight, and an io-wq worker's `fdatasync` does), so every write
    /// the batch submitted is waited for first.
    pub(super) fn flush_commit(&mut self, writes: &mut WriteBatch, pump: Pump<'_>) -> Result<()> {
        self.await_commit_io(writes, pump)?;
        self.submit_commit_io(COMMIT_LOG_OP, IoKind::Flush, writes)?;
        self.settle_commit_io(writes, pump)
    }

    /// Writes `bytes` (whole blocks) at `offset` as the batch's own write
    /// (a failure fails the batch), from a fresh aligned buffer.
    pub(super) fn submit_batch_write(&mut self, offset: u64, bytes: &[u8], writes: &mut WriteBatch) -> Result<()> {
        let buf = crate::device::IoBuf::copy_of(bytes)?;
        self.submit_commit_io(COMMIT_LOG_OP, IoKind::Write { offset, buf, fua: false }, writes)
    }

    /// Waits for everything submitted, pumping; fails if a write or flush
    /// of the batch's own failed.
    pub(super) fn settle_commit_io(&mut self, writes: &mut WriteBatch, pump: Pump<'_>) -> Result<()> {
        self.await_commit_io(writes, pump)?;
        match writes.batch_failure.take() {
            None => Ok(()),
            Some(why) => Err(Error::Io {
                device: self.name.clone(),
                op: crate::error::OpKind::Flush,
                offset: 0,
                len: 0,
                cause: std::io::Error::other(why),
            }),
        }
    }

    /// Logs `records` (already backed by durable data) and applies them.
    /// When the log half is full, a checkpoint of the store before them
    /// starts the other half first. For the paths that log outside a
    /// commit (scrub, reclamation): every read still in flight finishes
    /// first.
    pub(super) fn make_durable(&mut self, records: &[(usize, LogRecord)]) -> Result<()> {
        self.quiesce();
        self.log_records(records, &mut WriteBatch::new(0), &mut |_| {})
    }

    /// Writes `records` as one log write to every copy of the metadata
    /// region and flushes (pumping while it waits), then applies them.
    /// When the log half is full, the store as it stands (without them)
    /// is checkpointed into the other half first, pumping too: what gets
    /// and listings see meanwhile is durable, and the records open the new
    /// half's log. Only when even the new half has no room for them are
    /// they applied and checkpointed with the rest. A failed log write or
    /// flush fails the store.
    fn log_records(&mut self, records: &[(usize, LogRecord)], writes: &mut WriteBatch, pump: Pump<'_>) -> Result<()> {
        self.check_usable()?;
        let projected = self.projected_checkpoint_bytes(records.iter().map(|(_, r)| r))?;
        let blocks = pack(records.iter().map(|(_, r)| r));
        if !self.log_has_room(blocks.len()) {
            if self.beside.is_some() {
                self.finish_checkpoint(pump)?;
            }
            if !self.log_has_room(blocks.len()) {
                self.checkpoint_with(pump)?;
            }
        }
        if self.log_has_room(blocks.len()) {
            let (bytes, crc) = self.encode_log(&blocks);
            // Every copy at once, then one flush for all of them: the batch
            // is acknowledged when all are durable. A log write is never
            // started before the previous one's flush completed, which is
            // what recovery's argument rests on (docs/format.md, "Metadata
            // that survives rot", and "Group commit" for the last write).
            let written = self.submit_log_copies(&bytes, writes).and_then(|()| self.flush_commit(writes, pump));
            if let Err(e) = written {
                // Whatever was submitted completes first: the device owns
                // those buffers until then.
                let _ = self.await_commit_io(writes, pump);
                return Err(self.fail(&format!("log write failed: {e}")));
            }
            self.advance_log(bytes.len(), blocks.len(), crc);
            for (_, r) in records {
                self.apply(r);
                self.note_logged(r);
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
                | LogRecord::Payload { .. }
                | LogRecord::Vouch { .. } => continue,
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
        pump: Pump<'_>,
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
        let submitted = self.submit_log_copies(&bytes, writes);
        // Whatever was submitted completes before anything returns: the
        // device owns those buffers until then.
        if let Err(e) = self.await_commit_io(writes, pump) {
            return Some(poison(self, results, &format!("reaping writes failed: {e}"), crate::error::OpKind::Write));
        }
        if let Err(e) = submitted {
            return Some(poison(self, results, &format!("log write failed: {e}"), crate::error::OpKind::Write));
        }
        // A failed chunk write whose `Put` went to the log with it cannot
        // be answered for that operation alone: the store stops, and the
        // next open completes the put from the log's copy or finds the
        // log without it (old or new, never anything else).
        if writes.failed.iter().any(|f| *f) || writes.batch_failure.is_some() {
            let why = writes.batch_failure.take().unwrap_or_else(|| "a chunk write failed".to_owned());
            let what = format!("a write of a one-flush commit failed: {why}");
            return Some(poison(self, results, &what, crate::error::OpKind::Write));
        }
        if let Err(e) = self.flush_commit(writes, pump) {
            return Some(poison(self, results, &format!("flush failed: {e}"), crate::error::OpKind::Flush));
        }
        self.advance_log(bytes.len(), blocks.len(), crc);
        for r in resets.iter().chain(staged.iter().flatten()) {
            self.apply(r);
            self.note_logged(r);
        }
        self.checkpoint_bytes = projected;
        self.one_flush_commits += 1;
        let results = results.iter_mut().map(Option::take).collect();
        Some(finish(results, |_| Ok(())))
    }

    /// Each operation whose chunk write failed fails alone: its record is
    /// not logged.
    fn fail_failed_writes(
        &self,
        ops: &[Op],
        writes: &WriteBatch,
        staged: &mut [Option<LogRecord>],
        results: &mut [Option<Result<()>>],
    ) {
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
    }

    /// A batch with a put, when commits are vouched
    /// (`set_vouched_commits`): its chunk records, the chunks its
    /// reclamation step moved and its log write, opened by a `Vouch`, are
    /// in flight together and made durable by one flush.
    ///
    /// Recovery needs no copy of the data: a log write starts only after
    /// the previous one's flush completed, so a later write proves this
    /// one durable, and while it is the last, recovery reads back every
    /// chunk it names and leaves out a put whose chunk does not verify
    /// (`tail.rs`). The store thread confirms a vouched commit no other
    /// follows within half a millisecond with an empty log write
    /// (`confirm`): an acknowledged put is unconfirmed only that long.
    ///
    /// A chunk write that fails fails its operation alone, as on the
    /// two-flush path: the log write, not yet flushed nor followed, is
    /// written again in its place without it before the flush. `None`
    /// when the batch needs the two-flush path (nothing staged, the log
    /// half full, the index outgrowing the region): the caller takes it
    /// with `staged` intact.
    fn commit_vouched(
        &mut self,
        ops: &[Op],
        reclaimed: &[LogRecord],
        staged: &mut [Option<LogRecord>],
        results: &mut [Option<Result<()>>],
        writes: &mut WriteBatch,
        pump: Pump<'_>,
    ) -> Option<Vec<Result<()>>> {
        let vouch = |staged: &[Option<LogRecord>]| LogRecord::Vouch {
            records: (reclaimed.len() + staged.iter().flatten().count()) as u32,
        };
        let first = vouch(staged);
        let in_order = || std::iter::once(&first).chain(reclaimed.iter()).chain(staged.iter().flatten());
        if staged.iter().all(Option::is_none) {
            return None;
        }
        let mut projected = self.projected_checkpoint_bytes(in_order()).ok()?;
        let mut blocks = pack(in_order());
        if !self.log_has_room(blocks.len()) {
            return None;
        }
        let (mut bytes, mut crc) = self.encode_log(&blocks);
        let mut submitted = self.submit_log_copies(&bytes, writes);
        loop {
            // Whatever was submitted completes before anything returns: the
            // device owns those buffers until then.
            if let Err(e) = self.await_commit_io(writes, pump) {
                return Some(poison(
                    self,
                    results,
                    &format!("reaping writes failed: {e}"),
                    crate::error::OpKind::Write,
                ));
            }
            if let Err(e) = submitted {
                return Some(poison(self, results, &format!("log write failed: {e}"), crate::error::OpKind::Write));
            }
            if let Some(why) = writes.batch_failure.take() {
                return Some(poison(self, results, &format!("log write failed: {why}"), crate::error::OpKind::Write));
            }
            let failed = writes.failed.iter().zip(results.iter()).any(|(f, r)| *f && r.is_none());
            if !failed {
                break;
            }
            self.fail_failed_writes(ops, writes, staged, results);
            let again = vouch(staged);
            let in_order = || std::iter::once(&again).chain(reclaimed.iter()).chain(staged.iter().flatten());
            // Fewer records than before: the projection shrinks, and the
            // blocks fit where the first ones did.
            projected = self.projected_checkpoint_bytes(in_order()).ok()?;
            blocks = pack(in_order());
            (bytes, crc) = self.encode_log(&blocks);
            submitted = self.submit_log_copies(&bytes, writes);
        }
        if let Err(e) = self.flush_commit(writes, pump) {
            return Some(poison(self, results, &format!("flush failed: {e}"), crate::error::OpKind::Flush));
        }
        self.advance_log(bytes.len(), blocks.len(), crc);
        for r in reclaimed.iter().chain(staged.iter().flatten()) {
            self.apply(r);
            self.note_logged(r);
        }
        self.checkpoint_bytes = projected;
        self.vouched_end = Some((self.sb.store.epoch, self.log_index));
        self.vouched_commits += 1;
        let results = results.iter_mut().map(Option::take).collect();
        Some(finish(results, |_| Ok(())))
    }

    /// Whether the last log write is a vouched commit's that no later log
    /// write has proved durable yet (see `commit_vouched`).
    pub fn unconfirmed(&self) -> bool {
        self.vouched_end == Some((self.sb.store.epoch, self.log_index))
    }

    /// Proves the last vouched commit durable, if it is still the last log
    /// write, with an empty log write of its own (pumping while it waits):
    /// the store thread's step after a vouched commit no other follows.
    pub fn confirm(&mut self, pump: Pump<'_>) -> Result<()> {
        if !self.unconfirmed() {
            return Ok(());
        }
        self.log_records(&[], &mut WriteBatch::new(0), pump)?;
        self.confirmations += 1;
        Ok(())
    }

    /// Makes commits of batches with a put one-flush commits vouched by
    /// their log write (`commit_vouched`); off (as opened), a batch takes
    /// payload copies in the log (up to `ONE_FLUSH_BATCH_BYTES_MAX`) or
    /// two flushes. The store thread turns it on, and confirms each
    /// vouched commit no other follows.
    pub fn set_vouched_commits(&mut self, on: bool) {
        self.vouching = on;
    }

    /// Vouched commits since open, and empty log writes made to confirm
    /// one.
    pub fn vouched_commits(&self) -> (u64, u64) {
        (self.vouched_commits, self.confirmations)
    }

    /// Encodes log block payloads as the blocks that continue the chain;
    /// returns them and the last block's CRC.
    fn encode_log(&self, blocks: &[(u32, Vec<u8>)]) -> (Vec<u8>, u32) {
        encode_log_blocks(self.sb.store.epoch, self.log_index, self.log_prev_crc, blocks)
    }

    /// The log's end moves past a durable log write.
    fn advance_log(&mut self, len: usize, blocks: usize, crc: u32) {
        self.log_offset += len as u64;
        self.log_index += blocks as u64;
        self.log_prev_crc = crc;
    }

    /// Submits `bytes` at the log's end in every copy of the metadata
    /// region, with the wait for them: the caller waits next.
    fn submit_log_copies(&mut self, bytes: &[u8], writes: &mut WriteBatch) -> Result<()> {
        // Pieces of at most one reusable buffer (a small log write, nearly
        // all of them, is one piece per copy); fresh ones past the pool.
        let step = if bytes.len() <= LOG_BUFFER_SIZE_BYTES { LOG_BUFFER_SIZE_BYTES } else { CHUNK_SIZE_BYTES_MAX };
        for offset in self.meta_copies_of(self.log_offset) {
            for (i, piece) in bytes.chunks(step).enumerate() {
                let mut buf = match self.log_buffers.take_if_fits(piece.len()) {
                    Some(buf) => buf,
                    None => crate::device::IoBuf::standalone(piece.len())?,
                };
                buf.as_mut_slice().copy_from_slice(piece);
                let at = offset + (i * step) as u64;
                self.submit_commit_io_then(COMMIT_LOG_OP, IoKind::Write { offset: at, buf, fua: false }, writes, true)?;
            }
        }
        Ok(())
    }
}

/// Fails the store (`what` says why) and every operation of the batch not
/// yet answered.
fn poison(
    store: &mut Store,
    results: &mut [Option<Result<()>>],
    what: &str,
    op: crate::error::OpKind,
) -> Vec<Result<()>> {
    let err = store.fail(what);
    let results = results.iter_mut().map(Option::take).collect();
    finish(results, |_| Err(Error::Poisoned { device: err.to_string(), op }))
}

/// A put's payload as `Payload` records, each filling a log block.
fn payload_pieces(key: &[u8], meta: &ShardMeta, data: &PutData) -> Vec<LogRecord> {
    let step = meta::payload_piece_bytes_max(key.len());
    let mut out = Vec::new();
    for c in 0..meta.chunk_count() {
        let start = c * CHUNK_SIZE_BYTES_MAX;
        let len = chunk_len(meta.size, c);
        // An empty payload still gets its (empty) piece: the chunk record's
        // header is completed like any other. Pieces are slices of the
        // put's buffer (copied only where a piece spans two of the pieces
        // the put arrived in) until the log block is encoded.
        for at in (0..len.max(1)).step_by(step) {
            out.push(LogRecord::Payload {
                key: key.to_vec(),
                sequence: meta.sequence,
                chunk: c as u32,
                offset: at as u32,
                bytes: data.slice(start + at..start + (at + step).min(len)),
            });
        }
    }
    out
}
