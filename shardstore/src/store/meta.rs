//! The metadata region: checkpoints and the log of index changes.
//!
//! The region is split in two halves. The active half holds a checkpoint
//! (the whole index and extent table at one moment) followed by log
//! blocks, each holding whole records of changes since. The superblock
//! names the active half, the checkpoint's length and CRC, and its epoch.
//! A new checkpoint is written into the other half and made current by a
//! superblock commit. Every log block carries the epoch, its index, and
//! the CRC of the block before it (the checkpoint's CRC for block 0), so
//! replay stops at the first block that does not continue the chain: a
//! torn block, a block of an older epoch, or a stale block left behind a
//! tail that was rewritten after a crash. Layout: `docs/format.md`.

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::constants::BLOCK_SIZE_BYTES;

pub const LOG_MAGIC: [u8; 4] = *b"SHLG";
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"SHCP";
/// Version 2 added each extent's verification time, the scrub cursor and
/// the list of damaged shards; version 3 the tombstones; version 4 payload
/// distances in locators (`Locator::packed_block`: group members). Older
/// versions are still read.
pub const CHECKPOINT_VERSION: u32 = 4;
pub const LOG_HEADER_BYTES: usize = 40;

// Log block fields (docs/format.md, "Log block"), each derived from the
// one before it.
const LOG_OFF_MAGIC: usize = 0;
const LOG_OFF_CRC: usize = LOG_OFF_MAGIC + 4;
/// The CRC covers everything from here to the end of the block.
const LOG_OFF_COVERED: usize = LOG_OFF_CRC + 4;
const LOG_OFF_EPOCH: usize = LOG_OFF_COVERED;
const LOG_OFF_INDEX: usize = LOG_OFF_EPOCH + 8;
const LOG_OFF_PREV_CRC: usize = LOG_OFF_INDEX + 8;
const LOG_OFF_USED: usize = LOG_OFF_PREV_CRC + 4;
const LOG_OFF_COUNT: usize = LOG_OFF_USED + 4;
const LOG_OFF_WRITE_POSITION: usize = LOG_OFF_COUNT + 4;
const _: () = assert!(LOG_OFF_WRITE_POSITION + 4 == LOG_HEADER_BYTES, "the records follow the header");
const _: () = assert!(LOG_OFF_EPOCH == 8 && LOG_OFF_WRITE_POSITION == 36, "as docs/format.md says");

// Checkpoint header fields (docs/format.md, "Metadata region").
const CP_OFF_MAGIC: usize = 0;
const CP_OFF_VERSION: usize = CP_OFF_MAGIC + 4;
const CP_OFF_EPOCH: usize = CP_OFF_VERSION + 4;
const CP_OFF_NEXT_SEQUENCE: usize = CP_OFF_EPOCH + 8;
const CP_OFF_ENTRIES: usize = CP_OFF_NEXT_SEQUENCE + 8;
const CP_OFF_EXTENTS: usize = CP_OFF_ENTRIES + 8;
const CP_OFF_BODY_LEN: usize = CP_OFF_EXTENTS + 8;
const CP_OFF_DAMAGED: usize = CP_OFF_BODY_LEN + 8;
const CP_OFF_CURSOR: usize = CP_OFF_DAMAGED + 8;
/// The scrub cursor: next extent u32 and three u64.
const CURSOR_BYTES: usize = 4 + 3 * 8;
const CP_OFF_TOMBSTONES: usize = CP_OFF_CURSOR + CURSOR_BYTES;
const _: () = assert!(CP_OFF_CURSOR == 56 && CP_OFF_TOMBSTONES == 84, "as docs/format.md says");
/// Chunks of the largest shard: a put record with all of them fits one
/// log block (asserted where the shard limit is defined).
pub const CHUNKS_PER_SHARD_MAX: usize = 64;
pub const BLOCK: usize = BLOCK_SIZE_BYTES as usize;
/// Room for records in one log block.
pub const LOG_PAYLOAD_BYTES_MAX: usize = BLOCK - LOG_HEADER_BYTES;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_RELOCATE: u8 = 3;
const TAG_RESET: u8 = 4;
const TAG_SCRUBBED: u8 = 5;
const TAG_DAMAGED: u8 = 6;
const TAG_TOMBSTONE: u8 = 7;
const TAG_PURGE: u8 = 8;
const TAG_PAYLOAD: u8 = 9;
/// A `Put` with a group member among its chunks (a locator with a payload
/// distance over 1): a tag of its own, so that a binary from before groups
/// refuses the log instead of misreading the locator.
const TAG_PUT_GROUPED: u8 = 10;
const TAG_VOUCH: u8 = 11;

/// Bytes of a `Payload` record other than its piece of payload: tag, key
/// length, key, sequence, chunk, offset and length.
pub fn payload_record_overhead_bytes(key_len: usize) -> usize {
    1 + 1 + key_len + 8 + 4 + 4 + 4
}

/// The largest piece of a chunk's payload one `Payload` record carries for
/// a key of this length: the record fills a log block.
pub fn payload_piece_bytes_max(key_len: usize) -> usize {
    LOG_PAYLOAD_BYTES_MAX - payload_record_overhead_bytes(key_len)
}

/// Where one chunk record lives, and the CRC32C its payload must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Locator {
    pub extent: u32,
    /// Offset of the record's header block within the extent, in blocks.
    pub block: u32,
    /// Blocks from the header block to the payload: 1 for a record of its
    /// own (and a group's first member), more for later members of a group
    /// (`record::RecordHeader::distance`).
    pub distance: u8,
    /// CRC32C of the chunk's payload.
    pub crc: u32,
}

/// Low bits of a packed block field that hold the block.
const PACKED_BLOCK_BITS: u32 = 24;
const _: () = assert!(crate::constants::EXTENT_SIZE_BYTES_MAX / BLOCK_SIZE_BYTES <= 1 << PACKED_BLOCK_BITS);

impl Locator {
    /// A record of its own at `block` of `extent`.
    pub fn lone(extent: u32, block: u32, crc: u32) -> Locator {
        Locator { extent, block, distance: 1, crc }
    }

    /// The block and the distance as one `u32`, as the index, the
    /// checkpoint and the log keep them: the block in the low 24 bits (an
    /// extent has at most 2^18 blocks) and the distance less one in the
    /// top 8, so a record of its own encodes as it did before groups.
    pub fn packed_block(self) -> u32 {
        debug_assert!(self.block < 1 << PACKED_BLOCK_BITS && self.distance >= 1);
        self.block | (u32::from(self.distance - 1) << PACKED_BLOCK_BITS)
    }

    /// The locator whose block and distance were packed as `packed`, or
    /// `None` for a distance past a byte's (no record has one).
    pub fn unpack(extent: u32, packed: u32, crc: u32) -> Option<Locator> {
        let distance = ((packed >> PACKED_BLOCK_BITS) as u8).checked_add(1)?;
        Some(Locator { extent, block: packed & ((1 << PACKED_BLOCK_BITS) - 1), distance, crc })
    }
}

/// A shard as the index knows it. One of these stays in memory per shard,
/// so it is kept small (see "memory per shard" under "Limits" in
/// `docs/format.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    pub size: u64,
    pub crc: u32,
    pub sequence: u64,
    pub written_unix_ms: u64,
    chunks: Chunks,
}

/// Where a shard's chunks are. Nearly every shard is one chunk, and that
/// chunk's payload CRC is the shard's own, so it is held inline without a
/// heap allocation; other shards keep a boxed slice of locators.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunks {
    /// The block and distance packed (`Locator::packed_block`).
    One {
        extent: u32,
        packed: u32,
    },
    Many(Box<[Locator]>),
}

impl ShardMeta {
    pub fn new(size: u64, crc: u32, sequence: u64, written_unix_ms: u64, chunks: Vec<Locator>) -> ShardMeta {
        let chunks = match chunks.as_slice() {
            [one] if one.crc == crc => Chunks::One { extent: one.extent, packed: one.packed_block() },
            _ => Chunks::Many(chunks.into_boxed_slice()),
        };
        ShardMeta { size, crc, sequence, written_unix_ms, chunks }
    }

    /// As `new` for a shard of one chunk, without a temporary vector.
    pub fn with_one_chunk(size: u64, crc: u32, sequence: u64, written_unix_ms: u64, chunk: Locator) -> ShardMeta {
        if chunk.crc == crc {
            ShardMeta {
                size,
                crc,
                sequence,
                written_unix_ms,
                chunks: Chunks::One { extent: chunk.extent, packed: chunk.packed_block() },
            }
        } else {
            ShardMeta::new(size, crc, sequence, written_unix_ms, vec![chunk])
        }
    }

    pub fn chunk_count(&self) -> usize {
        match &self.chunks {
            Chunks::One { .. } => 1,
            Chunks::Many(l) => l.len(),
        }
    }

    /// Locator of chunk `i`; panics past the last chunk.
    pub fn chunk(&self, i: usize) -> Locator {
        match &self.chunks {
            Chunks::One { extent, packed } => {
                assert_eq!(i, 0, "a one-chunk shard has no chunk {i}");
                Locator::unpack(*extent, *packed, self.crc).expect("packed from a locator")
            }
            Chunks::Many(l) => l[i],
        }
    }

    pub fn locators(&self) -> impl ExactSizeIterator<Item = Locator> + '_ {
        (0..self.chunk_count()).map(|i| self.chunk(i))
    }

    /// Points chunk `i` somewhere else (a relocation keeps its CRC).
    pub fn set_chunk(&mut self, i: usize, to: Locator) {
        match &mut self.chunks {
            Chunks::One { extent, packed } if i == 0 && to.crc == self.crc => {
                (*extent, *packed) = (to.extent, to.packed_block());
            }
            Chunks::Many(l) => l[i] = to,
            Chunks::One { .. } => {
                let mut all: Vec<Locator> = self.locators().collect();
                all[i] = to;
                self.chunks = Chunks::Many(all.into_boxed_slice());
            }
        }
    }
}

/// One change to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Put {
        key: Vec<u8>,
        meta: ShardMeta,
    },
    Delete {
        key: Vec<u8>,
        sequence: u64,
    },
    /// Chunk `chunk` of the shard written at `sequence` moved.
    Relocate {
        key: Vec<u8>,
        sequence: u64,
        chunk: u32,
        to: Locator,
    },
    /// The extent was emptied and its generation bumped.
    Reset {
        extent: u32,
        generation: u32,
    },
    /// The scrubber verified every live chunk of `extent` (of
    /// `generation`) that was there at `checked_ms`; the scrub state
    /// after it.
    Scrubbed {
        extent: u32,
        generation: u32,
        checked_ms: u64,
        scrub: ScrubCursor,
    },
    /// The scrubber found chunk `chunk` of the shard written at
    /// `sequence` damaged: the shard is on the repair list until it is
    /// replaced or deleted.
    Damaged {
        key: Vec<u8>,
        damage: Damage,
    },
    /// The key was deleted at `sequence` (a host-wide version) while a
    /// device that may hold an older copy could not be asked: any shard of
    /// the key older than it is gone, and the tombstone stays, so that the
    /// older copy never comes back when that device does.
    Tombstone {
        key: Vec<u8>,
        sequence: u64,
    },
    /// The tombstone of the key at `sequence` is no longer needed (every
    /// older copy on the host is gone).
    Purge {
        key: Vec<u8>,
        sequence: u64,
    },
    /// A piece of chunk `chunk`'s payload of the shard put at `sequence`,
    /// `offset` bytes into the chunk. A put made durable by one flush
    /// (data and log written together) logs its payload this way before
    /// its `Put`: if the chunk record in the extent does not verify at
    /// the next open (torn by a crash before the flush, or damaged since),
    /// it is rewritten from these pieces. Replay changes nothing for it.
    Payload {
        key: Vec<u8>,
        sequence: u64,
        chunk: u32,
        offset: u32,
        /// A slice of the put's own buffer when written (no copy).
        bytes: bytes::Bytes,
    },
    /// The first record of a log write made durable by the same flush as
    /// the chunk records it names (a vouched commit), followed by
    /// `records` more. Until a later log write exists, recovery verifies
    /// those chunks before applying the records that name them (see
    /// `tail.rs`). Replay changes nothing for it.
    Vouch {
        records: u32,
    },
}

/// Where the background scrubber is in its passes over the extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubCursor {
    /// The next extent to verify.
    pub next_extent: u32,
    /// When the pass in progress started (0: none yet).
    pub pass_started_ms: u64,
    /// When the last complete pass ended (0: never).
    pub last_pass_ms: u64,
    /// Complete passes so far.
    pub passes: u64,
}

/// What the scrubber found wrong with one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub sequence: u64,
    pub chunk: u32,
    /// A `scrub::FindingKind` code.
    pub kind: u8,
    /// Device offset and length of the damaged bytes.
    pub offset: u64,
    pub len: u64,
    pub found_ms: u64,
}

fn put_cursor(out: &mut Vec<u8>, c: &ScrubCursor) {
    out.extend_from_slice(&c.next_extent.to_le_bytes());
    out.extend_from_slice(&c.pass_started_ms.to_le_bytes());
    out.extend_from_slice(&c.last_pass_ms.to_le_bytes());
    out.extend_from_slice(&c.passes.to_le_bytes());
}

fn put_damage(out: &mut Vec<u8>, d: &Damage) {
    out.extend_from_slice(&d.sequence.to_le_bytes());
    out.extend_from_slice(&d.chunk.to_le_bytes());
    out.push(d.kind);
    out.extend_from_slice(&d.offset.to_le_bytes());
    out.extend_from_slice(&d.len.to_le_bytes());
    out.extend_from_slice(&d.found_ms.to_le_bytes());
}

fn put_key(out: &mut Vec<u8>, key: &[u8]) {
    out.push(key.len() as u8);
    out.extend_from_slice(key);
}

fn put_locator(out: &mut Vec<u8>, l: &Locator) {
    out.extend_from_slice(&l.extent.to_le_bytes());
    out.extend_from_slice(&l.packed_block().to_le_bytes());
    out.extend_from_slice(&l.crc.to_le_bytes());
}

impl LogRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LogRecord::Put { key, meta } => {
                out.push(if meta.locators().any(|l| l.distance > 1) { TAG_PUT_GROUPED } else { TAG_PUT });
                put_key(out, key);
                encode_meta(meta, out);
            }
            LogRecord::Delete { key, sequence } => {
                out.push(TAG_DELETE);
                put_key(out, key);
                out.extend_from_slice(&sequence.to_le_bytes());
            }
            LogRecord::Relocate { key, sequence, chunk, to } => {
                out.push(TAG_RELOCATE);
                put_key(out, key);
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&chunk.to_le_bytes());
                put_locator(out, to);
            }
            LogRecord::Reset { extent, generation } => {
                out.push(TAG_RESET);
                out.extend_from_slice(&extent.to_le_bytes());
                out.extend_from_slice(&generation.to_le_bytes());
            }
            LogRecord::Scrubbed { extent, generation, checked_ms, scrub } => {
                out.push(TAG_SCRUBBED);
                out.extend_from_slice(&extent.to_le_bytes());
                out.extend_from_slice(&generation.to_le_bytes());
                out.extend_from_slice(&checked_ms.to_le_bytes());
                put_cursor(out, scrub);
            }
            LogRecord::Damaged { key, damage } => {
                out.push(TAG_DAMAGED);
                put_key(out, key);
                put_damage(out, damage);
            }
            LogRecord::Tombstone { key, sequence } | LogRecord::Purge { key, sequence } => {
                out.push(if matches!(self, LogRecord::Tombstone { .. }) { TAG_TOMBSTONE } else { TAG_PURGE });
                put_key(out, key);
                out.extend_from_slice(&sequence.to_le_bytes());
            }
            LogRecord::Payload { key, sequence, chunk, offset, bytes } => {
                out.push(TAG_PAYLOAD);
                put_key(out, key);
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&chunk.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            LogRecord::Vouch { records } => {
                out.push(TAG_VOUCH);
                out.extend_from_slice(&records.to_le_bytes());
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.len()
    }
}

fn encode_meta(meta: &ShardMeta, out: &mut Vec<u8>) {
    out.extend_from_slice(&meta.sequence.to_le_bytes());
    out.extend_from_slice(&meta.size.to_le_bytes());
    out.extend_from_slice(&meta.crc.to_le_bytes());
    out.extend_from_slice(&meta.written_unix_ms.to_le_bytes());
    out.extend_from_slice(&(meta.chunk_count() as u32).to_le_bytes());
    for l in meta.locators() {
        put_locator(out, &l);
    }
}

/// A cursor over encoded bytes that fails instead of panicking.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn key(&mut self) -> Option<Vec<u8>> {
        let n = self.u8()? as usize;
        if n == 0 {
            return None;
        }
        self.take(n).map(<[u8]>::to_vec)
    }

    fn locator(&mut self) -> Option<Locator> {
        Locator::unpack(self.u32()?, self.u32()?, self.u32()?)
    }

    pub fn meta(&mut self) -> Option<ShardMeta> {
        let sequence = self.u64()?;
        let size = self.u64()?;
        let crc = self.u32()?;
        let written_unix_ms = self.u64()?;
        let n = self.u32()? as usize;
        // No shard has more chunks than a put record holds; a larger count
        // is damage, never an allocation.
        if n > CHUNKS_PER_SHARD_MAX {
            return None;
        }
        let chunks = (0..n).map(|_| self.locator()).collect::<Option<Vec<_>>>()?;
        Some(ShardMeta::new(size, crc, sequence, written_unix_ms, chunks))
    }

    /// The next record, or `None` when the bytes do not hold a valid one.
    pub fn record(&mut self) -> Option<LogRecord> {
        match self.u8()? {
            TAG_PUT | TAG_PUT_GROUPED => Some(LogRecord::Put { key: self.key()?, meta: self.meta()? }),
            TAG_DELETE => Some(LogRecord::Delete { key: self.key()?, sequence: self.u64()? }),
            TAG_RELOCATE => Some(LogRecord::Relocate {
                key: self.key()?,
                sequence: self.u64()?,
                chunk: self.u32()?,
                to: self.locator()?,
            }),
            TAG_RESET => Some(LogRecord::Reset { extent: self.u32()?, generation: self.u32()? }),
            TAG_SCRUBBED => Some(LogRecord::Scrubbed {
                extent: self.u32()?,
                generation: self.u32()?,
                checked_ms: self.u64()?,
                scrub: self.cursor()?,
            }),
            TAG_DAMAGED => Some(LogRecord::Damaged { key: self.key()?, damage: self.damage()? }),
            TAG_TOMBSTONE => Some(LogRecord::Tombstone { key: self.key()?, sequence: self.u64()? }),
            TAG_PURGE => Some(LogRecord::Purge { key: self.key()?, sequence: self.u64()? }),
            TAG_PAYLOAD => {
                let (key, sequence, chunk, offset) = (self.key()?, self.u64()?, self.u32()?, self.u32()?);
                // The length is checked against the bytes left before
                // anything is allocated for it.
                let len = self.u32()? as usize;
                let bytes = bytes::Bytes::copy_from_slice(self.take(len)?);
                Some(LogRecord::Payload { key, sequence, chunk, offset, bytes })
            }
            TAG_VOUCH => Some(LogRecord::Vouch { records: self.u32()? }),
            _ => None,
        }
    }

    pub fn key_and_meta(&mut self) -> Option<(Vec<u8>, ShardMeta)> {
        Some((self.key()?, self.meta()?))
    }

    pub fn cursor(&mut self) -> Option<ScrubCursor> {
        Some(ScrubCursor {
            next_extent: self.u32()?,
            pass_started_ms: self.u64()?,
            last_pass_ms: self.u64()?,
            passes: self.u64()?,
        })
    }

    pub fn damage(&mut self) -> Option<Damage> {
        Some(Damage {
            sequence: self.u64()?,
            chunk: self.u32()?,
            kind: self.u8()?,
            offset: self.u64()?,
            len: self.u64()?,
            found_ms: self.u64()?,
        })
    }

    pub fn key_and_sequence(&mut self) -> Option<(Vec<u8>, u64)> {
        Some((self.key()?, self.u64()?))
    }

    pub fn key_and_damage(&mut self) -> Option<(Vec<u8>, Damage)> {
        Some((self.key()?, self.damage()?))
    }
}

/// Encodes one log block: header, then `payload` (whole records), zero
/// padding. Returns the block's CRC (the next block's `prev_crc`).
pub fn encode_log_block(
    epoch: u64,
    index: u64,
    prev_crc: u32,
    record_count: u32,
    payload: &[u8],
    out: &mut [u8],
) -> u32 {
    encode_log_block_in_write(epoch, index, prev_crc, record_count, 0, payload, out)
}

/// As `encode_log_block`, for the block `write_position` blocks into one
/// log write (format version 2 records it, so that recovery knows which
/// blocks the last write covered).
pub fn encode_log_block_in_write(
    epoch: u64,
    index: u64,
    prev_crc: u32,
    record_count: u32,
    write_position: u32,
    payload: &[u8],
    out: &mut [u8],
) -> u32 {
    assert_eq!(out.len(), BLOCK);
    assert!(payload.len() <= LOG_PAYLOAD_BYTES_MAX);
    out.fill(0);
    out[LOG_OFF_MAGIC..LOG_OFF_MAGIC + 4].copy_from_slice(&LOG_MAGIC);
    put_u64(out, LOG_OFF_EPOCH, epoch);
    put_u64(out, LOG_OFF_INDEX, index);
    put_u32(out, LOG_OFF_PREV_CRC, prev_crc);
    put_u32(out, LOG_OFF_USED, payload.len() as u32);
    put_u32(out, LOG_OFF_COUNT, record_count);
    put_u32(out, LOG_OFF_WRITE_POSITION, write_position);
    out[LOG_HEADER_BYTES..LOG_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    let crc = crc32c::crc32c(&out[LOG_OFF_COVERED..]);
    put_u32(out, LOG_OFF_CRC, crc);
    // Paired with the check on the way back in: what goes out decodes.
    debug_assert!(log_block_position(out) == Some((epoch, index)));
    crc
}

/// The epoch and index of a log block whose magic and CRC are valid,
/// whatever block it follows.
pub fn log_block_position(block: &[u8]) -> Option<(u64, u64)> {
    if block.len() != BLOCK || block[LOG_OFF_MAGIC..LOG_OFF_MAGIC + 4] != LOG_MAGIC {
        return None;
    }
    if crc32c::crc32c(&block[LOG_OFF_COVERED..]) != get_u32(block, LOG_OFF_CRC) {
        return None;
    }
    Some((get_u64(block, LOG_OFF_EPOCH), get_u64(block, LOG_OFF_INDEX)))
}

/// How many blocks before this one the same log write carried (0 in
/// format version 1, where the field is reserved). Meaningful only for a
/// block that decodes.
pub fn log_block_write_position(block: &[u8]) -> u32 {
    if block.len() < LOG_HEADER_BYTES {
        return 0;
    }
    get_u32(block, LOG_OFF_WRITE_POSITION)
}

/// A valid log block continuing the chain, or `None`.
pub fn decode_log_block(block: &[u8], epoch: u64, index: u64, prev_crc: u32) -> Option<(u32, Vec<LogRecord>)> {
    if log_block_position(block)? != (epoch, index) || get_u32(block, LOG_OFF_PREV_CRC) != prev_crc {
        return None;
    }
    let crc = get_u32(block, LOG_OFF_CRC);
    let used = get_u32(block, LOG_OFF_USED) as usize;
    let count = get_u32(block, LOG_OFF_COUNT);
    if used > LOG_PAYLOAD_BYTES_MAX {
        return None;
    }
    let mut records = Reader::new(&block[LOG_HEADER_BYTES..LOG_HEADER_BYTES + used]);
    // Every record takes more than one byte: a count beyond the bytes used
    // is damage, and never sizes an allocation.
    let mut out = Vec::with_capacity((count as usize).min(used));
    for _ in 0..count {
        out.push(records.record()?);
    }
    records.is_empty().then_some((crc, out))
}

/// The fixed part of a checkpoint, in its first 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// 1 or 2 (see `CHECKPOINT_VERSION`); what `encode` writes is always
    /// the current version.
    pub version: u32,
    pub epoch: u64,
    pub next_sequence: u64,
    pub entry_count: u64,
    pub extent_count: u64,
    /// Bytes of extent table, entries and damaged list after the header
    /// block.
    pub body_len: u64,
    /// Version 2: entries of the damaged list after the shard entries, and
    /// the scrub cursor.
    pub damaged_count: u64,
    pub scrub: ScrubCursor,
    /// Version 3: tombstones after the damaged list.
    pub tombstone_count: u64,
}

pub const CHECKPOINT_HEADER_BYTES: usize = CP_OFF_TOMBSTONES + 8;

impl CheckpointHeader {
    pub fn encode(&self, out: &mut [u8]) {
        out[..BLOCK].fill(0);
        out[CP_OFF_MAGIC..CP_OFF_MAGIC + 4].copy_from_slice(&CHECKPOINT_MAGIC);
        put_u32(out, CP_OFF_VERSION, CHECKPOINT_VERSION);
        put_u64(out, CP_OFF_EPOCH, self.epoch);
        put_u64(out, CP_OFF_NEXT_SEQUENCE, self.next_sequence);
        put_u64(out, CP_OFF_ENTRIES, self.entry_count);
        put_u64(out, CP_OFF_EXTENTS, self.extent_count);
        put_u64(out, CP_OFF_BODY_LEN, self.body_len);
        put_u64(out, CP_OFF_DAMAGED, self.damaged_count);
        let mut cursor = Vec::with_capacity(CURSOR_BYTES);
        put_cursor(&mut cursor, &self.scrub);
        out[CP_OFF_CURSOR..CP_OFF_CURSOR + CURSOR_BYTES].copy_from_slice(&cursor);
        put_u64(out, CP_OFF_TOMBSTONES, self.tombstone_count);
        // Paired with the check on the way back in: what goes out decodes.
        debug_assert!(CheckpointHeader::decode(out)
            .is_some_and(|h| h == CheckpointHeader { version: CHECKPOINT_VERSION, ..*self }));
    }

    pub fn decode(block: &[u8]) -> Option<CheckpointHeader> {
        if block.len() < CHECKPOINT_HEADER_BYTES || block[CP_OFF_MAGIC..CP_OFF_MAGIC + 4] != CHECKPOINT_MAGIC {
            return None;
        }
        let version = get_u32(block, CP_OFF_VERSION);
        if !(1..=CHECKPOINT_VERSION).contains(&version) {
            return None;
        }
        let mut header = CheckpointHeader {
            version,
            epoch: get_u64(block, CP_OFF_EPOCH),
            next_sequence: get_u64(block, CP_OFF_NEXT_SEQUENCE),
            entry_count: get_u64(block, CP_OFF_ENTRIES),
            extent_count: get_u64(block, CP_OFF_EXTENTS),
            body_len: get_u64(block, CP_OFF_BODY_LEN),
            damaged_count: 0,
            scrub: ScrubCursor::default(),
            tombstone_count: 0,
        };
        // Older versions have shorter headers (version 1 ends at the body
        // length, version 2 at the cursor).
        if version >= 2 {
            header.damaged_count = get_u64(block, CP_OFF_DAMAGED);
            header.scrub = Reader::new(&block[CP_OFF_CURSOR..CP_OFF_CURSOR + CURSOR_BYTES]).cursor()?;
        }
        if version >= 3 {
            header.tombstone_count = get_u64(block, CP_OFF_TOMBSTONES);
        }
        Some(header)
    }
}

/// Bytes a tombstone takes in a checkpoint (and encodes it).
pub fn tombstone_entry_len(key: &[u8]) -> u64 {
    1 + key.len() as u64 + 8
}

pub fn encode_tombstone(key: &[u8], sequence: u64, out: &mut Vec<u8>) {
    put_key(out, key);
    out.extend_from_slice(&sequence.to_le_bytes());
}

/// Bytes an entry of the damaged list takes in a checkpoint.
pub fn damage_entry_len(key: &[u8]) -> u64 {
    1 + key.len() as u64 + 8 + 4 + 1 + 8 + 8 + 8
}

/// Encodes an entry of the damaged list for a checkpoint's body.
pub fn encode_damage(key: &[u8], damage: &Damage, out: &mut Vec<u8>) {
    put_key(out, key);
    put_damage(out, damage);
}

/// Encodes a checkpoint entry (key and shard) for the body.
pub fn encode_entry(key: &[u8], meta: &ShardMeta, out: &mut Vec<u8>) {
    put_key(out, key);
    encode_meta(meta, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, n: usize) -> LogRecord {
        LogRecord::Put {
            key: key.as_bytes().to_vec(),
            meta: ShardMeta::new(
                5,
                9,
                3,
                4,
                (0..n as u32).map(|i| Locator { extent: i, block: i * 2, distance: 1 + i as u8, crc: i * 3 }).collect(),
            ),
        }
    }

    #[test]
    fn log_blocks_round_trip_and_chain() {
        let records = vec![
            put("a", 1),
            put("bb", 64),
            LogRecord::Delete { key: b"c".to_vec(), sequence: 8 },
            LogRecord::Relocate { key: b"d".to_vec(), sequence: 2, chunk: 1, to: Locator::lone(1, 2, 3) },
            LogRecord::Reset { extent: 7, generation: 2 },
            LogRecord::Scrubbed {
                extent: 3,
                generation: 4,
                checked_ms: 5,
                scrub: ScrubCursor { next_extent: 4, pass_started_ms: 6, last_pass_ms: 7, passes: 8 },
            },
            LogRecord::Damaged {
                key: b"e".to_vec(),
                damage: Damage { sequence: 9, chunk: 10, kind: 11, offset: 12, len: 13, found_ms: 14 },
            },
        ];
        let mut payload = Vec::new();
        for r in &records {
            r.encode(&mut payload);
        }
        let mut block = vec![0u8; BLOCK];
        let crc = encode_log_block(5, 0, 77, records.len() as u32, &payload, &mut block);
        let (back_crc, back) = decode_log_block(&block, 5, 0, 77).unwrap();
        assert_eq!((back_crc, back), (crc, records));
        assert!(decode_log_block(&block, 6, 0, 77).is_none(), "another epoch");
        assert!(decode_log_block(&block, 5, 1, 77).is_none(), "another index");
        assert!(decode_log_block(&block, 5, 0, 78).is_none(), "a broken chain");
        for bit in 0..BLOCK * 8 {
            block[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_log_block(&block, 5, 0, 77).is_none(), "bit {bit}");
            block[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn the_largest_put_record_fits_a_block() {
        let key = "k".repeat(255);
        assert!(put(&key, 64).encoded_len() <= LOG_PAYLOAD_BYTES_MAX);
    }
}
