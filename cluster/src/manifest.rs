//! The manifest every shard of an object carries: everything a repairer
//! needs from any one shard, and the CRC of every shard recorded when the
//! object was written, so a rebuilt shard is checked against the truth of
//! the PUT before it is stored (never against what its siblings happen to
//! say now).
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SNMF"
//!      4     1  version (1)
//!      5     1  layout (1 coded, 2 copies)
//!      6     1  k (data shards; 1 for copies)
//!      7     1  m (parity shards; copies - 1 for copies)
//!      8     8  version of the object (host-wide hybrid logical clock)
//!     16     4  writer host id
//!     20     4  stripe group
//!     24     8  roster epoch
//!     32     8  object size, bytes
//!     40     4  object CRC32C
//!     44     4  shard bytes (coded; 0 for copies)
//!     48     2  key length n
//!     50     n  key
//!   50+n  8(k+m) per shard: holder host id (4), shard CRC32C (4)
//!    end     4  CRC32C of everything before
//! ```

use crate::ec::{Geometry, CELL_ALIGN_BYTES, CELL_BYTES_MAX};
use crate::roster::{DATA_SHARDS_MAX, PARITY_SHARDS_MAX};

pub const MAGIC: [u8; 4] = *b"SNMF";
pub const VERSION: u8 = 1;
/// Longest object key, bytes.
pub const KEY_BYTES_MAX: usize = 1024;
const HEADER_BYTES: usize = 50;

/// How an object's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// k data shards and m parity shards.
    Coded,
    /// m + 1 whole copies (small objects).
    Copies,
}

/// One shard of the stripe: where it lives and its CRC at PUT time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRef {
    pub host: u32,
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub key: Vec<u8>,
    pub layout: Layout,
    pub k: u8,
    pub m: u8,
    pub version: u64,
    pub writer: u32,
    pub group: u32,
    pub epoch: u64,
    pub size: u64,
    pub crc: u32,
    pub cell_bytes: u32,
    /// Shard 0 .. k + m - 1 (copies: copy 0 .. m).
    pub shards: Vec<ShardRef>,
}

/// Why bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest damaged: CRC mismatch")]
    Corrupt,
    #[error("not a manifest: {0}")]
    Malformed(&'static str),
    #[error("manifest says something impossible: {0}")]
    Invalid(&'static str),
}

impl Manifest {
    pub fn width(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The coded object's geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry { k: self.k.into(), m: self.m.into(), cell: u64::from(self.cell_bytes), size: self.size }
    }

    /// The encoded length of a manifest of a key of `key_bytes` with
    /// `shards` shards (a reader that knows both reads the manifest, and
    /// then any range of the data, without first reading a whole shard).
    pub fn encoded_len(key_bytes: usize, shards: usize) -> usize {
        HEADER_BYTES + key_bytes + 8 * shards + 4
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Manifest::encoded_len(self.key.len(), self.shards.len()));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match self.layout {
            Layout::Coded => 1,
            Layout::Copies => 2,
        });
        out.push(self.k);
        out.push(self.m);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.writer.to_le_bytes());
        out.extend_from_slice(&self.group.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.cell_bytes.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.key);
        for s in &self.shards {
            out.extend_from_slice(&s.host.to_le_bytes());
            out.extend_from_slice(&s.crc.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a manifest: integrity first, then meaning.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(ManifestError::Malformed("too short"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
            return Err(ManifestError::Corrupt);
        }
        if body[..4] != MAGIC || body[4] != VERSION {
            return Err(ManifestError::Malformed("not a shardnode manifest of a known version"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let layout = match body[5] {
            1 => Layout::Coded,
            2 => Layout::Copies,
            _ => return Err(ManifestError::Malformed("unknown layout")),
        };
        let (k, m) = (body[6], body[7]);
        let n = usize::from(u16::from_le_bytes([body[48], body[49]]));
        let width = usize::from(k) + usize::from(m);
        if body.len() != HEADER_BYTES + n + 8 * width {
            return Err(ManifestError::Malformed("length does not match the key and shard count"));
        }
        let key = body[HEADER_BYTES..HEADER_BYTES + n].to_vec();
        let shards = (0..width)
            .map(|i| {
                let at = HEADER_BYTES + n + 8 * i;
                ShardRef { host: u32_at(at), crc: u32_at(at + 4) }
            })
            .collect();
        let m = Manifest {
            key,
            layout,
            k,
            m,
            version: u64_at(8),
            writer: u32_at(16),
            group: u32_at(20),
            epoch: u64_at(24),
            size: u64_at(32),
            crc: u32_at(40),
            cell_bytes: u32_at(44),
            shards,
        };
        m.validate()?;
        Ok(m)
    }

    /// What must hold for any manifest this code writes.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |why| Err(ManifestError::Invalid(why));
        if self.key.is_empty() || self.key.len() > KEY_BYTES_MAX {
            return bad("key length");
        }
        if self.shards.len() != self.width() || self.shards.iter().any(|s| s.host == 0) {
            return bad("shard list");
        }
        if self.epoch == 0 || self.version == 0 || self.writer == 0 {
            return bad("epoch, version and writer start at 1");
        }
        match self.layout {
            Layout::Coded => {
                if self.k == 0 || self.k > DATA_SHARDS_MAX || self.m == 0 || self.m > PARITY_SHARDS_MAX {
                    return bad("k or m out of range");
                }
                let cell = u64::from(self.cell_bytes);
                if cell == 0 || cell % CELL_ALIGN_BYTES != 0 || cell > CELL_BYTES_MAX {
                    return bad("cell size");
                }
                if Geometry::for_object(self.size, self.k.into(), self.m.into()).cell != cell {
                    return bad("cell size is not the one the object's size gives");
                }
            }
            Layout::Copies => {
                if self.k != 1 || self.m == 0 || self.m > PARITY_SHARDS_MAX || self.cell_bytes != 0 {
                    return bad("copies are k = 1, m >= 1, no cells");
                }
                if self.shards.iter().any(|s| s.crc != self.crc) {
                    return bad("a copy's CRC is the object's");
                }
            }
        }
        let mut hosts: Vec<u32> = self.shards.iter().map(|s| s.host).collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.len() != self.width() {
            return bad("two shards of one stripe on one host");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let size = 3_000_000;
        Manifest {
            key: b"photos/cat.jpg".to_vec(),
            layout: Layout::Coded,
            k: 4,
            m: 2,
            version: 77,
            writer: 3,
            group: 12,
            epoch: 2,
            size,
            crc: 0xdead_beef,
            cell_bytes: Geometry::for_object(size, 4, 2).cell as u32,
            shards: (1..=6).map(|h| ShardRef { host: h * 10, crc: h * 1000 }).collect(),
        }
    }

    #[test]
    fn manifests_round_trip_and_any_flipped_bit_is_refused() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(bytes.len(), Manifest::encoded_len(m.key.len(), m.shards.len()), "predictable by readers");
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&bad).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn impossible_manifests_are_refused_even_with_a_good_crc() {
        let mut lies = vec![];
        let mut m = sample();
        m.shards[1].host = m.shards[0].host;
        lies.push(m);
        let mut m = sample();
        m.cell_bytes = 4096;
        lies.push(m);
        let mut m = sample();
        m.shards.pop();
        lies.push(m);
        let mut m = sample();
        m.layout = Layout::Copies;
        lies.push(m);
        let mut m = sample();
        m.key.clear();
        lies.push(m);
        for m in lies {
            assert!(
                matches!(Manifest::decode(&m.encode()), Err(ManifestError::Invalid(_) | ManifestError::Malformed(_))),
                "{m:?}"
            );
        }
    }
}
