//! A store thread's front: its connections' lifecycle on the device's
//! ring (adopted, read, answered, shut and closed), its mailbox, and its
//! turn as the thread's `Sidecar`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardstore::sockets::{SocketDone, SocketOp};
use shardstore::store::thread::{Local, Sidecar, StoreHandle};

use super::request::{classify, Step};
use super::{
    token, untoken, Conn, ConnId, HandOff, Mailbox, Message, Pending, Shared, ThreadFront, Turn, BODY_COPIED_BYTES_MAX,
    CLOSE_WAIT, READ_BUFFER_BYTES, TIMEOUT_CHECK_INTERVAL,
};

impl ThreadFront {
    pub(super) fn new(shared: Arc<Shared>, slot: usize, store: &StoreHandle) -> (ThreadFront, Arc<Mailbox>) {
        let (tx, rx) = mpsc::channel();
        let mailbox = Arc::new(Mailbox {
            tx,
            waiting: Arc::default(),
            store: store.clone(),
            live: Arc::new(AtomicUsize::new(0)),
        });
        let front = ThreadFront {
            shared,
            slot,
            outbox: Vec::new(),
            rx,
            mailbox: Arc::clone(&mailbox),
            conns: Vec::new(),
            free: Vec::new(),
            generation: 0,
            next_timeout_check: Instant::now() + TIMEOUT_CHECK_INTERVAL,
            done: Vec::new(),
            placed_buffers: super::placed::buffers(),
            queued: Vec::new(),
        };
        (front, mailbox)
    }

    /// Queues `op` for the end of the turn.
    pub(super) fn submit(&mut self, token: u64, op: SocketOp) {
        self.outbox.push((token, op));
    }

    /// Hands the queued operations to the device's ring. One it refuses
    /// (its limit reached, or the ring failed) ends its connection.
    pub(super) fn flush(&mut self, local: &mut Local<'_, '_>) {
        for (token, op) in std::mem::take(&mut self.outbox) {
            if let Err(e) = local.submit_socket(token, op) {
                tracing::error!(error = %e, "a store thread's connection operation was refused");
                let id = untoken(token);
                if let Some(c) = self.conn(id) {
                    // Its buffers went with the operation.
                    c.op = false;
                    c.closing = true;
                }
                self.close(id);
            }
        }
    }

    pub(super) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.slot as usize)?.as_mut().filter(|c| c.id == id)
    }

    pub(super) fn adopt(&mut self, fd: OwnedFd) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.forget_one();
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            u32::try_from(self.conns.len() - 1).expect("fewer than 2^32 connections")
        });
        let id = ConnId { slot, generation: self.generation };
        self.conns[slot as usize] = Some(Conn {
            fd,
            id,
            buf: vec![0; READ_BUFFER_BYTES],
            start: 0,
            filled: 0,
            out: Vec::with_capacity(BODY_COPIED_BYTES_MAX + 512),
            body: Vec::new(),
            sent: 0,
            op: false,
            pending: Pending::None,
            close_after: false,
            closing: false,
            idle_since: Instant::now(),
        });
        self.recv(id);
    }

    /// Every connection still held no longer counted (dropped with it).
    pub(super) fn forget_all(&mut self) {
        let held = std::mem::take(&mut self.conns).into_iter().flatten().count();
        for _ in 0..held {
            self.forget_one();
        }
    }

    /// One connection fewer on this thread.
    pub(super) fn forget_one(&self) {
        self.mailbox.live.fetch_sub(1, Ordering::SeqCst);
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Reads more of the connection's requests.
    pub(super) fn recv(&mut self, id: ConnId) {
        let max = self.shared.header_bytes_max;
        let Some(c) = self.conn(id) else { return };
        if c.start == c.filled {
            (c.start, c.filled) = (0, 0);
        } else if c.filled == c.buf.len() {
            c.buf.copy_within(c.start..c.filled, 0);
            (c.start, c.filled) = (0, c.filled - c.start);
            if c.filled == c.buf.len() {
                // A head longer than the buffer: room up to the limit and
                // a byte past it, so that a head over it is seen as such.
                c.buf.resize((c.buf.len() * 2).min(max + 1).max(c.buf.len() + 1), 0);
            }
        }
        c.op = true;
        let op = SocketOp::Recv { fd: c.fd.as_raw_fd(), buf: std::mem::take(&mut c.buf), at: c.filled };
        self.submit(token(id), op);
    }

    /// Sends the connection's answer from `sent` on.
    pub(super) fn send(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        c.op = true;
        let op = SocketOp::Send {
            fd: c.fd.as_raw_fd(),
            head: std::mem::take(&mut c.out),
            body: std::mem::take(&mut c.body),
            sent: c.sent,
        };
        self.submit(token(id), op);
    }

    /// Shuts the connection down: its operation in flight ends, and it is
    /// closed once nothing of it is in flight or waited for.
    pub(super) fn shut(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        c.closing = true;
        if c.op {
            let _ = nix::sys::socket::shutdown(c.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        } else if matches!(c.pending, Pending::None) {
            self.close(id);
        }
        // A request being answered closes the connection when its answer
        // arrives (`closing`).
    }

    pub(super) fn close(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.slot as usize).and_then(Option::take) else { return };
        self.shared.let_go(c.pending);
        if !self.queued.is_empty() {
            self.queued.retain(|&(_, c)| c != id);
        }
        self.free.push(id.slot);
        self.forget_one();
    }

    /// A completion of the ring.
    pub(super) fn completed(&mut self, local: &mut Local<'_, '_>, done: SocketDone) {
        let id = untoken(done.token);
        let Some(c) = self.conn(id) else { return };
        c.op = false;
        // The buffers back where they belong, and what follows.
        let received = matches!(done.op, SocketOp::Recv { .. });
        match done.op {
            SocketOp::Recv { buf, .. } => c.buf = buf,
            SocketOp::Send { head, body, .. } => (c.out, c.body) = (head, body),
            SocketOp::Readable { .. } => {}
            SocketOp::ReadAt { buf, .. } => return self.placed_done(id, &done.result, &buf),
        }
        match done.result {
            // Shut meanwhile, the end of the stream, or an error: nothing
            // more is read or sent.
            _ if c.closing => self.shut(id),
            Ok(0) if received => self.shut(id),
            Err(_) => self.shut(id),
            Ok(n) if received => {
                c.filled += n;
                self.serve(local, id);
            }
            Ok(n) => {
                c.sent += n;
                if c.sent < c.out.len() + c.body.len() {
                    self.send(id);
                } else {
                    self.answered(local, id);
                }
            }
        }
    }

    /// The answer in progress was sent: the next request, if buffered,
    /// else a read.
    pub(super) fn answered(&mut self, local: &mut Local<'_, '_>, id: ConnId) {
        let stopping = self.shared.stopping.load(Ordering::Relaxed);
        let Some(c) = self.conn(id) else { return };
        c.body = Vec::new();
        (c.sent, c.idle_since) = (0, Instant::now());
        c.out.clear();
        if c.close_after || stopping {
            self.shut(id);
            return;
        }
        self.serve(local, id);
    }

    /// Serves the next request buffered on the connection, or reads more.
    pub(super) fn serve(&mut self, local: &mut Local<'_, '_>, id: ConnId) {
        let max = self.shared.header_bytes_max;
        let Some(c) = self.conn(id) else { return };
        if c.start == c.filled {
            self.recv(id);
            return;
        }
        match classify(&c.buf[c.start..c.filled], max) {
            Step::More => self.recv(id),
            Step::Fast(plain) => self.fast(local, id, plain),
            Step::Handler => self.through_handler(id),
            Step::HandOff => self.hand_off(id),
        }
    }
}

impl ThreadFront {
    /// Hands the connection, with what it sent and was not served, to the
    /// tokio front.
    pub(super) fn hand_off(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.slot as usize).and_then(Option::take) else { return };
        self.free.push(id.slot);
        self.forget_one();
        let read = c.buf[c.start..c.filled].to_vec();
        metrics::counter!("shardnode_http_connections_moved_to_tokio_total").increment(1);
        let _ = self.shared.handoffs.send(HandOff { fd: c.fd, read });
    }

    /// Closes connections idle past the header timeout, and, while the
    /// agent stops, every connection with no request in progress.
    pub(super) fn check_idle(&mut self, now: Instant) {
        let stopping = self.shared.stopping.load(Ordering::Relaxed);
        if !stopping && now < self.next_timeout_check {
            return;
        }
        self.next_timeout_check = now + TIMEOUT_CHECK_INTERVAL;
        self.check_placed(now);
        let timeout = self.shared.header_timeout;
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .flatten()
            .filter(|c| {
                !c.closing
                    && matches!(c.pending, Pending::None)
                    && c.sent == 0
                    && (stopping && c.start == c.filled || now.duration_since(c.idle_since) >= timeout)
            })
            .map(|c| c.id)
            .collect();
        for id in idle {
            self.shut(id);
        }
    }
}

impl Sidecar for ThreadFront {
    fn turn(&mut self, local: &mut Local<'_, '_>) {
        // Messages, then what the ring completed, until neither has more;
        // what they lead to goes to the kernel at the end, in one call.
        loop {
            let mut any = false;
            while let Ok(message) = self.rx.try_recv() {
                self.mailbox.waiting.fetch_sub(1, Ordering::SeqCst);
                any = true;
                match message {
                    Message::Adopt(fd) => self.adopt(fd),
                    Message::Read { conn, result } => self.read_done(conn, result),
                    Message::Answer { conn, bytes, keep_alive } => self.handler_answered(conn, bytes, keep_alive),
                    Message::Admitted { conn, slot, turn } => self.admitted(local, conn, slot, turn),
                    Message::Look => {}
                }
            }
            local.take_socket_completions(&mut self.done);
            if !any && self.done.is_empty() {
                break;
            }
            let mut done = std::mem::take(&mut self.done);
            for d in done.drain(..) {
                self.completed(local, d);
            }
            // Reaped while handling these (a full queue): handled next.
            std::mem::swap(&mut self.done, &mut done);
            self.done.append(&mut done);
        }
        let now = Instant::now();
        if self.next_expiry().is_some_and(|d| d <= now) {
            self.expire_queued(now);
        }
        self.check_idle(now);
        self.flush(local);
    }

    fn has_work(&self) -> bool {
        self.mailbox.waiting.load(Ordering::SeqCst) > 0
    }

    fn due(&self) -> Option<Instant> {
        self.next_expiry()
    }

    fn close(&mut self, local: &mut Local<'_, '_>) {
        // Every connection shut down, then its operation waited for (its
        // buffers are the kernel's until then), within a bound.
        self.flush(local);
        // Turns on other devices held or waited for are given back: those
        // devices go on serving. A waiter no longer in its queue was told
        // its turn, in a message here by now.
        let shared = Arc::clone(&self.shared);
        for c in self.conns.iter_mut().flatten() {
            shared.let_go(std::mem::replace(&mut c.pending, Pending::None));
        }
        while let Ok(message) = self.rx.try_recv() {
            self.mailbox.waiting.fetch_sub(1, Ordering::SeqCst);
            match message {
                Message::Admitted { slot, turn: Turn::Granted(ticket), .. } => shared.pass(slot, ticket),
                Message::Adopt(_) => self.forget_one(),
                _ => {}
            }
        }
        for c in self.conns.iter_mut().flatten() {
            c.closing = true;
            let _ = nix::sys::socket::shutdown(c.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let until = Instant::now() + CLOSE_WAIT;
        while local.sockets_in_flight() > 0 && Instant::now() < until {
            local.wait(Duration::from_millis(50));
            local.take_socket_completions(&mut self.done);
            self.done.clear();
        }
        // What the kernel still holds is left to it (the device's ring
        // leaks those buffers rather than free them under it).
        self.forget_all();
    }
}

impl Drop for ThreadFront {
    /// Connections still held (the thread ended without `close`: a panic)
    /// are no longer counted, so that a stop does not wait for them.
    fn drop(&mut self) {
        self.forget_all();
    }
}
