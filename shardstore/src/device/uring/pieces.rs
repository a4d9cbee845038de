//! Writes sent in pieces while reads are in flight
//! (`OpenOptions::write_piece_bytes`): a split write's state in its slot,
//! its pieces sent oldest write first within `pieces_with_reads`, and
//! each piece's completion counted off.
#![allow(unsafe_code)]

use std::io;

use super::{InFlight, UringDevice, PIECE_SHIFT};
use crate::device::BufferPool;
use crate::error::{Error, OpKind, Result};

#[derive(Debug)]
pub(super) struct Pieces {
    pub(super) fua: bool,
    /// Bytes sent to the kernel so far, from the start.
    pub(super) sent: u64,
    /// Pieces in the kernel.
    pub(super) outstanding: u32,
    /// The first piece that failed; no more are sent after it.
    pub(super) failure: Option<Error>,
}

impl InFlight {
    /// Counts off piece `piece` of this split write (pieces of
    /// `piece_bytes`), which completed with `res`. Returns whether it was
    /// the write's last, and whether it is the write's first failure.
    pub(super) fn piece_done(&mut self, piece: u64, res: i32, piece_bytes: u64, device: &str) -> (bool, bool) {
        let p = self.pieces.as_mut().expect("a piece of a split write");
        p.outstanding -= 1;
        let start = piece * piece_bytes;
        let want = piece_bytes.min(self.len - start);
        let failure = if res < 0 {
            Some(io::Error::from_raw_os_error(-res))
        } else if res as u64 != want {
            Some(io::Error::new(io::ErrorKind::UnexpectedEof, format!("short write: {res} of {want} bytes")))
        } else {
            None
        };
        let first = failure.is_some() && p.failure.is_none();
        if let Some(cause) = failure.filter(|_| first) {
            p.failure = Some(Error::io(device, OpKind::Write, self.offset + start, want, cause));
        }
        (p.outstanding == 0 && (p.failure.is_some() || p.sent == self.len), first)
    }
}

impl UringDevice {
    /// Sends the next pieces of split writes, oldest write first: while
    /// reads are in flight up to `pieces_with_reads` in the kernel, else
    /// as many as there are slots. Queued, not entered.
    pub(super) fn send_pieces(&mut self) {
        let pool_id = self.registered_pool.as_ref().map(BufferPool::id);
        while let Some(&slot) = self.paced.front() {
            let limit = if self.reads_in_flight > 0 { self.pieces_with_reads } else { self.slots.len() };
            if self.pieces_in_flight >= limit || self.ring.submission().is_full() {
                return;
            }
            let f = self.slots[slot as usize].as_mut().expect("a paced write in flight");
            let p = f.pieces.as_mut().expect("a paced write is split");
            let buf = f.buf.as_ref().expect("a write owns its buffer");
            let start = p.sent;
            let len = self.piece_bytes.min(f.len - start);
            // SAFETY: start + len <= the buffer's length.
            let ptr = unsafe { buf.as_ptr().add(start as usize) };
            let flags = if p.fua { libc::RWF_DSYNC } else { 0 };
            let fixed = (Some(buf.pool_id()) == pool_id).then(|| buf.slot() as u16);
            let piece = start / self.piece_bytes;
            let user_data = u64::from(slot) | ((piece + 1) << PIECE_SHIFT);
            let offset = f.offset + start;
            p.sent += len;
            p.outstanding += 1;
            if p.sent == f.len {
                self.paced.pop_front();
            }
            let entry = self.write_entry(ptr, len as u32, offset, fixed, flags).user_data(user_data);
            // SAFETY: the SQE points into the buffer the slot owns until its
            // last piece's CQE is reaped; the fd outlives the ring.
            unsafe {
                self.ring.submission().push(&entry).expect("checked for room above");
            }
            self.queued += 1;
            self.pieces_in_flight += 1;
            self.pieces_queued = true;
        }
    }

    /// Hands the kernel pieces that completions just released, before the
    /// caller goes off to other work.
    pub(super) fn submit_pieces(&mut self) -> Result<()> {
        if self.pieces_queued {
            self.enter(0, None)?;
        }
        Ok(())
    }
}
