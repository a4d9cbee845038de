//! Checkpoints: the whole index, extent table, scrub cursor and repair
//! list written into the inactive half of the metadata region and made
//! current by a superblock commit; the log restarts after it.

use std::ops::Bound;

use super::commit::{Pump, WriteBatch};
use super::{
    meta, superblock, BlockDevice, BlockDeviceExt, CheckpointHeader, Error, ExtentInfo, Index, Layout, RepairList,
    Result, ScrubCursor, Store, StoreRef, BLOCK, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX,
};
use crate::constants::SUPERBLOCK_COPIES_COUNT;

/// Checkpoints written since the store opened, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Checkpoints made current (whatever asked: a full log half, a
    /// close, an operator, metadata the scrubber found damaged).
    pub written: u64,
    /// The last one's time from start to the superblock naming it (µs).
    pub last_micros: u64,
    /// The size of the checkpoint the next one would write (the index,
    /// the extent table and the lists), kept current by every commit; a
    /// half of the metadata region holds it and the log after it.
    pub next_bytes: u64,
    /// Bytes of a half of the metadata region.
    pub half_bytes: u64,
    /// Checkpoints an idle store started and abandoned for a write that
    /// arrived before their superblock commit.
    pub given_way: u64,
}

/// An idle store checkpoints once its log has used this share (in
/// percent) of the room the checkpoint in force left it: the checkpoint a
/// full log would force on a commit (writes wait for it) is then usually
/// written in a quiet moment instead, at the cost of at most one more
/// checkpoint per half.
pub const IDLE_CHECKPOINT_LOG_USED_PCT: u64 = 50;

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
    bytes.entries(index, Bound::Unbounded, usize::MAX);
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

    /// Up to `max` of the index's entries from `start` on; the last key.
    fn entries<'a>(&mut self, index: &'a Index, start: Bound<&[u8]>, max: usize) -> Option<&'a [u8]> {
        let (count, last) = index.encode_entries(start, max, &mut self.out);
        self.entries += count as u64;
        last
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

/// Entries encoded between two runs of the pump while a checkpoint is
/// written (about half a millisecond of a store thread's time): how long
/// a get waits for the store thread at most, in a checkpoint.
const CHECKPOINT_SLICE_ENTRIES: usize = 4096;

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
        self.checkpoint_with(&mut |_| {}, &|| false).map(drop)
    }

    /// Whether an idle store should checkpoint now: its log has used
    /// [`IDLE_CHECKPOINT_LOG_USED_PCT`] of the room it had.
    pub fn checkpoint_due(&self) -> bool {
        let half_start = self.half_offset(self.sb.store.half);
        let log_start = half_start + self.sb.store.checkpoint_len_bytes;
        let room = (half_start + self.sb.layout.meta_size_bytes / 2).saturating_sub(log_start);
        let used = self.log_offset.saturating_sub(log_start);
        room > 0 && used * 100 >= room * IDLE_CHECKPOINT_LOG_USED_PCT
    }

    /// A checkpoint for an idle store, as [`Store::checkpoint`] with
    /// `pump` run while it waits, abandoned when `give_way` says a write
    /// waits before its superblock commit starts (what it wrote to the
    /// inactive half is referenced by nothing). Whether it was made current.
    pub fn checkpoint_idle(&mut self, pump: Pump<'_>, give_way: &dyn Fn() -> bool) -> Result<bool> {
        let done = self.checkpoint_with(pump, give_way)?;
        if !done {
            self.checkpoints_given_way += 1;
        }
        Ok(done)
    }

    /// As [`Store::checkpoint`], running `pump` between slices of the
    /// encoding and while the writes and flushes wait, so that gets keep
    /// flowing through it. The checkpoint's pieces go to the device as
    /// they are encoded (every copy of the metadata region), the first one,
    /// whose block holds the header, last. `pump` must not commit: the
    /// index is encoded in slices by key, and must not change between them.
    /// Abandoned (`Ok(false)`) if `give_way` is true after a slice or once
    /// the pieces are written, before the superblock commit.
    pub(super) fn checkpoint_with(&mut self, pump: Pump<'_>, give_way: &dyn Fn() -> bool) -> Result<bool> {
        self.check_usable()?;
        let started = std::time::Instant::now();
        let epoch = self.sb.store.epoch + 1;
        let half = 1 - self.sb.store.half;
        let offset = self.half_offset(half);
        // The checkpoint and at least one log block after it.
        let room = (self.sb.layout.meta_size_bytes / 2 - BLOCK_SIZE_BYTES) as usize;
        let (entries, next_sequence) = (self.index.len(), self.next_sequence);
        let mut bytes = CheckpointBytes::begin(self.extents.all(), entries);
        let mut writes = WriteBatch::new(0);
        // Bytes before this were handed to the device (the first piece,
        // with the header's block, is held back).
        let mut sent = CHUNK_SIZE_BYTES_MAX;
        let mut after: Option<Vec<u8>> = None;
        let encoded = loop {
            let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let last = bytes.entries(&self.index, from, CHECKPOINT_SLICE_ENTRIES).map(<[u8]>::to_vec);
            if bytes.len() > room {
                break Err(self.checkpoint_too_large(bytes.len()));
            }
            let sending = self.send_checkpoint_pieces(offset, &bytes.out, false, &mut sent, &mut writes);
            if let Err(e) = sending {
                break Err(e);
            }
            let Some(key) = last else { break Ok(true) };
            after = Some(key);
            if let Err(e) = self.poll_commit_io(&mut writes) {
                break Err(e);
            }
            pump(self);
            if give_way() {
                break Ok(false);
            }
        };
        debug_assert_eq!(
            (self.index.len(), self.next_sequence),
            (entries, next_sequence),
            "the index changed while a checkpoint encoded it"
        );
        let result = encoded.and_then(|whole| {
            if !whole {
                return Ok(None);
            }
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
            Ok(Some(bytes))
        });
        // Whatever was submitted completes first: the device owns those
        // buffers until then. Every copy gets the checkpoint; the
        // superblock commit flushes them before any copy names it.
        let settled = self.settle_commit_io(&mut writes, pump);
        let bytes = match (result, settled) {
            (Err(e @ Error::NoSpace(_)), Ok(())) => return Err(e),
            (Ok(None), Ok(())) => return Ok(false),
            (Ok(Some(_)), Ok(())) if give_way() => return Ok(false),
            (Ok(Some(bytes)), Ok(())) => bytes,
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
                Ok(true)
            }
            Err(e) => {
                let _ = self.await_commit_io(&mut writes, pump);
                Err(self.fail(&format!("checkpoint failed: {e}")))
            }
        }
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
