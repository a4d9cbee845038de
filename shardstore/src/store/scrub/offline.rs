//! The offline pass (`shardctl scrub`): every superblock copy, every copy
//! of the checkpoint and log in force, and every live chunk read back and
//! checked; an unreadable chunk is split down to the device's logical
//! blocks. The background scrubber (`scrub.rs`) reuses its chunk and
//! metadata checks.

use super::super::meta::{self, Locator, BLOCK};
use super::super::record::{self, RecordHeader, RecordProblem, HEADER_BLOCK_BYTES};
use super::super::{chunk_len, key_text, Store};
use super::{Finding, FindingKind, ScrubReport};
use crate::device::{BlockDeviceExt, IoKind};
use crate::superblock::{self, CopyStatus};

impl Store {
    /// Verifies everything the store references; `progress(done, total)`
    /// is called after each chunk with live chunk bytes.
    pub fn scrub_pass(&mut self, mut progress: impl FnMut(u64, u64)) -> ScrubReport {
        let mut report = ScrubReport::default();
        self.scrub_superblocks(&mut report);
        self.scrub_metadata(&mut report);
        let chunks: Vec<(Vec<u8>, u64, usize, u64, Locator)> = self
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

    pub(super) fn scrub_superblocks(&mut self, report: &mut ScrubReport) {
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

    /// Re-reads the checkpoint and the replayed log in every copy of the
    /// metadata region and checks them again.
    pub(super) fn scrub_metadata(&mut self, report: &mut ScrubReport) {
        for (copy, start) in self.meta_copies_of(self.half_offset(self.sb.store.half)).into_iter().enumerate() {
            self.scrub_metadata_copy(copy, start, report);
        }
    }

    pub(super) fn scrub_metadata_copy(&mut self, copy: usize, start: u64, report: &mut ScrubReport) {
        let checkpoint_len = self.sb.store.checkpoint_len_bytes as usize;
        let bytes = match super::super::read_bytes(self.dev.as_mut(), start, checkpoint_len) {
            Ok(b) => b,
            Err(e) => {
                report.metadata(
                    FindingKind::Checkpoint,
                    start,
                    checkpoint_len as u64,
                    format!("checkpoint (metadata copy {copy}) unreadable: {e}"),
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
                format!("checkpoint (metadata copy {copy}) checksum differs from the superblock's"),
            );
            return;
        }
        let log_start = start + checkpoint_len as u64;
        for i in 0..self.log_index {
            let at = log_start + i * BLOCK as u64;
            let block = match super::super::read_bytes(self.dev.as_mut(), at, BLOCK) {
                Ok(b) => b,
                Err(e) => {
                    let detail = format!("log block {i} (metadata copy {copy}) unreadable: {e}");
                    report.metadata(FindingKind::LogBlock, at, BLOCK as u64, detail);
                    return;
                }
            };
            report.metadata_bytes_verified += BLOCK as u64;
            let Some((crc, _)) = meta::decode_log_block(&block, self.sb.store.epoch, i, prev) else {
                report.metadata(
                    FindingKind::LogBlock,
                    at,
                    BLOCK as u64,
                    format!("log block {i} (metadata copy {copy}) no longer continues the log (damaged since it was replayed)"),
                );
                return;
            };
            prev = crc;
        }
    }

    pub(super) fn scrub_chunk(
        &mut self,
        key: &[u8],
        sequence: u64,
        chunk: usize,
        len: usize,
        loc: Locator,
        report: &mut ScrubReport,
    ) {
        let at = self.locator_offset(loc);
        // A group member: from its group's header block to its payload.
        let record_len = record::span_blocks(loc.distance, len) as usize * HEADER_BLOCK_BYTES;
        let buf = self.pool.take(record_len).expect("no other operation holds the pool during a pass");
        let Ok(read) = self.dev.run_one(IoKind::Read { offset: at, buf }) else {
            self.split_unreadable(key, at, record_len, report);
            return;
        };
        let read = read.expect("reads return their buffer");
        self.verify_record(key, sequence, chunk, len, loc, read.as_slice(), report);
    }

    /// Checks one record read back (`bytes`, header block first) against
    /// the locator that references it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn verify_record(
        &self,
        key: &[u8],
        sequence: u64,
        chunk: usize,
        len: usize,
        loc: Locator,
        bytes: &[u8],
        report: &mut ScrubReport,
    ) {
        let at = self.locator_offset(loc);
        let (problem_kind, detail) = match RecordHeader::verify(bytes, loc.distance, loc.crc) {
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
            (at + u64::from(loc.distance) * HEADER_BLOCK_BYTES as u64, len as u64)
        } else {
            (at, HEADER_BLOCK_BYTES as u64)
        };
        report.findings.push(Finding { kind: problem_kind, key: Some(key_text(key)), offset, len: flen, detail });
    }

    /// Reads a record that failed as a whole one logical block at a time
    /// and reports each block the device cannot read.
    pub(super) fn split_unreadable(&mut self, key: &[u8], at: u64, len: usize, report: &mut ScrubReport) {
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
