//! The last log write after a crash: a one-flush commit writes its chunk
//! records and its log blocks together, so a crash before the flush may
//! leave the log without the data it names. Such a commit logs a copy of
//! each payload (`LogRecord::Payload`) before its `Put`, and recovery
//! completes the chunk records from it here. See `docs/format.md`, "Group
//! commit and what a crash leaves".

use std::collections::BTreeMap;

use super::{
    chunk_len, key_text, read_bytes, record, record_size_bytes, scrub, write_bytes, BlockDeviceExt, LogRecord,
    RecordHeader, Result, Store,
};

/// One chunk's payload pieces: (offset in the chunk, bytes).
type Pieces = Vec<(u32, bytes::Bytes)>;

/// The payload pieces of the log write being replayed, by shard (key and
/// sequence) and chunk: what recovery needs to complete its puts.
#[derive(Debug, Default)]
pub(super) struct Tail {
    pieces: BTreeMap<(Vec<u8>, u64), BTreeMap<u32, Pieces>>,
}

impl Tail {
    /// A new log write begins: the pieces of the one before belong to a
    /// commit that was durable before this one started.
    pub(super) fn restart(&mut self) {
        self.pieces.clear();
    }

    pub(super) fn note(&mut self, record: &LogRecord) {
        if let LogRecord::Payload { key, sequence, chunk, offset, bytes } = record {
            let chunks = self.pieces.entry((key.clone(), *sequence)).or_default();
            chunks.entry(*chunk).or_default().push((*offset, bytes.clone()));
        }
    }
}

impl Store {
    /// Reads back every chunk of the last log write's one-flush puts that
    /// are still current and rewrites, from the log's copy, each that
    /// does not verify. After a crash a torn chunk (the flush never
    /// completed, the put was not acknowledged) and a chunk damaged after
    /// its put was acknowledged look the same; both end whole, and each is
    /// reported as a finding, so rot is never rolled back nor hidden.
    pub(super) fn complete_tail(&mut self, tail: Tail, read_only: bool) -> Result<()> {
        for ((key, sequence), chunks) in tail.pieces {
            let Some(meta) = self.index.get(&key).filter(|m| m.sequence == sequence) else {
                continue; // replaced or deleted later in the same write
            };
            for c in 0..meta.chunk_count() {
                let loc = meta.chunk(c);
                let len = chunk_len(meta.size, c);
                let at = self.locator_offset(loc);
                let record_len = record_size_bytes(key.len(), len) as usize;
                let problem = match read_bytes(self.dev.as_mut(), at, record_len) {
                    Ok(bytes) => match RecordHeader::verify(&bytes, 1, loc.crc) {
                        Ok((h, _)) if h.key == key && h.sequence == sequence => continue,
                        Ok(_) => record::RecordProblem::Mismatch.to_string(),
                        Err(p) => p.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                let mut payload = vec![0u8; len];
                let mut covered = 0;
                for (offset, bytes) in chunks.get(&(c as u32)).into_iter().flatten() {
                    let start = *offset as usize;
                    if let Some(place) = payload.get_mut(start..start + bytes.len()) {
                        place.copy_from_slice(bytes);
                        covered += bytes.len();
                    }
                }
                let whole = covered == len && crc32c::crc32c(&payload) == loc.crc;
                let what = format!(
                    "chunk {c} of the last commit before the crash did not verify ({problem}): torn by the crash \
                     before its flush, or damaged after it was acknowledged"
                );
                let detail = match (whole, read_only) {
                    (false, _) => format!("{what}; the log's copy of its payload is incomplete, not repaired"),
                    // A one-flush commit never groups its records
                    // (`commit_batch`): a rewrite writes a record of its own,
                    // which in a group's place would overwrite the other
                    // members' headers. Only a damaged log names one here.
                    (true, _) if loc.distance != 1 => format!("{what}; a member of a record group, not repaired"),
                    (true, true) => format!("{what}; not repaired: opened read-only"),
                    (true, false) => {
                        let header = RecordHeader {
                            key: key.clone(),
                            sequence,
                            extent: loc.extent,
                            generation: self.extents.get(loc.extent).generation,
                            shard_len: meta.size,
                            chunk_offset: (c * record::CHUNK_SIZE_BYTES_MAX) as u64,
                            chunk_len: len as u32,
                            payload_crc: loc.crc,
                            shard_crc: meta.crc,
                            written_unix_ms: meta.written_unix_ms,
                            grouped: false,
                            distance: 1,
                        };
                        let mut bytes = vec![0u8; record_len];
                        header.encode(&payload, &mut bytes);
                        write_bytes(self.dev.as_mut(), at, &bytes)?;
                        self.dev.flush()?;
                        self.completed_at_open.push(key_text(&key));
                        format!("{what}; rewritten from the log's copy of its payload")
                    }
                };
                tracing::warn!(device = %self.name, key = %key_text(&key), offset = at, %detail, "last commit completed at open");
                self.note_finding(scrub::Finding {
                    kind: scrub::FindingKind::ChunkChecksum,
                    key: Some(key_text(&key)),
                    offset: at,
                    len: record_len as u64,
                    detail,
                });
            }
        }
        Ok(())
    }

    /// Keys whose last chunk records open rewrote from the log's copy
    /// (`complete_tail`), in the order it found them.
    pub fn completed_at_open(&self) -> &[String] {
        &self.completed_at_open
    }

    /// Group commits made durable by one flush since open.
    pub fn one_flush_commits(&self) -> u64 {
        self.one_flush_commits
    }
}
