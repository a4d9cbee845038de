//! Checkpoints: the whole index, extent table, scrub cursor and repair
//! list written into the inactive half of the metadata region and made
//! current by a superblock commit; the log restarts after it.

use super::{
    meta, superblock, BlockDevice, BlockDeviceExt, CheckpointHeader, Error, ExtentInfo, Index, Layout, RepairList,
    Result, ScrubCursor, Store, StoreRef, BLOCK, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX,
};

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
    let mut body = Vec::with_capacity(state.extents.len() * 16 + index.len() * 64);
    for e in state.extents {
        body.extend_from_slice(&e.generation.to_le_bytes());
        body.extend_from_slice(&e.write_blocks.to_le_bytes());
        body.extend_from_slice(&e.checked_ms.to_le_bytes());
    }
    for (key, meta) in index.iter() {
        meta::encode_entry(key, &meta, &mut body);
    }
    for (key, damage) in state.damaged.iter() {
        meta::encode_damage(key, damage, &mut body);
    }
    for (key, sequence) in state.tombstones {
        meta::encode_tombstone(key, *sequence, &mut body);
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
        tombstone_count: state.tombstones.len() as u64,
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
        // Every copy of the metadata region gets the checkpoint; the
        // superblock commit flushes them before any copy names it.
        let result = self
            .meta_copies_of(offset)
            .into_iter()
            .try_for_each(|at| write_bytes(self.dev.as_mut(), at, &bytes))
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
