//! A put's bytes as they arrived: one buffer, the pieces a request body
//! came in (an HTTP body arrives as frames of up to a read buffer each),
//! or record buffers the body landed in as it arrived ([`Landing`]).
//! The store copies pieces once, into the aligned buffer that goes to the
//! device, instead of the sender gathering them into one buffer first;
//! landed records it writes as they are, with no copy on its thread.

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

use super::record::{payload_size_bytes, CHUNK_SIZE_BYTES_MAX, HEADER_BLOCK_BYTES};
use crate::device::{BufferPool, IoBuf};
use crate::error::Result;

pub struct PutData {
    repr: Repr,
    len: usize,
}

enum Repr {
    /// Non-empty pieces, in order.
    Parts(Vec<Bytes>),
    /// One record buffer per chunk: chunk `c`'s payload after the header
    /// block, zero padding after it, the header block left to the store.
    /// A slot is emptied when the store hands its buffer to the device.
    /// With each, the CRC32C of its payload, taken from the buffer as the
    /// bytes landed ([`Landed::extend`]).
    Records(Mutex<Vec<Option<IoBuf>>>, Vec<u32>),
}

impl Default for PutData {
    fn default() -> PutData {
        PutData { repr: Repr::Parts(Vec::new()), len: 0 }
    }
}

/// A copy holds the same bytes as pieces (record buffers are not shared).
impl Clone for PutData {
    fn clone(&self) -> PutData {
        match &self.repr {
            Repr::Parts(parts) => PutData { repr: Repr::Parts(parts.clone()), len: self.len },
            Repr::Records(..) => PutData::from(self.to_vec()),
        }
    }
}

impl PartialEq for PutData {
    fn eq(&self, other: &PutData) -> bool {
        self.len == other.len && self.to_vec() == other.to_vec()
    }
}

impl Eq for PutData {}

impl std::fmt::Debug for PutData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.repr {
            Repr::Parts(p) => format!("{} pieces", p.len()),
            Repr::Records(..) => "landed records".to_owned(),
        };
        f.debug_struct("PutData").field("len", &self.len).field("held_as", &kind).finish()
    }
}

impl PutData {
    /// The bytes of `parts`, in order.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> PutData {
        let parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        PutData { repr: Repr::Parts(parts), len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes are in record buffers the store writes as they
    /// are ([`Landing`]).
    pub fn is_landed(&self) -> bool {
        matches!(self.repr, Repr::Records(..))
    }

    /// Calls `f` with each piece overlapping `range`, cut to it, in order.
    fn each_piece(&self, range: Range<usize>, mut f: impl FnMut(&[u8])) {
        assert!(range.start <= range.end && range.end <= self.len, "{range:?} of {} bytes", self.len);
        match &self.repr {
            Repr::Parts(parts) => {
                let mut at = 0;
                for p in parts {
                    let (from, to) = (at, at + p.len());
                    at = to;
                    let (s, e) = (range.start.max(from), range.end.min(to));
                    if s < e {
                        f(&p[s - from..e - from]);
                    }
                }
            }
            Repr::Records(records, _) => {
                let records = records.lock().expect("landed records");
                let mut at = range.start;
                while at < range.end {
                    let (c, within) = (at / CHUNK_SIZE_BYTES_MAX, at % CHUNK_SIZE_BYTES_MAX);
                    let n = (CHUNK_SIZE_BYTES_MAX - within).min(range.end - at);
                    let buf = records[c].as_ref().expect("a landed record is read before the store takes it");
                    f(&buf.as_slice()[HEADER_BLOCK_BYTES + within..HEADER_BLOCK_BYTES + within + n]);
                    at += n;
                }
            }
        }
    }

    /// Copies the bytes from `start` on into all of `out`.
    pub fn copy_to(&self, start: usize, out: &mut [u8]) {
        let mut filled = 0;
        self.each_piece(start..start + out.len(), |piece| {
            out[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        });
        debug_assert_eq!(filled, out.len());
    }

    /// The CRC32C of the bytes in `range`.
    pub fn crc32c(&self, range: Range<usize>) -> u32 {
        let mut crc = 0;
        self.each_piece(range, |piece| crc = crc32c::crc32c_append(crc, piece));
        crc
    }

    /// The bytes in `range` as one buffer: a slice of the piece that holds
    /// them all, else a copy.
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        if let Repr::Parts(parts) = &self.repr {
            let mut at = 0;
            for p in parts {
                if range.start >= at && range.end <= at + p.len() {
                    return p.slice(range.start - at..range.end - at);
                }
                at += p.len();
            }
        }
        let mut out = vec![0u8; range.len()];
        self.copy_to(range.start, &mut out);
        out.into()
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.copy_to(0, &mut out);
        out
    }

    /// The CRC32C of chunk `chunk`'s payload as it landed in its record
    /// buffer: `None` for pieces, whose CRC the store takes as it copies.
    pub(super) fn landed_crc(&self, chunk: usize) -> Option<u32> {
        match &self.repr {
            Repr::Parts(_) => None,
            Repr::Records(_, crcs) => Some(crcs[chunk]),
        }
    }

    /// Chunk `chunk`'s record buffer and its payload's CRC32C, for the
    /// store to write (once): `None` for pieces, which the store copies
    /// into its own buffers.
    pub(super) fn take_record(&self, chunk: usize) -> Option<(IoBuf, u32)> {
        match &self.repr {
            Repr::Parts(_) => None,
            Repr::Records(records, crcs) => {
                let taken = records.lock().expect("landed records")[chunk].take();
                assert!(taken.is_some(), "chunk {chunk}'s landed record was taken twice");
                taken.map(|buf| (buf, crcs[chunk]))
            }
        }
    }
}

/// Record-shaped buffers (a header block and a chunk's payload each) that
/// a put's body lands in as it arrives, so the store thread writes them
/// without copying: the copy happens on the thread receiving the body,
/// while the bytes are in cache and while the store thread is busy with
/// the commit before. A fixed number of buffers, shared by every put; when
/// they are all in use a body is kept as it arrived instead ([`PutData`]
/// pieces), so landing never makes a put wait.
#[derive(Clone, Debug)]
pub struct Landing {
    pool: BufferPool,
}

impl Landing {
    /// Room for `records` chunks' bodies in flight at once (each
    /// `CHUNK_SIZE_BYTES_MAX` plus a header block of memory).
    pub fn new(records: usize) -> Result<Landing> {
        Ok(Landing { pool: BufferPool::new(HEADER_BLOCK_BYTES + CHUNK_SIZE_BYTES_MAX, records)? })
    }

    /// Buffers for a body of `len` bytes, or `None` when not enough are
    /// free (all or nothing, so a body never waits for buffers).
    pub fn take(&self, len: usize) -> Option<Landed> {
        let chunks = len.div_ceil(CHUNK_SIZE_BYTES_MAX).max(1);
        let mut records = Vec::with_capacity(chunks);
        for c in 0..chunks {
            let payload = (len - c * CHUNK_SIZE_BYTES_MAX).min(CHUNK_SIZE_BYTES_MAX);
            let mut buf = self.pool.take(HEADER_BLOCK_BYTES + CHUNK_SIZE_BYTES_MAX)?;
            buf.set_len(HEADER_BLOCK_BYTES + payload_size_bytes(payload) as usize);
            records.push(buf);
        }
        Some(Landed { crcs: vec![0; chunks], records, len, filled: 0 })
    }

    /// Buffers in all.
    pub fn records(&self) -> usize {
        self.pool.slot_count()
    }

    /// Buffers not in use.
    pub fn free(&self) -> usize {
        self.pool.free_count()
    }
}

/// A body landing in record buffers: [`Landed::extend`] as its bytes
/// arrive, then [`Landed::finish`].
#[derive(Debug)]
pub struct Landed {
    records: Vec<IoBuf>,
    /// Each record's payload CRC32C so far, of the bytes in the buffer.
    crcs: Vec<u32>,
    len: usize,
    filled: usize,
}

/// Landing copies and checksums this much at a time: the CRC reads each
/// piece of the record buffer right behind its copy, while it is in L1.
const LAND_CRC_BLOCK_BYTES: usize = 16 * 1024;

impl Landed {
    /// Copies `bytes` into place after those before them, taking the CRC
    /// of the copy in the record buffer (the bytes the device will get) as
    /// it goes; false (nothing copied) when they would run past the
    /// announced length.
    pub fn extend(&mut self, mut bytes: &[u8]) -> bool {
        if bytes.len() > self.len - self.filled {
            return false;
        }
        while !bytes.is_empty() {
            let (c, within) = (self.filled / CHUNK_SIZE_BYTES_MAX, self.filled % CHUNK_SIZE_BYTES_MAX);
            let n = (CHUNK_SIZE_BYTES_MAX - within).min(bytes.len()).min(LAND_CRC_BLOCK_BYTES);
            let at = HEADER_BLOCK_BYTES + within;
            let to = &mut self.records[c].as_mut_slice()[at..at + n];
            to.copy_from_slice(&bytes[..n]);
            self.crcs[c] = crc32c::crc32c_append(self.crcs[c], to);
            self.filled += n;
            bytes = &bytes[n..];
        }
        true
    }

    /// The CRC32C of the bytes landed so far, taken from the record
    /// buffers (no pass over the bytes of its own).
    pub fn crc32c(&self) -> u32 {
        let mut crc = 0;
        for (c, &chunk) in self.crcs.iter().enumerate() {
            let landed = self.filled.saturating_sub(c * CHUNK_SIZE_BYTES_MAX).min(CHUNK_SIZE_BYTES_MAX);
            if landed == 0 {
                break;
            }
            crc = if c == 0 { chunk } else { crc32c::crc32c_combine(crc, chunk, landed) };
        }
        crc
    }

    /// Bytes landed so far.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// The put's data, once every announced byte landed (`None` before):
    /// each record's padding zeroed, its header block left to the store.
    pub fn finish(mut self) -> Option<PutData> {
        if self.filled != self.len {
            return None;
        }
        for (c, buf) in self.records.iter_mut().enumerate() {
            let payload = (self.len - c * CHUNK_SIZE_BYTES_MAX).min(CHUNK_SIZE_BYTES_MAX);
            buf.as_mut_slice()[HEADER_BLOCK_BYTES + payload..].fill(0);
        }
        let records = self.records.into_iter().map(Some).collect();
        Some(PutData { repr: Repr::Records(Mutex::new(records), self.crcs), len: self.len })
    }
}

impl From<Bytes> for PutData {
    fn from(b: Bytes) -> PutData {
        PutData::from_parts([b])
    }
}

impl From<Vec<u8>> for PutData {
    fn from(v: Vec<u8>) -> PutData {
        PutData::from(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_as_one_buffer() {
        let whole: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0, 1, 1, 300, 301, 999, 1000];
        let parts: Vec<Bytes> = cuts.windows(2).map(|w| Bytes::copy_from_slice(&whole[w[0]..w[1]])).collect();
        let data = PutData::from_parts(parts);
        assert_eq!(data.len(), 1000);
        assert_eq!(data.to_vec(), whole);
        for (s, e) in [(0, 0), (0, 1000), (0, 1), (1, 300), (250, 350), (299, 302), (998, 1000), (500, 500)] {
            assert_eq!(data.slice(s..e), &whole[s..e], "{s}..{e}");
            assert_eq!(data.crc32c(s..e), crc32c::crc32c(&whole[s..e]), "{s}..{e}");
            let mut out = vec![0xAA; e - s];
            data.copy_to(s, &mut out);
            assert_eq!(out, &whole[s..e], "{s}..{e}");
        }
        // Within one piece the slice shares its memory.
        let one = PutData::from(Bytes::from(whole.clone()));
        let Repr::Parts(parts) = &one.repr else { unreachable!() };
        assert_eq!(one.slice(10..20).as_ptr(), parts[0][10..].as_ptr());
        assert!(PutData::from_parts([Bytes::new(), Bytes::new()]).is_empty());
    }

    #[test]
    fn landed_records_read_as_the_bytes_that_arrived() {
        let landing = Landing::new(4).unwrap();
        // Two and a half chunks, landed in uneven frames across chunk ends.
        let len = 2 * CHUNK_SIZE_BYTES_MAX + CHUNK_SIZE_BYTES_MAX / 2 + 3;
        let whole: Vec<u8> = (0..len as u64).map(|i| (i * 31 % 253) as u8).collect();
        let mut landed = landing.take(len).expect("three free records");
        assert_eq!(landing.free(), 1);
        for frame in whole.chunks(300_007) {
            assert!(landed.extend(frame));
            assert_eq!(landed.crc32c(), crc32c::crc32c(&whole[..landed.filled()]), "after {}", landed.filled());
        }
        assert!(!landed.extend(&[1]), "past the announced length");
        assert_eq!(landed.crc32c(), crc32c::crc32c(&whole), "the body's CRC, from the landed bytes");
        let data = landed.finish().expect("all landed");
        for c in 0..3 {
            let chunk = &whole[c * CHUNK_SIZE_BYTES_MAX..len.min((c + 1) * CHUNK_SIZE_BYTES_MAX)];
            assert_eq!(data.landed_crc(c), Some(crc32c::crc32c(chunk)), "chunk {c}");
        }
        assert!(data.is_landed());
        assert_eq!(data.len(), len);
        assert_eq!(data.to_vec(), whole);
        let edge = CHUNK_SIZE_BYTES_MAX;
        for (s, e) in [(0, len), (edge - 5, edge + 5), (2 * edge - 1, 2 * edge + 1), (len - 1, len), (7, 7)] {
            assert_eq!(data.crc32c(s..e), crc32c::crc32c(&whole[s..e]), "{s}..{e}");
            assert_eq!(data.slice(s..e), &whole[s..e], "{s}..{e}");
        }
        // A copy is the same bytes, held as pieces.
        let copy = data.clone();
        assert!(!copy.is_landed());
        assert_eq!(copy.to_vec(), whole);
        // Each record: payload after the header block, zeros to the block's end.
        let (last, last_crc) = data.take_record(2).expect("a landed record");
        assert_eq!(last_crc, crc32c::crc32c(&whole[2 * edge..]));
        let tail = len - 2 * edge;
        assert_eq!(last.len(), HEADER_BLOCK_BYTES + payload_size_bytes(tail) as usize);
        assert_eq!(&last.as_slice()[HEADER_BLOCK_BYTES..][..tail], &whole[2 * edge..]);
        assert!(last.as_slice()[HEADER_BLOCK_BYTES + tail..].iter().all(|&b| b == 0));
        drop((last, data));
        assert_eq!(landing.free(), 4, "every record back when the put is gone");
    }

    #[test]
    fn landing_is_all_or_nothing_and_reused_buffers_are_padded_with_zeros() {
        let landing = Landing::new(2).unwrap();
        assert!(landing.take(2 * CHUNK_SIZE_BYTES_MAX + 1).is_none(), "three records from two");
        assert_eq!(landing.free(), 2, "a refused take holds nothing");
        let mut full = landing.take(CHUNK_SIZE_BYTES_MAX).unwrap();
        assert!(full.extend(&vec![0xFF; CHUNK_SIZE_BYTES_MAX]));
        drop(full.finish().unwrap());
        // The same buffers, dirty, hold a shorter body: padding is zeroed.
        let mut short = landing.take(10).unwrap();
        assert!(short.extend(&[7; 4]));
        let short = {
            let partial = landing.take(CHUNK_SIZE_BYTES_MAX).unwrap();
            assert!(partial.finish().is_none(), "a body short of its length is not data");
            assert!(short.extend(&[8; 6]));
            short.finish().unwrap()
        };
        let (rec, crc) = short.take_record(0).unwrap();
        assert_eq!(crc, crc32c::crc32c(&[7, 7, 7, 7, 8, 8, 8, 8, 8, 8]), "the dirty buffer's old bytes are not in it");
        assert_eq!(rec.len(), HEADER_BLOCK_BYTES + 4096);
        assert_eq!(&rec.as_slice()[HEADER_BLOCK_BYTES..][..10], &[7, 7, 7, 7, 8, 8, 8, 8, 8, 8]);
        assert!(rec.as_slice()[HEADER_BLOCK_BYTES + 10..].iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic(expected = "of 3 bytes")]
    fn a_range_past_the_end_is_refused() {
        PutData::from(vec![1, 2, 3]).crc32c(2..4);
    }
}
