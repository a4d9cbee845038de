//! Chunk records: the self-describing unit of shard data in an extent.
//!
//! A record is a header block (the 64-byte header and the key, zero-padded
//! to 4 KiB) followed by up to one chunk of payload starting on the next
//! block boundary, itself zero-padded. Everything needed to rebuild the
//! index is in the header (with its own CRC, covering the extent
//! generation and the write sequence); the payload is block-aligned so a
//! read fetches exactly the payload blocks and checks them against the CRC
//! its locator carries.
//!
//! Small records written together may share one header block (a group):
//! their headers one after another in it, each saying how many blocks
//! after the header block its payload starts, and their payloads after it
//! in header order. A 4 KiB put is then about 4 KiB on disk instead of 8.
//! Byte layout: `docs/format.md`, "Chunk record" and "Record group".

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::constants::BLOCK_SIZE_BYTES;

pub const RECORD_MAGIC: [u8; 4] = *b"SHCK";
pub const RECORD_VERSION: u8 = 1;
pub const HEADER_SIZE_BYTES: usize = 64;
pub const KEY_SIZE_BYTES_MAX: usize = 255;

/// Largest payload one record carries: one buffer-pool slot, one read.
pub const CHUNK_SIZE_BYTES_MAX: usize = 1024 * 1024;

/// Header flag: the record is a member of a group, and the header's byte
/// 7 holds its payload's distance from the header block, in blocks.
const FLAG_GROUP_MEMBER: u8 = 1;

/// The most blocks a group member's payload may start after its header
/// block (the distance is one byte).
pub const GROUP_DISTANCE_MAX: u8 = u8::MAX;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_KEY_LEN: usize = 5;
const OFF_FLAGS: usize = 6;
const OFF_RESERVED0: usize = 7;
const OFF_SEQUENCE: usize = 8;
const OFF_EXTENT: usize = 16;
const OFF_GENERATION: usize = 20;
const OFF_SHARD_LEN: usize = 24;
const OFF_CHUNK_OFFSET: usize = 32;
const OFF_CHUNK_LEN: usize = 40;
const OFF_PAYLOAD_CRC: usize = 44;
const OFF_SHARD_CRC: usize = 48;
const OFF_WRITTEN: usize = 52;
const OFF_HEADER_CRC: usize = 60;

const _: () = assert!(OFF_VERSION == OFF_MAGIC + 4 && OFF_KEY_LEN == OFF_VERSION + 1);
const _: () = assert!(OFF_FLAGS == OFF_KEY_LEN + 1 && OFF_RESERVED0 == OFF_FLAGS + 1);
const _: () = assert!(OFF_SEQUENCE == OFF_RESERVED0 + 1 && OFF_EXTENT == OFF_SEQUENCE + 8);
const _: () = assert!(OFF_GENERATION == OFF_EXTENT + 4 && OFF_SHARD_LEN == OFF_GENERATION + 4);
const _: () = assert!(OFF_CHUNK_OFFSET == OFF_SHARD_LEN + 8 && OFF_CHUNK_LEN == OFF_CHUNK_OFFSET + 8);
const _: () = assert!(OFF_PAYLOAD_CRC == OFF_CHUNK_LEN + 4 && OFF_SHARD_CRC == OFF_PAYLOAD_CRC + 4);
const _: () = assert!(OFF_WRITTEN == OFF_SHARD_CRC + 4 && OFF_HEADER_CRC == OFF_WRITTEN + 8);
const _: () = assert!(OFF_HEADER_CRC + 4 == HEADER_SIZE_BYTES);
const _: () = assert!(CHUNK_SIZE_BYTES_MAX as u64 % BLOCK_SIZE_BYTES == 0);

/// The header of one chunk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Vec<u8>,
    /// Write sequence of the put that wrote the shard (all its chunks).
    pub sequence: u64,
    pub extent: u32,
    pub generation: u32,
    pub shard_len: u64,
    /// Offset of this chunk's payload within the shard.
    pub chunk_offset: u64,
    pub chunk_len: u32,
    pub payload_crc: u32,
    /// CRC32C of the whole shard, the same in every chunk.
    pub shard_crc: u32,
    pub written_unix_ms: u64,
    /// Whether the record shares its header block with others (a group).
    pub grouped: bool,
    /// Blocks from the header block to the payload: 1 for a record of its
    /// own; for a group member, 1 plus the payload blocks of the members
    /// before it.
    pub distance: u8,
}

/// Why bytes at a locator are not the expected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordProblem {
    NoMagic,
    BadHeaderChecksum,
    UnsupportedVersion(u8),
    BadPayloadChecksum,
    /// A valid record, but not the one the locator names (stale or
    /// misdirected).
    Mismatch,
    Invalid(&'static str),
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordProblem::NoMagic => f.write_str("no record magic"),
            RecordProblem::BadHeaderChecksum => f.write_str("bad header checksum"),
            RecordProblem::UnsupportedVersion(v) => write!(f, "unsupported record version {v}"),
            RecordProblem::BadPayloadChecksum => {
                f.write_str("bad payload checksum (torn, corrupted, stale or misdirected)")
            }
            RecordProblem::Mismatch => f.write_str("a different record than expected (stale or misdirected)"),
            RecordProblem::Invalid(why) => write!(f, "invalid record: {why}"),
        }
    }
}

/// The header block precedes the payload.
pub const HEADER_BLOCK_BYTES: usize = BLOCK_SIZE_BYTES as usize;
const _: () = assert!(HEADER_SIZE_BYTES + KEY_SIZE_BYTES_MAX <= HEADER_BLOCK_BYTES);

/// Bytes the payload of a chunk occupies on disk (block-padded).
pub fn payload_size_bytes(chunk_len: usize) -> u64 {
    (chunk_len as u64).next_multiple_of(BLOCK_SIZE_BYTES)
}

/// Bytes a header takes in a group's header block: header and key,
/// rounded up to 8 bytes (the next header starts there).
pub fn member_slot_bytes(key_len: usize) -> usize {
    (HEADER_SIZE_BYTES + key_len).next_multiple_of(8)
}

/// Bytes a record with this key and payload length occupies on disk.
pub fn record_size_bytes(key_len: usize, chunk_len: usize) -> u64 {
    debug_assert!(key_len <= KEY_SIZE_BYTES_MAX);
    HEADER_BLOCK_BYTES as u64 + payload_size_bytes(chunk_len)
}

/// Copies a chunk's payload into its place in a record buffer (after the
/// header block) and zeroes the padding after it. Returns the payload as
/// placed, still hot in cache for its CRC.
pub fn place_payload<'a>(payload: &[u8], out: &'a mut [u8]) -> &'a [u8] {
    let to = payload_mut(payload.len(), out);
    to.copy_from_slice(payload);
    to
}

/// The place of a `len`-byte payload in a record buffer (after the header
/// block), the padding after it zeroed, for the caller to fill.
pub fn payload_mut(len: usize, out: &mut [u8]) -> &mut [u8] {
    let end = HEADER_BLOCK_BYTES + len;
    out[end..].fill(0);
    &mut out[HEADER_BLOCK_BYTES..end]
}

impl RecordHeader {
    /// Writes the record (header block, payload, zero padding) into `out`,
    /// which must be exactly `record_size_bytes` long. Returns the header
    /// CRC.
    pub fn encode(&self, payload: &[u8], out: &mut [u8]) -> u32 {
        assert_eq!(payload.len(), self.chunk_len as usize);
        place_payload(payload, out);
        self.encode_header(out)
    }

    /// Writes the header block at the start of `out` (a whole record whose
    /// payload is already in place). Returns the header CRC.
    pub fn encode_header(&self, out: &mut [u8]) -> u32 {
        assert!(!self.grouped && self.distance == 1, "a record of its own");
        assert_eq!(out.len() as u64, record_size_bytes(self.key.len(), self.chunk_len as usize));
        let header_crc = self.encode_slot(out);
        out[HEADER_SIZE_BYTES + self.key.len()..HEADER_BLOCK_BYTES].fill(0);
        header_crc
    }

    /// Writes the header and key at the start of `out` (a record's header
    /// block, or a group member's slot in one), and nothing after them.
    /// Returns the header CRC.
    pub fn encode_slot(&self, out: &mut [u8]) -> u32 {
        assert!(!self.key.is_empty() && self.key.len() <= KEY_SIZE_BYTES_MAX, "key length checked by the caller");
        assert!(self.distance >= 1 && (self.grouped || self.distance == 1), "a payload after its header block");
        let h = &mut out[..HEADER_SIZE_BYTES];
        h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&RECORD_MAGIC);
        h[OFF_VERSION] = RECORD_VERSION;
        h[OFF_KEY_LEN] = self.key.len() as u8;
        h[OFF_FLAGS] = if self.grouped { FLAG_GROUP_MEMBER } else { 0 };
        h[OFF_RESERVED0] = if self.grouped { self.distance } else { 0 };
        put_u64(h, OFF_SEQUENCE, self.sequence);
        put_u32(h, OFF_EXTENT, self.extent);
        put_u32(h, OFF_GENERATION, self.generation);
        put_u64(h, OFF_SHARD_LEN, self.shard_len);
        put_u64(h, OFF_CHUNK_OFFSET, self.chunk_offset);
        put_u32(h, OFF_CHUNK_LEN, self.chunk_len);
        put_u32(h, OFF_PAYLOAD_CRC, self.payload_crc);
        put_u32(h, OFF_SHARD_CRC, self.shard_crc);
        put_u64(h, OFF_WRITTEN, self.written_unix_ms);
        let key_end = HEADER_SIZE_BYTES + self.key.len();
        out[HEADER_SIZE_BYTES..key_end].copy_from_slice(&self.key);
        let header_crc = crc32c::crc32c_append(crc32c::crc32c(&out[..OFF_HEADER_CRC]), &self.key);
        put_u32(out, OFF_HEADER_CRC, header_crc);
        header_crc
    }

    /// Parses the header and key at the start of `bytes` (at least the
    /// header and key), checking magic, version and header CRC. Returns the
    /// header and its CRC.
    pub fn decode(bytes: &[u8]) -> Result<(RecordHeader, u32), RecordProblem> {
        if bytes.len() < HEADER_SIZE_BYTES {
            return Err(RecordProblem::Invalid("shorter than a header"));
        }
        if bytes[OFF_MAGIC..OFF_MAGIC + 4] != RECORD_MAGIC {
            return Err(RecordProblem::NoMagic);
        }
        let key_len = bytes[OFF_KEY_LEN] as usize;
        if key_len == 0 || bytes.len() < HEADER_SIZE_BYTES + key_len {
            return Err(RecordProblem::Invalid("key length"));
        }
        let key = &bytes[HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + key_len];
        let stored = get_u32(bytes, OFF_HEADER_CRC);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..OFF_HEADER_CRC]), key);
        if stored != computed {
            return Err(RecordProblem::BadHeaderChecksum);
        }
        if bytes[OFF_VERSION] != RECORD_VERSION {
            return Err(RecordProblem::UnsupportedVersion(bytes[OFF_VERSION]));
        }
        let grouped = match (bytes[OFF_FLAGS], bytes[OFF_RESERVED0]) {
            (0, 0) => false,
            (FLAG_GROUP_MEMBER, 1..) => true,
            (FLAG_GROUP_MEMBER, 0) => return Err(RecordProblem::Invalid("a group member's payload at its header")),
            _ => return Err(RecordProblem::Invalid("reserved bits set")),
        };
        let u32_at = |o: usize| get_u32(bytes, o);
        let u64_at = |o: usize| get_u64(bytes, o);
        let header = RecordHeader {
            key: key.to_vec(),
            sequence: u64_at(OFF_SEQUENCE),
            extent: u32_at(OFF_EXTENT),
            generation: u32_at(OFF_GENERATION),
            shard_len: u64_at(OFF_SHARD_LEN),
            chunk_offset: u64_at(OFF_CHUNK_OFFSET),
            chunk_len: u32_at(OFF_CHUNK_LEN),
            payload_crc: u32_at(OFF_PAYLOAD_CRC),
            shard_crc: u32_at(OFF_SHARD_CRC),
            written_unix_ms: u64_at(OFF_WRITTEN),
            grouped,
            distance: if grouped { bytes[OFF_RESERVED0] } else { 1 },
        };
        // Each member's payload has blocks of its own, so its distance
        // names it among the group's.
        if grouped && header.chunk_len == 0 {
            return Err(RecordProblem::Invalid("an empty group member"));
        }
        if header.chunk_len as usize > CHUNK_SIZE_BYTES_MAX
            || header.chunk_offset.checked_add(u64::from(header.chunk_len)).is_none_or(|end| end > header.shard_len)
        {
            return Err(RecordProblem::Invalid("chunk lies outside its shard"));
        }
        Ok((header, computed))
    }

    /// Verifies a whole record read at a locator whose payload is
    /// `distance` blocks after the header block and whose payload CRC is
    /// `payload_crc` (`bytes` from the header block to at least the
    /// payload's end): a valid header (for a group member, the one in the
    /// block whose payload is at that distance), and a payload matching
    /// both the header and the locator. Returns the header and the payload
    /// slice.
    pub fn verify(bytes: &[u8], distance: u8, payload_crc: u32) -> Result<(RecordHeader, &[u8]), RecordProblem> {
        let block = &bytes[..bytes.len().min(HEADER_BLOCK_BYTES)];
        let header = if distance == 1 {
            // A record of its own, or a group's first member.
            RecordHeader::decode(block)?.0
        } else {
            member_at(block, distance)?
        };
        let start = usize::from(distance) * HEADER_BLOCK_BYTES;
        let end = start + header.chunk_len as usize;
        if bytes.len() < end {
            return Err(RecordProblem::Invalid("record longer than what was read"));
        }
        let payload = &bytes[start..end];
        if header.payload_crc != payload_crc {
            return Err(RecordProblem::Mismatch);
        }
        verify_payload(payload, payload_crc)?;
        Ok((header, payload))
    }
}

/// The header in a group's block whose payload is `distance` (over 1)
/// blocks after it: the one at an 8-byte boundary past the first whose
/// flags and distance bytes say so, decoded (and so checked) alone. Every
/// boundary is looked at, so a damaged header, the first included, hides
/// no other member's; `Mismatch` when none is there.
fn member_at(block: &[u8], distance: u8) -> Result<RecordHeader, RecordProblem> {
    member_slots(block)
        .find(|&(_, d)| d == distance)
        .map_or(Err(RecordProblem::Mismatch), |(at, _)| Ok(RecordHeader::decode(&block[at..])?.0))
}

/// The 8-byte boundaries past a group block's first header where a
/// member's header may start (magic and member flag there, not yet
/// checked), with the distance byte each holds.
fn member_slots(block: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    (8..block.len().saturating_sub(HEADER_SIZE_BYTES - 1))
        .step_by(8)
        .filter(|&at| {
            block[at + OFF_MAGIC..at + OFF_MAGIC + 4] == RECORD_MAGIC && block[at + OFF_FLAGS] == FLAG_GROUP_MEMBER
        })
        .map(|at| (at, block[at + OFF_RESERVED0]))
}

/// The headers of a group's header block after its first (`first`,
/// already decoded): each starts on an 8-byte boundary (the next after the
/// header and key before it), and every boundary after the first header
/// is looked at, so a damaged header hides no other member's. Returns
/// every header that decodes and belongs to the group (the first
/// included), and the first problem met: a torn or damaged header, or one
/// that does not belong (not a member, not of the same extent and
/// generation, or its payload not after the one before).
pub fn decode_group(block: &[u8], first: RecordHeader) -> (Vec<RecordHeader>, Option<RecordProblem>) {
    let at = member_slot_bytes(first.key.len());
    decode_members(block, first, at)
}

/// `decode_group` from the member `first`, whose slot ends at `at`.
fn decode_members(block: &[u8], first: RecordHeader, mut at: usize) -> (Vec<RecordHeader>, Option<RecordProblem>) {
    let mut headers = vec![first];
    let mut problem = None;
    while at + HEADER_SIZE_BYTES <= block.len() {
        if block[at + OFF_MAGIC..at + OFF_MAGIC + 4] != RECORD_MAGIC {
            at += 8;
            continue;
        }
        let last = headers.last().expect("the first header");
        let follows =
            u32::from(last.distance) + (payload_size_bytes(last.chunk_len as usize) / BLOCK_SIZE_BYTES) as u32;
        let found = match RecordHeader::decode(&block[at..]) {
            Err(p) => Err(p),
            Ok((h, _)) if !h.grouped || h.extent != last.extent || h.generation != last.generation => {
                Err(RecordProblem::Invalid("a header in a group's block that is not of the group"))
            }
            Ok((h, _)) if u32::from(h.distance) < follows => {
                Err(RecordProblem::Invalid("a group member's payload overlaps the one before"))
            }
            Ok((h, _)) => Ok(h),
        };
        match found {
            Ok(h) => {
                at += member_slot_bytes(h.key.len());
                headers.push(h);
            }
            Err(p) => {
                problem.get_or_insert(p);
                at += 8;
            }
        }
    }
    (headers, problem)
}

/// The headers a header block holds: one, or a group's. `Err` when the
/// first header does not decode (the block holds no record).
pub fn decode_block(block: &[u8]) -> Result<(Vec<RecordHeader>, Option<RecordProblem>), RecordProblem> {
    let (first, _) = RecordHeader::decode(block)?;
    Ok(if first.grouped { decode_group(block, first) } else { (vec![first], None) })
}

/// The members of a group whose block's first header is damaged: the
/// headers at the 8-byte boundaries after it, from the first one that
/// decodes as a group member whose payload is after the first member's
/// (distance over 1), as `decode_group` finds them. Empty when none does:
/// the block is not a group's, or all its headers are damaged.
pub fn salvage_group(block: &[u8]) -> Vec<RecordHeader> {
    let first = member_slots(block).filter(|&(_, distance)| distance > 1).find_map(|(at, _)| {
        let (h, _) = RecordHeader::decode(&block[at..]).ok()?;
        Some((at + member_slot_bytes(h.key.len()), h))
    });
    first.map_or_else(Vec::new, |(at, h)| decode_members(block, h, at).0)
}

/// Whether a group whose header block holds `slots` bytes of headers and
/// whose payloads end `end_blocks` after it takes one more member with a
/// key of `key_len` bytes: room for its header, and its payload's
/// distance (`end_blocks`) within a byte.
pub fn fits_group(slots: usize, end_blocks: u32, key_len: usize) -> bool {
    end_blocks <= u32::from(GROUP_DISTANCE_MAX) && slots + member_slot_bytes(key_len) <= HEADER_BLOCK_BYTES
}

/// Blocks from a record's header block to the end of its payload.
pub fn span_blocks(distance: u8, chunk_len: usize) -> u32 {
    u32::from(distance) + (payload_size_bytes(chunk_len) / BLOCK_SIZE_BYTES) as u32
}

/// Checks payload bytes read on their own against the CRC the locator
/// carries: torn, rotted, stale or misdirected data all fail here.
pub fn verify_payload(payload: &[u8], payload_crc: u32) -> Result<(), RecordProblem> {
    if crc32c::crc32c(payload) == payload_crc {
        Ok(())
    } else {
        Err(RecordProblem::BadPayloadChecksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &[u8], payload: &[u8]) -> RecordHeader {
        RecordHeader {
            key: key.to_vec(),
            sequence: 42,
            extent: 3,
            generation: 7,
            shard_len: payload.len() as u64 + 10,
            chunk_offset: 10,
            chunk_len: payload.len() as u32,
            payload_crc: crc32c::crc32c(payload),
            shard_crc: 0xdead_beef,
            written_unix_ms: 1_700_000_000_000,
            grouped: false,
            distance: 1,
        }
    }

    /// A group: the header block, then each payload block-padded, in
    /// order. Returns the bytes and each member's header.
    fn group(members: &[(&[u8], &[u8])]) -> (Vec<u8>, Vec<RecordHeader>) {
        let mut out = vec![0u8; HEADER_BLOCK_BYTES];
        let mut headers = Vec::new();
        let mut slot = 0;
        for (key, payload) in members {
            let distance = (out.len() / HEADER_BLOCK_BYTES) as u8;
            let h = RecordHeader { grouped: true, distance, ..sample(key, payload) };
            h.encode_slot(&mut out[slot..]);
            slot += member_slot_bytes(key.len());
            out.extend_from_slice(payload);
            out.resize(out.len().next_multiple_of(HEADER_BLOCK_BYTES), 0);
            headers.push(h);
        }
        (out, headers)
    }

    #[test]
    fn group_members_round_trip_each_by_its_distance() {
        let payloads: Vec<Vec<u8>> = [4096, 1, 4097, 9000, 4095].iter().map(|&n| vec![n as u8 ^ 0x5a; n]).collect();
        let keys: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i as u8; 1 + i * 60]).collect();
        let members: Vec<(&[u8], &[u8])> =
            keys.iter().map(Vec::as_slice).zip(payloads.iter().map(Vec::as_slice)).collect();
        let (bytes, headers) = group(&members);
        assert_eq!(headers.iter().map(|h| h.distance).collect::<Vec<_>>(), [1, 2, 3, 5, 8]);
        let (all, problem) = decode_block(&bytes[..HEADER_BLOCK_BYTES]).unwrap();
        assert_eq!((all, problem), (headers.clone(), None));
        for (h, payload) in headers.iter().zip(&payloads) {
            let (back, got) = RecordHeader::verify(&bytes, h.distance, h.payload_crc).unwrap();
            assert_eq!((&back, got), (h, payload.as_slice()));
        }
        // A distance no member has, or a member's distance with another's
        // CRC, is not this record.
        assert_eq!(RecordHeader::verify(&bytes, 4, 0).unwrap_err(), RecordProblem::Mismatch);
        // An empty member would share its distance with the next one.
        let mut block = vec![0u8; HEADER_BLOCK_BYTES];
        RecordHeader { grouped: true, ..sample(b"e", &[]) }.encode_slot(&mut block);
        assert_eq!(decode_block(&block).unwrap_err(), RecordProblem::Invalid("an empty group member"));
        assert_eq!(RecordHeader::verify(&bytes, 2, headers[3].payload_crc).unwrap_err(), RecordProblem::Mismatch);
    }

    #[test]
    fn a_full_header_block_holds_members_to_its_last_byte() {
        // 4096 / 128 = 32 slots of 64 + 64 bytes exactly.
        let keys: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i + 1; 64]).collect();
        let members: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_slice(), &b"xy"[..])).collect();
        let (bytes, headers) = group(&members);
        assert_eq!(headers.last().unwrap().distance, 32);
        assert_eq!(decode_block(&bytes[..HEADER_BLOCK_BYTES]).unwrap(), (headers, None));
    }

    #[test]
    fn every_bit_flip_in_a_group_header_is_caught_and_loses_that_member_alone() {
        let (k1, k2, k3) = (b"first".as_slice(), b"second".as_slice(), b"third".as_slice());
        let (p1, p2, p3) = (vec![1u8; 100], vec![2u8; 5000], vec![3u8; 7]);
        let (mut bytes, headers) = group(&[(k1, &p1), (k2, &p2), (k3, &p3)]);
        let second = member_slot_bytes(k1.len());
        for byte in second..second + HEADER_SIZE_BYTES + k2.len() {
            for bit in 0..8 {
                bytes[byte] ^= 1 << bit;
                let (found, problem) = decode_block(&bytes[..HEADER_BLOCK_BYTES]).unwrap();
                assert_eq!(found, [headers[0].clone(), headers[2].clone()], "flip of bit {bit} of byte {byte}");
                assert!(
                    problem.is_some() || bytes[second..second + 4] != RECORD_MAGIC,
                    "flip of bit {bit} of byte {byte} lost a header without a problem"
                );
                assert!(RecordHeader::verify(&bytes, headers[1].distance, headers[1].payload_crc).is_err());
                assert!(RecordHeader::verify(&bytes, 1, headers[0].payload_crc).is_ok());
                assert!(RecordHeader::verify(&bytes, headers[2].distance, headers[2].payload_crc).is_ok());
                bytes[byte] ^= 1 << bit;
            }
        }
        // With the first member's header damaged, the others still verify,
        // and the block's walk finds them; with theirs damaged too, none.
        bytes[10] ^= 1;
        assert!(RecordHeader::verify(&bytes, 1, headers[0].payload_crc).is_err());
        for h in &headers[1..] {
            assert!(RecordHeader::verify(&bytes, h.distance, h.payload_crc).is_ok());
        }
        assert!(decode_block(&bytes[..HEADER_BLOCK_BYTES]).is_err());
        assert_eq!(salvage_group(&bytes[..HEADER_BLOCK_BYTES]), headers[1..]);
        bytes[second + 10] ^= 1;
        assert_eq!(salvage_group(&bytes[..HEADER_BLOCK_BYTES]), headers[2..]);
        let third = second + member_slot_bytes(k2.len());
        bytes[third + 10] ^= 1;
        assert!(salvage_group(&bytes[..HEADER_BLOCK_BYTES]).is_empty());
        bytes[third + 10] ^= 1;
        bytes[second + 10] ^= 1;
        bytes[10] ^= 1;
        // A record of its own is never salvaged as a group.
        let lone = sample(b"lone", &p1);
        let mut block = vec![0u8; HEADER_BLOCK_BYTES];
        lone.encode_slot(&mut block);
        block[10] ^= 1;
        assert!(salvage_group(&block).is_empty());
        // The third member's payload is checked like any other.
        let at = usize::from(headers[2].distance) * HEADER_BLOCK_BYTES;
        bytes[at + 3] ^= 4;
        assert_eq!(
            RecordHeader::verify(&bytes, headers[2].distance, headers[2].payload_crc).unwrap_err(),
            RecordProblem::BadPayloadChecksum
        );
    }

    #[test]
    fn a_member_header_that_does_not_follow_the_one_before_is_refused() {
        let payload = vec![9u8; 8192];
        let first = RecordHeader { grouped: true, distance: 1, ..sample(b"a", &payload) };
        // Its payload would overlap the first's two blocks.
        let overlapping = RecordHeader { grouped: true, distance: 2, ..sample(b"b", &payload) };
        let other_extent = RecordHeader { grouped: true, distance: 3, extent: 4, ..sample(b"c", &payload) };
        for second in [overlapping, other_extent] {
            let mut block = vec![0u8; HEADER_BLOCK_BYTES];
            first.encode_slot(&mut block);
            second.encode_slot(&mut block[member_slot_bytes(1)..]);
            let (found, problem) = decode_block(&block).unwrap();
            assert_eq!(found, std::slice::from_ref(&first));
            assert!(matches!(problem, Some(RecordProblem::Invalid(_))), "{problem:?}");
        }
        // A lone record's header never starts a list, whatever follows it.
        let mut block = vec![0u8; HEADER_BLOCK_BYTES * 3];
        sample(b"a", &[7u8; 10]).encode(&[7u8; 10], &mut block[..HEADER_BLOCK_BYTES * 2]);
        first.encode_slot(&mut block[member_slot_bytes(1)..]);
        assert_eq!(decode_block(&block[..HEADER_BLOCK_BYTES]).unwrap().0.len(), 1);
    }

    #[test]
    fn records_round_trip_at_block_boundaries() {
        for (key_len, payload_len) in
            [(1, 0), (255, 0), (1, 4096 - 65), (1, 4096 - 64), (255, 4096), (32, CHUNK_SIZE_BYTES_MAX)]
        {
            let key = vec![b'k'; key_len];
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
            let header = sample(&key, &payload);
            let mut out = vec![0xAAu8; record_size_bytes(key_len, payload_len) as usize];
            assert_eq!(out.len() % 4096, 0);
            header.encode(&payload, &mut out);
            let (back, got) = RecordHeader::verify(&out, 1, header.payload_crc).unwrap();
            assert_eq!(back, header);
            assert_eq!(got, payload.as_slice());
        }
    }

    #[test]
    fn every_bit_flip_in_header_key_or_payload_is_caught() {
        let payload = vec![5u8; 300];
        let header = sample(b"shard/1", &payload);
        let mut out = vec![0u8; record_size_bytes(7, 300) as usize];
        header.encode(&payload, &mut out);
        let crc = header.payload_crc;
        let covered = (0..HEADER_SIZE_BYTES + 7).chain(HEADER_BLOCK_BYTES..HEADER_BLOCK_BYTES + 300);
        for byte in covered {
            for bit in 0..8 {
                out[byte] ^= 1 << bit;
                assert!(RecordHeader::verify(&out, 1, crc).is_err(), "flip of bit {bit} of byte {byte} not caught");
                out[byte] ^= 1 << bit;
            }
        }
        assert!(verify_payload(&out[HEADER_BLOCK_BYTES..HEADER_BLOCK_BYTES + 300], crc).is_ok());
    }

    #[test]
    fn stale_payload_at_the_same_place_is_refused() {
        let old_payload = vec![1u8; 100];
        let new_payload = vec![2u8; 100];
        let old = RecordHeader { generation: 6, ..sample(b"k", &old_payload) };
        let new = sample(b"k", &new_payload);
        let mut out = vec![0u8; 8192];
        old.encode(&old_payload, &mut out);
        assert_eq!(RecordHeader::verify(&out, 1, new.payload_crc).unwrap_err(), RecordProblem::Mismatch);
        assert!(verify_payload(&out[4096..4196], new.payload_crc).is_err());
    }
}
