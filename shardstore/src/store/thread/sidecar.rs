//! Work a store thread does beside its requests: a [`Sidecar`] attached
//! to the thread (the agent serving HTTP connections on it) gets a turn
//! each time round the thread's loop, and each time a commit, checkpoint
//! or idle pass waiting on the device gets something back, and may start
//! reads on the thread's own store there and then ([`Local`]), without a
//! trip through the request queue. Its socket operations go on the
//! device's own ring ([`Local::submit_socket`]), so the thread waits in
//! one place, one system call, for its device, its requests and its
//! connections.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::{Replies, Request};
use crate::error::Result;
use crate::sockets::{SocketDone, SocketOp};
use crate::store::stats::StoreStats;
use crate::store::{ByteRange, Read, ShardStat, Store};

/// Work done on a store thread beside its requests.
pub trait Sidecar: Send {
    /// Does what is ready without blocking: its answers (replies of reads
    /// it started come back through their closures, called on this thread
    /// before this turn), and its own I/O; may start reads through
    /// `local`.
    fn turn(&mut self, local: &mut Local<'_, '_>);

    /// Whether work waits for the sidecar's turn (messages from other
    /// threads, answers of reads): the thread looks after it sets itself
    /// parked and before it waits, and does not wait while it is so. Work
    /// announced from another thread is followed by
    /// [`super::StoreHandle::nudge`].
    fn has_work(&self) -> bool;

    /// When the sidecar next has something to do of its own accord (a
    /// deadline of its own): an idle thread waits no longer than that
    /// before its next turn.
    fn due(&self) -> Option<std::time::Instant> {
        None
    }

    /// The thread stops: what it serves ends (called once, after the
    /// store closed and every read in flight was answered).
    fn close(&mut self, local: &mut Local<'_, '_>);
}

/// The thread's store, as a sidecar may use it during its turn.
#[allow(missing_debug_implementations)]
pub struct Local<'a, 'k> {
    pub(super) store: &'a mut Store,
    pub(super) replies: &'a mut Replies,
    pub(super) pending: &'a mut Vec<Request>,
    pub(super) held: &'a HashSet<&'k [u8]>,
    pub(super) stats: &'a StoreStats,
}

impl Local<'_, '_> {
    /// Starts a read of `key` as [`super::StoreHandle::submit_read`] does,
    /// on this thread: its lookup now, unless a commit in progress writes
    /// the key (the read then waits for the commit, as a queued one
    /// would). `done` is called on this thread.
    pub fn read(&mut self, key: Vec<u8>, range: Option<ByteRange>, done: impl FnOnce(Result<Read>) + Send + 'static) {
        self.stats.local_reads.fetch_add(1, Ordering::Relaxed);
        if self.held.contains(key.as_slice()) {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            self.pending.push(Request::Read { key, range, reply: Box::new(done) });
            return;
        }
        super::read(self.store, self.replies, &key, range, Box::new(done));
    }

    /// Queues a socket operation on the device's ring; it goes to the
    /// kernel with the thread's next wait (or look) at the device, and its
    /// completion comes back through [`Local::take_socket_completions`].
    pub fn submit_socket(&mut self, token: u64, op: SocketOp) -> Result<()> {
        self.store.submit_socket(token, op)
    }

    /// Socket operations completed since the last call.
    pub fn take_socket_completions(&mut self, out: &mut Vec<SocketDone>) {
        self.store.take_socket_completions(out);
    }

    /// Socket operations queued or in flight.
    pub fn sockets_in_flight(&self) -> usize {
        self.store.sockets_in_flight()
    }

    /// Waits up to `timeout` for the device: a completion (a socket's
    /// too) or a wake-up. For a closing sidecar waiting for its operations
    /// to end; reads that finish meanwhile are answered as usual.
    pub fn wait(&mut self, timeout: std::time::Duration) {
        let mut finished = Vec::new();
        if let Err(e) = self.store.wait_for_wake(timeout, &mut finished) {
            tracing::error!(error = %e, "a sidecar's wait failed");
        }
        self.replies.answer_all(&mut finished);
    }

    /// The shard of `key` here, if any; `None` while a commit in progress
    /// writes the key (ask again, or through the queue).
    pub fn stat(&self, key: &[u8]) -> Option<Option<ShardStat>> {
        if self.held.contains(key) {
            return None;
        }
        Some(self.store.stat(key))
    }
}
