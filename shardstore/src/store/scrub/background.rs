//! The background scrubber's state and decisions: which extent is next,
//! which live chunks it holds, how the reads are grouped into windows,
//! how fast the deadline asks to go, what was verified and found. It owns
//! all of that; the store (`scrub.rs`) lends it read-only views of the
//! extent table, the index and the repair list, and does the I/O and the
//! durable writes it asks for. Nothing here touches the device.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::super::extents::ExtentTable;
use super::super::index::Index;
use super::super::meta::{Damage, Locator, LogRecord, ScrubCursor};
use super::super::repair::RepairList;
use super::super::{chunk_len, record};
use super::{Finding, ScrubReport};
use crate::constants::BLOCK_SIZE_BYTES;

// How it works.
//
// It walks the extents in order, one at a time. The live chunks the
// index references are listed for a run of extents at once, from the one
// at the cursor on (as many extents as about `LIST_RUN_CHUNKS_MAX` chunks
// fill): one walk of the index per run, in bounded steps so that a large
// index never stalls the store thread, rather than one per extent, which
// on a large drive full of small shards would cost more than the reads.
// An extent's scan takes its chunks from the run, sorts them by
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

/// Default coverage deadline: every live byte verified within 14 days.
pub const SCRUB_DEADLINE_DAYS_DEFAULT: u64 = 14;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// A pass aims to end within this share of the deadline, so a byte
/// written just behind the cursor is still checked in time.
const PASS_TARGET_PERCENT: u64 = 90;
/// Dead bytes a window reads through rather than starting a new read.
const GAP_BYTES_MAX: u64 = 256 * 1024;
/// Index entries examined per step while listing a run's chunks.
const LIST_STEP_ENTRIES: usize = 16 * 1024;
/// Live chunks a run of extents holds at most when its listing starts
/// (more when its first extent alone holds more): a few MiB of chunk
/// references, 64 extents of 1 MiB shards at the default extent size.
const LIST_RUN_CHUNKS_MAX: u64 = 64 * 1024;
/// Extents in a run at most (empty ones among them are not scanned).
const LIST_RUN_EXTENTS_MAX: usize = 1024;
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

/// One live chunk to verify.
#[derive(Debug, Clone)]
pub(super) struct ChunkRef {
    pub(super) key: Vec<u8>,
    pub(super) sequence: u64,
    pub(super) chunk: u32,
    pub(super) len: usize,
    pub(super) loc: Locator,
}

#[derive(Debug)]
pub(super) struct ExtentScan {
    extent: u32,
    generation: u32,
    /// When the listing of its chunks began: records written to it since
    /// (past its write pointer then) are newer, left to the next pass.
    started_ms: u64,
    chunks: Vec<ChunkRef>,
    /// The next chunk no window has taken.
    next: usize,
    /// Bytes of the extent's live records already read in this scan.
    read_bytes: u64,
}

/// The live chunks of a run of extents (from `first`), listed by one walk
/// of the index for the scans of those extents to take.
#[derive(Debug)]
struct RunListing {
    started_ms: u64,
    first: u32,
    /// Per extent of the run; `None` once its scan took it.
    extents: Vec<Option<Listed>>,
    /// Where the walk goes on (None: from the start).
    after: Option<Vec<u8>>,
    done: bool,
}

/// One extent of a run: its generation and write pointer when the listing
/// began, and the live chunks below that pointer.
#[derive(Debug)]
struct Listed {
    generation: u32,
    snapshot_blocks: u32,
    chunks: Vec<ChunkRef>,
}

impl RunListing {
    /// A run from extent `first` on: extents while their live chunks fit
    /// `chunks_max` (at least the first), at most `LIST_RUN_EXTENTS_MAX`.
    fn new(extents: &ExtentTable, first: u32, chunks_max: u64, now_ms: u64) -> RunListing {
        let mut run = Vec::new();
        let mut chunks = 0;
        for e in first..extents.len() as u32 {
            let n = u64::from(extents.live_chunks(e));
            if !run.is_empty() && (chunks + n > chunks_max || run.len() == LIST_RUN_EXTENTS_MAX) {
                break;
            }
            chunks += n;
            let info = extents.get(e);
            run.push(Some(Listed {
                generation: info.generation,
                snapshot_blocks: info.write_blocks,
                chunks: Vec::new(),
            }));
        }
        RunListing { started_ms: now_ms, first, extents: run, after: None, done: false }
    }

    fn covers(&self, extent: u32) -> bool {
        extent >= self.first && ((extent - self.first) as usize) < self.extents.len()
    }
}

/// One scrub read in flight: chunks `first..first + count` of the scan,
/// read from block `block` of the extent.
#[derive(Debug)]
pub(super) struct Window {
    first: usize,
    count: usize,
    pub(super) block: u32,
}

/// The scrubber's state in a store.
#[derive(Debug)]
pub struct Background {
    cursor: ScrubCursor,
    settings: ScrubSettings,
    scan: Option<ExtentScan>,
    /// The run being listed, or listed and not yet scanned to its end.
    run: Option<RunListing>,
    /// `LIST_RUN_CHUNKS_MAX`, but for tests.
    run_chunks_max: u64,
    /// Runs whose listing began since the store opened: walks of the index.
    runs_listed: u64,
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

/// Where `start_extent_scan` left the scrubber.
pub(super) enum ScanStart {
    /// An extent's scan began (or was already under way).
    Scanning,
    /// Nothing is stored: nothing to scan.
    Idle,
    /// The last extent is behind the cursor: the pass is complete. The
    /// store verifies the metadata and logs the new cursor, then asks
    /// again.
    PassComplete(ScrubCursor),
}

/// A window read the scrubber wants: `len` bytes from block `block` of
/// `extent`, as window `id`.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowPlan {
    pub(super) id: usize,
    pub(super) extent: u32,
    pub(super) block: u32,
    pub(super) len: usize,
    first: usize,
    count: usize,
}

impl Background {
    pub(crate) fn new(cursor: ScrubCursor) -> Background {
        Background {
            cursor,
            settings: ScrubSettings::default(),
            scan: None,
            run: None,
            run_chunks_max: LIST_RUN_CHUNKS_MAX,
            runs_listed: 0,
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

    /// Walks of the index begun to list runs of extents.
    pub(crate) fn runs_listed(&self) -> u64 {
        self.runs_listed
    }

    /// Live chunks a run is sized to hold at most (tests make it small).
    pub(crate) fn set_run_chunks_max(&mut self, chunks: u64) {
        self.run_chunks_max = chunks;
    }

    /// The persisted cursor (written with every checkpoint).
    pub(crate) fn cursor(&self) -> ScrubCursor {
        self.cursor
    }

    /// A `Scrubbed` record was applied (logged now, or replayed).
    pub(crate) fn set_cursor(&mut self, cursor: ScrubCursor) {
        self.cursor = cursor;
    }

    pub(crate) fn settings(&self) -> ScrubSettings {
        self.settings
    }

    pub(crate) fn set_settings(&mut self, settings: ScrubSettings) {
        self.settings = settings;
    }

    pub(crate) fn wants_step(&self) -> bool {
        self.wants_step
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

    /// Live bytes the pass in progress has still to read (those of the
    /// extents from the cursor on, less what the current extent's scan
    /// already read) and live bytes in all.
    fn pass_bytes(&self, extents: &ExtentTable) -> (u64, u64) {
        let left = extents.live_blocks_from(self.cursor.next_extent) * BLOCK_SIZE_BYTES;
        let all = extents.live_blocks() * BLOCK_SIZE_BYTES;
        let read = self.scan.as_ref().map_or(0, |s| s.read_bytes);
        (left.saturating_sub(read), all)
    }

    /// The read rate the deadline needs now, in bytes per second: what is
    /// left of the pass over what is left of its time.
    pub(super) fn rate(&self, extents: &ExtentTable, now_ms: u64) -> u64 {
        let (left, _) = self.pass_bytes(extents);
        let started = if self.cursor.pass_started_ms == 0 { now_ms } else { self.cursor.pass_started_ms };
        let target_end = started + self.settings.deadline_ms / 100 * PASS_TARGET_PERCENT;
        let rate = if target_end <= now_ms {
            // Behind: as fast as allowed.
            u64::MAX
        } else {
            (u128::from(left) * 1000 / u128::from(target_end - now_ms)) as u64
        };
        let rate = if self.settings.unthrottled { u64::MAX } else { rate.max(1) };
        rate.min(self.settings.rate_bytes_max.unwrap_or(u64::MAX))
    }

    pub(super) fn status(&self, extents: &ExtentTable, damaged_shards: u64, now: u64) -> ScrubStatus {
        let rate = self.rate(extents, now);
        let (left, total) = self.pass_bytes(extents);
        let oldest = extents.oldest_checked();
        ScrubStatus {
            paused: self.settings.paused,
            unthrottled: self.settings.unthrottled,
            deadline_ms: self.settings.deadline_ms,
            rate_bytes_max: self.settings.rate_bytes_max,
            rate_bytes_per_s: rate,
            oldest_unverified_age_ms: oldest.map(|t| now.saturating_sub(t)),
            pass_started_ms: self.cursor.pass_started_ms,
            last_pass_ms: self.cursor.last_pass_ms,
            passes: self.cursor.passes,
            pass_done_bytes: total - left,
            pass_total_bytes: total,
            pass_eta_ms: (rate > 0 && rate < u64::MAX && !self.settings.paused)
                .then(|| now + (u128::from(left) * 1000 / u128::from(rate)) as u64),
            next_extent: self.cursor.next_extent,
            counters: self.counters,
            damaged_shards,
            recent_findings: self.recent.iter().cloned().collect(),
        }
    }

    /// Starts a step: clears the wake-up flag and hands over the damage
    /// found since the last step, to be logged (`Damaged` records).
    pub(super) fn begin_step(&mut self) -> Vec<LogRecord> {
        self.wants_step = false;
        std::mem::take(&mut self.pending_damage)
            .into_iter()
            .map(|(key, damage)| LogRecord::Damaged { key, damage })
            .collect()
    }

    /// Whether metadata damage waits for a new checkpoint (cleared).
    pub(super) fn take_metadata_damaged(&mut self) -> bool {
        std::mem::take(&mut self.metadata_damaged)
    }

    /// Chunks whose window could not be read, to verify one by one.
    pub(super) fn take_retries(&mut self) -> Vec<ChunkRef> {
        std::mem::take(&mut self.retry)
    }

    /// Refills the pacing allowance for a step at `rate` bytes per second:
    /// at most one window (`window_max` bytes) of credit, since idle time
    /// is not saved up.
    pub(super) fn refill(&mut self, rate: u64, window_max: f64, now: Instant) {
        let was_unlimited = std::mem::replace(&mut self.unlimited, rate == u64::MAX);
        if self.unlimited {
            self.allowance = window_max;
        } else if was_unlimited {
            // Back to pacing: no credit left over from the fast run.
            self.allowance = 0.0;
        } else {
            let elapsed = self.refilled.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            self.allowance = (self.allowance + elapsed * rate as f64).min(window_max);
        }
        self.refilled = Some(now);
    }

    /// How long until the pacing allows the next read at `rate`.
    pub(super) fn wait(&self, rate: u64) -> Duration {
        if self.allowance > 0.0 || self.unlimited {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((-self.allowance / rate as f64).min(60.0))
    }

    /// Picks the next extent with live data from the cursor, unless a scan
    /// is under way, and starts its scan with the chunks its run listed;
    /// or starts the listing of a run from there (`listing` then says so,
    /// and the scan starts once the run is listed).
    pub(super) fn start_extent_scan(&mut self, extents: &ExtentTable, now_ms: u64) -> ScanStart {
        if self.scan.is_some() {
            return ScanStart::Scanning;
        }
        if self.cursor.pass_started_ms == 0 {
            self.cursor.pass_started_ms = now_ms;
        }
        let count = extents.len() as u32;
        let mut e = self.cursor.next_extent;
        while e < count && extents.get(e).live_blocks == 0 {
            e += 1;
        }
        if e < count {
            self.cursor.next_extent = e;
            if let Some(run) = self.run.as_mut().filter(|r| r.covers(e)) {
                if !run.done {
                    return ScanStart::Scanning;
                }
                // Taken once: a scan abandoned (the ring failed) lists again.
                let listed = run.extents[(e - run.first) as usize].take();
                // An extent reset since the listing began holds other
                // chunks now: the run is listed again from it.
                if let Some(mut listed) = listed.filter(|l| l.generation == extents.get(e).generation) {
                    listed.chunks.sort_by_key(|c| (c.loc.block, c.loc.distance));
                    self.scan = Some(ExtentScan {
                        extent: e,
                        generation: listed.generation,
                        started_ms: run.started_ms,
                        chunks: listed.chunks,
                        next: 0,
                        read_bytes: 0,
                    });
                    return ScanStart::Scanning;
                }
            }
            self.run = Some(RunListing::new(extents, e, self.run_chunks_max, now_ms));
            self.runs_listed += 1;
            return ScanStart::Scanning;
        }
        self.run = None;
        // A complete pass: every extent was verified since it began.
        if extents.live_blocks() == 0 {
            return ScanStart::Idle;
        }
        if self.settings.until_pass_end {
            self.settings.unthrottled = false;
            self.settings.until_pass_end = false;
        }
        ScanStart::PassComplete(ScrubCursor {
            next_extent: 0,
            pass_started_ms: now_ms,
            last_pass_ms: now_ms,
            passes: self.cursor.passes + 1,
        })
    }

    /// Whether the run the next scan takes its chunks from is still being
    /// listed.
    pub(super) fn listing(&self) -> bool {
        self.scan.is_none() && self.run.as_ref().is_some_and(|r| !r.done)
    }

    /// Lists up to `LIST_STEP_ENTRIES` index entries for live chunks in the
    /// run's extents, below each one's write pointer when the listing
    /// began.
    pub(super) fn list_step(&mut self, index: &Index, damaged: &RepairList) {
        let run = self.run.as_mut().expect("a run being listed");
        let start = match &run.after {
            Some(k) => std::ops::Bound::Excluded(k.as_slice()),
            None => std::ops::Bound::Unbounded,
        };
        let mut seen = 0;
        let mut last = None;
        for (key, m) in index.iter_from(start) {
            if seen == LIST_STEP_ENTRIES {
                break;
            }
            seen += 1;
            last = Some(key);
            // A shard on the repair list was found damaged already: it is
            // not read again (nor reported again) until it is replaced.
            if damaged.get(key, m.sequence).is_some() {
                continue;
            }
            for (c, l) in m.locators().enumerate() {
                if !run.covers(l.extent) {
                    continue;
                }
                let Some(listed) = &mut run.extents[(l.extent - run.first) as usize] else { continue };
                if l.block < listed.snapshot_blocks {
                    listed.chunks.push(ChunkRef {
                        key: key.to_vec(),
                        sequence: m.sequence,
                        chunk: c as u32,
                        len: chunk_len(m.size, c),
                        loc: l,
                    });
                }
            }
        }
        if seen < LIST_STEP_ENTRIES {
            run.done = true;
        } else {
            run.after = last.map(<[u8]>::to_vec);
        }
    }

    /// The next window to read, if the pacing allows and the foreground
    /// leaves room (`room`): the chunks from the next one on, through dead
    /// gaps of up to `GAP_BYTES_MAX`, up to `slot` bytes.
    pub(super) fn plan_window(&self, slot: u64, room: bool) -> Option<WindowPlan> {
        let scan = self.scan.as_ref()?;
        let depth = if self.unlimited { UNTHROTTLED_WINDOWS_MAX } else { 1 };
        if !room
            || scan.next == scan.chunks.len()
            || self.in_flight() >= depth
            || (!self.unlimited && self.allowance <= 0.0)
        {
            return None;
        }
        let first = scan.next;
        let start = scan.chunks[first].loc.block;
        let mut end_block = start;
        let mut count = 0;
        for c in &scan.chunks[first..] {
            let blocks = record::span_blocks(c.loc.distance, c.len);
            let gap = u64::from(c.loc.block.saturating_sub(end_block)) * BLOCK_SIZE_BYTES;
            let new_end = c.loc.block + blocks;
            if count > 0 && (gap > GAP_BYTES_MAX || u64::from(new_end - start) * BLOCK_SIZE_BYTES > slot) {
                break;
            }
            end_block = end_block.max(new_end);
            count += 1;
        }
        let id = self.windows.iter().position(Option::is_none).unwrap_or(self.windows.len());
        Some(WindowPlan {
            id,
            extent: scan.extent,
            block: start,
            len: (u64::from(end_block - start) * BLOCK_SIZE_BYTES) as usize,
            first,
            count,
        })
    }

    /// The planned window's read was submitted (`true`), or refused by the
    /// device (`false`: its chunks are verified one by one on the next
    /// step, where errors surface properly). Either way the chunks are
    /// taken.
    pub(super) fn window_submitted(&mut self, plan: WindowPlan, submitted: bool) {
        let scan = self.scan.as_mut().expect("a scan in progress");
        scan.next = plan.first + plan.count;
        if !submitted {
            self.retry.extend(scan.chunks[plan.first..plan.first + plan.count].iter().cloned());
            return;
        }
        scan.read_bytes += plan.len as u64;
        if !self.unlimited {
            self.allowance -= plan.len as f64;
        }
        if plan.id == self.windows.len() {
            self.windows.push(None);
        }
        self.windows[plan.id] = Some(Window { first: plan.first, count: plan.count, block: plan.block });
    }

    /// Window `id`'s read completed: returns it with its chunks (`None`
    /// for a window no longer known, after the ring failed). A failed read
    /// is passed back to `window_failed`.
    pub(super) fn window_done(&mut self, id: usize) -> Option<(Window, Vec<ChunkRef>)> {
        let window = self.windows.get_mut(id).and_then(Option::take)?;
        self.wants_step = true;
        let scan = self.scan.as_ref()?;
        let chunks = scan.chunks[window.first..window.first + window.count].to_vec();
        Some((window, chunks))
    }

    /// A window could not be read: its chunks are retried one by one.
    pub(super) fn window_failed(&mut self, chunks: Vec<ChunkRef>) {
        self.counters.read_errors += 1;
        self.retry.extend(chunks);
    }

    /// Whether the extent being scanned is done: every chunk read and
    /// verified, no window in flight, nothing to retry.
    pub(super) fn scan_done(&self) -> bool {
        self.scan.as_ref().is_some_and(|s| s.next == s.chunks.len() && self.in_flight() == 0 && self.retry.is_empty())
    }

    /// Whether a chunk listed for the scan is still what the index
    /// references (it may have been deleted, overwritten or moved since).
    pub(super) fn still_live(&self, c: &ChunkRef, extents: &ExtentTable, index: &Index) -> bool {
        let Some(scan) = self.scan.as_ref() else { return false };
        extents.get(c.loc.extent).generation == scan.generation
            && index.get(&c.key).is_some_and(|m| {
                m.sequence == c.sequence && (c.chunk as usize) < m.chunk_count() && m.chunk(c.chunk as usize) == c.loc
            })
    }

    /// Counts a chunk's verification, or, when the report has findings,
    /// queues the shard for the repair list (logged on the next step) and
    /// returns the findings for the store to report.
    pub(super) fn take_report(&mut self, c: &ChunkRef, report: ScrubReport, damaged: &RepairList) -> Vec<Finding> {
        self.counters.chunks_verified += report.chunks_verified;
        self.counters.chunk_bytes_verified += report.chunk_bytes_verified;
        let Some(first) = report.findings.first() else { return Vec::new() };
        // A chunk whose damage was put on the repair list since its run
        // was listed (found by a read) was reported when it was found.
        if damaged.get(&c.key, c.sequence).is_some_and(|d| d.chunk == c.chunk) {
            return Vec::new();
        }
        let damage = Damage {
            sequence: c.sequence,
            chunk: c.chunk,
            kind: first.kind.code(),
            offset: first.offset,
            len: first.len,
            found_ms: crate::superblock::now_unix_ms(),
        };
        if !damaged.contains(&c.key) && !self.pending_damage.iter().any(|(k, _)| *k == c.key) {
            self.pending_damage.push((c.key.clone(), damage));
        }
        report.findings
    }

    /// Counts a finding and keeps it among the recent ones.
    pub(super) fn note_finding(&mut self, f: Finding) {
        self.counters.findings[f.kind.code() as usize] += 1;
        if self.recent.len() == RECENT_FINDINGS_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(f);
    }

    /// The once-per-pass metadata verification's result: damage makes the
    /// next step write a new checkpoint.
    pub(super) fn metadata_verified(&mut self, report: &ScrubReport) {
        self.counters.metadata_bytes_verified += report.metadata_bytes_verified;
        if !report.findings.is_empty() {
            self.metadata_damaged = true;
        }
    }

    /// Ends the extent's scan: the record that logs its verification time
    /// (when the scan started) and moves the cursor on.
    pub(super) fn finish_scan(&mut self) -> LogRecord {
        let scan = self.scan.take().expect("a scan in progress");
        self.counters.extents_verified += 1;
        LogRecord::Scrubbed {
            extent: scan.extent,
            generation: scan.generation,
            checked_ms: scan.started_ms,
            scrub: ScrubCursor { next_extent: scan.extent + 1, ..self.cursor },
        }
    }
}
