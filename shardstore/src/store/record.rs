//! Chunk records: the self-describing unit of shard data in an extent.
//!
//! A record is a header block (the 64-byte header and the key, zero-padded
//! to 4 KiB) followed by up to one chunk of payload starting on the next
//! block boundary, itself zero-padded. Everything needed to rebuild the
//! index is in the header (with its own CRC, covering the extent
//! generation and the write sequence); the payload is block-aligned so a
//! read fetches exactly the payload blocks and checks them against the CRC
//! its locator carries. Byte layout: `docs/format.md`, "Chunk record".

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::constants::BLOCK_SIZE_BYTES;

pub const RECORD_MAGIC: [u8; 4] = *b"SHCK";
pub const RECORD_VERSION: u8 = 1;
pub const HEADER_SIZE_BYTES: usize = 64;
pub const KEY_SIZE_BYTES_MAX: usize = 255;

/// Largest payload one record carries: one buffer-pool slot, one read.
pub const CHUNK_SIZE_BYTES_MAX: usize = 1024 * 1024;

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

/// Bytes a record with this key and payload length occupies on disk.
pub fn record_size_bytes(key_len: usize, chunk_len: usize) -> u64 {
    debug_assert!(key_len <= KEY_SIZE_BYTES_MAX);
    HEADER_BLOCK_BYTES as u64 + payload_size_bytes(chunk_len)
}

/// Copies a chunk's payload into its place in a record buffer (after the
/// header block) and zeroes the padding after it. Returns the payload as
/// placed, still hot in cache for its CRC.
pub fn place_payload<'a>(payload: &[u8], out: &'a mut [u8]) -> &'a [u8] {
    place_payload_with(payload.len(), |to| to.copy_from_slice(payload), out)
}

/// As [`place_payload`], the payload's `len` bytes copied in by `fill`.
pub fn place_payload_with(len: usize, fill: impl FnOnce(&mut [u8]), out: &mut [u8]) -> &[u8] {
    let end = HEADER_BLOCK_BYTES + len;
    fill(&mut out[HEADER_BLOCK_BYTES..end]);
    out[end..].fill(0);
    &out[HEADER_BLOCK_BYTES..end]
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
        assert!(!self.key.is_empty() && self.key.len() <= KEY_SIZE_BYTES_MAX, "key length checked by the caller");
        assert_eq!(out.len() as u64, record_size_bytes(self.key.len(), self.chunk_len as usize));
        let h = &mut out[..HEADER_SIZE_BYTES];
        h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&RECORD_MAGIC);
        h[OFF_VERSION] = RECORD_VERSION;
        h[OFF_KEY_LEN] = self.key.len() as u8;
        h[OFF_FLAGS] = 0;
        h[OFF_RESERVED0] = 0;
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
        out[key_end..HEADER_BLOCK_BYTES].fill(0);
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
        if bytes[OFF_FLAGS] != 0 || bytes[OFF_RESERVED0] != 0 {
            return Err(RecordProblem::Invalid("reserved bits set"));
        }
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
        };
        if header.chunk_len as usize > CHUNK_SIZE_BYTES_MAX
            || header.chunk_offset.checked_add(u64::from(header.chunk_len)).is_none_or(|end| end > header.shard_len)
        {
            return Err(RecordProblem::Invalid("chunk lies outside its shard"));
        }
        Ok((header, computed))
    }

    /// Verifies a whole record (header block and payload) read at a locator
    /// whose payload CRC is `payload_crc`: a valid header, and a payload
    /// matching both the header and the locator. Returns the header and the
    /// payload slice.
    pub fn verify(bytes: &[u8], payload_crc: u32) -> Result<(RecordHeader, &[u8]), RecordProblem> {
        let (header, _) = RecordHeader::decode(bytes)?;
        let end = HEADER_BLOCK_BYTES + header.chunk_len as usize;
        if bytes.len() < end {
            return Err(RecordProblem::Invalid("record longer than what was read"));
        }
        let payload = &bytes[HEADER_BLOCK_BYTES..end];
        if header.payload_crc != payload_crc {
            return Err(RecordProblem::Mismatch);
        }
        verify_payload(payload, payload_crc)?;
        Ok((header, payload))
    }
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
        }
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
            let (back, got) = RecordHeader::verify(&out, header.payload_crc).unwrap();
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
                assert!(RecordHeader::verify(&out, crc).is_err(), "flip of bit {bit} of byte {byte} not caught");
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
        assert_eq!(RecordHeader::verify(&out, new.payload_crc).unwrap_err(), RecordProblem::Mismatch);
        assert!(verify_payload(&out[4096..4196], new.payload_crc).is_err());
    }
}
