//! The one reader and writer of fixed-width little-endian fields at given
//! offsets, shared by every on-disk structure (superblock copy, chunk
//! header, log block, checkpoint header), whose field offsets are named
//! constants derived from one another and asserted next to their
//! encoders. Variable-length bodies (log records, checkpoint entries) are
//! read by `store::meta::Reader`, which fails instead of panicking.

pub(crate) fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The field at `at`; the caller has checked that `bytes` holds it.
pub(crate) fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The field at `at`; the caller has checked that `bytes` holds it.
pub(crate) fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
