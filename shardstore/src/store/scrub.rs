//! A full verification pass: every superblock copy, the checkpoint and
//! log the store recovered from, and every live chunk (header block and
//! payload) are read back from the device and checked against their
//! checksums. A chunk that cannot be read is split down to the device's
//! logical blocks to name exactly which ones are unreadable.
//!
//! Only what the store references is checked: dead records (deleted,
//! overwritten, never acknowledged) are not data anyone can read, so damage
//! to them is not a finding. This is the offline pass of `shardctl scrub`;
//! the background scrubber with its coverage deadline builds on it.

use serde::Serialize;

use super::meta::{self, BLOCK};
use super::record::{self, RecordHeader, RecordProblem, HEADER_BLOCK_BYTES};
use super::{chunk_len, key_text, Store};
use crate::device::{BlockDeviceExt, IoKind};
use crate::superblock::{self, CopyStatus};

/// What kind of damage a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

impl Store {
    /// Verifies everything the store references; `progress(done, total)`
    /// is called after each chunk with live chunk bytes.
    pub fn scrub_pass(&mut self, mut progress: impl FnMut(u64, u64)) -> ScrubReport {
        let mut report = ScrubReport::default();
        self.scrub_superblocks(&mut report);
        self.scrub_metadata(&mut report);
        let chunks: Vec<(Vec<u8>, u64, usize, u64, super::meta::Locator)> = self
            .index
            .iter()
            .flat_map(|(key, m)| {
                let key = key.to_vec();
                m.locators().enumerate().map(move |(c, l)| (key.clone(), m.sequence, c, m.size, l)).collect::<Vec<_>>()
            })
            .collect();
        let total: u64 = chunks.iter().map(|(_, _, c, size, _)| chunk_len(*size, *c) as u64).sum();
        let mut done = 0;
        for (key, sequence, chunk, size, loc) in chunks {
            let len = chunk_len(size, chunk);
            self.scrub_chunk(&key, sequence, chunk, len, loc, &mut report);
            done += len as u64;
            progress(done, total);
        }
        report
    }

    fn scrub_superblocks(&mut self, report: &mut ScrubReport) {
        let copies = superblock::read_copies(self.dev.as_mut());
        let selection = superblock::select(&copies);
        for c in &copies {
            report.superblock_copies_checked += 1;
            let status = selection.as_ref().map_or(CopyStatus::Invalid, |s| s.status[c.index]);
            if status == CopyStatus::Current {
                continue;
            }
            let detail = match &c.copy {
                Err(problem) => format!("superblock copy {}: {problem}", c.index),
                Ok(sb) => format!(
                    "superblock copy {}: stale (sequence {}, in force {})",
                    c.index, sb.sequence, self.sb.sequence
                ),
            };
            report.metadata(
                FindingKind::SuperblockCopy,
                c.offset,
                crate::constants::SUPERBLOCK_COPY_SIZE_BYTES,
                detail,
            );
        }
    }

    /// Re-reads the checkpoint and the replayed log and checks them again.
    fn scrub_metadata(&mut self, report: &mut ScrubReport) {
        let start = self.half_offset(self.sb.store.half);
        let checkpoint_len = self.sb.store.checkpoint_len_bytes as usize;
        let bytes = match super::read_bytes(self.dev.as_mut(), start, checkpoint_len) {
            Ok(b) => b,
            Err(e) => {
                report.metadata(
                    FindingKind::Checkpoint,
                    start,
                    checkpoint_len as u64,
                    format!("checkpoint unreadable: {e}"),
                );
                return;
            }
        };
        report.metadata_bytes_verified += bytes.len() as u64;
        let mut prev = crc32c::crc32c(&bytes);
        if prev != self.sb.store.checkpoint_crc {
            report.metadata(
                FindingKind::Checkpoint,
                start,
                checkpoint_len as u64,
                "checkpoint checksum differs from the superblock's".to_owned(),
            );
            return;
        }
        let log_start = start + checkpoint_len as u64;
        for i in 0..self.log_index {
            let at = log_start + i * BLOCK as u64;
            let block = match super::read_bytes(self.dev.as_mut(), at, BLOCK) {
                Ok(b) => b,
                Err(e) => {
                    report.metadata(FindingKind::LogBlock, at, BLOCK as u64, format!("log block {i} unreadable: {e}"));
                    return;
                }
            };
            report.metadata_bytes_verified += BLOCK as u64;
            let Some((crc, _)) = meta::decode_log_block(&block, self.sb.store.epoch, i, prev) else {
                report.metadata(
                    FindingKind::LogBlock,
                    at,
                    BLOCK as u64,
                    format!("log block {i} no longer continues the log (damaged since it was replayed)"),
                );
                return;
            };
            prev = crc;
        }
    }

    fn scrub_chunk(
        &mut self,
        key: &[u8],
        sequence: u64,
        chunk: usize,
        len: usize,
        loc: super::meta::Locator,
        report: &mut ScrubReport,
    ) {
        let at = self.locator_offset(loc);
        let record_len = record::record_size_bytes(key.len(), len) as usize;
        let name = || Some(key_text(key));
        let buf = self.pool.take(record_len).expect("no other operation holds the pool during a pass");
        let Ok(read) = self.dev.run_one(IoKind::Read { offset: at, buf }) else {
            self.split_unreadable(key, at, record_len, report);
            return;
        };
        let read = read.expect("reads return their buffer");
        let (problem_kind, detail) = match RecordHeader::verify(read.as_slice(), loc.crc) {
            Ok((h, _)) if h.key == key && h.sequence == sequence => {
                report.chunks_verified += 1;
                report.chunk_bytes_verified += len as u64;
                return;
            }
            Ok((h, _)) => (
                FindingKind::ChunkHeader,
                format!(
                    "chunk {chunk}: the record here is {:?} sequence {}, not this shard",
                    key_text(&h.key),
                    h.sequence
                ),
            ),
            Err(RecordProblem::BadPayloadChecksum) => {
                (FindingKind::ChunkChecksum, format!("chunk {chunk}: payload does not match its CRC32C"))
            }
            Err(p) => (FindingKind::ChunkHeader, format!("chunk {chunk}: {p}")),
        };
        let (offset, flen) = if problem_kind == FindingKind::ChunkChecksum {
            (at + HEADER_BLOCK_BYTES as u64, len as u64)
        } else {
            (at, HEADER_BLOCK_BYTES as u64)
        };
        report.findings.push(Finding { kind: problem_kind, key: name(), offset, len: flen, detail });
    }

    /// Reads a record that failed as a whole one logical block at a time
    /// and reports each block the device cannot read.
    fn split_unreadable(&mut self, key: &[u8], at: u64, len: usize, report: &mut ScrubReport) {
        let step = self.dev.info().logical_block_size as usize;
        let mut first_bad: Option<u64> = None;
        let flush = |report: &mut ScrubReport, from: Option<u64>, to: u64| {
            if let Some(from) = from {
                report.findings.push(Finding {
                    kind: FindingKind::ChunkUnreadable,
                    key: Some(key_text(key)),
                    offset: from,
                    len: to - from,
                    detail: format!("{} bytes the device cannot read", to - from),
                });
            }
        };
        for off in (0..len).step_by(step) {
            let here = at + off as u64;
            let mut buf = self.pool.take(step).expect("no other operation holds the pool during a pass");
            buf.set_len(step);
            let ok = self.dev.run_one(IoKind::Read { offset: here, buf }).is_ok();
            match (ok, first_bad) {
                (false, None) => first_bad = Some(here),
                (true, Some(_)) => {
                    flush(report, first_bad.take(), here);
                }
                _ => {}
            }
        }
        flush(report, first_bad, at + len as u64);
    }
}
