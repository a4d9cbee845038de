//! The aligned buffer arena: one anonymous mapping made at start-up, cut
//! into equal slots. O_DIRECT needs sector-aligned memory; io_uring can
//! pin the whole arena once (registered buffers), and the data path never
//! allocates: taking and returning a slot is a push and a pop on a free list
//! whose capacity was reserved up front.
#![allow(unsafe_code)]

use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use memmap2::MmapMut;

use crate::constants::{BLOCK_SIZE_BYTES, IO_SIZE_BYTES_MAX};
use crate::error::{Error, Result};

const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A pool of page-aligned I/O buffers of one size.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// Owns the memory; never touched after construction except through
    /// `base`, and unmapped only when the last `IoBuf` and pool handle drop.
    _map: MmapMut,
    base: NonNull<u8>,
    slot_size: usize,
    slot_count: usize,
    free: Mutex<Vec<u32>>,
}

// SAFETY: `base` points into `_map`, which lives as long as `PoolInner`.
// Each slot is handed to at most one `IoBuf` at a time (the free list is
// behind a mutex), so no two threads ever alias the same bytes mutably.
unsafe impl Send for PoolInner {}
// SAFETY: see above; shared access only reads the immutable geometry or
// goes through the mutex.
unsafe impl Sync for PoolInner {}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("slot_size", &self.inner.slot_size)
            .field("slot_count", &self.inner.slot_count)
            .finish_non_exhaustive()
    }
}

impl BufferPool {
    /// Maps `slot_count` slots of `slot_size_bytes` (a multiple of 4 KiB).
    pub fn new(slot_size_bytes: usize, slot_count: usize) -> Result<Self> {
        if slot_size_bytes == 0 || slot_size_bytes as u64 % BLOCK_SIZE_BYTES != 0 {
            return Err(Error::InvalidArgument(format!(
                "buffer slot size {slot_size_bytes} is not a non-zero multiple of {BLOCK_SIZE_BYTES}"
            )));
        }
        if slot_size_bytes as u64 > IO_SIZE_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "buffer slot size {slot_size_bytes} exceeds the largest I/O ({IO_SIZE_BYTES_MAX} bytes)"
            )));
        }
        if slot_count == 0 || slot_count > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("buffer slot count {slot_count} out of range")));
        }
        let total = slot_size_bytes
            .checked_mul(slot_count)
            .ok_or_else(|| Error::InvalidArgument("buffer pool size overflows".to_owned()))?;
        // Arenas of a huge page or more are placed on a huge-page boundary
        // and advised to use transparent huge pages: a 1 MiB buffer is then
        // physically contiguous, one DMA segment instead of 256, so large
        // I/Os are not split on devices with few segments per request
        // (virtio-blk allows 254), and pinning them is cheaper.
        let huge = total >= HUGE_PAGE_BYTES;
        let slack = if huge { HUGE_PAGE_BYTES } else { 0 };
        let mut map = MmapMut::map_anon(total + slack)
            .map_err(|e| Error::InvalidArgument(format!("cannot map a {total}-byte buffer pool: {e}")))?;
        let start = map.as_mut_ptr();
        let skip = if huge { start.align_offset(HUGE_PAGE_BYTES) } else { 0 };
        if huge {
            // Advice only: without THP the pool works the same, with more
            // segments per large I/O.
            let _ = map.advise_range(memmap2::Advice::HugePage, skip, total);
        }
        // Fault the arena in now, not on the data path: the first O_DIRECT
        // I/O into an untouched huge page would otherwise zero 2 MiB while
        // a request waits.
        for page in (skip..skip + total).step_by(BLOCK_SIZE_BYTES as usize) {
            map[page] = 0;
        }
        // SAFETY: skip < slack, so base..base+total lies inside the mapping.
        let base = NonNull::new(unsafe { start.add(skip) }).expect("mmap returned null");
        assert_eq!(base.as_ptr() as usize % BLOCK_SIZE_BYTES as usize, 0, "mmap is page-aligned");
        let free = (0..slot_count as u32).rev().collect::<Vec<_>>();
        Ok(BufferPool {
            inner: Arc::new(PoolInner {
                _map: map,
                base,
                slot_size: slot_size_bytes,
                slot_count,
                free: Mutex::new(free),
            }),
        })
    }

    /// Takes a free slot and sets its length to `len`, or `None` when every
    /// slot is in use. The contents are whatever the slot last held.
    pub fn take(&self, len: usize) -> Option<IoBuf> {
        assert!(len <= self.inner.slot_size, "take({len}) exceeds slot size {}", self.inner.slot_size);
        let slot = self.inner.free.lock().expect("buffer pool lock").pop()?;
        // SAFETY: slot < slot_count, so the offset stays inside the mapping.
        let ptr = unsafe { self.inner.base.add(slot as usize * self.inner.slot_size) };
        Some(IoBuf { pool: Arc::clone(&self.inner), slot, ptr, len })
    }

    /// Takes a free slot when `len` fits one; `None` when it does not or
    /// every slot is in use (the caller then uses a standalone buffer).
    pub fn take_if_fits(&self, len: usize) -> Option<IoBuf> {
        if len > self.inner.slot_size {
            return None;
        }
        self.take(len)
    }

    pub fn slot_size(&self) -> usize {
        self.inner.slot_size
    }

    pub fn slot_count(&self) -> usize {
        self.inner.slot_count
    }

    pub fn free_count(&self) -> usize {
        self.inner.free.lock().expect("buffer pool lock").len()
    }

    /// One iovec per slot, for `io_uring_register(REGISTER_BUFFERS)`; the
    /// slot number is then the registered buffer index.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.inner.slot_count)
            .map(|slot| libc::iovec {
                // SAFETY: in bounds of the mapping, as in `take`.
                iov_base: unsafe { self.inner.base.add(slot * self.inner.slot_size) }.as_ptr().cast(),
                iov_len: self.inner.slot_size,
            })
            .collect()
    }

    /// Identity of the arena, to tell whether a buffer belongs to the pool a
    /// ring registered.
    pub(crate) fn id(&self) -> usize {
        self.inner.base.as_ptr() as usize
    }
}

/// One slot of a [`BufferPool`], owned exclusively. While an operation
/// holds it, the kernel may write into it; the engine hands it back only in
/// the completion, so safe code never sees those bytes change under it.
pub struct IoBuf {
    pool: Arc<PoolInner>,
    slot: u32,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the slot is owned exclusively by this value (see `PoolInner`).
unsafe impl Send for IoBuf {}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf").field("slot", &self.slot).field("len", &self.len).finish_non_exhaustive()
    }
}

impl IoBuf {
    /// A buffer from a private single-slot pool: for tools and tests, not
    /// the data path (it maps memory).
    pub fn standalone(len: usize) -> Result<IoBuf> {
        let size = (len as u64).div_ceil(BLOCK_SIZE_BYTES).max(1) * BLOCK_SIZE_BYTES;
        let pool = BufferPool::new(size as usize, 1)?;
        Ok(pool.take(len).expect("fresh pool has a slot"))
    }

    /// A standalone buffer holding a copy of `bytes` (for writes of
    /// metadata and tools, not the data path).
    pub fn copy_of(bytes: &[u8]) -> Result<IoBuf> {
        let mut buf = IoBuf::standalone(bytes.len())?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(buf)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.pool.slot_size
    }

    /// Sets the length of the I/O this buffer carries, up to its capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.pool.slot_size, "set_len({len}) exceeds capacity {}", self.pool.slot_size);
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len lies in our exclusively owned slot; the
        // memory is initialised (anonymous mappings are zero-filled).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    pub(crate) fn pool_id(&self) -> usize {
        self.pool.base.as_ptr() as usize
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        // The free list was allocated with room for every slot: no allocation.
        if let Ok(mut free) = self.pool.free.lock() {
            debug_assert!(free.len() < self.pool.slot_count);
            free.push(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_distinct_and_returned() {
        let pool = BufferPool::new(8192, 4).unwrap();
        let mut bufs: Vec<IoBuf> = (0..4).map(|_| pool.take(8192).unwrap()).collect();
        assert!(pool.take(1).is_none(), "pool must be exhausted");
        for (i, b) in bufs.iter_mut().enumerate() {
            assert_eq!(b.as_ptr() as usize % 4096, 0);
            b.as_mut_slice().fill(i as u8);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.as_slice().iter().all(|&x| x == i as u8), "slots overlap");
        }
        drop(bufs);
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn bad_geometry_is_rejected() {
        assert!(BufferPool::new(1000, 4).is_err());
        assert!(BufferPool::new(4096, 0).is_err());
    }
}
