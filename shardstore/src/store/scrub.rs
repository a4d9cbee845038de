//! Verification. Every superblock copy, every copy of the checkpoint and
//! log in force, and every live chunk (header block and payload) are read
//! back and checked against their checksums: all at once by the offline
//! pass (`offline.rs`, `shardctl scrub`), or continuously by the
//! background scrubber below, paced to its coverage deadline, whose state
//! (`Background`) lives here.
//!
//! Only what the store references is checked: dead records (deleted,
//! overwritten, never acknowledged) are not data anyone can read, so damage
//! to them is not a finding.

mod offline;

use serde::Serialize;

use super::meta::{self, Damage, Locator, LogRecord, ScrubCursor};
use super::record;
use super::{chunk_len, key_text, ReadToken, Store, STORE_QUEUE_DEPTH};
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

// ---------------------------------------------------------------------
// The background scrubber.
//
// It walks the extents in order, one at a time. For the extent at the
// cursor it lists the live chunks the index references (in bounded steps,
// so a large index never stalls the store thread), sorts them by
// position, and reads them back in windows of up to about 1 MiB that may
// span small dead gaps: sequential reads, through the same ring as the
// store's gets but only while the gets leave room, and paced by a byte
// allowance. Each chunk is checked again against the index when its
// window completes (it may have been deleted or moved meanwhile), then
// verified: header, key, sequence and payload CRC. A window the device
// cannot read is retried chunk by chunk, and an unreadable chunk block by
// block, so a finding names the exact bytes. When every chunk is done the
// extent's verification time (when its pass started) and the cursor are
// logged; after the last extent a pass is complete.
// ---------------------------------------------------------------------

/// Default coverage deadline: every live byte verified within 14 days.
pub const SCRUB_DEADLINE_DAYS_DEFAULT: u64 = 14;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// A pass aims to end within this share of the deadline, so a byte
/// written just behind the cursor is still checked in time.
const PASS_TARGET_PERCENT: u64 = 90;
/// Dead bytes a window reads through rather than starting a new read.
const GAP_BYTES_MAX: u64 = 256 * 1024;
/// Index entries examined per step while listing an extent's chunks.
const LIST_STEP_ENTRIES: usize = 16 * 1024;
/// Windows in flight at most when unthrottled (one when paced).
const UNTHROTTLED_WINDOWS_MAX: usize = 4;
/// Recent findings kept for status (all are counted and logged).
const RECENT_FINDINGS_MAX: usize = 64;

/// How the scrubber is to run; the agent sets these from its config and
/// the operator's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubSettings {
    /// Every live byte is to be verified within this many milliseconds.
    pub deadline_ms: u64,
    /// Ceiling on the scrub read rate, bytes per second.
    pub rate_bytes_max: Option<u64>,
    /// Scrub as fast as foreground I/O allows, ignoring the deadline's
    /// rate (still under `rate_bytes_max`).
    pub unthrottled: bool,
    /// Only until the pass in progress completes (an operator's `start`).
    pub until_pass_end: bool,
    pub paused: bool,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        ScrubSettings {
            deadline_ms: SCRUB_DEADLINE_DAYS_DEFAULT * DAY_MS,
            rate_bytes_max: None,
            unthrottled: false,
            until_pass_end: false,
            paused: false,
        }
    }
}

/// Totals since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScrubCounters {
    pub chunk_bytes_verified: u64,
    pub chunks_verified: u64,
    pub metadata_bytes_verified: u64,
    pub extents_verified: u64,
    pub read_errors: u64,
    /// Findings by kind, in `FindingKind::ALL` order.
    pub findings: [u64; 6],
}

/// What the scrubber is doing, for status and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubStatus {
    pub paused: bool,
    pub unthrottled: bool,
    pub deadline_ms: u64,
    pub rate_bytes_max: Option<u64>,
    /// The rate the deadline asks for now, bytes per second.
    pub rate_bytes_per_s: u64,
    /// Age of the live byte verified longest ago (or written, if never
    /// verified): the figure to alarm on. `None` when nothing is stored.
    pub oldest_unverified_age_ms: Option<u64>,
    pub pass_started_ms: u64,
    pub last_pass_ms: u64,
    pub passes: u64,
    /// Live bytes of the extents behind the cursor in this pass, and in all.
    pub pass_done_bytes: u64,
    pub pass_total_bytes: u64,
    /// When the pass should end at the current rate (unix ms).
    pub pass_eta_ms: Option<u64>,
    pub next_extent: u32,
    pub counters: ScrubCounters,
    pub damaged_shards: u64,
    pub recent_findings: Vec<Finding>,
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

/// One live chunk to verify.
#[derive(Debug, Clone)]
struct ChunkRef {
    key: Vec<u8>,
    sequence: u64,
    chunk: u32,
    len: usize,
    loc: Locator,
}

#[derive(Debug)]
struct ExtentScan {
    extent: u32,
    generation: u32,
    started_ms: u64,
    /// Write pointer when the scan started: later records are newer than
    /// `started_ms` and left to the next pass.
    snapshot_blocks: u32,
    /// Where the listing of live chunks goes on (None: from the start).
    list_after: Option<Vec<u8>>,
    listed: bool,
    chunks: Vec<ChunkRef>,
    /// The next chunk no window has taken.
    next: usize,
    /// Bytes of the extent's live records already read in this scan.
    read_bytes: u64,
}

/// One scrub read in flight: chunks `first..first + count` of the scan,
/// read from block `block` of the extent.
#[derive(Debug)]
struct Window {
    first: usize,
    count: usize,
    block: u32,
}

/// The scrubber's state in a store.
#[derive(Debug)]
pub struct Background {
    pub(crate) cursor: ScrubCursor,
    settings: ScrubSettings,
    scan: Option<ExtentScan>,
    windows: Vec<Option<Window>>,
    /// Chunks to verify one by one (their window could not be read).
    retry: Vec<ChunkRef>,
    /// Bytes the pacing allows to read now; refilled at the rate.
    allowance: f64,
    /// No pacing now (unthrottled, or behind the deadline with no ceiling).
    unlimited: bool,
    refilled: Option<std::time::Instant>,
    counters: ScrubCounters,
    recent: std::collections::VecDeque<Finding>,
    /// Metadata damage found: repaired by writing a new checkpoint.
    metadata_damaged: bool,
    /// Damaged shards found in the read path, to log on the next step.
    pending_damage: Vec<(Vec<u8>, Damage)>,
    /// A window finished: the next step should come at once.
    wants_step: bool,
}

impl Background {
    pub(crate) fn new(cursor: ScrubCursor) -> Background {
        Background {
            cursor,
            settings: ScrubSettings::default(),
            scan: None,
            windows: Vec::new(),
            retry: Vec::new(),
            allowance: 0.0,
            unlimited: false,
            refilled: None,
            counters: ScrubCounters::default(),
            recent: std::collections::VecDeque::new(),
            metadata_damaged: false,
            pending_damage: Vec::new(),
            wants_step: false,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.windows.iter().filter(|w| w.is_some()).count()
    }

    /// The ring failed: no window will complete. The extent is scanned
    /// again from the start when the store is usable again (it is not).
    pub(crate) fn abandon_windows(&mut self) {
        self.windows.clear();
        self.scan = None;
    }
}

impl Store {
    pub fn scrub_settings(&self) -> ScrubSettings {
        self.scrub.settings
    }

    pub fn set_scrub_settings(&mut self, settings: ScrubSettings) {
        self.scrub.settings = settings;
    }

    /// Whether a scrub read finished and the scrubber should step now.
    pub fn scrub_wants_step(&self) -> bool {
        self.scrub.wants_step
    }

    /// Live bytes the pass in progress has still to read (those of the
    /// extents from the cursor on, less what the current extent's scan
    /// already read) and live bytes in all.
    fn pass_bytes(&self) -> (u64, u64) {
        let block = crate::constants::BLOCK_SIZE_BYTES;
        let (mut left, mut all) = (0, 0);
        for (i, e) in self.extents.all().iter().enumerate() {
            let bytes = u64::from(e.live_blocks) * block;
            all += bytes;
            if i as u32 >= self.scrub.cursor.next_extent {
                left += bytes;
            }
        }
        let read = self.scrub.scan.as_ref().map_or(0, |s| s.read_bytes);
        (left.saturating_sub(read), all)
    }

    /// The read rate the deadline needs now, in bytes per second: what is
    /// left of the pass over what is left of its time.
    pub fn scrub_rate(&self, now_ms: u64) -> u64 {
        let (left, _) = self.pass_bytes();
        let started = if self.scrub.cursor.pass_started_ms == 0 { now_ms } else { self.scrub.cursor.pass_started_ms };
        let target_end = started + self.scrub.settings.deadline_ms / 100 * PASS_TARGET_PERCENT;
        let rate = if target_end <= now_ms {
            // Behind: as fast as allowed.
            u64::MAX
        } else {
            (u128::from(left) * 1000 / u128::from(target_end - now_ms)) as u64
        };
        let rate = if self.scrub.settings.unthrottled { u64::MAX } else { rate.max(1) };
        rate.min(self.scrub.settings.rate_bytes_max.unwrap_or(u64::MAX))
    }

    pub fn scrub_status(&self) -> ScrubStatus {
        let now = superblock::now_unix_ms();
        let rate = self.scrub_rate(now);
        let (left, total) = self.pass_bytes();
        let oldest =
            self.extents.all().iter().filter(|e| e.live_blocks > 0 && e.checked_ms > 0).map(|e| e.checked_ms).min();
        ScrubStatus {
            paused: self.scrub.settings.paused,
            unthrottled: self.scrub.settings.unthrottled,
            deadline_ms: self.scrub.settings.deadline_ms,
            rate_bytes_max: self.scrub.settings.rate_bytes_max,
            rate_bytes_per_s: rate,
            oldest_unverified_age_ms: oldest.map(|t| now.saturating_sub(t)),
            pass_started_ms: self.scrub.cursor.pass_started_ms,
            last_pass_ms: self.scrub.cursor.last_pass_ms,
            passes: self.scrub.cursor.passes,
            pass_done_bytes: total - left,
            pass_total_bytes: total,
            pass_eta_ms: (rate > 0 && rate < u64::MAX && !self.scrub.settings.paused)
                .then(|| now + (u128::from(left) * 1000 / u128::from(rate)) as u64),
            next_extent: self.scrub.cursor.next_extent,
            counters: self.scrub.counters,
            damaged_shards: self.damaged.len() as u64,
            recent_findings: self.scrub.recent.iter().cloned().collect(),
        }
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

    /// Advances the background scrubber by one step: lists chunks, starts
    /// window reads the pacing and the foreground allow, retries failed
    /// windows, finishes extents and passes. Returns how long until it
    /// wants to run again (`None`: paused or idle for good).
    pub fn scrub_step(&mut self) -> Result<Option<std::time::Duration>> {
        use std::time::{Duration, Instant};
        self.scrub.wants_step = false;
        self.check_usable()?;
        if !self.scrub.pending_damage.is_empty() {
            self.quiesce();
            let records: Vec<(usize, LogRecord)> = std::mem::take(&mut self.scrub.pending_damage)
                .into_iter()
                .map(|(key, damage)| (0, LogRecord::Damaged { key, damage }))
                .collect();
            self.make_durable(&records)?;
        }
        if self.scrub.settings.paused {
            return Ok(None);
        }
        if self.scrub.metadata_damaged {
            self.scrub.metadata_damaged = false;
            // A new checkpoint in the other half, and a superblock commit
            // that rewrites every copy, supersede the damaged metadata.
            self.checkpoint()?;
        }
        if !self.scrub.retry.is_empty() {
            self.quiesce();
            for c in std::mem::take(&mut self.scrub.retry) {
                if self.chunk_still_live(&c) {
                    let mut report = ScrubReport::default();
                    self.scrub_chunk(&c.key, c.sequence, c.chunk as usize, c.len, c.loc, &mut report);
                    self.take_report(&c, &report);
                }
            }
        }
        let now_ms = superblock::now_unix_ms();
        let now = Instant::now();
        let rate = self.scrub_rate(now_ms);
        let window_max = self.pool.slot_size() as f64;
        let was_unlimited = std::mem::replace(&mut self.scrub.unlimited, rate == u64::MAX);
        if self.scrub.unlimited {
            self.scrub.allowance = window_max;
        } else if was_unlimited {
            // Back to pacing: no credit left over from the fast run.
            self.scrub.allowance = 0.0;
        } else {
            let elapsed = self.scrub.refilled.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            // At most one window of credit: idle time is not saved up.
            self.scrub.allowance = (self.scrub.allowance + elapsed * rate as f64).min(window_max);
        }
        self.scrub.refilled = Some(now);

        if self.scrub.scan.is_none() && !self.start_extent_scan(now_ms)? {
            return Ok(Some(Duration::from_secs(1)));
        }
        let scan = self.scrub.scan.as_mut().expect("started above");
        if !scan.listed {
            self.list_step();
            return Ok(Some(Duration::ZERO));
        }
        self.submit_windows();
        let scan = self.scrub.scan.as_ref().expect("started above");
        if scan.next == scan.chunks.len() && self.scrub.in_flight() == 0 && self.scrub.retry.is_empty() {
            self.finish_extent_scan()?;
            return Ok(Some(Duration::ZERO));
        }
        if self.scrub.allowance > 0.0 || self.scrub.unlimited {
            return Ok(Some(Duration::ZERO));
        }
        let wait = -self.scrub.allowance / rate as f64;
        Ok(Some(Duration::from_secs_f64(wait.min(60.0))))
    }

    /// Picks the next extent with live data from the cursor; at the end of
    /// the extents a pass is complete. Returns false when nothing is
    /// stored.
    fn start_extent_scan(&mut self, now_ms: u64) -> Result<bool> {
        if self.scrub.cursor.pass_started_ms == 0 {
            self.scrub.cursor.pass_started_ms = now_ms;
        }
        let count = self.extents.len() as u32;
        let mut e = self.scrub.cursor.next_extent;
        loop {
            if e >= count {
                // A complete pass: every extent was verified since it began.
                if self.extents.all().iter().all(|x| x.live_blocks == 0) {
                    return Ok(false);
                }
                self.scrub_all_metadata();
                if self.scrub.settings.until_pass_end {
                    self.scrub.settings.unthrottled = false;
                    self.scrub.settings.until_pass_end = false;
                }
                let cursor = ScrubCursor {
                    next_extent: 0,
                    pass_started_ms: now_ms,
                    last_pass_ms: now_ms,
                    passes: self.scrub.cursor.passes + 1,
                };
                self.log_scrub_cursor(cursor)?;
                tracing::info!(device = %self.name, passes = cursor.passes, "scrub pass complete");
                e = 0;
            }
            let info = self.extents.get(e);
            if info.live_blocks > 0 {
                self.scrub.scan = Some(ExtentScan {
                    extent: e,
                    generation: info.generation,
                    started_ms: now_ms,
                    snapshot_blocks: info.write_blocks,
                    list_after: None,
                    listed: false,
                    chunks: Vec::new(),
                    next: 0,
                    read_bytes: 0,
                });
                self.scrub.cursor.next_extent = e;
                return Ok(true);
            }
            e += 1;
        }
    }

    /// Logs the cursor alone (a pass boundary), in a `Scrubbed` record for
    /// an extent whose time it does not change.
    fn log_scrub_cursor(&mut self, cursor: ScrubCursor) -> Result<()> {
        self.quiesce();
        let record =
            LogRecord::Scrubbed { extent: 0, generation: self.extents.get(0).generation, checked_ms: 0, scrub: cursor };
        self.make_durable(&[(0, record)])
    }

    /// Lists up to `LIST_STEP_ENTRIES` index entries for live chunks in the
    /// extent being scanned, below its snapshot write pointer.
    fn list_step(&mut self) {
        let scan = self.scrub.scan.as_mut().expect("a scan in progress");
        let start = match &scan.list_after {
            Some(k) => std::ops::Bound::Excluded(k.as_slice()),
            None => std::ops::Bound::Unbounded,
        };
        let mut seen = 0;
        let mut last = None;
        for (key, m) in self.index.iter_from(start) {
            if seen == LIST_STEP_ENTRIES {
                break;
            }
            seen += 1;
            // A shard on the repair list was found damaged already: it is
            // not read again (nor reported again) until it is replaced.
            if self.damaged.get(key, m.sequence).is_some() {
                last = Some(key.to_vec());
                continue;
            }
            for (c, l) in m.locators().enumerate() {
                if l.extent == scan.extent && l.block < scan.snapshot_blocks {
                    scan.chunks.push(ChunkRef {
                        key: key.to_vec(),
                        sequence: m.sequence,
                        chunk: c as u32,
                        len: chunk_len(m.size, c),
                        loc: l,
                    });
                }
            }
            last = Some(key.to_vec());
        }
        if seen < LIST_STEP_ENTRIES {
            scan.listed = true;
            scan.chunks.sort_by_key(|c| c.loc.block);
        } else {
            scan.list_after = last;
        }
    }

    /// Starts window reads while the pacing allows and the gets leave the
    /// ring room: scrubbing never holds back a get.
    fn submit_windows(&mut self) {
        let block_bytes = crate::constants::BLOCK_SIZE_BYTES;
        let slot = self.pool.slot_size() as u64;
        let depth = if self.scrub.unlimited { UNTHROTTLED_WINDOWS_MAX } else { 1 };
        loop {
            let scan = self.scrub.scan.as_ref().expect("a scan in progress");
            if scan.next == scan.chunks.len()
                || self.scrub.in_flight() >= depth
                || (!self.scrub.unlimited && self.scrub.allowance <= 0.0)
                || self.reads.has_queued()
                || self.dev.in_flight() >= STORE_QUEUE_DEPTH / 2
            {
                return;
            }
            let first = scan.next;
            let start = scan.chunks[first].loc.block;
            let mut end_block = start;
            let mut count = 0;
            for c in &scan.chunks[first..] {
                let blocks = (record::record_size_bytes(c.key.len(), c.len) / block_bytes) as u32;
                let gap = u64::from(c.loc.block.saturating_sub(end_block)) * block_bytes;
                let new_end = c.loc.block + blocks;
                if count > 0 && (gap > GAP_BYTES_MAX || u64::from(new_end - start) * block_bytes > slot) {
                    break;
                }
                end_block = end_block.max(new_end);
                count += 1;
            }
            let len = (u64::from(end_block - start) * block_bytes) as usize;
            let extent = scan.extent;
            let Some(buf) = self.pool.take(len) else { return };
            let id = self.scrub.windows.iter().position(Option::is_none).unwrap_or_else(|| {
                self.scrub.windows.push(None);
                self.scrub.windows.len() - 1
            });
            let offset = self.locator_offset(Locator { extent, block: start, crc: 0 });
            let token = ReadToken::Scrub { window: id as u32 }.encode();
            if self.dev.submit(IoOp { token, kind: IoKind::Read { offset, buf } }).is_err() {
                // Not accepted (the ring is failing): the chunks are
                // verified one by one on the next step, where errors
                // surface properly.
                let scan = self.scrub.scan.as_mut().expect("a scan in progress");
                self.scrub.retry.extend(scan.chunks[first..first + count].iter().cloned());
                scan.next = first + count;
                return;
            }
            self.scrub.windows[id] = Some(Window { first, count, block: start });
            let scan = self.scrub.scan.as_mut().expect("a scan in progress");
            scan.next = first + count;
            scan.read_bytes += len as u64;
            if !self.scrub.unlimited {
                self.scrub.allowance -= len as f64;
            }
        }
    }

    /// A scrub window read completed (called from the read path).
    pub(crate) fn scrub_window_done(&mut self, id: usize, c: Completion) {
        let Some(window) = self.scrub.windows.get_mut(id).and_then(Option::take) else { return };
        self.scrub.wants_step = true;
        let Some(scan) = self.scrub.scan.as_ref() else { return };
        let chunks: Vec<ChunkRef> = scan.chunks[window.first..window.first + window.count].to_vec();
        let Ok(()) = c.result else {
            self.scrub.counters.read_errors += 1;
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.scrub.retry.extend(chunks);
            return;
        };
        let buf = c.buf.expect("reads return their buffer");
        let bytes = buf.as_slice();
        let block_bytes = crate::constants::BLOCK_SIZE_BYTES as usize;
        for chunk in chunks {
            if !self.chunk_still_live(&chunk) {
                continue;
            }
            let at = (chunk.loc.block - window.block) as usize * block_bytes;
            let record_len = record::record_size_bytes(chunk.key.len(), chunk.len) as usize;
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
            self.take_report(&chunk, &report);
        }
    }

    fn chunk_still_live(&self, c: &ChunkRef) -> bool {
        let Some(scan) = self.scrub.scan.as_ref() else { return false };
        self.extents.get(c.loc.extent).generation == scan.generation
            && self.index.get(&c.key).is_some_and(|m| {
                m.sequence == c.sequence && (c.chunk as usize) < m.chunk_count() && m.chunk(c.chunk as usize) == c.loc
            })
    }

    /// Counts a chunk's verification, or records its damage: counted,
    /// logged, kept among the recent findings, and the shard put on the
    /// repair list (durably, on the next step) so its reads answer
    /// `Corruption`.
    fn take_report(&mut self, c: &ChunkRef, report: &ScrubReport) {
        self.scrub.counters.chunks_verified += report.chunks_verified;
        self.scrub.counters.chunk_bytes_verified += report.chunk_bytes_verified;
        let Some(first) = report.findings.first() else { return };
        for f in &report.findings {
            self.note_finding(f.clone());
        }
        let damage = Damage {
            sequence: c.sequence,
            chunk: c.chunk,
            kind: first.kind.code(),
            offset: first.offset,
            len: first.len,
            found_ms: superblock::now_unix_ms(),
        };
        if !self.damaged.contains(&c.key) && !self.scrub.pending_damage.iter().any(|(k, _)| *k == c.key) {
            self.scrub.pending_damage.push((c.key.clone(), damage));
        }
    }

    pub(super) fn note_finding(&mut self, f: Finding) {
        self.scrub.counters.findings[f.kind.code() as usize] += 1;
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
        if self.scrub.recent.len() == RECENT_FINDINGS_MAX {
            self.scrub.recent.pop_front();
        }
        self.scrub.recent.push_back(f);
    }

    /// Verifies the superblock copies and the checkpoint and log in force
    /// (once per pass); damage is repaired on the next step by writing a
    /// new checkpoint, which also rewrites every superblock copy.
    fn scrub_all_metadata(&mut self) {
        let mut report = ScrubReport::default();
        self.quiesce();
        self.scrub_superblocks(&mut report);
        self.scrub_metadata(&mut report);
        self.scrub.counters.metadata_bytes_verified += report.metadata_bytes_verified;
        if !report.findings.is_empty() {
            self.scrub.metadata_damaged = true;
            for f in report.findings {
                self.note_finding(f);
            }
        }
    }

    /// Every chunk of the extent is done: log its verification time and
    /// move the cursor on.
    fn finish_extent_scan(&mut self) -> Result<()> {
        let scan = self.scrub.scan.take().expect("a scan in progress");
        self.scrub.counters.extents_verified += 1;
        let cursor = ScrubCursor { next_extent: scan.extent + 1, ..self.scrub.cursor };
        let record = LogRecord::Scrubbed {
            extent: scan.extent,
            generation: scan.generation,
            checked_ms: scan.started_ms,
            scrub: cursor,
        };
        self.make_durable(&[(0, record)])
    }
}
