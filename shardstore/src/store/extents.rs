//! The extent table: each extent's generation, write pointer, live
//! blocks and verification time, the open extent, and the classes (free,
//! emptied) kept up to date as extents change; allocation of space for
//! new records.

use super::{Locator, Store, BLOCK_SIZE_BYTES, RESERVE_EXTENTS_COUNT};

/// Extents by class: free (nothing written, not open), and emptied
/// (sealed, written, nothing live: reset by the next commit).
#[derive(Debug, Default)]
pub(super) struct ExtentClasses {
    pub(super) free: std::collections::BTreeSet<u32>,
    pub(super) emptied: std::collections::BTreeSet<u32>,
}

impl ExtentClasses {
    pub(super) fn rebuild(&mut self, extents: &[ExtentInfo], open: Option<u32>) {
        self.free.clear();
        self.emptied.clear();
        for (i, e) in extents.iter().enumerate() {
            self.touch(i as u32, e, open);
        }
    }

    pub(super) fn touch(&mut self, i: u32, e: &ExtentInfo, open: Option<u32>) {
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
    pub(super) fn note_write(&mut self, written_ms: u64) {
        if self.checked_ms == 0 {
            self.checked_ms = written_ms.max(1);
        }
    }
}

impl Store {
    pub(super) fn blocks_per_extent(&self) -> u32 {
        (self.sb.layout.extent_size_bytes / BLOCK_SIZE_BYTES) as u32
    }

    pub(super) fn free_extents(&self) -> u32 {
        self.classes.free.len() as u32
    }

    /// Files extent `i` under its class after it (or the open extent) changed.
    pub(super) fn touch(&mut self, i: u32) {
        self.classes.touch(i, &self.extents[i as usize], self.open_extent);
    }

    /// Space for one record of `blocks`: appended to the open extent, or at
    /// the start of a free one while more than the reserve are free.
    pub(super) fn allocate(&mut self, blocks: u32) -> Option<Locator> {
        self.allocate_from(blocks, RESERVE_EXTENTS_COUNT)
    }

    /// As `allocate`, keeping `reserve` free extents back (reclamation
    /// passes 0: it is what the reserve is for).
    pub(super) fn allocate_from(&mut self, blocks: u32, reserve: u32) -> Option<Locator> {
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
}
