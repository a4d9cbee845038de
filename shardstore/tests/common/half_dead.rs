//! The half-dead store of the reclamation tests: 1200 shards of two
//! blocks (about two and a half 4 MiB extents), every other one
//! overwritten, so the first extents are half dead.

pub const SHARDS: u64 = 1200;

pub fn key(i: u64) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn version(i: u64, round: u64) -> Vec<u8> {
    vec![(i * 7 + round) as u8; 6000]
}

/// Shard `i` as `fill` left it.
pub fn value(i: u64) -> Vec<u8> {
    version(i, u64::from(i % 2 == 0))
}

/// Writes every shard through `put`, then every other one again.
pub fn fill(mut put: impl FnMut(Vec<u8>, Vec<u8>)) {
    for round in 0..2u64 {
        for i in (0..SHARDS).filter(|i| round == 0 || i % 2 == 0) {
            put(key(i), version(i, round));
        }
    }
}
