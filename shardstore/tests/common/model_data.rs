//! The bytes the model test puts, and how they arrive: in one buffer,
//! in pieces, or landed in record buffers as the agent lands them.

use shardstore::rng::Rng;
use shardstore::store::{Landing, PutData};

pub fn data(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..size).map(|_| rng.next_u64() as u8).collect()
}

/// Record buffers shared by the model's puts (landing takes all of a
/// put's or none: a put that finds too few free arrives in pieces).
static LANDING: std::sync::LazyLock<Landing> = std::sync::LazyLock::new(|| Landing::new(16).expect("landing buffers"));

/// A put's bytes as a request body may arrive: one buffer, cut in up to
/// three places the seed chooses (a cut may fall inside a log block's
/// piece of payload or a chunk's boundary, or make an empty piece), or,
/// for 64 KiB or more, landed in record buffers as the agent lands them.
pub fn arrived(data: &[u8], seed: u64) -> PutData {
    let mut rng = Rng::new(seed.rotate_left(17));
    if data.len() >= 64 * 1024 && rng.chance(1, 2) {
        if let Some(mut landed) = LANDING.take(data.len()) {
            let cut = rng.below(data.len() as u64 + 1) as usize;
            assert!(landed.extend(&data[..cut]) && landed.extend(&data[cut..]));
            return landed.finish().expect("every byte landed");
        }
    }
    let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(data.len() as u64 + 1) as usize).collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut from = 0;
    for at in cuts.into_iter().chain([data.len()]) {
        parts.push(bytes::Bytes::copy_from_slice(&data[from..at]));
        from = at;
    }
    PutData::from_parts(parts)
}
