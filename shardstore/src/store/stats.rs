//! `StoreStats`, published by the store thread (`thread.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Store, Usage};

/// Figures the store thread keeps current for its callers (placement,
/// status, metrics), read without a round trip to the thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub capacity_bytes: AtomicU64,
    pub free_bytes: AtomicU64,
    pub live_bytes: AtomicU64,
    pub shards: AtomicU64,
    /// Requests queued and not yet taken by the thread.
    pub queued: AtomicU64,
    /// Requests sent to the thread so far (each a trip to it).
    pub requests: AtomicU64,
    /// Reads started on the thread by its sidecar (the connections it
    /// serves), without a trip.
    pub local_reads: AtomicU64,
    /// Waits on the device in which a get sent meanwhile was left for the
    /// next completion instead of waking the thread (enough gets' reads
    /// were at the device to bring one soon).
    pub lazy_waits: AtomicU64,
    /// Group commits and the operations they carried.
    pub commits: AtomicU64,
    pub committed_ops: AtomicU64,
    /// Commits vouched by their log write (one flush for a batch with a
    /// put), and empty log writes the thread made to confirm one no other
    /// commit followed.
    pub vouched_commits: AtomicU64,
    pub confirmations: AtomicU64,
    /// The store's next write sequence when it opened.
    pub next_sequence_at_open: AtomicU64,
    /// Writes the device sent in pieces to let reads pass (see
    /// `OpenOptions::write_piece_bytes`).
    pub writes_split: AtomicU64,
    /// Reclamation: chunks moved and extents reset by steps riding on
    /// commits, whole extents evacuated at once and the chunks they moved,
    /// and whole-extent passes that gave way to writes before the end.
    pub chunks_moved_along: AtomicU64,
    pub extents_reset_along: AtomicU64,
    pub whole_extents_reclaimed: AtomicU64,
    pub chunks_moved_whole: AtomicU64,
    pub reclaim_passes_given_way: AtomicU64,
    /// Checkpoints written since open, the last one's time (µs), the size
    /// the next one would have and the half of the metadata region that
    /// holds it (see `CheckpointCounts`).
    pub checkpoints: AtomicU64,
    pub checkpoint_last_micros: AtomicU64,
    pub checkpoint_next_bytes: AtomicU64,
    pub metadata_half_bytes: AtomicU64,
}

impl StoreStats {
    pub(super) fn publish(&self, usage: &Usage) {
        self.capacity_bytes.store(usage.capacity_bytes, Ordering::Relaxed);
        self.free_bytes.store(usage.free_bytes, Ordering::Relaxed);
        self.live_bytes.store(usage.live_bytes, Ordering::Relaxed);
        self.shards.store(usage.shards, Ordering::Relaxed);
    }

    /// The store's own counters (cheap: published after every commit and
    /// idle reclamation).
    pub(super) fn publish_counts(&self, store: &Store) {
        let (vouched, confirmations) = store.vouched_commits();
        self.vouched_commits.store(vouched, Ordering::Relaxed);
        self.confirmations.store(confirmations, Ordering::Relaxed);
        let r = store.reclaim_counts();
        self.writes_split.store(store.writes_split(), Ordering::Relaxed);
        self.chunks_moved_along.store(r.chunks_moved_along, Ordering::Relaxed);
        self.extents_reset_along.store(r.extents_reset_along, Ordering::Relaxed);
        self.whole_extents_reclaimed.store(r.whole_extents, Ordering::Relaxed);
        self.chunks_moved_whole.store(r.chunks_moved_whole, Ordering::Relaxed);
        self.reclaim_passes_given_way.store(r.passes_given_way, Ordering::Relaxed);
        let c = store.checkpoint_counts();
        self.checkpoints.store(c.written, Ordering::Relaxed);
        self.checkpoint_last_micros.store(c.last_micros, Ordering::Relaxed);
        self.checkpoint_next_bytes.store(c.next_bytes, Ordering::Relaxed);
        self.metadata_half_bytes.store(c.half_bytes, Ordering::Relaxed);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            capacity_bytes: self.capacity_bytes.load(Ordering::Relaxed),
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            shards: self.shards.load(Ordering::Relaxed),
        }
    }
}
