//! Checkpoints: the whole index, extent table, scrub cursor and repair
//! list written into the inactive half of the metadata region and made
//! current by a superblock commit; the log restarts after it.

use super::commit::{encode_log_blocks, pack, Pump, WriteBatch};
use super::{
    meta, superblock, BlockDevice, BlockDeviceExt, CheckpointHeader, Completion, Error, ExtentInfo, Index, IoKind,
    IoOp, Layout, LogRecord, ReadToken, RepairList, Result, ScrubCursor, Store, StoreRef, BLOCK, BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
};
use crate::constants::SUPERBLOCK_COPIES_COUNT;

/// Checkpoints written since the store opened, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Checkpoints made current (whatever asked: a full log half, a
    /// close, an operator, metadata the scrubber found damaged).
    pub written: u64,
    /// How long writes waited for the last one (µs): its longest slice of
    /// encoding and its switch for one written beside commits, all of it
    /// for one a full log forced on a commit.
    pub last_micros: u64,
    /// The size of the checkpoint the next one would write (the index,
    /// the extent table and the lists), kept current by every commit; a
    /// half of the metadata region holds it and the log after it.
    pub next_bytes: u64,
    /// Bytes of a half of the metadata region.
    pub half_bytes: u64,
}

/// The store thread starts a checkpoint beside commits (`Beside`) once
/// the log has used this share (in percent) of the room the checkpoint in
/// force left it: the rest is room for what commits log while it is
/// written (at a million small shards and a 70/30 mix, about a second of
/// logging against a checkpoint's quarter of a second), so the checkpoint
/// a full log would force on a commit (writes wait for all of it) is
/// seldom needed, and checkpoints come little more often than the log
/// fills (at half, they came twice as often and cost the mix 0.85x of its
/// gets in their writes).
pub const CHECKPOINT_DUE_LOG_USED_PCT: u64 = 80;

/// The earliest a checkpoint is due (in percent of the log's room), however
/// fast the log fills: at most twice as often as the log fills.
pub(super) const CHECKPOINT_DUE_EARLIEST_PCT: u64 = 50;

/// Whether a checkpoint is due with `used` of the log's `room` bytes used,
/// when the last checkpoint beside commits saw `logged` bytes logged while
/// it was encoded and written. At 80% used, or earlier (never before
/// half) when the room left is less than one and a half times `logged`: a
/// million small shards under a 70/30 mix logged 5.3 MB during a
/// checkpoint's second, and at 80% had 5.4 MB left, so the checkpoint was
/// made current 4-150 KB before a commit would have found the log full
/// and waited for all of what was left of it.
pub(super) fn checkpoint_due_at(room: u64, used: u64, logged: u64) -> bool {
    if room == 0 {
        return false;
    }
    let left = room.saturating_sub(used);
    used * 100 >= room * CHECKPOINT_DUE_LOG_USED_PCT
        || (used * 100 >= room * CHECKPOINT_DUE_EARLIEST_PCT && u128::from(left) * 2 < u128::from(logged) * 3)
}

/// What a checkpoint holds besides the index.
pub(crate) struct CheckpointState<'a> {
    pub epoch: u64,
    pub next_sequence: u64,
    pub extents: &'a [ExtentInfo],
    pub scrub: ScrubCursor,
    pub damaged: &'a RepairList,
    pub tombstones: &'a std::collections::BTreeMap<Vec<u8>, u64>,
}

/// The encoded checkpoint for an index, extent table and scrub state.
pub(crate) fn encode_checkpoint(state: &CheckpointState<'_>, index: &Index) -> Vec<u8> {
    let mut bytes = CheckpointBytes::begin(state.extents, index.len());
    bytes.entries += index.encode_entries(&mut bytes.out) as u64;
    bytes.finish(state)
}

/// The length [`encode_checkpoint`] would return, from the sizes the
/// index keeps, without encoding anything.
pub(crate) fn checkpoint_len(state: &CheckpointState<'_>, index: &Index) -> u64 {
    let damaged: u64 = state.damaged.iter().map(|(key, _)| meta::damage_entry_len(key)).sum();
    let tombstones: u64 = state.tombstones.keys().map(|key| meta::tombstone_entry_len(key)).sum();
    let body = (state.extents.len() * EXTENT_ENTRY_BYTES) as u64 + index.entry_bytes() + damaged + tombstones;
    (BLOCK as u64 + body).next_multiple_of(BLOCK as u64)
}

/// An extent's entry: generation u32, write pointer u32, verification
/// time u64.
const EXTENT_ENTRY_BYTES: usize = 16;

/// A checkpoint as it is encoded: its header block held back (written
/// last, when the counts are known), the extent table, then the entries
/// as they are added.
#[derive(Debug)]
struct CheckpointBytes {
    out: Vec<u8>,
    entries: u64,
}

impl CheckpointBytes {
    fn begin(extents: &[ExtentInfo], entries_hint: usize) -> CheckpointBytes {
        let mut out = Vec::with_capacity(BLOCK + extents.len() * EXTENT_ENTRY_BYTES + entries_hint * 64);
        out.resize(BLOCK, 0);
        for e in extents {
            out.extend_from_slice(&e.generation.to_le_bytes());
            out.extend_from_slice(&e.write_blocks.to_le_bytes());
            out.extend_from_slice(&e.checked_ms.to_le_bytes());
        }
        CheckpointBytes { out, entries: 0 }
    }

    /// Up to `max` more entries of the index's snapshot
    /// (`Index::encode_snapshot`); whether that was the last of them.
    fn snapshot_slice(&mut self, index: &mut Index, max: usize) -> bool {
        let (count, done) = index.encode_snapshot(max, &mut self.out);
        self.entries += count as u64;
        done
    }

    fn len(&self) -> usize {
        self.out.len()
    }

    /// The damage and tombstone lists after the entries, the header in
    /// front, and zeros to the end of the last block.
    fn finish(mut self, state: &CheckpointState<'_>) -> Vec<u8> {
        for (key, damage) in state.damaged.iter() {
            meta::encode_damage(key, damage, &mut self.out);
        }
        for (key, sequence) in state.tombstones {
            meta::encode_tombstone(key, *sequence, &mut self.out);
        }
        let header = CheckpointHeader {
            version: meta::CHECKPOINT_VERSION,
            epoch: state.epoch,
            next_sequence: state.next_sequence,
            entry_count: self.entries,
            extent_count: state.extents.len() as u64,
            body_len: (self.out.len() - BLOCK) as u64,
            damaged_count: state.damaged.len() as u64,
            scrub: state.scrub,
            tombstone_count: state.tombstones.len() as u64,
        };
        header.encode(&mut self.out[..BLOCK]);
        let total = self.out.len().next_multiple_of(BLOCK);
        self.out.resize(total, 0);
        self.out
    }
}

/// A checkpoint written beside commits: the store as it stood at one
/// moment between two commits, encoded a slice at a time between the
/// commits that follow (the index keeps what they change until it is
/// encoded: `Index::begin_snapshot`), its pieces written into the inactive
/// half while commits go on logging in the half in force, and the records
/// those commits log kept in order, to be written after it in the new half
/// when it is made current (`Store::advance_checkpoint`). A crash before
/// then leaves the half in force with everything; after the superblock
/// names the new half, its checkpoint and those records are the same
/// state.
#[derive(Debug)]
pub(super) struct Beside {
    epoch: u64,
    half: u32,
    offset: u64,
    body: Body,
    /// Bytes after the first piece handed to the device (each piece to
    /// every copy); the first, whose block holds the header, goes last.
    sent: usize,
    head_sent: bool,
    pub(super) in_flight: usize,
    failure: Option<String>,
    /// Records made durable since the moment it encodes.
    relog: Vec<LogRecord>,
    /// The longest one step of the encoding held the commits back (µs).
    encode_micros: u64,
    /// The log's end when it started.
    log_at_start: u64,
}

/// A checkpoint beside commits as it is encoded, then whole.
#[derive(Debug)]
enum Body {
    Encoding { bytes: CheckpointBytes, state: Saved },
    Encoded(Vec<u8>),
}

/// What a checkpoint holds besides the index and the extent table (which
/// is encoded first), as it stood when the checkpoint began.
#[derive(Debug)]
struct Saved {
    next_sequence: u64,
    scrub: ScrubCursor,
    damaged: RepairList,
    tombstones: std::collections::BTreeMap<Vec<u8>, u64>,
}

impl Beside {
    /// The bytes encoded so far, and whether that is all of them.
    fn encoded(&self) -> (&[u8], bool) {
        match &self.body {
            Body::Encoding { bytes, .. } => (&bytes.out, false),
            Body::Encoded(bytes) => (bytes, true),
        }
    }

    /// The next piece to hand to the device, if one is ready: whole pieces
    /// as they are encoded, the last partial one and then the first once
    /// the encoding is done.
    fn next_piece(&self) -> Option<std::ops::Range<usize>> {
        let (bytes, done) = self.encoded();
        if self.sent < bytes.len() && (self.sent + CHUNK_SIZE_BYTES_MAX <= bytes.len() || done) {
            Some(self.sent..bytes.len().min(self.sent + CHUNK_SIZE_BYTES_MAX))
        } else if done && !self.head_sent {
            Some(0..bytes.len().min(CHUNK_SIZE_BYTES_MAX))
        } else {
            None
        }
    }

    /// Every piece handed to the device and written.
    fn written(&self) -> bool {
        self.encoded().1 && self.head_sent && self.next_piece().is_none() && self.in_flight == 0
    }
}

/// Pieces (of `CHUNK_SIZE_BYTES_MAX`, to every copy) a checkpoint beside
/// commits keeps in flight: the rest of the queue is the commits' and the
/// gets'.
const BESIDE_PIECES_IN_FLIGHT_MAX: usize = 4;

/// Entries encoded between two runs of the pump while a checkpoint is
/// written (about a tenth of a millisecond of a store thread's time): how
/// long a get, or a write while a checkpoint is encoded beside commits,
/// waits for the store thread at most. (4096, half a millisecond, doubled
/// the p99 of gets in a mix through checkpoints beside commits: they are
/// encoded while the mix goes on, not while it waits.)
pub(super) const CHECKPOINT_SLICE_ENTRIES: usize = 1024;

/// Writes the empty checkpoint of a freshly formatted device and returns
/// the reference the first superblock records.
pub(crate) fn write_initial_checkpoint(dev: &mut dyn BlockDevice, layout: &Layout) -> Result<StoreRef> {
    let extents = vec![ExtentInfo::default(); layout.extent_count as usize];
    let state = CheckpointState {
        epoch: 1,
        next_sequence: 1,
        extents: &extents,
        scrub: ScrubCursor::default(),
        damaged: &RepairList::default(),
        tombstones: &std::collections::BTreeMap::new(),
    };
    let bytes = encode_checkpoint(&state, &Index::default());
    for base in layout.meta_copies() {
        write_bytes(dev, base, &bytes)?;
        // The first log block slot after it must not hold an old block
        // that continues the chain by accident: zero it.
        dev.write_at(base + bytes.len() as u64, &[0u8; BLOCK], false)?;
    }
    Ok(StoreRef { epoch: 1, half: 0, checkpoint_crc: crc32c::crc32c(&bytes), checkpoint_len_bytes: bytes.len() as u64 })
}

pub(super) fn write_bytes(dev: &mut dyn BlockDevice, offset: u64, bytes: &[u8]) -> Result<()> {
    for (i, piece) in bytes.chunks(CHUNK_SIZE_BYTES_MAX).enumerate() {
        dev.write_at(offset + (i * CHUNK_SIZE_BYTES_MAX) as u64, piece, false)?;
    }
    Ok(())
}

impl Store {
    /// Writes the whole index into the inactive half and makes it current
    /// with a superblock commit; the log restarts after it. Every read in
    /// flight finishes first: callers go on to blocking steps.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.quiesce();
        self.drop_checkpoint();
        self.checkpoint_with(&mut |_| {})
    }

    /// Whether a checkpoint is due: the log has used
    /// [`CHECKPOINT_DUE_LOG_USED_PCT`] of the room it had, or the room
    /// left is less than what commits logged while the last checkpoint
    /// beside them was written, with half again as much to spare
    /// (`checkpoint_due_at`).
    pub fn checkpoint_due(&self) -> bool {
        let half_start = self.half_offset(self.sb.store.half);
        let log_start = half_start + self.sb.store.checkpoint_len_bytes;
        let room = (half_start + self.sb.layout.meta_size_bytes / 2).saturating_sub(log_start);
        let used = self.log_offset.saturating_sub(log_start);
        checkpoint_due_at(room, used, self.logged_during_checkpoint)
    }

    /// As [`Store::checkpoint`], running `pump` between slices of the
    /// encoding and while the writes and flushes wait, so that gets keep
    /// flowing through it. The checkpoint's pieces go to the device as
    /// they are encoded (every copy of the metadata region), the first one,
    /// whose block holds the header, last. `pump` must not commit: the
    /// index is encoded in slices by key, and must not change between them.
    pub(super) fn checkpoint_with(&mut self, pump: Pump<'_>) -> Result<()> {
        self.check_usable()?;
        // It takes the inactive half a checkpoint beside commits was
        // being written into.
        self.drop_checkpoint();
        let started = std::time::Instant::now();
        let epoch = self.sb.store.epoch + 1;
        let half = 1 - self.sb.store.half;
        let offset = self.half_offset(half);
        // The checkpoint and at least one log block after it.
        let room = (self.sb.layout.meta_size_bytes / 2 - BLOCK_SIZE_BYTES) as usize;
        let mut bytes = CheckpointBytes::begin(self.extents.all(), self.index.len());
        let mut writes = WriteBatch::new(0);
        // Bytes before this were handed to the device (the first piece,
        // with the header's block, is held back).
        let mut sent = CHUNK_SIZE_BYTES_MAX;
        let encoded = self.encode_in_slices(&mut bytes, &mut writes, pump, |store, bytes, writes| {
            if bytes.len() > room {
                return Err(store.checkpoint_too_large(bytes.len()));
            }
            store.send_checkpoint_pieces(offset, &bytes.out, false, &mut sent, writes)
        });
        let result = encoded.and_then(|()| {
            let bytes = bytes.finish(&self.checkpoint_state(epoch));
            if bytes.len() > room {
                return Err(self.checkpoint_too_large(bytes.len()));
            }
            self.send_checkpoint_pieces(offset, &bytes, true, &mut sent, &mut writes)?;
            debug_assert_eq!(sent, bytes.len().next_multiple_of(CHUNK_SIZE_BYTES_MAX).max(CHUNK_SIZE_BYTES_MAX));
            let first = &bytes[..bytes.len().min(CHUNK_SIZE_BYTES_MAX)];
            for at in self.meta_copies_of(offset) {
                self.submit_batch_write(at, first, &mut writes)?;
            }
            Ok(bytes)
        });
        // Whatever was submitted completes first: the device owns those
        // buffers until then. Every copy gets the checkpoint; the
        // superblock commit flushes them before any copy names it.
        let settled = self.settle_commit_io(&mut writes, pump);
        let bytes = match (result, settled) {
            (Err(e @ Error::NoSpace(_)), Ok(())) => return Err(e),
            (Ok(bytes), Ok(())) => bytes,
            (Err(e), _) | (_, Err(e)) => return Err(self.fail(&format!("checkpoint failed: {e}"))),
        };
        let store =
            StoreRef { epoch, half, checkpoint_crc: crc32c::crc32c(&bytes), checkpoint_len_bytes: bytes.len() as u64 };
        match self.commit_superblock_with(|sb| sb.store = store, &mut writes, pump) {
            Ok(sb) => {
                self.sb = sb;
                self.log_offset = offset + bytes.len() as u64;
                self.log_index = 0;
                self.log_prev_crc = store.checkpoint_crc;
                self.checkpoint_bytes = bytes.len() as u64;
                self.checkpoints_written += 1;
                self.checkpoint_last_micros = started.elapsed().as_micros() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.await_commit_io(&mut writes, pump);
                Err(self.fail(&format!("checkpoint failed: {e}")))
            }
        }
    }

    /// Encodes the index into `bytes` in slices of
    /// `CHECKPOINT_SLICE_ENTRIES`, running `each` after every slice and,
    /// between slices, reaping what completed (gets' reads are verified;
    /// `writes` counts off its own) and running `pump`, which must not
    /// change the index.
    fn encode_in_slices(
        &mut self,
        bytes: &mut CheckpointBytes,
        writes: &mut WriteBatch,
        pump: Pump<'_>,
        mut each: impl FnMut(&mut Store, &CheckpointBytes, &mut WriteBatch) -> Result<()>,
    ) -> Result<()> {
        let (entries, next_sequence) = (self.index.len(), self.next_sequence);
        self.index.begin_snapshot();
        let encoded = loop {
            let done = bytes.snapshot_slice(&mut self.index, self.checkpoint_slice_entries);
            if let Err(e) = each(self, bytes, writes) {
                break Err(e);
            }
            if done {
                break Ok(());
            }
            if let Err(e) = self.poll_commit_io(writes) {
                break Err(e);
            }
            pump(self);
        };
        self.index.end_snapshot();
        debug_assert_eq!(
            (self.index.len(), self.next_sequence),
            (entries, next_sequence),
            "the index changed while a checkpoint encoded it"
        );
        encoded
    }

    fn checkpoint_too_large(&self, len: usize) -> Error {
        Error::NoSpace(format!(
            "{}: a checkpoint of {len} bytes or more does not fit the metadata region ({} bytes per half)",
            self.name,
            self.sb.layout.meta_size_bytes / 2
        ))
    }

    /// Hands every whole piece of `bytes` after `sent` to the device, to
    /// every copy of the metadata region (`offset` in the first), and the
    /// last partial one when `bytes` is `complete` (then a whole number of
    /// blocks); `sent` moves past them.
    fn send_checkpoint_pieces(
        &mut self,
        offset: u64,
        bytes: &[u8],
        complete: bool,
        sent: &mut usize,
        writes: &mut WriteBatch,
    ) -> Result<()> {
        debug_assert!(!complete || bytes.len() % BLOCK == 0);
        while *sent < bytes.len() && (*sent + CHUNK_SIZE_BYTES_MAX <= bytes.len() || complete) {
            let piece = &bytes[*sent..bytes.len().min(*sent + CHUNK_SIZE_BYTES_MAX)];
            for at in self.meta_copies_of(offset + *sent as u64) {
                self.submit_batch_write(at, piece, writes)?;
            }
            *sent += CHUNK_SIZE_BYTES_MAX;
        }
        Ok(())
    }

    /// `superblock::commit`'s protocol on the store's ring (a flush, then
    /// each copy written and flushed in turn), pumping while each step
    /// waits.
    fn commit_superblock_with(
        &mut self,
        change: impl FnOnce(&mut superblock::Superblock),
        writes: &mut WriteBatch,
        pump: Pump<'_>,
    ) -> Result<superblock::Superblock> {
        let next = superblock::next_version(&self.sb, change);
        self.flush_commit(writes, pump)?;
        for index in 0..SUPERBLOCK_COPIES_COUNT {
            let (at, bytes) = superblock::copy_write(&next, index);
            self.submit_batch_write(at, &bytes, writes)?;
            self.settle_commit_io(writes, pump)?;
            self.flush_commit(writes, pump)?;
        }
        Ok(next)
    }

    /// Starts a checkpoint beside commits (`Beside`) of the store as it
    /// is now, to be encoded a slice at a time by `advance_checkpoint`
    /// while commits go on. False when one is already under way, or the
    /// store would not fit a half.
    pub fn start_checkpoint(&mut self) -> Result<bool> {
        if self.beside.is_some() || self.failed.is_some() {
            return Ok(false);
        }
        let epoch = self.sb.store.epoch + 1;
        let state = self.checkpoint_state(epoch);
        if checkpoint_len(&state, &self.index) + BLOCK_SIZE_BYTES > self.sb.layout.meta_size_bytes / 2 {
            return Ok(false);
        }
        let saved = Saved {
            next_sequence: state.next_sequence,
            scrub: state.scrub,
            damaged: state.damaged.clone(),
            tombstones: state.tombstones.clone(),
        };
        let bytes = CheckpointBytes::begin(self.extents.all(), self.index.len());
        self.index.begin_snapshot();
        let half = 1 - self.sb.store.half;
        self.beside = Some(Beside {
            epoch,
            half,
            offset: self.half_offset(half),
            body: Body::Encoding { bytes, state: saved },
            sent: CHUNK_SIZE_BYTES_MAX,
            head_sent: false,
            in_flight: 0,
            failure: None,
            relog: Vec::new(),
            encode_micros: 0,
            log_at_start: self.log_offset,
        });
        Ok(true)
    }

    /// Whether a checkpoint beside commits is still encoding the store:
    /// the store thread then does not sleep while it has nothing else to
    /// do.
    pub fn checkpoint_encoding(&self) -> bool {
        self.beside.as_ref().is_some_and(|b| matches!(b.body, Body::Encoding { .. }))
    }

    /// Encodes the next slice of a checkpoint beside commits, and finishes
    /// it (the lists and the header) after the last.
    fn encode_beside_slice(&mut self) {
        let started = std::time::Instant::now();
        let slice = self.checkpoint_slice_entries;
        let Some(b) = &mut self.beside else { return };
        let Body::Encoding { bytes, .. } = &mut b.body else { return };
        if bytes.snapshot_slice(&mut self.index, slice) {
            self.index.end_snapshot();
            let body = std::mem::replace(&mut b.body, Body::Encoded(Vec::new()));
            let Body::Encoding { bytes, state } = body else { unreachable!("encoding above") };
            let state = CheckpointState {
                epoch: b.epoch,
                next_sequence: state.next_sequence,
                extents: self.extents.all(),
                scrub: state.scrub,
                damaged: &state.damaged,
                tombstones: &state.tombstones,
            };
            b.body = Body::Encoded(bytes.finish(&state));
        }
        b.encode_micros = b.encode_micros.max(started.elapsed().as_micros() as u64);
    }

    /// Whether a checkpoint beside commits is under way.
    pub fn checkpoint_under_way(&self) -> bool {
        self.beside.is_some()
    }

    /// Moves a checkpoint beside commits on: more of its pieces to the
    /// device and, once all are written, the switch (`switch_beside`),
    /// pumping while it waits. True when it was made current.
    pub fn advance_checkpoint(&mut self, pump: Pump<'_>) -> Result<bool> {
        let Some(b) = &self.beside else { return Ok(false) };
        if let Some(why) = &b.failure {
            let why = why.clone();
            self.forget_checkpoint();
            return Err(self.fail(&format!("checkpoint write failed: {why}")));
        }
        self.encode_beside_slice();
        self.send_beside_pieces()?;
        if !self.beside.as_ref().expect("under way").written() {
            return Ok(false);
        }
        self.switch_beside(pump).map(|()| true)
    }

    /// Completes a checkpoint beside commits now: the rest of its pieces
    /// written and waited for, then the switch. For a commit that found
    /// the log half full.
    pub fn finish_checkpoint(&mut self, pump: Pump<'_>) -> Result<()> {
        while self.beside.is_some() {
            if self.advance_checkpoint(&mut *pump)? {
                return Ok(());
            }
            // Its pieces in flight complete, or (none could be sent) what
            // fills the device's queue: gets and scrub reads. With nothing
            // on the device (no piece encoded yet) the reap does not wait
            // (`reap_sorting`): the encoding goes on.
            self.reap_for_checkpoint()?;
            pump(self);
        }
        Ok(())
    }

    /// Drops a checkpoint beside commits (a synchronous checkpoint is
    /// about to take the inactive half): its writes in flight finish first.
    pub(super) fn drop_checkpoint(&mut self) {
        while self.beside.as_ref().is_some_and(|b| b.in_flight > 0) {
            if self.reap_for_checkpoint().is_err() {
                break;
            }
        }
        self.forget_checkpoint();
    }

    /// No checkpoint beside commits any more, nor the snapshot it encoded.
    fn forget_checkpoint(&mut self) {
        self.beside = None;
        self.index.end_snapshot();
    }

    /// Waits for a completion and routes it (a checkpoint write's, a get's
    /// or a scrub window's).
    fn reap_for_checkpoint(&mut self) -> Result<()> {
        self.reap_sorting(true, &mut Vec::new(), Some)
    }

    /// A write of the checkpoint beside commits completed.
    pub(super) fn checkpoint_write_done(&mut self, c: &Completion) {
        let Some(b) = &mut self.beside else {
            debug_assert!(self.failed.is_some(), "a checkpoint write outlived its checkpoint");
            return;
        };
        b.in_flight -= 1;
        if let Err(e) = &c.result {
            b.failure.get_or_insert_with(|| e.to_string());
        }
    }

    /// A record made durable in the log: kept for the checkpoint beside
    /// commits, if one is under way (payload copies and vouches aside:
    /// their puts are durable by then).
    pub(super) fn note_logged(&mut self, record: &LogRecord) {
        if let Some(b) = &mut self.beside {
            if !matches!(record, LogRecord::Payload { .. } | LogRecord::Vouch { .. }) {
                b.relog.push(record.clone());
            }
        }
    }

    /// Hands pieces of the checkpoint beside commits to the device, up to
    /// `BESIDE_PIECES_IN_FLIGHT_MAX` in flight and leaving room in the queue.
    fn send_beside_pieces(&mut self) -> Result<()> {
        let copies = self.sb.layout.meta_copies().len();
        loop {
            let Some(b) = &self.beside else { return Ok(()) };
            let Some(piece) = b.next_piece() else { return Ok(()) };
            if b.in_flight + copies > BESIDE_PIECES_IN_FLIGHT_MAX * copies
                || self.dev.in_flight() + copies > STORE_QUEUE_DEPTH
            {
                return Ok(());
            }
            let offset = b.offset;
            for at in self.meta_copies_of(offset + piece.start as u64) {
                let b = self.beside.as_ref().expect("under way");
                let buf = crate::device::IoBuf::copy_of(&b.encoded().0[piece.clone()])?;
                self.dev.submit(IoOp {
                    token: ReadToken::Checkpoint.encode(),
                    kind: IoKind::Write { offset: at, buf, fua: false },
                })?;
                self.beside.as_mut().expect("under way").in_flight += 1;
            }
            let b = self.beside.as_mut().expect("under way");
            if piece.start == 0 {
                b.head_sent = true;
            } else {
                b.sent = piece.end;
            }
        }
    }

    /// Makes the checkpoint beside commits current: the records logged
    /// since it was encoded, written after it in the new half (every
    /// copy), one flush (which also makes its pieces durable), then the
    /// superblock commit. No commit runs meanwhile (the store thread is
    /// here); gets are pumped. If the records do not fit after it, a
    /// checkpoint of the store as it is now takes its place.
    fn switch_beside(&mut self, pump: Pump<'_>) -> Result<()> {
        let b = self.beside.take().expect("under way");
        let Body::Encoded(bytes) = &b.body else { unreachable!("switched before it was encoded") };
        self.logged_during_checkpoint = self.log_offset.saturating_sub(b.log_at_start);
        let started = std::time::Instant::now();
        // No records, no log write (`pack` always makes a first block).
        let blocks = if b.relog.is_empty() { Vec::new() } else { pack(b.relog.iter()) };
        let half_end = b.offset + self.sb.layout.meta_size_bytes / 2;
        let log_start = b.offset + bytes.len() as u64;
        let relog_len = blocks.len() as u64 * BLOCK_SIZE_BYTES;
        // A guard. The old half held these records after its own
        // checkpoint and the log up to this one's start; this checkpoint
        // outgrows that checkpoint by no more than that log took (an entry
        // is no larger than the record that made it), and the records pack
        // here at least as densely as commits' blocks did (82% of their
        // bytes in `tests/checkpoint.rs`, the old half full): they fit.
        if log_start + relog_len + BLOCK_SIZE_BYTES > half_end {
            return self.checkpoint_with(pump);
        }
        let crc = crc32c::crc32c(bytes);
        let mut writes = WriteBatch::new(0);
        let (log, prev) = encode_log_blocks(b.epoch, 0, crc, &blocks);
        for at in self.meta_copies_of(log_start) {
            for (i, piece) in log.chunks(CHUNK_SIZE_BYTES_MAX).enumerate() {
                if let Err(e) = self.submit_batch_write(at + (i * CHUNK_SIZE_BYTES_MAX) as u64, piece, &mut writes) {
                    let _ = self.await_commit_io(&mut writes, pump);
                    return Err(self.fail(&format!("checkpoint failed: {e}")));
                }
            }
        }
        let store =
            StoreRef { epoch: b.epoch, half: b.half, checkpoint_crc: crc, checkpoint_len_bytes: bytes.len() as u64 };
        let switched = self
            .settle_commit_io(&mut writes, pump)
            .and_then(|()| self.commit_superblock_with(|sb| sb.store = store, &mut writes, pump));
        match switched {
            Ok(sb) => {
                self.sb = sb;
                self.log_offset = log_start + relog_len;
                self.log_index = blocks.len() as u64;
                self.log_prev_crc = prev;
                self.checkpoints_written += 1;
                self.checkpoint_last_micros = b.encode_micros + started.elapsed().as_micros() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.await_commit_io(&mut writes, pump);
                Err(self.fail(&format!("checkpoint failed: {e}")))
            }
        }
    }

    pub(super) fn checkpoint_state(&self, epoch: u64) -> CheckpointState<'_> {
        CheckpointState {
            epoch,
            next_sequence: self.next_sequence,
            extents: self.extents.all(),
            scrub: self.scrub.cursor(),
            damaged: &self.damaged,
            tombstones: &self.tombstones,
        }
    }
}

pub(super) fn read_bytes(dev: &mut dyn BlockDevice, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK_SIZE_BYTES_MAX);
        out.extend_from_slice(dev.read_at(offset + at as u64, n)?.as_slice());
        at += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::checkpoint_due_at;

    #[test]
    fn a_checkpoint_is_due_at_80_percent_or_earlier_when_the_last_one_saw_the_log_fill_fast() {
        let mb = 1 << 20;
        // No checkpoint beside commits yet: at 80% of the room.
        assert!(!checkpoint_due_at(100 * mb, 79 * mb, 0));
        assert!(checkpoint_due_at(100 * mb, 80 * mb, 0));
        // The last one saw 20 MB logged: due with 30 MB left, not 31.
        assert!(!checkpoint_due_at(100 * mb, 69 * mb, 20 * mb));
        assert!(checkpoint_due_at(100 * mb, 71 * mb, 20 * mb));
        // However fast: never before half the room is used.
        assert!(!checkpoint_due_at(100 * mb, 49 * mb, 90 * mb));
        assert!(checkpoint_due_at(100 * mb, 50 * mb, 90 * mb));
        // A slow log changes nothing.
        assert!(!checkpoint_due_at(100 * mb, 79 * mb, mb));
        // No room at all (a checkpoint filling its half): never due.
        assert!(!checkpoint_due_at(0, 0, 90 * mb));
    }
}
