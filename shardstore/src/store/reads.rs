//! The read pipeline: gets in progress in a slab, chunk reads kept in
//! flight up to the queue depth, each verified against its locator's CRC
//! as it completes (and a whole-shard read against the shard's CRC), and
//! a finished get handed out once; `quiesce` finishes every read in
//! flight before a path that uses the device one operation at a time.

use super::{
    chunk_len, combine_crcs, key_text, record, scrub, Completion, Error, IoKind, IoOp, Result, ShardMeta, Store,
    CHUNK_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
};

/// One get in progress.
#[derive(Debug)]
pub(super) struct GetCtx {
    pub(super) id: u64,
    pub(super) key: Vec<u8>,
    pub(super) meta: ShardMeta,
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) out: Vec<u8>,
    pub(super) remaining: usize,
    pub(super) error: Option<Error>,
    /// Verified payload CRC of each chunk, for the whole-shard check.
    pub(super) chunk_crcs: Vec<u32>,
    pub(super) started: std::time::Instant,
    /// `Store::resets_applied` when it started: its locators point into
    /// no extent reset before then.
    pub(super) resets_seen: u64,
}

/// A finished get: its id and its verified bytes, or why not.
pub type FinishedGet = (u64, Result<Vec<u8>>);

/// What a read on the device belongs to, carried in its `user_data`: a
/// chunk of a get in progress, or a scrub window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadToken {
    Get {
        slot: u32,
        chunk: u32,
    },
    Scrub {
        window: u32,
    },
    /// Not a read: a group commit's own write or flush, for operation
    /// `op` of its batch (`COMMIT_LOG_OP` for log writes and flushes).
    /// Gets keep flowing while a commit waits, so its completions and
    /// theirs come back from the same ring.
    Commit {
        op: u32,
    },
    /// Not a get's read: reclamation's read or write of the `index`-th
    /// chunk it moves. Gets keep flowing while chunks move, as they do
    /// through a commit.
    Reclaim {
        index: u32,
    },
    /// Not a read: a write of a checkpoint written beside commits
    /// (`checkpoint::Beside`), which completes through whatever reaps.
    Checkpoint,
}

/// The `Commit` token's operation for writes and flushes that belong to
/// the whole batch rather than one of its operations.
pub(super) const COMMIT_LOG_OP: u32 = u32::MAX;

impl ReadToken {
    /// The top bit tells a get (clear) from the rest; the next bit a
    /// scrub window (clear) from a commit's or reclamation's own
    /// operation, and the third a commit's (clear) from reclamation's. A
    /// get's slot takes the 31 bits below the top, its chunk the low 32.
    const SCRUB_BIT: u64 = 1 << 63;
    const COMMIT_BIT: u64 = 1 << 62;
    const RECLAIM_BIT: u64 = 1 << 61;
    const CHECKPOINT_BIT: u64 = 1 << 60;

    pub(super) fn encode(self) -> u64 {
        match self {
            ReadToken::Get { slot, chunk } => {
                assert!(slot < 1 << 31, "get slot {slot} past the token's 31 bits");
                (u64::from(slot) << 32) | u64::from(chunk)
            }
            ReadToken::Scrub { window } => Self::SCRUB_BIT | u64::from(window),
            ReadToken::Commit { op } => Self::SCRUB_BIT | Self::COMMIT_BIT | u64::from(op),
            ReadToken::Reclaim { index } => Self::SCRUB_BIT | Self::COMMIT_BIT | Self::RECLAIM_BIT | u64::from(index),
            ReadToken::Checkpoint => Self::SCRUB_BIT | Self::COMMIT_BIT | Self::RECLAIM_BIT | Self::CHECKPOINT_BIT,
        }
    }

    pub(super) fn decode(token: u64) -> ReadToken {
        if token & Self::SCRUB_BIT == 0 {
            ReadToken::Get { slot: (token >> 32) as u32, chunk: token as u32 }
        } else if token & Self::COMMIT_BIT == 0 {
            ReadToken::Scrub { window: token as u32 }
        } else if token & Self::RECLAIM_BIT == 0 {
            ReadToken::Commit { op: token as u32 }
        } else if token & Self::CHECKPOINT_BIT == 0 {
            ReadToken::Reclaim { index: token as u32 }
        } else {
            ReadToken::Checkpoint
        }
    }
}

/// The reads in progress, owned in one place: gets in a slab indexed by
/// their slot, chunk reads waiting for room on the device, completions
/// reaped and not yet verified, and finished gets waiting to be taken
/// (the one exit: every finished get goes there first).
#[derive(Debug, Default)]
pub(super) struct ReadPipeline {
    gets: Vec<Option<GetCtx>>,
    queue: std::collections::VecDeque<(u32, u32)>,
    completions: Vec<Completion>,
    finished: Vec<FinishedGet>,
}

impl ReadPipeline {
    /// A read's completion reaped by a path other than the read path's
    /// own (a commit waiting for its writes).
    pub(super) fn reaped_elsewhere(&mut self, c: Completion) {
        self.completions.push(c);
    }

    pub(super) fn new() -> ReadPipeline {
        ReadPipeline { completions: Vec::with_capacity(STORE_QUEUE_DEPTH), ..ReadPipeline::default() }
    }

    /// Whether chunk reads of gets wait for room on the device (the
    /// scrubber then holds back: it never delays a get).
    pub(super) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a get in progress started before the `resets`-th extent
    /// reset (and may read an extent now free to be written again).
    pub(super) fn started_before(&self, resets: u64) -> bool {
        self.gets.iter().flatten().any(|g| g.resets_seen < resets)
    }

    fn any_get(&self) -> bool {
        self.gets.iter().any(Option::is_some)
    }

    /// A free slot for a new get.
    fn free_slot(&mut self) -> u32 {
        let slot = self.gets.iter().position(Option::is_none).unwrap_or_else(|| {
            self.gets.push(None);
            self.gets.len() - 1
        });
        slot as u32
    }

    fn ctx(&mut self, slot: u32) -> &mut GetCtx {
        self.gets[slot as usize].as_mut().expect("a read of a live get")
    }
}

/// When a chunk read `start_reads` submits reaches the kernel.
#[derive(Debug, Clone, Copy)]
enum Handoff {
    /// As `BlockDevice::submit` hands it over (by the next enter at the latest).
    Now,
    /// With the wait that follows (one enter submits and waits).
    WithNextReap,
}

impl Store {
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
        let slot = self.reads.free_slot();
        for chunk in first..=last {
            self.reads.queue.push_back((slot, chunk as u32));
        }
        self.reads.gets[slot as usize] = Some(GetCtx {
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
            resets_seen: self.resets_applied,
        });
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth, collects what has
    /// completed (if `wait` and any are in flight, waiting for at least one
    /// completion or a call of the [`Store::waker`]), and appends finished
    /// gets to `done`.
    pub fn poll_gets(&mut self, wait: bool, done: &mut Vec<FinishedGet>) -> Result<()> {
        self.submit_and_reap_gets(wait, done)?;
        while self.finish_next_read(done) {}
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth (the device hands
    /// them to the kernel at its next enter at the latest). Gets that end
    /// without I/O go to `done`.
    pub fn submit_gets(&mut self, done: &mut Vec<FinishedGet>) {
        self.start_reads(done, Handoff::Now);
    }

    /// [`Store::submit_gets`] then [`Store::reap_gets`], with the new reads
    /// handed to the kernel by the same system call that waits (one enter
    /// per turn of a serving loop instead of two).
    pub fn submit_and_reap_gets(&mut self, wait: bool, done: &mut Vec<FinishedGet>) -> Result<()> {
        self.start_reads(done, Handoff::WithNextReap);
        self.reap_gets(wait, done)
    }

    fn start_reads(&mut self, done: &mut Vec<FinishedGet>, handoff: Handoff) {
        // Reaped reads not yet finished still hold their buffers: a read
        // goes out only when a buffer is free for it.
        while self.dev.in_flight() + self.reads.completions.len() < STORE_QUEUE_DEPTH {
            let Some((slot, chunk)) = self.reads.queue.pop_front() else { break };
            let ctx = self.reads.ctx(slot);
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
                self.finish_chunk(slot, result);
                continue;
            }
            let Some(buf) = self.pool.take(len) else {
                // A commit copying a put holds a buffer no slot carries
                // yet: this read goes out once a buffer is back.
                self.reads.queue.push_front((slot, chunk));
                break;
            };
            let at = self.payload_offset(loc);
            let token = ReadToken::Get { slot, chunk }.encode();
            let op = IoOp { token, kind: IoKind::Read { offset: at, buf } };
            let submitted = match handoff {
                Handoff::Now => self.dev.submit(op),
                Handoff::WithNextReap => self.dev.submit_with_next_reap(op),
            };
            if let Err(e) = submitted {
                self.finish_chunk(slot, Err(e));
            }
        }
        done.append(&mut self.reads.finished);
    }

    /// Collects completed reads (if `wait` and any are in flight, waiting
    /// for at least one or a call of the [`Store::waker`]) for
    /// [`Store::finish_next_read`]; submits what the device still holds.
    pub fn reap_gets(&mut self, wait: bool, done: &mut Vec<FinishedGet>) -> Result<()> {
        let reaped = self.reap_reads(if wait { Wait::Yes } else { Wait::No });
        done.append(&mut self.reads.finished);
        reaped
    }

    /// Waits for a call of the [`Store::waker`] for at most `timeout`, or
    /// for a completion if anything is in flight, collecting completed
    /// reads as [`Store::reap_gets`] does: the idle wait of a thread whose
    /// waker also announces work of its own (`thread::Sidecar`).
    pub fn wait_for_wake(&mut self, timeout: std::time::Duration, done: &mut Vec<FinishedGet>) -> Result<()> {
        let reaped = self.reap_reads(Wait::Idle(timeout));
        done.append(&mut self.reads.finished);
        reaped
    }

    fn reap_reads(&mut self, wait: Wait) -> Result<()> {
        if self.dev.in_flight() == 0 && !matches!(wait, Wait::Idle(_)) {
            return Ok(());
        }
        let mut completions = std::mem::take(&mut self.reads.completions);
        let reaped = match wait {
            Wait::No => self.dev.reap(0, &mut completions),
            Wait::Yes => self.dev.reap_or_wake(&mut completions),
            Wait::Idle(timeout) => self.dev.wait_for_wake(timeout, &mut completions),
        };
        if let Err(e) = reaped {
            // The ring itself failed: no get in progress can finish. Answer
            // them all and stop serving, rather than wait forever.
            let why = format!("reaping reads failed: {e}");
            let _ = self.fail(&why);
            self.reads.queue.clear();
            self.scrub.abandon_windows();
            for ctx in self.reads.gets.iter_mut().filter_map(Option::take) {
                self.reads.finished.push((
                    ctx.id,
                    Err(Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Read }),
                ));
            }
            // Reads reaped before the failure belong to the gets just answered.
            completions.clear();
            self.reads.completions = completions;
            return Err(e);
        }
        // Finished first in, first out: `finish_next_read` pops.
        completions.reverse();
        self.reads.completions = completions;
        Ok(())
    }

    /// Verifies the next reaped read and finishes its get (or scrub window)
    /// when it was the last piece; false when none is left. A thread serving
    /// clients answers a finished get before it verifies the next read, so
    /// the client's next request can go to the device sooner.
    pub fn finish_next_read(&mut self, done: &mut Vec<FinishedGet>) -> bool {
        let Some(c) = self.reads.completions.pop() else { return false };
        match ReadToken::decode(c.token) {
            ReadToken::Scrub { window } => self.scrub_window_done(window as usize, c),
            ReadToken::Get { slot, chunk } => {
                let result = self.verify_chunk(slot, chunk as usize, c);
                self.finish_chunk(slot, result);
            }
            // A commit or reclamation routes its own completions to itself
            // while it waits; one reaching reads belongs to one that gave
            // up when a reap failed, after it failed the store and
            // answered its callers. The device hands the buffer back here.
            ReadToken::Commit { .. } | ReadToken::Reclaim { .. } => {
                debug_assert!(self.failed.is_some(), "a commit's completion outlived it on a working store");
            }
            ReadToken::Checkpoint => self.checkpoint_write_done(&c),
        }
        done.append(&mut self.reads.finished);
        true
    }

    /// Verifies the reads a commit reaped while it waited for its own
    /// writes, finishing their gets (taken by `take_finished_gets`).
    pub(super) fn finish_reaped_reads(&mut self) {
        let mut finished = Vec::new();
        while self.finish_next_read(&mut finished) {}
        self.reads.finished.append(&mut finished);
    }

    /// What a commit, checkpoint or reclamation waiting on the device does
    /// with what it completed (if `wait`, at least one completion or a
    /// wake-up, as [`Store::waker`] allows): each completion goes to `own`,
    /// which keeps its own and gives back the rest; those, reads of gets
    /// and scrub windows, are verified at once, their gets left finished.
    /// With nothing on the device it never waits: only a wake-up, the next
    /// request, would end the wait, and these callers wait for their own
    /// I/O, never for requests (a checkpoint's commit once hung so).
    pub(super) fn reap_sorting(
        &mut self,
        wait: bool,
        scratch: &mut Vec<Completion>,
        mut own: impl FnMut(Completion) -> Option<Completion>,
    ) -> Result<()> {
        let wait = wait && self.dev.in_flight() > 0;
        let reaped = if wait { self.dev.reap_or_wake(scratch) } else { self.dev.reap(0, scratch) };
        for c in scratch.drain(..) {
            if let Some(c) = own(c) {
                self.reads.reaped_elsewhere(c);
            }
        }
        self.finish_reaped_reads();
        reaped.map(drop)
    }

    /// Gets that finished while a commit or checkpoint drained the device.
    pub fn take_finished_gets(&mut self, done: &mut Vec<FinishedGet>) {
        done.append(&mut self.reads.finished);
    }

    /// Ends a wait for the device in progress at `at`, once, as a wake
    /// from another thread would (`BlockDevice::wake_at`).
    pub fn wake_at(&mut self, at: Option<std::time::Instant>) {
        self.dev.wake_at(at);
    }

    /// A handle that ends a waiting [`Store::poll_gets`] early from another
    /// thread (`None` when the device's waits are never long).
    pub fn waker(&mut self) -> Result<Option<std::sync::Arc<dyn crate::device::Wake>>> {
        self.dev.waker()
    }

    /// Queues a socket operation on the device's ring (see
    /// [`crate::device::BlockDevice::submit_socket`]).
    pub fn submit_socket(&mut self, token: u64, op: crate::sockets::SocketOp) -> Result<()> {
        self.dev.submit_socket(token, op)
    }

    /// Socket operations completed since the last call.
    pub fn take_socket_completions(&mut self, out: &mut Vec<crate::sockets::SocketDone>) {
        self.dev.take_socket_completions(out);
    }

    /// Socket operations queued or in flight.
    pub fn sockets_in_flight(&self) -> usize {
        self.dev.sockets_in_flight()
    }

    /// Whether the device's ring takes socket operations.
    pub fn supports_sockets(&self) -> bool {
        self.dev.supports_sockets()
    }

    /// Gets started and not yet finished.
    pub fn gets_in_progress(&self) -> usize {
        self.reads.gets.iter().filter(|g| g.is_some()).count()
    }

    /// Operations handed to the device and not yet reaped: each will
    /// complete (or be found stalled by the device's watch).
    pub fn device_in_flight(&self) -> usize {
        self.dev.in_flight()
    }

    /// Reads of started gets not yet handed to the device.
    pub fn reads_unsubmitted(&self) -> usize {
        self.reads.queue.len()
    }

    /// Whether the device has something to complete that the thread must
    /// reap: gets in progress, scrub reads, or the writes of a checkpoint
    /// beside commits.
    pub fn completions_pending(&self) -> bool {
        self.scrub.in_flight() > 0 || self.reads.any_get() || self.beside.as_ref().is_some_and(|b| b.in_flight > 0)
    }

    fn verify_chunk(&mut self, slot: u32, chunk: usize, c: Completion) -> Result<()> {
        let loc = self.reads.ctx(slot).meta.chunk(chunk);
        let at = self.payload_offset(loc);
        let ctx = self.reads.gets[slot as usize].as_mut().expect("completion of a live get");
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

    /// One chunk read of the get in `slot` ended; the last one finishes
    /// the get (into the pipeline's finished gets, its one exit).
    fn finish_chunk(&mut self, slot: u32, result: Result<()>) {
        let ctx = self.reads.ctx(slot);
        if let Err(e) = result {
            ctx.error.get_or_insert(e);
        }
        ctx.remaining -= 1;
        if ctx.remaining > 0 {
            return;
        }
        let ctx = self.reads.gets[slot as usize].take().expect("checked above");
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
            None => {
                // What a get returns is exactly the range it asked for.
                assert_eq!(ctx.out.len() as u64, ctx.end - ctx.offset, "a get assembled the wrong length");
                self.offer_to_cache(&ctx);
                Ok(ctx.out)
            }
        };
        self.reads.finished.push((ctx.id, result));
    }

    /// Keeps a verified whole-shard read in the read cache if the index
    /// still holds that write of the key, undamaged: a put or delete
    /// applied while the read was in flight already changed the index
    /// (and emptied the key's entry), and its older bytes must not return.
    /// The same, for its place (`placed.rs`), when the index also still
    /// has it where it was read (a relocation keeps the sequence).
    fn offer_to_cache(&self, ctx: &GetCtx) {
        // A failed store emptied its cache and placements and keeps them
        // empty.
        let whole = ctx.offset == 0 && ctx.end == ctx.meta.size;
        let cache = self.read_cache.takes(ctx.meta.size);
        let place = self.placed.takes(ctx.meta.size, ctx.meta.chunk_count());
        if !whole || self.failed.is_some() || !(cache || place) {
            return;
        }
        let Some(now) = self.index.get(&ctx.key).filter(|m| m.sequence == ctx.meta.sequence) else { return };
        if self.damage_of(&ctx.key, ctx.meta.sequence).is_some() {
            return;
        }
        let stat = super::stat_of(&ctx.meta);
        if cache {
            self.read_cache.insert(&ctx.key, stat, &ctx.out);
        }
        if place && now == ctx.meta {
            self.placed.place(&ctx.key, self.payload_offset(ctx.meta.chunk(0)), stat);
        }
    }

    /// Completes every get in progress, keeping their results for
    /// `take_finished_gets`: commits, checkpoints and reclamation use the
    /// device one operation at a time and must have it to themselves.
    pub(super) fn quiesce(&mut self) {
        // Finished gets stay in the pipeline for `take_finished_gets`.
        while self.completions_pending() {
            let mut none = Vec::new();
            self.start_reads(&mut none, Handoff::WithNextReap);
            let reaped = self.reap_reads(Wait::Yes);
            while self.finish_next_read(&mut none) {}
            self.reads.finished.append(&mut none);
            if let Err(e) = reaped {
                let _ = self.fail(&format!("reading failed: {e}"));
                break;
            }
        }
        // What the blocking paths after this rely on: the device is ours
        // alone (or the store is failed and writes nothing more).
        assert!(
            self.failed.is_some() || self.dev.in_flight() == 0,
            "{}: {} operations in flight after every get and scrub read finished",
            self.name,
            self.dev.in_flight()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::ReadToken;

    #[test]
    fn read_tokens_round_trip_and_never_collide() {
        let tokens = [
            ReadToken::Get { slot: 0, chunk: 0 },
            ReadToken::Get { slot: 0, chunk: u32::MAX },
            ReadToken::Get { slot: (1 << 31) - 1, chunk: 63 },
            ReadToken::Scrub { window: 0 },
            ReadToken::Commit { op: 0 },
            ReadToken::Commit { op: super::COMMIT_LOG_OP },
            ReadToken::Scrub { window: u32::MAX },
            ReadToken::Reclaim { index: 0 },
            ReadToken::Reclaim { index: u32::MAX },
            ReadToken::Checkpoint,
        ];
        let encoded: Vec<u64> = tokens.iter().map(|t| t.encode()).collect();
        for (t, e) in tokens.iter().zip(&encoded) {
            assert_eq!(ReadToken::decode(*e), *t);
        }
        let distinct: std::collections::HashSet<u64> = encoded.iter().copied().collect();
        assert_eq!(distinct.len(), tokens.len());
    }
}

/// How `reap_reads` waits.
#[derive(Clone, Copy)]
enum Wait {
    No,
    /// For a completion or a wake-up (when anything is in flight).
    Yes,
    /// For a wake-up or a completion, for at most this long.
    Idle(std::time::Duration),
}
