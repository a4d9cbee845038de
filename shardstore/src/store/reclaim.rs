//! Reclamation: live chunks of a mostly dead extent copied forward
//! (verified first: copying damage forward would launder it), logged with
//! the extent's reset. A whole extent at a time when idle or as a last
//! resort, or a bounded share with every group commit under load.

use super::{
    chunk_count, chunk_len, key_text, record, record_size_bytes, span_blocks, BlockDeviceExt, Completion, Error,
    ExtentInfo, IoKind, IoOp, Locator, LogRecord, Op, Pump, ReadToken, RecordHeader, Result, Store, BLOCK_SIZE_BYTES,
    RESERVE_EXTENTS_COUNT, STORE_QUEUE_DEPTH,
};

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
    /// Chunks copied forward by those whole-extent evacuations.
    pub chunks_moved_whole: u64,
    /// Whole-extent passes that gave way to writes before the extent was
    /// empty (their moves logged, the rest left for a later pass).
    pub passes_given_way: u64,
    /// Walks of the index begun to list live chunks: each lists its
    /// victim's and those of the next few (`RECLAIM_LIST_AHEAD_*`).
    pub index_walks: u64,
}

/// A live chunk to move out of an extent being reclaimed: its shard's
/// key, sequence and size, the chunk's number and where it is.
pub(super) type LiveChunk = (Vec<u8>, u64, usize, Locator, u64);

/// The bytes a live chunk is read as: a group member from its group's
/// header block to its payload's end (within one buffer: a group fits
/// one).
fn span_bytes((_, _, chunk, from, size): &LiveChunk) -> u64 {
    u64::from(span_blocks(*from, *size, *chunk)) * BLOCK_SIZE_BYTES
}

/// The bytes a live chunk's record takes (what a commit's budget counts).
fn record_bytes((key, _, chunk, _, size): &LiveChunk) -> u64 {
    record_size_bytes(key.len(), chunk_len(*size, *chunk))
}

/// An extent being evacuated, across group commits or idle passes.
#[derive(Debug)]
pub(super) struct ReclaimPlan {
    pub(super) victim: u32,
    pub(super) generation: u32,
    /// Live chunks listed and not yet moved; each is checked against the
    /// index again before it moves (`still_in_place`).
    pub(super) chunks: std::collections::VecDeque<LiveChunk>,
    /// The last key the listing looked at (`None` before its first step),
    /// and whether it has walked the whole index.
    after: Option<Vec<u8>>,
    listed: bool,
    /// The extents likely to be the next victims, listed by the same walk:
    /// complete once it is, and in force for as long as their generation
    /// holds (nothing enters a sealed extent, so their chunks only go).
    ahead: Vec<Ahead>,
}

/// A likely next victim whose live chunks its predecessor's walk lists.
#[derive(Debug)]
pub(super) struct Ahead {
    victim: u32,
    generation: u32,
    chunks: Vec<LiveChunk>,
}

/// Index entries a reclamation plan lists its victim's live chunks from
/// at a time, in steps the group commits take (a few each) and the
/// whole-extent passes, gets served between them, so that a large index
/// never holds the store thread for a whole walk (half a million shards
/// held it for 20 ms, ten million take the better part of a second).
/// Tests make it small (`Store::set_reclaim_list_step_entries`).
pub const RECLAIM_LIST_STEP_ENTRIES: usize = 4096;

/// A walk of the index lists, with its victim's, the live chunks of the
/// next candidates (by live blocks) while theirs add up to at most this
/// many: on a large index the walk, not the moves, is what a victim costs
/// (16 million shards take about 0.16 s to walk).
pub const RECLAIM_LIST_AHEAD_CHUNKS_MAX: u64 = 64 * 1024;

/// Next candidates one walk lists at most.
pub const RECLAIM_LIST_AHEAD_EXTENTS_MAX: usize = 16;

/// Listing steps one commit takes at most (while fewer than its budget's
/// bytes of chunks are listed): 131072 index entries, a few milliseconds,
/// gets served between the steps.
pub const RECLAIM_LIST_STEPS_PER_COMMIT_MAX: usize = 32;

/// Group commits start moving live chunks out of the emptiest sealed
/// extent, a little each, once free extents are down to the reserve, what
/// the batch may open, and this many: reclamation keeps ahead of the
/// writes without holding a commit for a whole extent's evacuation, and
/// starts late enough that its victims are mostly dead.
pub const RECLAIM_AHEAD_EXTENTS_COUNT: u32 = 1;

/// At most this many live bytes move with one group commit.
pub const RECLAIM_STEP_BYTES_MAX: u64 = 8 << 20;

/// Reclamation keeps at most this many of its reads or writes (a chunk
/// each, up to a MiB) on the device at once while gets are in progress,
/// and always in the background (see [`Pace`]), so that a get never
/// queues behind a whole step's I/O (32 MiB of chunk reads in one go made
/// a get arriving during an idle pass wait 25 ms).
pub const RECLAIM_IN_FLIGHT_MAX: usize = 2;

/// A background batch (the idle pass) moves at most this many bytes of
/// chunks (and at least one chunk): a write arriving during the pass
/// waits for the batch in progress to finish before the pass gives way
/// (32 chunks of 1 MiB at two operations in flight kept 4 KiB PUTs on a
/// quiet agent waiting 20 ms at p90).
pub const RECLAIM_BACKGROUND_BATCH_BYTES_MAX: u64 = 2 << 20;

/// How reclamation shares the device with gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Nothing waits for it (the store thread's idle pass): at most
    /// [`RECLAIM_IN_FLIGHT_MAX`] of its operations on the device at any
    /// time, so that a get arriving finds little ahead of it.
    Background,
    /// A commit waits for it: as many operations as the queue takes while
    /// no get is in progress (kept at the full queue, 1 MiB puts ran 0.90x
    /// with the background's limit), [`RECLAIM_IN_FLIGHT_MAX`] while one
    /// is.
    Foreground,
}

impl Store {
    /// Evacuates the sealed extent whose reset gives back the most space
    /// (the fewest live blocks; if at least a quarter of an extent): its
    /// live chunks are rewritten elsewhere, the relocations and the
    /// extent's reset are logged in one write after a flush, and only then
    /// is it reused.
    /// Returns the extent reclaimed and the live bytes moved, or `None`
    /// when no extent is worth it. A chunk that cannot be read and verified
    /// aborts the pass and leaves the extent untouched: it stays referenced
    /// (and copying a corrupt chunk forward would launder it).
    pub fn reclaim(&mut self) -> Result<Option<(u32, u64)>> {
        self.reclaim_with(&mut |_| {}, Pace::Foreground, &|| false)
    }

    /// As [`Store::reclaim`], serving gets while the chunks move: `pump`
    /// runs as it does through a commit (it may start and finish gets,
    /// never write). Gets in flight keep going until the flush and the
    /// log write, which have the device to themselves: every read is
    /// finished before the extent's reset is logged, so none can read it
    /// once it is free. `give_way` is asked between batches of chunks:
    /// when it says so (writes are waiting for an idle pass), the pass
    /// ends there, logging the chunks moved so far (the extent keeps the
    /// rest, for a later pass), and returns `None`.
    pub fn reclaim_with(
        &mut self,
        pump: Pump<'_>,
        pace: Pace,
        give_way: &dyn Fn() -> bool,
    ) -> Result<Option<(u32, u64)>> {
        // As before a commit: scrub windows in flight, or a get that
        // started before an extent was reset (the copies may be written
        // there now), finish first.
        if self.scrub.in_flight() > 0 || self.reads.started_before(self.resets_applied) {
            self.quiesce();
        }
        self.check_usable()?;
        let Some(mut plan) = self.current_plan() else { return Ok(None) };
        // Listed in steps, gets served between them; a pass giving way
        // keeps what it listed for the next.
        while !plan.listed {
            self.list_step(&mut plan);
            if !plan.listed {
                pump(self);
                if give_way() {
                    self.plan = Some(plan);
                    self.reclaim_counts.passes_given_way += 1;
                    return Ok(None);
                }
            }
        }
        let victim = plan.victim;
        let live: Vec<LiveChunk> = plan.chunks.drain(..).filter(|c| self.still_in_place(c)).collect();
        let mut records = Vec::with_capacity(live.len() + 1);
        let mut moved = 0u64;
        // A batch of chunks at a time, its reads and then its writes all in
        // flight (at the pace's limit): the store thread is away from its
        // queue for as few device round trips as the extent allows; in the
        // background, batches are bounded by bytes too, so a write waits
        // little for the pass to give way.
        let count_max = self.move_batch_count_max();
        let bytes_max = match pace {
            Pace::Background => RECLAIM_BACKGROUND_BATCH_BYTES_MAX,
            Pace::Foreground => u64::MAX,
        };
        let (mut start, mut ended_early) = (0, false);
        while start < live.len() {
            let end = start + Self::batch_len(&live[start..], count_max, bytes_max);
            let (relocations, bytes) = self.move_chunks(victim, &live[start..end], &mut *pump, pace)?;
            start = end;
            self.reclaim_counts.chunks_moved_whole += relocations.len() as u64;
            records.extend(relocations.into_iter().map(|r| (0, r)));
            moved += bytes;
            if start < live.len() && give_way() {
                ended_early = true;
                break;
            }
        }
        if !records.is_empty() {
            self.quiesce();
            if let Err(e) = self.dev.flush() {
                return Err(self.fail(&format!("flush failed: {e}")));
            }
        }
        if ended_early {
            // The rest stays listed for the next pass (or the commits').
            plan.chunks.extend(live[start..].iter().cloned());
            self.plan = Some(plan);
            self.make_durable(&records)?;
            self.reclaim_counts.passes_given_way += 1;
            return Ok(None);
        }
        let generation = self.extents.get(victim).generation.wrapping_add(1);
        records.push((0, LogRecord::Reset { extent: victim, generation }));
        self.make_durable(&records)?;
        self.reclaim_counts.whole_extents += 1;
        // Done with its victim; what it listed ahead serves the next.
        self.plan = Some(plan);
        debug_assert_eq!(
            self.extents.get(victim),
            ExtentInfo { generation, write_blocks: 0, live_blocks: 0, checked_ms: 0 }
        );
        Ok(Some((victim, moved)))
    }

    /// The most chunks one batch moves: all its reads in flight at once.
    fn move_batch_count_max(&self) -> usize {
        STORE_QUEUE_DEPTH.min(self.dev.queue_depth()).max(1)
    }

    /// How many of `chunks` (at least one) the next batch moves: at most
    /// `count_max`, and no more once their bytes reach `bytes_max`.
    fn batch_len(chunks: &[LiveChunk], count_max: usize, bytes_max: u64) -> usize {
        let mut bytes = 0;
        for (n, c) in chunks.iter().take(count_max).enumerate() {
            if n > 0 && bytes >= bytes_max {
                return n;
            }
            bytes += span_bytes(c);
        }
        chunks.len().min(count_max)
    }

    /// The sealed extent whose reset gives back the most space, if at
    /// least a quarter of an extent (and it is not one whose evacuation
    /// failed as it is now): see `ExtentTable::victim`.
    pub(super) fn victim(&self) -> Option<u32> {
        self.extents.victim(self.stuck)
    }

    /// The plan in force (its victim not reset since, and either still
    /// being listed or with chunks left, or still the victim), taken out
    /// of the store; else one
    /// for the current victim: listed already when the last plan's walk
    /// listed it ahead (and it was not reset since), or new, nothing
    /// listed yet, with the next candidates to list ahead.
    fn current_plan(&mut self) -> Option<ReclaimPlan> {
        let old = self.plan.take();
        if let Some(p) = old.as_ref() {
            if self.extents.get(p.victim).generation == p.generation && (!p.listed || !p.chunks.is_empty()) {
                return old;
            }
        }
        let victim = self.victim()?;
        let generation = self.extents.get(victim).generation;
        // Its chunks all moved, its victim not reset yet (that comes with
        // the next commit, or this pass): still the plan, nothing to list.
        if old.as_ref().is_some_and(|p| p.victim == victim && p.generation == generation) {
            return old;
        }
        // Lists made ahead are complete only once their walk was.
        let mut ahead: Vec<Ahead> = old.filter(|p| p.listed).map(|p| p.ahead).unwrap_or_default();
        ahead.retain(|a| self.extents.get(a.victim).generation == a.generation);
        if let Some(at) = ahead.iter().position(|a| a.victim == victim) {
            let listed = ahead.remove(at);
            let chunks = listed.chunks.into_iter().collect();
            return Some(ReclaimPlan { victim, generation, chunks, after: None, listed: true, ahead });
        }
        self.reclaim_counts.index_walks += 1;
        let mut budget = RECLAIM_LIST_AHEAD_CHUNKS_MAX;
        let ahead = self
            .extents
            .candidates()
            .filter(|&e| {
                let info = self.extents.get(e);
                e != victim && self.stuck != Some((e, info.generation, info.live_blocks))
            })
            .take(RECLAIM_LIST_AHEAD_EXTENTS_MAX)
            .map_while(|e| {
                budget = budget.checked_sub(u64::from(self.extents.live_chunks(e)))?;
                Some(Ahead { victim: e, generation: self.extents.get(e).generation, chunks: Vec::new() })
            })
            .collect();
        Some(ReclaimPlan {
            victim,
            generation,
            chunks: std::collections::VecDeque::new(),
            after: None,
            listed: false,
            ahead,
        })
    }

    /// Lists the victim's live chunks among the next index entries (at
    /// most `reclaim_list_step_entries`). Complete once the walk reaches
    /// the end: nothing enters a sealed extent (puts and moved copies go
    /// to the open one), so every chunk still in the victim then was
    /// there, where the walk passed it, when it did. Returns the bytes of
    /// the chunks it listed (`record_bytes`).
    fn list_step(&self, plan: &mut ReclaimPlan) -> u64 {
        let after = plan.after.take();
        let start = match &after {
            Some(key) => std::ops::Bound::Excluded(key.as_slice()),
            None => std::ops::Bound::Unbounded,
        };
        let (mut last, mut bytes) = (None, 0);
        for (seen, (key, m)) in self.index.iter_from(start).enumerate() {
            if seen == self.reclaim_list_step_entries {
                plan.after = last.map(<[u8]>::to_vec);
                return bytes;
            }
            for (c, l) in m.locators().enumerate() {
                if l.extent == plan.victim {
                    let chunk = (key.to_vec(), m.sequence, c, l, m.size);
                    bytes += record_bytes(&chunk);
                    plan.chunks.push_back(chunk);
                } else if let Some(a) = plan.ahead.iter_mut().find(|a| a.victim == l.extent) {
                    a.chunks.push((key.to_vec(), m.sequence, c, l, m.size));
                }
            }
            last = Some(key);
        }
        plan.listed = true;
        bytes
    }

    /// Whether a listed chunk is still where the listing found it (its
    /// key not replaced or deleted since).
    fn still_in_place(&self, (key, sequence, chunk, from, _): &LiveChunk) -> bool {
        self.index.get(key).is_some_and(|m| m.sequence == *sequence && m.chunk(*chunk) == *from)
    }

    /// Reads `batch` (all in flight), verifies each chunk and writes its
    /// copy elsewhere (all in flight; small chunks side by side share a
    /// header block, as a commit's do), and returns the relocation records
    /// (not yet durable: the caller flushes, then logs them) and the bytes
    /// moved. A chunk that cannot be read and verified stops the move
    /// before anything is written: copying it forward would launder the
    /// damage. Gets in flight keep going: their completions are verified
    /// as reclamation's own are reaped, and `pump` runs between the steps
    /// (it may start and finish gets, never write).
    pub(super) fn move_chunks(
        &mut self,
        victim: u32,
        batch: &[LiveChunk],
        pump: Pump<'_>,
        pace: Pace,
    ) -> Result<(Vec<LogRecord>, u64)> {
        let mut io = MoveIo { outstanding: 0, done: Vec::new(), scratch: Vec::new(), pace };
        let read = self.read_moving(batch, &mut io, pump);
        // Every read is reaped before anything returns: their buffers
        // belong to the device until then.
        let reaped = self.await_move_io(&mut io, pump);
        read?;
        reaped?;
        let mut reads = std::mem::take(&mut io.done);
        reads.sort_by_key(|c| c.token);
        let mut moving = Vec::with_capacity(batch.len());
        let mut verified = Ok(());
        for done in reads {
            let ReadToken::Reclaim { index } = ReadToken::decode(done.token) else {
                unreachable!("only reclamation's completions are kept")
            };
            let (key, sequence, chunk, from, _) = &batch[index as usize];
            if verified.is_ok() {
                match self.verify_moving(victim, key, *sequence, *chunk, *from, done) {
                    Ok(m) => moving.push(m),
                    Err(e) => verified = Err(e),
                }
            }
            pump(self);
        }
        verified?;
        let mut records = Vec::with_capacity(batch.len());
        let mut moved = 0u64;
        let mut written = Ok(());
        while !moving.is_empty() {
            let n = self.moved_together(&moving);
            let part: Vec<Moving> = moving.drain(..n).collect();
            let ids: Vec<(Vec<u8>, u64, u32)> =
                part.iter().map(|m| (m.header.key.clone(), m.header.sequence, m.chunk as u32)).collect();
            if let Err(e) = self.make_room(&mut io, pump) {
                written = Err(e);
                break;
            }
            match self.write_moved(victim, part, &mut io) {
                Ok((to, bytes)) => {
                    moved += bytes;
                    for ((key, sequence, chunk), to) in ids.into_iter().zip(to) {
                        records.push(LogRecord::Relocate { key, sequence, chunk, to });
                    }
                }
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
            pump(self);
        }
        // Every write of the batch completes before anything returns.
        let reaped = self.await_move_io(&mut io, pump);
        written?;
        reaped?;
        for c in io.done {
            c.result?;
        }
        Ok((records, moved))
    }

    /// Submits a read of each chunk of `batch` (each its own buffer).
    fn read_moving(&mut self, batch: &[LiveChunk], io: &mut MoveIo, pump: Pump<'_>) -> Result<()> {
        for (i, c) in batch.iter().enumerate() {
            self.make_room(io, pump)?;
            let buf = self.move_buffer(span_bytes(c) as usize, io)?;
            let kind = IoKind::Read { offset: self.locator_offset(c.3), buf };
            self.submit_move_io(i, kind, io)?;
        }
        pump(self);
        Ok(())
    }

    /// Waits, serving gets, while reclamation has as many operations on
    /// the device as its pace allows ([`RECLAIM_IN_FLIGHT_MAX`] in the
    /// background or while gets are in progress).
    fn make_room(&mut self, io: &mut MoveIo, pump: Pump<'_>) -> Result<()> {
        while io.outstanding >= RECLAIM_IN_FLIGHT_MAX && !self.unlimited(io) {
            self.collect_move_io(io, true)?;
            pump(self);
        }
        Ok(())
    }

    /// Whether reclamation may fill the queue: in the foreground with
    /// nothing else in flight (no get, scrub read or checkpoint write).
    fn unlimited(&self, io: &MoveIo) -> bool {
        io.pace == Pace::Foreground && !self.completions_pending()
    }

    /// Submits one of reclamation's reads or writes.
    fn submit_move_io(&mut self, index: usize, kind: IoKind, io: &mut MoveIo) -> Result<()> {
        debug_assert!(
            io.outstanding < RECLAIM_IN_FLIGHT_MAX || self.unlimited(io),
            "reclamation ({:?}) would put {} operations on the device at once",
            io.pace,
            io.outstanding + 1
        );
        let token = ReadToken::Reclaim { index: u32::try_from(index).expect("a batch fits a queue") }.encode();
        self.dev.submit(IoOp { token, kind })?;
        io.outstanding += 1;
        Ok(())
    }

    /// An I/O buffer of `len` bytes with a queue slot free to carry it.
    /// Gets may hold every buffer: their reads are reaped (and verified,
    /// giving their buffers back) until one is free, with no new get
    /// started meanwhile.
    fn move_buffer(&mut self, len: usize, io: &mut MoveIo) -> Result<crate::device::IoBuf> {
        loop {
            if self.dev.in_flight() < STORE_QUEUE_DEPTH.min(self.dev.queue_depth()) {
                if let Some(buf) = self.pool.take(len) {
                    return Ok(buf);
                }
            }
            if self.dev.in_flight() == 0 {
                // Reclamation holds every buffer itself: it takes at most
                // a batch's worth, and a batch is at most the pool.
                return Err(self.fail("reclamation found no free I/O buffer with nothing in flight"));
            }
            self.collect_move_io(io, true)?;
        }
    }

    /// Waits until every read or write reclamation submitted has
    /// completed, running `pump` after each completion.
    fn await_move_io(&mut self, io: &mut MoveIo, pump: Pump<'_>) -> Result<()> {
        while io.outstanding > 0 {
            self.collect_move_io(io, true)?;
            pump(self);
        }
        Ok(())
    }

    /// Waits for at least one completion (or a request arriving: the
    /// store's waker) and sorts what came back: reclamation's own kept in
    /// `io`, reads of gets verified and their gets left finished.
    fn collect_move_io(&mut self, io: &mut MoveIo, wait: bool) -> Result<()> {
        let mut got = std::mem::take(&mut io.scratch);
        let reaped = self.reap_sorting(wait, &mut got, |c| {
            if !matches!(ReadToken::decode(c.token), ReadToken::Reclaim { .. }) {
                return Some(c);
            }
            io.outstanding -= 1;
            io.done.push(c);
            None
        });
        io.scratch = got;
        if let Err(e) = reaped {
            return Err(self.fail(&format!("reaping reclamation's I/O failed: {e}")));
        }
        Ok(())
    }

    /// Record bytes a batch writes.
    pub(super) fn batch_bytes(ops: &[Op]) -> u64 {
        ops.iter()
            .map(|op| match op {
                Op::Put { data, .. } => data.len() as u64 + chunk_count(data.len() as u64) as u64 * BLOCK_SIZE_BYTES,
                Op::Delete { .. } | Op::Tombstone { .. } | Op::Purge { .. } => 0,
            })
            .sum()
    }

    /// New extents a batch may open (at least one).
    pub(super) fn extents_needed(&self, ops: &[Op]) -> u32 {
        let extent = self.sb.layout.extent_size_bytes;
        u32::try_from(Self::batch_bytes(ops).div_ceil(extent)).unwrap_or(u32::MAX / 2).max(1)
    }

    /// Reclamation in steps that ride on group commits, so no commit waits
    /// for a whole extent: extents emptied by earlier commits are reset
    /// (their last references left in records already durable), and once
    /// free extents are down to the reserve, the `needed` extents the batch
    /// may open and [`RECLAIM_AHEAD_EXTENTS_COUNT`], live chunks of the
    /// victim (the sealed extent with the fewest live blocks) are copied
    /// forward, as many bytes as this batch writes times the ratio of the
    /// victim's live blocks to those its reset gives back (with a quarter
    /// to spare, so reclamation gains on the writes), at most
    /// [`RECLAIM_STEP_BYTES_MAX`].
    /// Returns the records to log with the batch (the copies are written;
    /// the batch's flush makes them durable before its log write).
    pub(super) fn reclaim_along(&mut self, ops: &[Op], needed: u32, pump: Pump<'_>) -> Vec<LogRecord> {
        let mut records: Vec<LogRecord> = self
            .extents
            .emptied()
            .map(|i| LogRecord::Reset { extent: i, generation: self.extents.get(i).generation.wrapping_add(1) })
            .collect();
        self.reclaim_counts.extents_reset_along += records.len() as u64;
        let ahead = RESERVE_EXTENTS_COUNT + needed + RECLAIM_AHEAD_EXTENTS_COUNT;
        if self.extents.free_count() > ahead || self.check_usable().is_err() {
            return records;
        }
        let written = Self::batch_bytes(ops);
        let Some(mut plan) = self.current_plan() else { return records };
        let victim = plan.victim;
        let e = self.extents.get(victim);
        let live = f64::from(e.live_blocks) / f64::from(self.extents.blocks_per_extent());
        let budget =
            ((written as f64 * live / (1.0 - live).max(0.05) * 1.25) as u64 + (256 << 10)).min(RECLAIM_STEP_BYTES_MAX);
        // The listing goes on until the budget's worth is listed, a few
        // steps at most per commit (gets served between them): on a large
        // index a victim's chunks are few per step, and the walk is spread
        // over the commits.
        let mut listed: u64 = plan.chunks.iter().map(record_bytes).sum();
        let mut steps = 0;
        while !plan.listed && steps < RECLAIM_LIST_STEPS_PER_COMMIT_MAX && listed < budget {
            if steps > 0 {
                pump(self);
            }
            listed += self.list_step(&mut plan);
            steps += 1;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < budget {
            let Some(c) = plan.chunks.pop_front() else { break };
            if self.still_in_place(&c) {
                bytes += record_bytes(&c);
                batch.push(c);
            }
        }
        self.plan = Some(plan);
        let batch_len = self.move_batch_count_max();
        let moved = batch.chunks(batch_len).try_for_each(|part| {
            let (relocations, _) = self.move_chunks(victim, part, &mut *pump, Pace::Foreground)?;
            self.reclaim_counts.chunks_moved_along += relocations.len() as u64;
            records.extend(relocations);
            Ok::<(), Error>(())
        });
        match moved {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(device = %self.name, extent = victim, error = %e, "reclamation skips an extent it cannot evacuate");
                self.stuck = Some((victim, self.extents.get(victim).generation, self.extents.get(victim).live_blocks));
                self.plan = None;
            }
        }
        records
    }

    /// Verifies a chunk read back for reclamation: its header and payload
    /// at the locator that references it. An unreadable or damaged chunk
    /// is not moved (copying it forward would launder the damage).
    fn verify_moving(
        &self,
        victim: u32,
        key: &[u8],
        sequence: u64,
        chunk: usize,
        from: Locator,
        done: Completion,
    ) -> Result<Moving> {
        let damaged = |why: String| Error::Corruption {
            device: self.name.clone(),
            what: format!("shard {:?} chunk {chunk} (not moved; extent {victim} kept): {why}", key_text(key)),
            offset: self.locator_offset(from),
        };
        if let Err(e) = &done.result {
            return Err(damaged(format!("unreadable: {e}")));
        }
        let buf = done.buf.expect("reads return their buffer");
        let (header, payload) = RecordHeader::verify(buf.as_slice(), from.distance, from.crc)
            .and_then(|(h, payload)| {
                if h.key == key && h.sequence == sequence {
                    Ok((h, payload))
                } else {
                    Err(record::RecordProblem::Mismatch)
                }
            })
            .map_err(|p| damaged(p.to_string()))?;
        // A chunk to group is copied out (its buffer goes back for the
        // group's write); any other is moved in its own buffer.
        let bytes = if self.groupable(key.len(), payload.len()) {
            MovingBytes::Copied(payload.to_vec())
        } else {
            MovingBytes::Read { start: usize::from(from.distance) * record::HEADER_BLOCK_BYTES, buf }
        };
        Ok(Moving { chunk, bytes, header })
    }

    /// How many of `moving` (at least one) go to the device as one write:
    /// the small ones at its start that share a header block, or the first
    /// alone.
    fn moved_together(&self, moving: &[Moving]) -> usize {
        let (mut slots, mut end_blocks, mut bytes) = (0, 1u32, record::HEADER_BLOCK_BYTES);
        let mut n = 0;
        for m in moving.iter().take_while(|m| matches!(m.bytes, MovingBytes::Copied(_))) {
            let payload = record::payload_size_bytes(m.header.chunk_len as usize) as usize;
            if !record::fits_group(slots, end_blocks, m.header.key.len()) || bytes + payload > self.pool.slot_size() {
                break;
            }
            slots += record::member_slot_bytes(m.header.key.len());
            end_blocks += (payload as u64 / BLOCK_SIZE_BYTES) as u32;
            bytes += payload;
            n += 1;
        }
        n.max(1)
    }

    /// Submits the copies of `moving` as one write (reaped by the caller):
    /// a group of the chunks copied out, or a chunk moved in its own
    /// buffer as a record of its own. Returns their new locators and the
    /// bytes written.
    fn write_moved(&mut self, victim: u32, moving: Vec<Moving>, io: &mut MoveIo) -> Result<(Vec<Locator>, u64)> {
        let payload_blocks =
            |m: &Moving| (record::payload_size_bytes(m.header.chunk_len as usize) / BLOCK_SIZE_BYTES) as u32;
        let blocks = 1 + moving.iter().map(payload_blocks).sum::<u32>();
        let Some(at) = self.extents.allocate(blocks, 0) else {
            return Err(Error::NoSpace(format!("{}: no room to evacuate extent {victim}", self.name)));
        };
        assert_ne!(at.extent, victim, "the victim is sealed, never the open extent");
        let len = blocks as usize * record::HEADER_BLOCK_BYTES;
        let generation = self.extents.get(at.extent).generation;
        let mut to = Vec::with_capacity(moving.len());
        let buf = match <[Moving; 1]>::try_from(moving) {
            Ok([Moving { bytes: MovingBytes::Read { mut buf, start }, header, .. }]) => {
                let header = RecordHeader { extent: at.extent, generation, grouped: false, distance: 1, ..header };
                let payload_len = header.chunk_len as usize;
                let out = buf.as_mut_slice();
                out.copy_within(start..start + payload_len, record::HEADER_BLOCK_BYTES);
                out[record::HEADER_BLOCK_BYTES + payload_len..len].fill(0);
                buf.set_len(len);
                header.encode_header(buf.as_mut_slice());
                to.push(Locator::lone(at.extent, at.block, header.payload_crc));
                buf
            }
            Ok(one) => self.write_group(at, generation, len, &one, &mut to, io)?,
            Err(many) => self.write_group(at, generation, len, &many, &mut to, io)?,
        };
        let offset = self.locator_offset(at);
        // A write's token only has to be reclamation's: the batch's writes
        // are counted off, never looked up (the reads' index their chunk).
        self.submit_move_io(io.outstanding + io.done.len(), IoKind::Write { offset, buf, fua: false }, io)?;
        Ok((to, len as u64))
    }

    /// Lays out chunks copied out (`MovingBytes::Copied`) as a group at
    /// `at`, in a buffer of `len` bytes; pushes their locators.
    fn write_group(
        &mut self,
        at: Locator,
        generation: u32,
        len: usize,
        moving: &[Moving],
        to: &mut Vec<Locator>,
        io: &mut MoveIo,
    ) -> Result<crate::device::IoBuf> {
        let mut buf = self.move_buffer(len, io)?;
        let out = buf.as_mut_slice();
        out[..record::HEADER_BLOCK_BYTES].fill(0);
        let (mut slot, mut distance) = (0, 1u32);
        for m in moving {
            let MovingBytes::Copied(payload) = &m.bytes else { unreachable!("only copied chunks are grouped") };
            let d = u8::try_from(distance).expect("checked by moved_together");
            let header = RecordHeader { extent: at.extent, generation, grouped: true, distance: d, ..m.header.clone() };
            let start = usize::from(d) * record::HEADER_BLOCK_BYTES;
            let end = start + record::payload_size_bytes(payload.len()) as usize;
            out[start..start + payload.len()].copy_from_slice(payload);
            out[start + payload.len()..end].fill(0);
            header.encode_slot(&mut out[slot..]);
            slot += record::member_slot_bytes(m.header.key.len());
            distance += ((end - start) / record::HEADER_BLOCK_BYTES) as u32;
            to.push(Locator { extent: at.extent, block: at.block, distance: d, crc: m.header.payload_crc });
        }
        Ok(buf)
    }
}

/// Reclamation's reads or writes in flight, those completed, a vector
/// reused for each reap, and how it shares the device.
struct MoveIo {
    outstanding: usize,
    done: Vec<Completion>,
    scratch: Vec<Completion>,
    pace: Pace,
}

/// A chunk read back and verified, to be written elsewhere.
pub(super) struct Moving {
    chunk: usize,
    bytes: MovingBytes,
    header: RecordHeader,
}

/// A moving chunk's payload: copied out to join a group, or still in the
/// buffer it was read into, `start` bytes in.
enum MovingBytes {
    Copied(Vec<u8>),
    Read { buf: crate::device::IoBuf, start: usize },
}
