//! Typed errors of the store. Every error that concerns a device names the
//! device; every I/O error also names the operation, offset and length, so
//! an operator reading a log line knows which bytes of which disk failed.

use std::fmt;
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation an I/O error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Open,
    /// Handing a batch of operations to the kernel (`io_uring_enter`).
    Submit,
    Read,
    Write,
    Flush,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::Open => "open",
            OpKind::Submit => "submit",
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the one-line message and deliberately not a
    // `#[source]`: printed through a cause chain it would appear twice.
    #[error("{device}: {op} of {len} bytes at offset {offset} failed: {cause}")]
    Io { device: String, op: OpKind, offset: u64, len: u64, cause: io::Error },

    #[error("{device}: {op} of {len} bytes at offset {offset} is not aligned to the {align}-byte block size")]
    Misaligned { device: String, op: OpKind, offset: u64, len: u64, align: u64 },

    #[error("{device}: {op} of {len} bytes at offset {offset} lies beyond the end of the device ({size} bytes)")]
    OutOfRange { device: String, op: OpKind, offset: u64, len: u64, size: u64 },

    #[error("{device}: a flush failed earlier, so the device may have lost acknowledged writes; refusing {op} until it is reopened")]
    Poisoned { device: String, op: OpKind },

    #[error("{device}: {what} is corrupt at offset {offset}")]
    Corruption { device: String, what: String, offset: u64 },

    #[error("{device}: {reason}")]
    Superblock { device: String, reason: String },

    #[error("{device}: not a shardnode device: {reason}")]
    NotFormatted { device: String, reason: String },

    #[error("{device}: refusing to format: {reason}; pass --force to overwrite it")]
    WouldOverwrite { device: String, reason: String },

    #[error("{device}: {reason}")]
    InvalidLayout { device: String, reason: String },

    #[error("{device}: cannot open: {cause}")]
    Open { device: String, cause: io::Error },

    #[error("{device}: {reason}")]
    Busy { device: String, reason: String },

    #[error("{device}: the store thread has stopped; the device is no longer served")]
    Stopped { device: String },

    /// A request to a device whose I/O is stalled (an operation in flight
    /// past the stall threshold): not sent, or given up on while it waited
    /// (then it may still complete).
    #[error(
        "{device}: its I/O is stalled (an operation has waited {waited_s} s without completing); the request is not answered (a write already sent to the device may still take effect)"
    )]
    Stalled { device: String, waited_s: u64 },

    #[error("{device}: submission queue is full ({depth} operations in flight); reap completions first")]
    QueueFull { device: String, depth: usize },

    #[error("no space left: {0}")]
    NoSpace(String),

    #[error("shard {0} not found")]
    NotFound(String),

    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// The bytes that were to go to the medium do not have the CRC32C the
    /// put carried (the client's, or the agent's of the body as received).
    #[error("shard {key}: the CRC32C of the bytes to store is {actual:08x}, the put carried {expected:08x}; nothing was stored")]
    BadDigest { key: String, expected: u32, actual: u32 },

    #[error("shard of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: u64, max: u64 },

    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    pub fn io(device: &str, op: OpKind, offset: u64, len: u64, cause: io::Error) -> Self {
        Error::Io { device: device.to_owned(), op, offset, len, cause }
    }
}
