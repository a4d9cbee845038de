//! The last log write after a crash. A commit that writes its chunk
//! records and its log blocks together, made durable by one flush, may
//! leave after a crash before that flush the log without the data it
//! names. Two kinds of commit do so:
//!
//! - a one-flush commit logs a copy of each payload
//!   (`LogRecord::Payload`) before its `Put`, and recovery completes the
//!   chunk records from it (`complete_tail`);
//! - a vouched commit (every batch with a put, as the store thread
//!   commits) logs no copy: its write starts with `LogRecord::Vouch`, and
//!   its records are held back while it is the last write replayed. A
//!   later log write starts only after its flush completed, so one proves
//!   it durable and its records apply as any others; if none follows,
//!   each chunk it names is read back first, and a `Put` or `Relocate`
//!   whose chunk does not verify is not applied (`settle_vouched`).
//!
//! See `docs/format.md`, "Group commit and what a crash leaves".

use std::collections::BTreeMap;

use super::{
    chunk_len, key_text, read_bytes, record, record_size_bytes, scrub, write_bytes, BlockDeviceExt, Locator, LogRecord,
    RecordHeader, Result, Store, BLOCK,
};

/// One chunk's payload pieces: (offset in the chunk, bytes).
type Pieces = Vec<(u32, bytes::Bytes)>;

/// The payload pieces of the log write being replayed, by shard (key and
/// sequence) and chunk: what recovery needs to complete its puts.
#[derive(Debug, Default)]
pub(super) struct Tail {
    pieces: BTreeMap<(Vec<u8>, u64), BTreeMap<u32, Pieces>>,
    /// The records of the vouched log write being replayed, held back.
    pub(super) held: Option<Held>,
}

/// A vouched log write's records, not yet applied: each with the log
/// block it came from (its index and device offset, to name it).
#[derive(Debug)]
pub(super) struct Held {
    /// How many records its `Vouch` says follow it: fewer found means the
    /// write itself was cut short (so never acknowledged).
    pub(super) vouched: u32,
    pub(super) records: Vec<(u64, u64, LogRecord)>,
}

impl Tail {
    /// A new log write begins: the pieces of the one before belong to a
    /// commit that was durable before this one started. Returns the held
    /// records of the one before, which are therefore durable too.
    pub(super) fn restart(&mut self) -> Option<Held> {
        self.pieces.clear();
        self.held.take()
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

    /// Applies the records of the last log write, a vouched one, whose
    /// flush nothing proves completed: a `Put` only if every chunk it
    /// names reads back whole (header and payload, of its key and
    /// sequence), a `Relocate` only if the copy it names does; the other
    /// records as they are (they name no data). A record not applied
    /// leaves what was there before it: the shard's earlier version (or
    /// none), the chunk's earlier copy, which a reset can only follow in a
    /// later write.
    ///
    /// A write cut short (fewer records than its vouch) was never
    /// acknowledged: a put not applied is the crash's ordinary outcome. A
    /// whole write is the commit's, acknowledged or not: the crash came
    /// before its flush completed, or after it and before any later log
    /// write (a window the store thread closes within half a millisecond
    /// with a write of its own, `Store::confirm`) while the data rotted. The two look the
    /// same; the put is not applied and reported as a finding either way.
    /// Returns whether anything was left out (the caller then writes a
    /// checkpoint, so that no later write confirms the records left out).
    pub(super) fn settle_vouched(&mut self, held: Held) -> Result<bool> {
        let whole = held.records.len() == held.vouched as usize;
        let mut left_out = false;
        for (index, offset, record) in held.records {
            // Checked first: a chunk is read only at a place the layout has.
            self.check_record(&record).map_err(|what| super::Error::Corruption {
                device: self.name.clone(),
                what: format!("log block {index}: {what}"),
                offset,
            })?;
            let problem = match &record {
                LogRecord::Put { key, meta } => (0..meta.chunk_count())
                    .find_map(|c| self.chunk_problem(key, meta.sequence, meta.chunk(c), chunk_len(meta.size, c)))
                    .map(|(at, span, why)| (key.clone(), meta.sequence, at, span, why)),
                LogRecord::Relocate { key, sequence, chunk, to } => {
                    let current = self.index.get(key).filter(|m| m.sequence == *sequence);
                    current.and_then(|m| {
                        let c = *chunk as usize;
                        (c < m.chunk_count())
                            .then(|| self.chunk_problem(key, *sequence, *to, chunk_len(m.size, c)))
                            .flatten()
                            .map(|(at, span, why)| (key.clone(), *sequence, at, span, why))
                    })
                }
                _ => None,
            };
            let Some((key, sequence, at, span, why)) = problem else {
                self.apply(&record);
                continue;
            };
            left_out = true;
            self.next_sequence = self.next_sequence.max(sequence + 1);
            let key = key_text(&key);
            if let LogRecord::Relocate { .. } = record {
                // The chunk stays where it was, whole; nothing is lost.
                tracing::info!(device = %self.name, key = %key, offset = at, problem = %why, "a chunk moved by the last commit before the crash stays where it was");
                continue;
            }
            self.reverted_at_open.push(key.clone());
            if !whole {
                tracing::info!(device = %self.name, key = %key, offset = at, problem = %why, "a put of the last commit, cut short by the crash, was not applied");
                continue;
            }
            let detail = format!(
                "the last commit before the crash named a chunk that does not verify ({why}): torn by the crash \
                 before the commit's flush, or damaged after it and before a later write confirmed it; the put \
                 of sequence {sequence} is not applied, the key keeps what it held before"
            );
            tracing::warn!(device = %self.name, key = %key, offset = at, %detail, "last commit not applied at open");
            self.note_finding(scrub::Finding {
                kind: scrub::FindingKind::ChunkChecksum,
                key: Some(key),
                offset: at,
                len: span,
                detail,
            });
        }
        Ok(left_out)
    }

    /// Reads back the chunk record at `loc` (`len` bytes of payload) and
    /// names its problem, with its device offset and the bytes read,
    /// unless it is whole and of `key` at `sequence`.
    fn chunk_problem(&mut self, key: &[u8], sequence: u64, loc: Locator, len: usize) -> Option<(u64, u64, String)> {
        let at = self.locator_offset(loc);
        let span = record::span_blocks(loc.distance, len) as usize * BLOCK;
        let why = match read_bytes(self.dev.as_mut(), at, span) {
            Ok(bytes) => match RecordHeader::verify(&bytes, loc.distance, loc.crc) {
                Ok((h, _)) if h.key == key && h.sequence == sequence => return None,
                Ok(_) => record::RecordProblem::Mismatch.to_string(),
                Err(p) => p.to_string(),
            },
            Err(e) => e.to_string(),
        };
        Some((at, span as u64, why))
    }

    /// Keys whose put in the last (vouched) commit before a crash open did
    /// not apply, its chunks not verifying (`settle_vouched`).
    pub fn reverted_at_open(&self) -> &[String] {
        &self.reverted_at_open
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
