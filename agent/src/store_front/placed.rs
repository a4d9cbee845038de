//! Reads of shards that another device's store thread placed
//! (`shardstore::store::placed`): made on this thread's ring, with a
//! buffer of its own, and checked when they complete. One that fails its
//! check (or its read) goes to the shard's own thread, as if it had never
//! been placed: that thread reads again, and is the one that reports what
//! it finds.

use std::time::{Duration, Instant};

use shardstore::device::{BufferPool, IoBuf};
use shardstore::sockets::SocketOp;
use shardstore::store::placed::{PlacedRead, PLACED_SHARD_BYTES_MAX};
use shardstore::store::Read;

use super::{token, ConnId, Pending, ThreadFront};

/// Placed reads one thread keeps in flight at most (its buffers: 2 MiB).
const PLACED_READS_MAX: usize = 16;

/// A placed read in flight this long sends its device's reads to the
/// device's own thread (whose stall watch sees them) until that thread
/// finishes a read again.
const PLACED_READ_SLOW: Duration = Duration::from_secs(1);

/// A placed read in flight for a connection.
pub(super) struct Placed {
    read: PlacedRead,
    key: Vec<u8>,
}

/// The buffers of a thread's placed reads.
pub(super) fn buffers() -> Option<BufferPool> {
    match BufferPool::new(PLACED_SHARD_BYTES_MAX, PLACED_READS_MAX) {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::warn!(error = %e, "no buffers for placed reads: every read of another device goes to its thread");
            None
        }
    }
}

impl ThreadFront {
    /// Starts `read` of `key` for connection `id` (whose pending read is
    /// set) on this thread's ring; gives `key` back when no buffer is free.
    pub(super) fn read_placed(&mut self, id: ConnId, read: PlacedRead, key: Vec<u8>) -> Result<(), Vec<u8>> {
        let Some(buf) = self.placed_buffers.as_ref().and_then(|p| p.take_if_fits(read.read_len())) else {
            return Err(key);
        };
        let Some(c) = self.conn(id) else { return Err(key) };
        let Pending::Read { placed, .. } = &mut c.pending else { return Err(key) };
        let op = SocketOp::ReadAt { file: read.file(), offset: read.offset(), buf };
        *placed = Some(Placed { read, key });
        c.op = true;
        self.submit(token(id), op);
        Ok(())
    }

    /// A placed read completed: its answer when it checks out, else the
    /// holder's thread asked.
    pub(super) fn placed_done(&mut self, id: ConnId, result: &std::io::Result<usize>, buf: &IoBuf) {
        let Some(c) = self.conn(id) else { return };
        c.op = false;
        let Pending::Read { slot, placed, .. } = &mut c.pending else { return };
        let (slot, Some(p)) = (*slot, placed.take()) else { return };
        if c.closing {
            // Its turn on the device goes back with it.
            self.close(id);
            return;
        }
        match p.read.finish(result, buf.as_slice()) {
            Some(bytes) => {
                let stat = p.read.stat;
                self.read_done(id, Ok(Read::Shard { stat, offset: 0, bytes }));
            }
            None => self.ask_holder(id, slot, p.key),
        }
    }

    /// Suspends the placements of any device whose read by this thread
    /// has been in flight past `PLACED_READ_SLOW`.
    pub(super) fn check_placed(&self, now: Instant) {
        for c in self.conns.iter().flatten() {
            if let Pending::Read { placed: Some(p), .. } = &c.pending {
                if now.duration_since(p.read.started()) >= PLACED_READ_SLOW {
                    p.read.suspend();
                }
            }
        }
    }
}
