//! Erasure coding of objects (`reed-solomon-simd`): an object of `size`
//! bytes is cut into k contiguous data shards of `cell` bytes each (the
//! size over k, rounded up to 64 bytes; the last is padded with zeros,
//! which are never returned), and m parity shards are computed from them.
//! Any k shards rebuild the object, and any one shard can be rebuilt from
//! any k others.
//!
//! ```text
//! object:  [ shard 0 bytes | shard 1 bytes | ... | shard k-1 bytes (+0s) ]
//! parity:  shard k .. k+m-1, position by position over the k data shards
//! ```
//!
//! Contiguous data shards (rather than stripes of small cells) let a
//! healthy read of a byte range touch only the shards that hold it, and
//! let the parity be computed from the object's own bytes without first
//! copying them into shard buffers. The coder runs over 64 KiB slices of
//! every shard at a time, so its working set stays in cache; Reed-Solomon
//! works position by position, so slicing changes no byte of the result.

use std::ops::Range;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Largest shard, bytes (the shard store's maximum).
pub const CELL_BYTES_MAX: u64 = 64 << 20;
/// Shards are multiples of this (the coder works in 64-byte blocks).
pub const CELL_ALIGN_BYTES: u64 = 64;
/// The coder works on slices of shards this large.
const SLICE_BYTES: usize = 64 << 10;

/// Why shards could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcError {
    #[error("{have} shards of {k} needed are available")]
    TooFewShards { have: usize, k: usize },
    #[error("shard {index} is {got} bytes; the stripe's shards are {want}")]
    ShardSize { index: usize, got: usize, want: u64 },
    #[error("coder: {0}")]
    Coder(String),
}

/// The layout of one coded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub k: usize,
    pub m: usize,
    /// Bytes of every shard: a multiple of 64.
    pub cell: u64,
    /// Object bytes.
    pub size: u64,
}

impl Geometry {
    /// The geometry an object of `size` bytes is written with.
    pub fn for_object(size: u64, k: usize, m: usize) -> Geometry {
        let per_shard = size.div_ceil(k as u64).max(1);
        Geometry { k, m, cell: per_shard.div_ceil(CELL_ALIGN_BYTES) * CELL_ALIGN_BYTES, size }
    }

    /// Bytes of every shard.
    pub fn shard_bytes(&self) -> u64 {
        self.cell
    }

    /// Where object byte `offset` lives: the data shard and the offset in it.
    pub fn locate(&self, offset: u64) -> (usize, u64) {
        ((offset / self.cell) as usize, offset % self.cell)
    }

    /// The data shards a byte range covers, each with the range within it.
    pub fn pieces(&self, range: Range<u64>) -> Vec<(usize, Range<u64>)> {
        let range = range.start.min(self.size)..range.end.min(self.size);
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let (shard, offset) = self.locate(at);
            let len = (self.cell - offset).min(range.end - at);
            out.push((shard, offset..offset + len));
            at += len;
        }
        out
    }

    /// Object bytes of data shard `i` (the rest of it is padding).
    fn data_in(&self, i: usize) -> Range<usize> {
        let start = (i as u64 * self.cell).min(self.size) as usize;
        let end = ((i as u64 + 1) * self.cell).min(self.size) as usize;
        start..end
    }
}

fn coder_error(e: reed_solomon_simd::Error) -> EcError {
    EcError::Coder(e.to_string())
}

/// Runs the coder over `len` bytes of k data shards (`data(i, range)`),
/// slice by slice, handing each slice's parity to `out(j, offset, bytes)`.
fn code_parity<'a>(
    k: usize,
    m: usize,
    len: usize,
    data: impl Fn(usize, Range<usize>) -> &'a [u8],
    mut out: impl FnMut(usize, usize, &[u8]),
) -> Result<(), EcError> {
    let slice = SLICE_BYTES.min(len);
    let mut encoder = ReedSolomonEncoder::new(k, m, slice).map_err(coder_error)?;
    let mut current = slice;
    let mut at = 0;
    while at < len {
        let n = slice.min(len - at);
        if n != current {
            encoder.reset(k, m, n).map_err(coder_error)?;
            current = n;
        }
        for i in 0..k {
            encoder.add_original_shard(data(i, at..at + n)).map_err(coder_error)?;
        }
        let result = encoder.encode().map_err(coder_error)?;
        for (j, piece) in result.recovery_iter().enumerate() {
            out(j, at, piece);
        }
        at += n;
    }
    Ok(())
}

/// The m parity shards of an object, computed from its own bytes (only a
/// short last data shard is copied, to pad it), into buffers the caller
/// may reuse (each resized to the shard size).
pub fn parity_into(g: &Geometry, object: &[u8], parity: &mut [Vec<u8>]) -> Result<(), EcError> {
    assert_eq!(object.len() as u64, g.size, "the geometry is the object's");
    assert_eq!(parity.len(), g.m, "one buffer per parity shard");
    let cell = g.cell as usize;
    for p in parity.iter_mut() {
        p.resize(cell, 0);
    }
    // Data shards that are not whole in the object, padded with zeros.
    let padded: Vec<Option<Vec<u8>>> = (0..g.k)
        .map(|i| {
            let r = g.data_in(i);
            (r.len() < cell).then(|| {
                let mut v = vec![0u8; cell];
                v[..r.len()].copy_from_slice(&object[r]);
                v
            })
        })
        .collect();
    code_parity(
        g.k,
        g.m,
        cell,
        |i, r| match &padded[i] {
            Some(v) => &v[r],
            None => &object[g.data_in(i)][r],
        },
        |j, at, piece| parity[j][at..at + piece.len()].copy_from_slice(piece),
    )
}

/// Cuts an object into its k + m shards (owned buffers).
pub fn encode(g: &Geometry, object: &[u8]) -> Result<Vec<Vec<u8>>, EcError> {
    let cell = g.cell as usize;
    let mut shards: Vec<Vec<u8>> = (0..g.k)
        .map(|i| {
            let mut v = vec![0u8; cell];
            let r = g.data_in(i);
            v[..r.len()].copy_from_slice(&object[r]);
            v
        })
        .collect();
    let mut parity = vec![Vec::new(); g.m];
    parity_into(g, object, &mut parity)?;
    shards.extend(parity);
    Ok(shards)
}

fn check(g: &Geometry, shards: &[Option<&[u8]>]) -> Result<(), EcError> {
    assert_eq!(shards.len(), g.k + g.m, "one entry per shard");
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < g.k {
        return Err(EcError::TooFewShards { have, k: g.k });
    }
    for (index, s) in shards.iter().enumerate() {
        if let Some(s) = s {
            if s.len() as u64 != g.cell {
                return Err(EcError::ShardSize { index, got: s.len(), want: g.cell });
            }
        }
    }
    Ok(())
}

/// Bytes `range` of the missing data shards `lost`, from any k shards'
/// same bytes, slice by slice.
fn restore(
    g: &Geometry,
    shards: &[Option<&[u8]>],
    lost: &[usize],
    range: Range<usize>,
) -> Result<Vec<Vec<u8>>, EcError> {
    let mut out: Vec<Vec<u8>> = lost.iter().map(|_| Vec::with_capacity(range.len())).collect();
    let len = range.len();
    if len == 0 {
        return Ok(out);
    }
    // The coder takes even lengths; a range is widened to 64-byte bounds.
    let lo = range.start / 64 * 64;
    let hi = (range.end.div_ceil(64) * 64).min(g.cell as usize);
    let slice = SLICE_BYTES.min(hi - lo);
    let mut decoder = ReedSolomonDecoder::new(g.k, g.m, slice).map_err(coder_error)?;
    let mut current = slice;
    let mut at = lo;
    while at < hi {
        let n = slice.min(hi - at);
        if n != current {
            decoder.reset(g.k, g.m, n).map_err(coder_error)?;
            current = n;
        }
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < g.k {
                    decoder.add_original_shard(i, &s[at..at + n]).map_err(coder_error)?;
                } else {
                    decoder.add_recovery_shard(i - g.k, &s[at..at + n]).map_err(coder_error)?;
                }
            }
        }
        let result = decoder.decode().map_err(coder_error)?;
        for (o, &i) in out.iter_mut().zip(lost) {
            let piece = result.restored_original(i).expect("a lost data shard is restored");
            let from = range.start.max(at) - at;
            let to = range.end.min(at + n) - at;
            o.extend_from_slice(&piece[from..to]);
        }
        at += n;
    }
    Ok(out)
}

/// Object bytes `range` from any k shards: a present data shard's bytes
/// are copied, a missing one's are decoded, and only the bytes the range
/// covers are touched.
pub fn decode_range(g: &Geometry, shards: &[Option<&[u8]>], range: Range<u64>) -> Result<Vec<u8>, EcError> {
    check(g, shards)?;
    let pieces = g.pieces(range.clone());
    // The missing shards' bytes, restored in one pass over the span of
    // shard offsets they need.
    let lost: Vec<usize> = pieces.iter().map(|(i, _)| *i).filter(|&i| shards[i].is_none()).collect();
    let span = pieces
        .iter()
        .filter(|(i, _)| shards[*i].is_none())
        .fold(None, |acc: Option<Range<u64>>, (_, r)| {
            Some(acc.map_or(r.clone(), |a| a.start.min(r.start)..a.end.max(r.end)))
        })
        .unwrap_or(0..0);
    let restored = restore(g, shards, &lost, span.start as usize..span.end as usize)?;
    let mut out = Vec::with_capacity(range.end.min(g.size).saturating_sub(range.start) as usize);
    for (i, r) in pieces {
        if let Some(s) = shards[i] {
            out.extend_from_slice(&s[r.start as usize..r.end as usize]);
        } else {
            let mine = &restored[lost.iter().position(|&l| l == i).expect("restored")];
            out.extend_from_slice(&mine[(r.start - span.start) as usize..(r.end - span.start) as usize]);
        }
    }
    Ok(out)
}

/// The whole object from any k shards.
pub fn decode(g: &Geometry, shards: &[Option<&[u8]>]) -> Result<Vec<u8>, EcError> {
    decode_range(g, shards, 0..g.size)
}

/// Shard `want` rebuilt from any k others (the repairer's job; the
/// caller checks the result against the CRC the manifest recorded).
pub fn rebuild(g: &Geometry, shards: &[Option<&[u8]>], want: usize) -> Result<Vec<u8>, EcError> {
    check(g, shards)?;
    let cell = g.cell as usize;
    if want < g.k {
        return Ok(restore(g, shards, &[want], 0..cell)?.remove(0));
    }
    // Parity: every data shard present or restored, then coded again.
    let lost: Vec<usize> = (0..g.k).filter(|&i| shards[i].is_none()).collect();
    let restored = restore(g, shards, &lost, 0..cell)?;
    let data: Vec<&[u8]> = (0..g.k)
        .map(|i| shards[i].unwrap_or_else(|| &restored[lost.iter().position(|&l| l == i).expect("lost")]))
        .collect();
    let mut out = vec![0u8; cell];
    code_parity(
        g.k,
        g.m,
        cell,
        |i, r| &data[i][r],
        |j, at, piece| {
            if j == want - g.k {
                out[at..at + piece.len()].copy_from_slice(piece);
            }
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
    }

    /// Every way of losing `lose` of `n` shards.
    fn losses(n: usize, lose: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|mask| mask.count_ones() as usize == lose)
            .map(|mask| (0..n).filter(|i| mask >> i & 1 == 1).collect())
            .collect()
    }

    #[test]
    fn objects_survive_the_loss_of_any_m_shards_and_every_shard_rebuilds() {
        // Every loss pattern, for sizes around the 64-byte and slice bounds.
        for size in [0, 1, 63, 64, 255, 4096, 4 * 64 + 1, 100_000, 4 * (64 << 10) + 3, (1 << 20) + 7] {
            let g = Geometry::for_object(size as u64, 4, 2);
            let o = object(size, size as u8);
            let shards = encode(&g, &o).unwrap();
            assert!(shards.iter().all(|s| s.len() as u64 == g.shard_bytes()));
            let mut reused = vec![vec![7u8; 3]; 2];
            parity_into(&g, &o, &mut reused).unwrap();
            assert_eq!(reused, shards[4..], "parity from the object's own bytes");
            for lost in losses(6, 2) {
                let avail: Vec<Option<&[u8]>> =
                    (0..6).map(|i| (!lost.contains(&i)).then(|| shards[i].as_slice())).collect();
                assert_eq!(decode(&g, &avail).unwrap(), o, "size {size}, lost {lost:?}");
                for &w in &lost {
                    assert_eq!(rebuild(&g, &avail, w).unwrap(), shards[w], "size {size}, rebuilt {w}");
                }
            }
            let three_lost: Vec<Option<&[u8]>> = (0..6).map(|i| (i >= 3).then(|| shards[i].as_slice())).collect();
            assert_eq!(decode(&g, &three_lost).unwrap_err(), EcError::TooFewShards { have: 3, k: 4 });
        }
    }

    #[test]
    fn ranges_touch_only_their_shards_and_match_the_object() {
        let size = (5 << 20) + 12_345;
        let g = Geometry::for_object(size, 4, 2);
        let o = object(size as usize, 7);
        let shards = encode(&g, &o).unwrap();
        // A range inside shard 2 needs only shard 2 when it is there...
        let (first, _) = g.locate(2 * g.cell + 10);
        assert_eq!(first, 2);
        let r = 2 * g.cell + 10..2 * g.cell + 5000;
        assert_eq!(g.pieces(r.clone()), vec![(2, 10..5000)]);
        let only_2: Vec<Option<&[u8]>> = (0..6).map(|i| (i != 0 && i != 1).then(|| shards[i].as_slice())).collect();
        assert_eq!(decode_range(&g, &only_2, r.clone()).unwrap(), &o[r.start as usize..r.end as usize]);
        // ...and is decoded from any k when it is not; across shard bounds.
        let without_2: Vec<Option<&[u8]>> = (0..6).map(|i| (i != 2 && i != 3).then(|| shards[i].as_slice())).collect();
        for r in [r.clone(), g.cell - 100..3 * g.cell + 77, 0..1, size - 1..size] {
            assert_eq!(decode_range(&g, &without_2, r.clone()).unwrap(), &o[r.start as usize..r.end as usize], "{r:?}");
        }
        for offset in [0u64, 1, g.cell - 1, g.cell, 3 * g.cell + 7, size - 1] {
            let (shard, at) = g.locate(offset);
            assert_eq!(shards[shard][at as usize], o[offset as usize], "offset {offset}");
        }
        // A small object has small shards: 64 bytes, not megabytes.
        assert_eq!(Geometry::for_object(200, 4, 2).shard_bytes(), 64);
        assert_eq!(Geometry::for_object(0, 4, 2).shard_bytes(), 64);
    }

    #[test]
    fn shards_of_the_wrong_size_are_refused() {
        let g = Geometry::for_object(1000, 4, 2);
        let shards = encode(&g, &object(1000, 1)).unwrap();
        let short = &shards[0][..10];
        let avail: Vec<Option<&[u8]>> =
            (0..6).map(|i| Some(if i == 0 { short } else { shards[i].as_slice() })).collect();
        assert!(matches!(decode(&g, &avail), Err(EcError::ShardSize { index: 0, .. })));
    }
}
