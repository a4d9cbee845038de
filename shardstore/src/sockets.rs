//! Socket operations on a device's io_uring: the connections a store
//! thread serves beside its device (`store::thread::Sidecar`) share the
//! ring of the device the thread drives, so that one wait covers both and
//! their completions are the thread's own deferred work (no signal, no
//! second ring; `BlockDevice::submit_socket`). So do its reads of shards
//! other devices placed (`store::placed`). Operations are a closed
//! enum ([`SocketOp`]) that own their buffers while the kernel holds them
//! and hand them back in their completion ([`SocketDone`]).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use crate::device::IoBuf;

/// One operation on a socket (or a descriptor to watch). The descriptor
/// is the caller's: it stays open while the operation is in flight.
#[derive(Debug)]
pub enum SocketOp {
    /// Receives into `buf[at..]` (the bytes before `at` are kept).
    Recv { fd: RawFd, buf: Vec<u8>, at: usize },
    /// Sends `head[sent..]` and then `body` (or `body[sent - head.len()..]`
    /// once the head is out), without `SIGPIPE`.
    Send { fd: RawFd, head: Vec<u8>, body: Vec<u8>, sent: usize },
    /// Completes once `fd` is readable.
    Readable { fd: RawFd },
    /// Reads `buf.len()` bytes at `offset` of another device's file (a
    /// shard placed there, `store::placed`): a read the device driving
    /// this ring knows nothing of, so it is not counted as its I/O. The
    /// operation holds the descriptor while it is in flight.
    ReadAt { file: Arc<OwnedFd>, offset: u64, buf: IoBuf },
}

/// A finished operation, its buffers back with the caller.
#[derive(Debug)]
pub struct SocketDone {
    pub token: u64,
    /// Bytes received or sent (0 received: the end of the stream), or the
    /// error.
    pub result: io::Result<usize>,
    pub op: SocketOp,
}

/// An operation the kernel holds, with the `sendmsg` arguments it reads
/// (boxed: their address is fixed while it is in flight).
struct InFlight {
    token: u64,
    op: SocketOp,
    iov: [libc::iovec; 2],
    msg: libc::msghdr,
}

// SAFETY: the raw pointers in the msghdr point into the operation's own
// boxed fields and buffers, which move with it; the ring (and so every
// operation) is driven by one thread at a time.
unsafe impl Send for InFlight {}

/// The socket operations a ring holds: each in a slot whose number is its
/// entry's `user_data` (with `tag`, which tells them from the ring's other
/// operations).
pub(crate) struct SocketSlots {
    tag: u64,
    slots: Vec<Option<Box<InFlight>>>,
    free: Vec<u32>,
    in_flight: usize,
}

impl SocketSlots {
    pub(crate) fn new(tag: u64) -> SocketSlots {
        SocketSlots { tag, slots: Vec::new(), free: Vec::new(), in_flight: 0 }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes `op` into a slot and builds its entry.
    ///
    /// # Safety
    /// The entry must reach the kernel only while the slot holds the
    /// operation (until `complete` takes it back), and never twice.
    pub(crate) unsafe fn entry(&mut self, token: u64, op: SocketOp) -> squeue::Entry {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 operations in flight")
        });
        // SAFETY: zeroed iovecs and msghdr are valid values (null pointers,
        // no lengths); a send fills them before the kernel sees them.
        let (iov, msg) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let mut f = Box::new(InFlight { token, op, iov, msg });
        let entry = match &mut f.op {
            SocketOp::Recv { fd, buf, at } => {
                assert!(*at < buf.len(), "a receive needs room in its buffer");
                let room = &mut buf[*at..];
                opcode::Recv::new(types::Fd(*fd), room.as_mut_ptr(), u32::try_from(room.len()).unwrap_or(u32::MAX))
                    .build()
            }
            SocketOp::Send { fd, head, body, sent } => {
                let (a, b): (&[u8], &[u8]) =
                    if *sent < head.len() { (&head[*sent..], &body[..]) } else { (&body[*sent - head.len()..], &[]) };
                f.iov[0] = libc::iovec { iov_base: a.as_ptr() as *mut libc::c_void, iov_len: a.len() };
                f.iov[1] = libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() };
                f.msg.msg_iov = f.iov.as_mut_ptr();
                f.msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
                opcode::SendMsg::new(types::Fd(*fd), &raw const f.msg).flags(libc::MSG_NOSIGNAL as u32).build()
            }
            SocketOp::Readable { fd } => opcode::PollAdd::new(types::Fd(*fd), libc::POLLIN as u32).build(),
            SocketOp::ReadAt { file, offset, buf } => {
                let len = u32::try_from(buf.len()).expect("a placed read fits one buffer");
                opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), len).offset(*offset).build()
            }
        };
        self.slots[slot as usize] = Some(f);
        self.in_flight += 1;
        entry.user_data(self.tag | u64::from(slot))
    }

    /// Undoes `entry` for an entry that never reached the kernel.
    pub(crate) fn unqueue(&mut self, user_data: u64) -> SocketOp {
        let slot = (user_data & !self.tag) as usize;
        let f = self.slots[slot].take().expect("an operation just taken");
        self.free.push(slot as u32);
        self.in_flight -= 1;
        f.op
    }

    /// Whether `user_data` is one of these operations'.
    pub(crate) fn owns(&self, user_data: u64) -> bool {
        user_data & self.tag == self.tag
    }

    /// The completion of the operation `user_data` names, its buffers back.
    pub(crate) fn complete(&mut self, user_data: u64, res: i32) -> SocketDone {
        let slot = (user_data & !self.tag) as usize;
        let f = self.slots[slot].take().expect("a completion of an operation in flight");
        self.free.push(slot as u32);
        self.in_flight -= 1;
        let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as usize) };
        SocketDone { token: f.token, result, op: f.op }
    }

    /// Leaves every operation still in flight to the kernel with its
    /// buffers (never freed under it): the ring is going away.
    pub(crate) fn abandon(&mut self) {
        for f in self.slots.drain(..).flatten() {
            std::mem::forget(f);
        }
        self.in_flight = 0;
    }
}

impl Drop for SocketSlots {
    fn drop(&mut self) {
        // The kernel cancels what is left when the ring closes, which may
        // be after this: buffers still in flight must outlive it.
        self.abandon();
    }
}

impl std::fmt::Debug for SocketSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketSlots")
            .field("tag", &self.tag)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}
