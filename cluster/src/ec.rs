//! Erasure coding of objects (`reed-solomon-simd`): an object of `size`
//! bytes is cut into stripes of k cells; each stripe gets m parity cells;
//! shard i is the concatenation of cell i of every stripe. Any k shards
//! rebuild the object, and any one shard can be rebuilt from any k others.
//!
//! ```text
//!             shard 0   shard 1  ...  shard k-1 | shard k ... shard k+m-1
//! stripe 0    bytes [0, c)  [c, 2c) ...          | parity of stripe 0
//! stripe 1    [kc, kc+c) ...                     | parity of stripe 1
//! ```
//!
//! The cell is 1 MiB for large objects and smaller for small ones (the
//! object's size over k, rounded up to 64 bytes), so a small object is not
//! padded to k MiB; the last stripe is padded with zeros, which are never
//! returned. A byte range needs only the cells it covers (`Geometry::cells`).

use std::ops::Range;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Largest cell, bytes.
pub const CELL_BYTES_MAX: u64 = 1 << 20;
/// Cells are multiples of this (the coder works in 64-byte blocks).
pub const CELL_ALIGN_BYTES: u64 = 64;

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
    /// Cell bytes: a multiple of 64, at most 1 MiB.
    pub cell: u64,
    /// Object bytes.
    pub size: u64,
}

impl Geometry {
    /// The geometry an object of `size` bytes is written with.
    pub fn for_object(size: u64, k: usize, m: usize) -> Geometry {
        let per_shard = size.div_ceil(k as u64).max(1);
        let cell = per_shard.div_ceil(CELL_ALIGN_BYTES) * CELL_ALIGN_BYTES;
        Geometry { k, m, cell: cell.min(CELL_BYTES_MAX), size }
    }

    /// Object bytes one stripe holds.
    pub fn stripe_bytes(&self) -> u64 {
        self.k as u64 * self.cell
    }

    /// Stripes (at least one, even for an empty object).
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_bytes()).max(1)
    }

    /// Bytes of every shard.
    pub fn shard_bytes(&self) -> u64 {
        self.stripes() * self.cell
    }

    /// The stripes a byte range `[start, end)` of the object covers.
    pub fn cells(&self, range: Range<u64>) -> Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        range.start / self.stripe_bytes()..range.end.div_ceil(self.stripe_bytes())
    }

    /// Where object byte `offset` lives: the data shard and the offset in it.
    pub fn locate(&self, offset: u64) -> (usize, u64) {
        let stripe = offset / self.stripe_bytes();
        let within = offset % self.stripe_bytes();
        ((within / self.cell) as usize, stripe * self.cell + within % self.cell)
    }
}

fn coder_error(e: reed_solomon_simd::Error) -> EcError {
    EcError::Coder(e.to_string())
}

/// Cuts an object into its k + m shards.
pub fn encode(g: &Geometry, object: &[u8]) -> Result<Vec<Vec<u8>>, EcError> {
    assert_eq!(object.len() as u64, g.size, "the geometry is the object's");
    let cell = g.cell as usize;
    let mut shards: Vec<Vec<u8>> = (0..g.k + g.m).map(|_| Vec::with_capacity(g.shard_bytes() as usize)).collect();
    let mut encoder = ReedSolomonEncoder::new(g.k, g.m, cell).map_err(coder_error)?;
    let mut padded = vec![0u8; cell];
    for s in 0..g.stripes() {
        let base = (s * g.stripe_bytes()) as usize;
        for (i, shard) in shards.iter_mut().take(g.k).enumerate() {
            let start = (base + i * cell).min(object.len());
            let end = (base + (i + 1) * cell).min(object.len());
            padded[..end - start].copy_from_slice(&object[start..end]);
            padded[end - start..].fill(0);
            encoder.add_original_shard(&padded).map_err(coder_error)?;
            shard.extend_from_slice(&padded);
        }
        let result = encoder.encode().map_err(coder_error)?;
        for (j, parity) in result.recovery_iter().enumerate() {
            shards[g.k + j].extend_from_slice(parity);
        }
    }
    Ok(shards)
}

/// The data cells of stripe `s` (k cells), decoding if any is missing.
/// `shards[i]` is shard i's bytes, if available.
fn stripe_data(
    g: &Geometry,
    shards: &[Option<&[u8]>],
    s: u64,
    decoder: &mut Option<ReedSolomonDecoder>,
) -> Result<Vec<Vec<u8>>, EcError> {
    let cell = g.cell as usize;
    let at = (s * g.cell) as usize;
    let cell_of = |i: usize| shards[i].map(|b| &b[at..at + cell]);
    if (0..g.k).all(|i| shards[i].is_some()) {
        return Ok((0..g.k).map(|i| cell_of(i).expect("present").to_vec()).collect());
    }
    let d = match decoder {
        Some(d) => d,
        None => decoder.insert(ReedSolomonDecoder::new(g.k, g.m, cell).map_err(coder_error)?),
    };
    for i in 0..g.k + g.m {
        if let Some(c) = cell_of(i) {
            if i < g.k {
                d.add_original_shard(i, c).map_err(coder_error)?;
            } else {
                d.add_recovery_shard(i - g.k, c).map_err(coder_error)?;
            }
        }
    }
    let result = d.decode().map_err(coder_error)?;
    Ok((0..g.k)
        .map(|i| match cell_of(i) {
            Some(c) => c.to_vec(),
            None => result.restored_original(i).expect("restored").to_vec(),
        })
        .collect())
}

fn check(g: &Geometry, shards: &[Option<&[u8]>]) -> Result<(), EcError> {
    assert_eq!(shards.len(), g.k + g.m, "one entry per shard");
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < g.k {
        return Err(EcError::TooFewShards { have, k: g.k });
    }
    for (index, s) in shards.iter().enumerate() {
        if let Some(s) = s {
            if s.len() as u64 != g.shard_bytes() {
                return Err(EcError::ShardSize { index, got: s.len(), want: g.shard_bytes() });
            }
        }
    }
    Ok(())
}

/// Object bytes `range` from any k shards (the stripes it covers only).
pub fn decode_range(g: &Geometry, shards: &[Option<&[u8]>], range: Range<u64>) -> Result<Vec<u8>, EcError> {
    check(g, shards)?;
    let range = range.start.min(g.size)..range.end.min(g.size);
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut decoder = None;
    for s in g.cells(range.clone()) {
        let data = stripe_data(g, shards, s, &mut decoder)?;
        let base = s * g.stripe_bytes();
        for (i, cell) in data.iter().enumerate() {
            let cell_start = base + i as u64 * g.cell;
            let lo = range.start.max(cell_start);
            let hi = range.end.min(cell_start + g.cell);
            if lo < hi {
                out.extend_from_slice(&cell[(lo - cell_start) as usize..(hi - cell_start) as usize]);
            }
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
    let mut out = Vec::with_capacity(g.shard_bytes() as usize);
    let mut decoder = None;
    let mut encoder = None;
    for s in 0..g.stripes() {
        let data = stripe_data(g, shards, s, &mut decoder)?;
        if want < g.k {
            out.extend_from_slice(&data[want]);
            continue;
        }
        let e = match &mut encoder {
            Some(e) => e,
            None => encoder.insert(ReedSolomonEncoder::new(g.k, g.m, cell).map_err(coder_error)?),
        };
        for c in &data {
            e.add_original_shard(c).map_err(coder_error)?;
        }
        let result = e.encode().map_err(coder_error)?;
        out.extend_from_slice(result.recovery(want - g.k).expect("a parity index"));
    }
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
        // Every loss pattern for small and multi-stripe objects; one large.
        for size in [0, 1, 63, 64, 255, 4096, 4 * 64 + 1, 100_000, (4 << 20) + 3] {
            let g = Geometry::for_object(size as u64, 4, 2);
            let o = object(size, size as u8);
            let shards = encode(&g, &o).unwrap();
            assert!(shards.iter().all(|s| s.len() as u64 == g.shard_bytes()));
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
    fn ranges_read_only_their_stripes_and_match_the_object() {
        let size = (5 << 20) + 12_345;
        let g = Geometry::for_object(size, 4, 2);
        assert_eq!(g.cell, CELL_BYTES_MAX);
        assert_eq!(g.stripes(), 2);
        let o = object(size as usize, 7);
        let shards = encode(&g, &o).unwrap();
        // Stripe 1 only: stripe 0's cells may be absent.
        let r = (4 << 20) + 10..(4 << 20) + 5000;
        assert_eq!(g.cells(r.clone()), 1..2);
        let avail: Vec<Option<&[u8]>> = shards.iter().map(|s| Some(s.as_slice())).collect();
        assert_eq!(decode_range(&g, &avail, r.clone()).unwrap(), &o[r.start as usize..r.end as usize]);
        for offset in [0u64, 1, (1 << 20) - 1, 1 << 20, (4 << 20) + 7, size - 1] {
            let (shard, at) = g.locate(offset);
            assert_eq!(shards[shard][at as usize], o[offset as usize], "offset {offset}");
        }
        // A small object has small cells: 4 x 64 bytes, not 4 MiB.
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
