//! Where hot small shards are on the device, for reads on other threads:
//! a thread serving connections reads a shard of another device on its
//! own ring, from the place the owning store thread published, instead of
//! asking that thread (a hand-off each way, and the owner's CPU).
//!
//! The owning store thread alone changes the placements, which keeps them
//! exact in the way the read cache is (`cache.rs`):
//!
//! - a shard is placed when a whole-shard get of it (one chunk, at most
//!   [`PLACED_SHARD_BYTES_MAX`]) finishes verified and the index still
//!   holds that very write at that very place, undamaged (once another
//!   thread has looked a shard up: until then nobody reads places);
//! - every change the index makes to a key (a put, delete or tombstone
//!   applied, damage recorded, a chunk relocated) removes it first, before
//!   the change is answered to anyone;
//! - every extent reset applied counts an epoch ([`Placements::resets`]):
//!   a place can only be written again after its extent is reset, so a
//!   read whose epoch did not move between its lookup and its completion
//!   read bytes nothing has written since the lookup;
//! - a store that fails or closes empties them and gives up the device's
//!   descriptor: nothing more is placed or read from them.
//!
//! A placed read is checked twice when it completes ([`PlacedRead::finish`]):
//! its bytes against the shard's CRC (as every read is), and the epoch.
//! Either failing, or the read failing, costs the reader the hand-off to
//! the owner, never a wrong answer: the owner reads again, and is the one
//! that reports damage. Absence is never concluded from a miss here.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::ShardStat;
use crate::health::DeviceCounters;

/// Largest shard placed: a reader's buffers are this large.
pub const PLACED_SHARD_BYTES_MAX: usize = 128 * 1024;

/// Shards placed per device at most; past it the placements start over
/// (the hot ones are placed again by their next reads on the owner).
pub const PLACED_SHARDS_MAX: usize = 1 << 16;

/// Where a placed shard's payload is.
#[derive(Debug, Clone, Copy)]
struct Place {
    offset: u64,
    stat: ShardStat,
}

/// Counters, read without the lock.
#[derive(Debug, Default)]
pub struct PlacedStats {
    /// Reads answered from a placement, verified.
    pub reads: AtomicU64,
    /// Reads whose extent epoch moved while they were in flight (handed
    /// to the owner).
    pub stale: AtomicU64,
    /// Reads that failed or did not verify (handed to the owner, which
    /// reads again and reports what it finds).
    pub failed: AtomicU64,
    /// Shards placed now.
    pub entries: AtomicU64,
}

/// One device's placements, shared between its store thread (which
/// changes them) and the threads that read from them.
#[derive(Debug)]
pub struct Placements {
    /// The places and the descriptor to read them through, under one
    /// lock: a lookup takes one.
    inner: Mutex<Inner>,
    /// Extent resets applied since open: the epoch of every place.
    resets: AtomicU64,
    /// Set by a reader whose placed read is slow (the device may hang):
    /// readers go to the owner, whose stall watch sees its own reads,
    /// until the owner finishes a read again.
    suspended: AtomicBool,
    /// Set by the first lookup: until another thread looks, the owner
    /// places nothing (a device whose thread serves all its reads itself
    /// pays nothing for placements).
    wanted: AtomicBool,
    counters: Arc<DeviceCounters>,
    stats: PlacedStats,
}

#[derive(Debug)]
struct Inner {
    /// The device's descriptor (a duplicate), while reads may use it.
    file: Option<Arc<OwnedFd>>,
    places: HashMap<Box<[u8]>, Place>,
}

/// A read of a placed shard, from its lookup to its check.
#[derive(Debug)]
pub struct PlacedRead {
    placements: Arc<Placements>,
    file: Arc<OwnedFd>,
    offset: u64,
    resets: u64,
    started: Instant,
    pub stat: ShardStat,
}

impl Placements {
    /// Placements reading through `file` (`None`: a device no other
    /// thread can read, such as the simulated one; nothing is placed).
    pub fn new(file: Option<OwnedFd>, counters: Arc<DeviceCounters>) -> Placements {
        Placements {
            inner: Mutex::new(Inner { file: file.map(Arc::new), places: HashMap::new() }),
            resets: AtomicU64::new(0),
            suspended: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            counters,
            stats: PlacedStats::default(),
        }
    }

    pub fn stats(&self) -> &PlacedStats {
        &self.stats
    }

    /// Extent resets applied since the store opened.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::SeqCst)
    }

    /// Whether a shard of `size` bytes in `chunks` chunks would be placed
    /// (someone reads places, and it fits one reader's buffer).
    pub(super) fn takes(&self, size: u64, chunks: usize) -> bool {
        self.wanted.load(Ordering::Relaxed) && size > 0 && size <= PLACED_SHARD_BYTES_MAX as u64 && chunks == 1
    }

    /// The place of `key`'s shard, to read on the caller's thread, or
    /// `None` (not placed: ask the owner).
    pub fn lookup(self: &Arc<Self>, key: &[u8]) -> Option<PlacedRead> {
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        if self.suspended.load(Ordering::Relaxed) {
            return None;
        }
        let inner = self.inner.lock().expect("never poisoned");
        let file = Arc::clone(inner.file.as_ref()?);
        let place = *inner.places.get(key)?;
        // Under the lock: the place is still there, so its key has not
        // moved, and its extent (reset only after its keys moved) has not
        // been reset; the epoch taken now is one the place is valid in.
        let resets = self.resets.load(Ordering::SeqCst);
        drop(inner);
        Some(PlacedRead {
            placements: Arc::clone(self),
            file,
            offset: place.offset,
            resets,
            started: Instant::now(),
            stat: place.stat,
        })
    }

    /// Places `key`'s shard, whose payload is at `offset` (the owner, for
    /// a whole-shard get that finished verified of the write the index
    /// holds).
    pub(super) fn place(&self, key: &[u8], offset: u64, stat: ShardStat) {
        if !self.takes(stat.size, stat.chunks) {
            return;
        }
        let mut inner = self.inner.lock().expect("never poisoned");
        if inner.file.is_none() {
            return;
        }
        // The owner read the device: readers may use it again.
        if self.suspended.load(Ordering::Relaxed) {
            self.suspended.store(false, Ordering::Relaxed);
        }
        let place = Place { offset, stat };
        let places = &mut inner.places;
        // Placed again by each read on the owner: no new key then.
        if let Some(p) = places.get_mut(key) {
            *p = place;
        } else {
            if places.len() >= PLACED_SHARDS_MAX {
                places.clear();
            }
            places.insert(key.into(), place);
        }
        self.stats.entries.store(places.len() as u64, Ordering::Relaxed);
    }

    /// The index is about to change `key` (or where its chunks are).
    pub(super) fn forget(&self, key: &[u8]) {
        let mut inner = self.inner.lock().expect("never poisoned");
        if inner.places.remove(key).is_some() {
            self.stats.entries.store(inner.places.len() as u64, Ordering::Relaxed);
        }
    }

    /// An extent reset is applied: places read from now on are valid in
    /// the next epoch. Called before anything is written to the extent.
    pub(super) fn reset_applied(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }

    /// The store fails or closes: nothing more is placed or read.
    pub(super) fn close(&self) {
        let mut inner = self.inner.lock().expect("never poisoned");
        inner.file = None;
        inner.places.clear();
        self.stats.entries.store(0, Ordering::Relaxed);
    }

    /// Sends readers to the owner until it reads the device again.
    pub fn suspend(&self) {
        self.suspended.store(true, Ordering::Relaxed);
    }
}

impl PlacedRead {
    /// The descriptor to read from, held by the read while it is in flight.
    pub fn file(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.file)
    }

    /// Where the payload starts on the device.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes to read: the payload, in whole blocks.
    pub fn read_len(&self) -> usize {
        super::record::payload_size_bytes(self.stat.size as usize) as usize
    }

    /// When the lookup was made.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Sends the device's readers to its owner (this read is slow).
    pub fn suspend(&self) {
        self.placements.suspend();
    }

    /// Checks the completed read of `read` bytes into `buf`: the shard's
    /// bytes when they verify and no extent was reset since the lookup,
    /// else `None` (ask the owner).
    pub fn finish(&self, read: &std::io::Result<usize>, buf: &[u8]) -> Option<Vec<u8>> {
        let size = self.stat.size as usize;
        let stats = &self.placements.stats;
        let whole = matches!(read, Ok(n) if *n >= size) && buf.len() >= size;
        if !whole || crc32c::crc32c(&buf[..size]) != self.stat.crc32c {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.placements.resets.load(Ordering::SeqCst) != self.resets {
            stats.stale.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        stats.reads.fetch_add(1, Ordering::Relaxed);
        self.placements.counters.read_latency.record(self.started.elapsed(), self.stat.size);
        Some(buf[..size].to_vec())
    }
}
