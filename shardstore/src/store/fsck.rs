//! Offline consistency check: rebuild what the extents hold from their
//! self-describing records alone and compare it with the index recovered
//! from the checkpoint and the log.
//!
//! Each extent is walked from its first block to its write pointer, header
//! block by header block (a group's holds every member's header, their
//! payloads follow it); a record counts when its header is valid and
//! carries the extent's current generation (older ones are left over from
//! before a reset). Every payload is read and checked. Then every chunk the
//! index references must be one of those records, with the same key,
//! sequence, offset and payload CRC. Records the index does not reference
//! are dead space (deleted, overwritten or never acknowledged), reported
//! but not an error.

use std::collections::HashMap;

use serde::Serialize;

use super::record::{self, RecordHeader, HEADER_BLOCK_BYTES};
use super::{chunk_len, key_text, Store};
use crate::constants::BLOCK_SIZE_BYTES;
use crate::device::BlockDeviceExt;

/// What fsck found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub extents_scanned: u64,
    pub records_found: u64,
    pub records_live: u64,
    /// Records no index entry references: deleted, overwritten or never
    /// acknowledged. Reclamation frees them.
    pub records_dead: u64,
    pub shards_checked: u64,
    /// Everything that makes the store inconsistent, one line each.
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Identity of one scanned record: (key, sequence, chunk offset).
type RecordId = (Vec<u8>, u64, u64);

impl Store {
    /// Rebuilds the index from the extents and compares (read-only).
    pub fn fsck(&mut self) -> FsckReport {
        let mut report = FsckReport::default();
        // (extent, header block, payload distance) -> (record identity,
        // payload CRC, payload ok)
        let mut found: HashMap<(u32, u32, u8), (RecordId, u32, bool)> = HashMap::new();
        let layout = self.sb.layout;
        for (e, info) in self.extents.all().to_vec().iter().enumerate() {
            if info.write_blocks == 0 {
                continue;
            }
            report.extents_scanned += 1;
            let base = layout.data_offset + e as u64 * layout.extent_size_bytes;
            let mut block = 0u32;
            while block < info.write_blocks {
                let at = base + u64::from(block) * BLOCK_SIZE_BYTES;
                // Not a current record: skip one block and look again (the
                // space below the write pointer can hold a torn, never
                // acknowledged record). A group's block whose first header
                // is damaged still names its other members (and where the
                // walk goes on) in theirs, as it does for the scrubbers.
                let current = |h: &RecordHeader| h.extent == e as u32 && h.generation == info.generation;
                let headers = match self.dev.read_at(at, HEADER_BLOCK_BYTES) {
                    Ok(buf) => {
                        if let Ok((headers, _)) = record::decode_block(buf.as_slice()) {
                            Some(headers).filter(|headers| current(&headers[0]))
                        } else {
                            let members = record::salvage_group(buf.as_slice());
                            members.first().is_some_and(current).then_some(members)
                        }
                    }
                    Err(err) => {
                        report.problems.push(format!("extent {e} block {block}: unreadable header: {err}"));
                        None
                    }
                };
                let Some(headers) = headers else {
                    block += 1;
                    continue;
                };
                // A group's list ends at its first header that does not
                // decode: what follows its members' payloads is walked on.
                let mut end = block + 1;
                for h in headers {
                    let payload_blocks = (record::payload_size_bytes(h.chunk_len as usize) / BLOCK_SIZE_BYTES) as u32;
                    let payload_at = at + u64::from(h.distance) * BLOCK_SIZE_BYTES;
                    let payload_ok = if h.chunk_len == 0 {
                        h.payload_crc == 0
                    } else {
                        match self.dev.read_at(payload_at, (payload_blocks as u64 * BLOCK_SIZE_BYTES) as usize) {
                            Ok(buf) => {
                                record::verify_payload(&buf.as_slice()[..h.chunk_len as usize], h.payload_crc).is_ok()
                            }
                            Err(_) => false,
                        }
                    };
                    report.records_found += 1;
                    end = end.max(block + record::span_blocks(h.distance, h.chunk_len as usize));
                    found.insert(
                        (e as u32, block, h.distance),
                        ((h.key.clone(), h.sequence, h.chunk_offset), h.payload_crc, payload_ok),
                    );
                }
                block = end;
            }
        }
        let mut referenced = 0u64;
        // Locators with no record found, told apart after the walk.
        let mut missing = Vec::new();
        for (key, meta) in self.index.iter() {
            report.shards_checked += 1;
            for (c, loc) in meta.locators().enumerate() {
                let offset = c as u64 * record::CHUNK_SIZE_BYTES_MAX as u64;
                let name = format!("shard {:?} chunk {c}", key_text(key));
                match found.get(&(loc.extent, loc.block, loc.distance)) {
                    None => missing.push((name, loc)),
                    Some((id, crc, ok)) => {
                        referenced += 1;
                        if *id.0 != *key || id.1 != meta.sequence || id.2 != offset || *crc != loc.crc {
                            report.problems.push(format!(
                                "{name}: the record at extent {} block {} is {:?} sequence {} offset {}, not this chunk",
                                loc.extent,
                                loc.block,
                                key_text(&id.0),
                                id.1,
                                id.2
                            ));
                        } else if !ok {
                            report.problems.push(format!(
                                "{name}: payload corrupt or unreadable ({} bytes at extent {} block {})",
                                chunk_len(meta.size, c),
                                loc.extent,
                                loc.block + u32::from(loc.distance)
                            ));
                        }
                    }
                }
            }
        }
        for (name, loc) in missing {
            let why = self.why_missing(loc);
            report.problems.push(format!("{name}: {why}"));
        }
        report.records_live = referenced;
        report.records_dead = report.records_found - referenced;
        report
    }

    /// Why the walk found no current record where a locator points, from
    /// what its header block holds: a header that does not verify is
    /// damage (a record the index references was written whole once),
    /// told apart from a block that holds nothing or another generation's
    /// record (the index itself is wrong).
    fn why_missing(&mut self, loc: super::meta::Locator) -> String {
        let at = self.locator_offset(loc);
        let place = format!("extent {} block {}", loc.extent, loc.block);
        let member = if loc.distance > 1 {
            format!(" (a group member, payload {} blocks after)", loc.distance)
        } else {
            String::new()
        };
        let generation = self.extents.all().get(loc.extent as usize).map(|e| e.generation);
        let current = |h: &RecordHeader| h.extent == loc.extent && Some(h.generation) == generation;
        let buf = match self.dev.read_at(at, HEADER_BLOCK_BYTES) {
            Ok(buf) => buf,
            Err(err) => return format!("its header at {place}{member} is unreadable: {err}"),
        };
        let block = buf.as_slice();
        let in_group = if loc.distance == 1 { "the first of a record group's" } else { "a record group's" };
        match record::decode_block(block) {
            // A current block without this member: its header is the one
            // that did not decode.
            Ok((headers, _)) if current(&headers[0]) => {
                format!("its header at {place}{member} is damaged ({in_group}; the others verify)")
            }
            Ok(_) => format!("no current record at {place}{member}: the block holds another generation's or extent's record (index points at nothing)"),
            Err(_) if block.iter().all(|&b| b == 0) => {
                format!("no current record at {place}{member}: the block is blank (index points at nothing)")
            }
            Err(_) if record::salvage_group(block).first().is_some_and(current) => {
                format!("its header at {place}{member} is damaged ({in_group})")
            }
            Err(_) => format!("its header at {place}{member} does not verify: damaged"),
        }
    }
}
