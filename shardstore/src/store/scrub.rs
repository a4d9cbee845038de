//! Verification. Every superblock copy, every copy of the checkpoint and
//! log in force, and every live chunk (header block and payload) are read
//! back and checked against their checksums: all at once by the offline
//! pass (`offline.rs`, `shardctl scrub`), or continuously by the
//! background scrubber, paced to its coverage deadline: its state and
//! decisions in `background.rs`, its reads and records in this file.
//!
//! Only what the store references is checked: dead records (deleted,
//! overwritten, never acknowledged) are not data anyone can read, so damage
//! to them is not a finding.

mod background;
mod offline;

use serde::Serialize;

pub(crate) use background::Background;
use background::{ChunkRef, ScanStart};
pub use background::{ScrubCounters, ScrubSettings, ScrubStatus, SCRUB_DEADLINE_DAYS_DEFAULT};

use super::meta::{Damage, Locator, LogRecord};
use super::record;
use super::{key_text, ReadToken, Store, STORE_QUEUE_DEPTH};
use crate::device::{Completion, IoKind, IoOp};
use crate::error::Result;
use crate::superblock;

/// What kind of damage a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A superblock copy is invalid or stale (the next read-write open
    /// rewrites it from the copies in force).
    SuperblockCopy,
    /// The checkpoint the store recovered from no longer matches its CRC.
    Checkpoint,
    /// A log block the store replayed no longer continues the chain.
    LogBlock,
    /// A chunk's payload does not match its checksum.
    ChunkChecksum,
    /// A chunk's header block is damaged, or belongs to another record.
    ChunkHeader,
    /// The device could not read these bytes of a chunk.
    ChunkUnreadable,
}

/// One damaged place.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The shard it belongs to, when it belongs to one.
    pub key: Option<String>,
    /// Device offset and length of the damaged bytes.
    pub offset: u64,
    pub len: u64,
    pub detail: String,
}

/// What a pass verified and found.
#[derive(Debug, Default, Serialize)]
pub struct ScrubReport {
    pub superblock_copies_checked: u64,
    pub metadata_bytes_verified: u64,
    pub chunks_verified: u64,
    pub chunk_bytes_verified: u64,
    pub findings: Vec<Finding>,
}

impl ScrubReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Records damage to metadata (no shard of its own).
    fn metadata(&mut self, kind: FindingKind, offset: u64, len: u64, detail: String) {
        self.findings.push(Finding { kind, key: None, offset, len, detail });
    }
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::SuperblockCopy,
        FindingKind::Checkpoint,
        FindingKind::LogBlock,
        FindingKind::ChunkChecksum,
        FindingKind::ChunkHeader,
        FindingKind::ChunkUnreadable,
    ];

    /// The name used in JSON, metrics and log lines.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::SuperblockCopy => "superblock_copy",
            FindingKind::Checkpoint => "checkpoint",
            FindingKind::LogBlock => "log_block",
            FindingKind::ChunkChecksum => "chunk_checksum",
            FindingKind::ChunkHeader => "chunk_header",
            FindingKind::ChunkUnreadable => "chunk_unreadable",
        }
    }

    pub(crate) fn code(self) -> u8 {
        FindingKind::ALL.iter().position(|k| *k == self).expect("every kind is listed") as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<FindingKind> {
        FindingKind::ALL.get(code as usize).copied()
    }
}

/// A shard on the repair list.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedShard {
    pub key: String,
    pub sequence: u64,
    pub chunk: u32,
    pub kind: FindingKind,
    pub offset: u64,
    pub len: u64,
    pub found_unix_ms: u64,
}

// ---------------------------------------------------------------------
// The background scrubber in the store: `Background` (background.rs)
// decides; the store lends it views of its tables, does the reads and
// writes the records it asks for.
// ---------------------------------------------------------------------

impl Store {
    pub fn scrub_settings(&self) -> ScrubSettings {
        self.scrub.settings()
    }

    pub fn set_scrub_settings(&mut self, settings: ScrubSettings) {
        self.scrub.set_settings(settings);
    }

    /// Whether a scrub read finished and the scrubber should step now.
    pub fn scrub_wants_step(&self) -> bool {
        self.scrub.wants_step()
    }

    /// Walks of the index the scrubber began, each listing the chunks of
    /// a run of extents (for tests and benchmarks).
    #[doc(hidden)]
    pub fn scrub_runs_listed(&self) -> u64 {
        self.scrub.runs_listed()
    }

    /// Sizes the scrubber's runs to at most `chunks` live chunks (but at
    /// least one extent): tests list one extent per walk with 0.
    #[doc(hidden)]
    pub fn set_scrub_run_chunks_max(&mut self, chunks: u64) {
        self.scrub.set_run_chunks_max(chunks);
    }

    /// The read rate the deadline needs now, in bytes per second.
    pub fn scrub_rate(&self, now_ms: u64) -> u64 {
        self.scrub.rate(&self.extents, now_ms)
    }

    pub fn scrub_status(&self) -> ScrubStatus {
        self.scrub.status(&self.extents, self.damaged.len() as u64, superblock::now_unix_ms())
    }

    /// The repair list: shards the scrubber found damaged, by key.
    pub fn damaged_shards(&self) -> Vec<DamagedShard> {
        self.damaged
            .iter()
            .map(|(key, d)| DamagedShard {
                key: key_text(key),
                sequence: d.sequence,
                chunk: d.chunk,
                kind: FindingKind::from_code(d.kind).unwrap_or(FindingKind::ChunkChecksum),
                offset: d.offset,
                len: d.len,
                found_unix_ms: d.found_ms,
            })
            .collect()
    }

    /// Whether a shard is on the repair list (its reads answer
    /// `Corruption`).
    pub(crate) fn damage_of(&self, key: &[u8], sequence: u64) -> Option<Damage> {
        self.damaged.get(key, sequence)
    }

    /// Advances the background scrubber by one step: logs the damage found
    /// since the last step, lists chunks, starts window reads the pacing
    /// and the foreground allow, retries failed windows, finishes extents
    /// and passes. Returns how long until it wants to run again (`None`:
    /// paused).
    pub fn scrub_step(&mut self) -> Result<Option<std::time::Duration>> {
        use std::time::{Duration, Instant};
        let damage = self.scrub.begin_step();
        self.check_usable()?;
        if !damage.is_empty() {
            self.quiesce();
            let records: Vec<(usize, LogRecord)> = damage.into_iter().map(|r| (0, r)).collect();
            self.make_durable(&records)?;
        }
        if self.scrub.settings().paused {
            return Ok(None);
        }
        if self.scrub.take_metadata_damaged() {
            // A new checkpoint in the other half, and a superblock commit
            // that rewrites every copy, supersede the damaged metadata.
            self.checkpoint()?;
        }
        let retries = self.scrub.take_retries();
        if !retries.is_empty() {
            self.quiesce();
            for c in retries {
                if self.scrub.still_live(&c, &self.extents, &self.index) {
                    let mut report = ScrubReport::default();
                    self.scrub_chunk(&c.key, c.sequence, c.chunk as usize, c.len, c.loc, &mut report);
                    self.take_report(&c, report);
                }
            }
        }
        let now_ms = superblock::now_unix_ms();
        let rate = self.scrub_rate(now_ms);
        self.scrub.refill(rate, self.pool.slot_size() as f64, Instant::now());
        loop {
            match self.scrub.start_extent_scan(&self.extents, now_ms) {
                ScanStart::Scanning => break,
                ScanStart::Idle => return Ok(Some(Duration::from_secs(1))),
                ScanStart::PassComplete(cursor) => {
                    self.scrub_all_metadata();
                    // The cursor alone, in a `Scrubbed` record for an
                    // extent whose time it does not change.
                    self.quiesce();
                    let generation = self.extents.get(0).generation;
                    let record = LogRecord::Scrubbed { extent: 0, generation, checked_ms: 0, scrub: cursor };
                    self.make_durable(&[(0, record)])?;
                    tracing::info!(device = %self.name, passes = cursor.passes, "scrub pass complete");
                }
            }
        }
        if self.scrub.listing() {
            self.scrub.list_step(&self.index, &self.damaged);
            return Ok(Some(Duration::ZERO));
        }
        self.submit_windows();
        if self.scrub.scan_done() {
            let record = self.scrub.finish_scan();
            self.make_durable(&[(0, record)])?;
            return Ok(Some(Duration::ZERO));
        }
        Ok(Some(self.scrub.wait(rate)))
    }

    /// Starts the window reads the scrubber plans while the gets leave the
    /// ring room: scrubbing never holds back a get.
    fn submit_windows(&mut self) {
        loop {
            let room = !self.reads.has_queued() && self.dev.in_flight() < STORE_QUEUE_DEPTH / 2;
            let Some(plan) = self.scrub.plan_window(self.pool.slot_size() as u64, room) else { return };
            let Some(buf) = self.pool.take(plan.len) else { return };
            let offset = self.locator_offset(Locator::lone(plan.extent, plan.block, 0));
            let token = ReadToken::Scrub { window: plan.id as u32 }.encode();
            let submitted = self.dev.submit(IoOp { token, kind: IoKind::Read { offset, buf } }).is_ok();
            self.scrub.window_submitted(plan, submitted);
            if !submitted {
                return;
            }
        }
    }

    /// A scrub window read completed (called from the read path): every
    /// chunk in it that is still live is verified.
    pub(crate) fn scrub_window_done(&mut self, id: usize, c: Completion) {
        let Some((window, chunks)) = self.scrub.window_done(id) else { return };
        let Ok(()) = c.result else {
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.scrub.window_failed(chunks);
            return;
        };
        let buf = c.buf.expect("reads return their buffer");
        let bytes = buf.as_slice();
        let block_bytes = crate::constants::BLOCK_SIZE_BYTES as usize;
        for chunk in chunks {
            if !self.scrub.still_live(&chunk, &self.extents, &self.index) {
                continue;
            }
            let at = (chunk.loc.block - window.block) as usize * block_bytes;
            let record_len = record::span_blocks(chunk.loc.distance, chunk.len) as usize * block_bytes;
            let mut report = ScrubReport::default();
            self.verify_record(
                &chunk.key,
                chunk.sequence,
                chunk.chunk as usize,
                chunk.len,
                chunk.loc,
                &bytes[at..at + record_len],
                &mut report,
            );
            self.take_report(&chunk, report);
        }
    }

    /// Counts a chunk's verification, or records its damage: reported
    /// (`note_finding`) and the shard put on the repair list (durably, on
    /// the next step) so its reads answer `Corruption`.
    fn take_report(&mut self, c: &ChunkRef, report: ScrubReport) {
        for f in self.scrub.take_report(c, report, &self.damaged) {
            self.note_finding(f);
        }
    }

    /// Reports a finding: counted (scrub counters and the device's error
    /// counters), logged, kept among the recent findings.
    pub(super) fn note_finding(&mut self, f: Finding) {
        let counter = match f.kind {
            FindingKind::ChunkUnreadable => &self.counters.io_errors,
            _ => &self.counters.checksum_failures,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            device = %self.name,
            kind = f.kind.name(),
            key = f.key.as_deref().unwrap_or(""),
            offset = f.offset,
            len = f.len,
            detail = %f.detail,
            "scrub found damage"
        );
        self.scrub.note_finding(f);
    }

    /// Verifies the superblock copies and the checkpoint and log in force
    /// (once per pass); damage is repaired on the next step by writing a
    /// new checkpoint, which also rewrites every superblock copy.
    fn scrub_all_metadata(&mut self) {
        let mut report = ScrubReport::default();
        self.quiesce();
        self.scrub_superblocks(&mut report);
        self.scrub_metadata(&mut report);
        self.scrub.metadata_verified(&report);
        for f in report.findings {
            self.note_finding(f);
        }
    }
}
