//! A put's bytes as they arrived: one buffer, or the pieces a request body
//! came in (an HTTP body arrives as frames of up to a read buffer each).
//! The store copies them once, into the aligned buffer that goes to the
//! device, instead of the sender gathering them into one buffer first.

use std::ops::Range;

use bytes::Bytes;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutData {
    /// Non-empty pieces, in order.
    parts: Vec<Bytes>,
    len: usize,
}

impl PutData {
    /// The bytes of `parts`, in order.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> PutData {
        let parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        PutData { parts, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces overlapping `range`, each cut to it.
    fn pieces(&self, range: Range<usize>) -> impl Iterator<Item = &[u8]> {
        assert!(range.start <= range.end && range.end <= self.len, "{range:?} of {} bytes", self.len);
        let mut at = 0;
        self.parts.iter().filter_map(move |p| {
            let (from, to) = (at, at + p.len());
            at = to;
            let (s, e) = (range.start.max(from), range.end.min(to));
            (s < e).then(|| &p[s - from..e - from])
        })
    }

    /// Copies the bytes from `start` on into all of `out`.
    pub fn copy_to(&self, start: usize, out: &mut [u8]) {
        let mut filled = 0;
        for piece in self.pieces(start..start + out.len()) {
            out[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
        debug_assert_eq!(filled, out.len());
    }

    /// The CRC32C of the bytes in `range`.
    pub fn crc32c(&self, range: Range<usize>) -> u32 {
        self.pieces(range).fold(0, crc32c::crc32c_append)
    }

    /// The bytes in `range` as one buffer: a slice of the piece that holds
    /// them all, else a copy.
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        let mut at = 0;
        for p in &self.parts {
            if range.start >= at && range.end <= at + p.len() {
                return p.slice(range.start - at..range.end - at);
            }
            at += p.len();
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
        assert_eq!(one.slice(10..20).as_ptr(), one.parts[0][10..].as_ptr());
        assert!(PutData::from_parts([Bytes::new(), Bytes::new()]).is_empty());
    }

    #[test]
    #[should_panic(expected = "of 3 bytes")]
    fn a_range_past_the_end_is_refused() {
        PutData::from(vec![1, 2, 3]).crc32c(2..4);
    }
}
