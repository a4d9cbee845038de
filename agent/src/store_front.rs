//! Connections served on the store threads: each store thread (one per
//! device) owns a share of the agent's connections, reads their requests
//! and writes their answers through an io_uring of its own, and answers a
//! shard `GET` or `HEAD` there and then: from the read cache, from its own
//! store (the lookup and the read started on the thread, no hand-off), or
//! from another device's store thread (one request through its queue,
//! whose answer comes back to this thread). The thread's waits end when
//! the ring has completions (`shardstore::store::thread::Sidecar`), so it
//! waits in one place for its device, its requests and its connections.
//!
//! Only the plain case is served here: a `GET` or `HEAD` of a whole shard
//! with no query and no headers beyond `host`, `user-agent`, `accept`,
//! `connection` and a zero `content-length`, whose key only one device
//! may hold, admitted at once and not under a write of its stripe. Every
//! other request without a body is answered by the router's own handler
//! on the tokio runtime, and its answer written here; so is a plain read
//! whose shard was not found where the route said (its absence proven
//! only by the handler's search). A request with a body (a `PUT`) or of
//! another route hands the connection, with the bytes read and not
//! served, to the tokio front (`front.rs`) for the rest of its life.
//!
//! Why: a GET handed from a tokio worker to a store thread and back costs
//! two wake-ups and a round of tokio's reactor; served on the thread that
//! owns the device, it costs neither (BENCHMARKS.md, "Connections on the
//! store threads").

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardstore::sockets::{SocketDone, SocketOp};
use shardstore::store::thread::{Local, Sidecar, StoreHandle};
use shardstore::store::{Read, ShardStat};

use crate::admission::Ticket;
use crate::api::App;
use crate::front::{self, ShardApi};
use crate::node::Route;

/// Connections one store thread serves at most; more are served by the
/// tokio front.
pub const CONNECTIONS_PER_THREAD_MAX: usize = 2048;
const _: () = assert!(CONNECTIONS_PER_THREAD_MAX < shardstore::constants::SOCKET_OPS_MAX);

/// The read buffer a connection starts with; it grows to the header limit
/// for a long head.
const READ_BUFFER_BYTES: usize = 8192;

/// A body up to this size is copied behind the head and sent with it.
const BODY_COPIED_BYTES_MAX: usize = 16 * 1024;

/// How often idle connections are checked against the header timeout.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long a closing thread waits for its connections' operations to
/// end before it leaves their buffers to the kernel (leaked).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the tokio side holds of the store threads' fronts.
pub struct StoreFronts {
    threads: Vec<Mailbox>,
    next: AtomicUsize,
    shared: Arc<Shared>,
}

/// A connection handed to the tokio front: its socket and the bytes read
/// and not yet served.
pub struct HandOff {
    pub fd: OwnedFd,
    pub read: Vec<u8>,
}

/// Where plain reads are answered from.
pub enum Source {
    /// The agent's stores.
    Stores(Arc<App>),
    /// The HTTP ceiling's shards in memory (`ceiling.rs`), by key: the
    /// same stack answering from memory.
    Memory(Arc<std::sync::RwLock<std::collections::HashMap<Vec<u8>, bytes::Bytes>>>),
}

/// What every thread's front shares with the tokio side.
struct Shared {
    source: Source,
    shards: ShardApi,
    runtime: tokio::runtime::Handle,
    handoffs: tokio::sync::mpsc::UnboundedSender<HandOff>,
    header_bytes_max: usize,
    header_timeout: Duration,
    stopping: AtomicBool,
    /// Connections open on all the threads.
    live: AtomicUsize,
}

impl Shared {
    /// Gives back a turn taken on `slot`'s device (only the agent's stores
    /// take turns).
    fn give_back(&self, slot: usize, ticket: Ticket) {
        if let Source::Stores(app) = &self.source {
            app.node.slots[slot].admission.done(ticket);
        }
    }
}

/// How other threads (and its own store's reply closures) reach one
/// store thread's front.
#[derive(Clone)]
struct Mailbox {
    tx: Sender<Message>,
    /// Messages sent and not yet taken: the front has work while any are
    /// (`Sidecar::has_work`).
    waiting: Arc<AtomicUsize>,
    /// The thread's store, to nudge it for them.
    store: StoreHandle,
    /// Connections open on this thread.
    live: Arc<AtomicUsize>,
}

impl Mailbox {
    /// Sends `message` from another thread, and wakes the thread for it
    /// unless it is awake or sure to wake soon (`StoreHandle::nudge`).
    fn post(&self, message: Message) -> bool {
        let sent = self.post_here(message);
        self.store.nudge();
        sent
    }

    /// Sends `message` on the thread itself (the store's reply closures,
    /// called before the thread gives its front a turn or looks for work
    /// before it waits).
    fn post_here(&self, message: Message) -> bool {
        if self.tx.send(message).is_err() {
            return false;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// What other threads (and the store's reply closures) send a front.
enum Message {
    /// A connection the listener accepted.
    Adopt(OwnedFd),
    /// The outcome of a read started for a connection.
    Read { conn: ConnId, result: shardstore::Result<Read> },
    /// An answer the router's handler gave, encoded: written as it is.
    Answer { conn: ConnId, bytes: Vec<u8>, keep_alive: bool },
    /// Look at the fronts' state (the agent stops).
    Look,
}

/// A connection slot and the generation of its occupant: messages for a
/// connection closed since are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnId {
    slot: u32,
    generation: u32,
}

impl StoreFronts {
    /// Attaches a front to each of `stores` (device id and store thread)
    /// whose device's ring takes socket operations (io_uring); `None` when
    /// none does. Plain reads are answered from `source`, other requests
    /// without a body by `shards` (the router's handler); connections
    /// handed to the tokio front arrive on `handoffs`.
    pub fn start(
        source: Source,
        stores: &[(usize, &StoreHandle)],
        shards: ShardApi,
        limits: &crate::config::Limits,
        handoffs: tokio::sync::mpsc::UnboundedSender<HandOff>,
    ) -> Option<StoreFronts> {
        let shared = Arc::new(Shared {
            source,
            shards,
            runtime: tokio::runtime::Handle::current(),
            handoffs,
            header_bytes_max: limits.header_bytes_max,
            header_timeout: Duration::from_millis(limits.header_timeout_ms),
            stopping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
        });
        let mut threads = Vec::new();
        for &(id, store) in stores {
            let (thread, mailbox) = ThreadFront::new(Arc::clone(&shared), id, store);
            match store.attach(Box::new(thread)) {
                Ok(()) => threads.push(mailbox),
                Err(e) => tracing::info!(device = id, error = %e, "connections not served on this store thread"),
            }
        }
        (!threads.is_empty()).then(|| StoreFronts { threads, next: AtomicUsize::new(0), shared })
    }

    /// Gives `stream` to a store thread with room for it (the next in
    /// turn), or back when none has (or the fronts are stopping).
    pub fn adopt(&self, stream: tokio::net::TcpStream) -> Result<(), tokio::net::TcpStream> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(stream);
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let Some(mailbox) = (0..n)
            .map(|i| &self.threads[(first + i) % n])
            .find(|m| m.live.load(Ordering::Relaxed) < CONNECTIONS_PER_THREAD_MAX)
        else {
            return Err(stream);
        };
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "a connection could not leave tokio's reactor");
                return Ok(());
            }
        };
        // Counted before it is sent: a stop waiting for the count to reach
        // 0 waits for it too.
        mailbox.live.fetch_add(1, Ordering::SeqCst);
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        if !mailbox.post(Message::Adopt(OwnedFd::from(std))) {
            // The thread is gone (its device closed): the socket closed
            // with the message.
            mailbox.live.fetch_sub(1, Ordering::SeqCst);
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Stops taking connections; each thread closes its idle ones now and
    /// the others after their answer in progress.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for m in &self.threads {
            m.post(Message::Look);
        }
    }

    /// Connections still open on the store threads.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }
}

/// The front on one store thread: its ring, its connections, its mailbox.
struct ThreadFront {
    shared: Arc<Shared>,
    /// The device this thread owns.
    slot: usize,
    /// Socket operations to hand to the device's ring at the end of the
    /// turn.
    outbox: Vec<(u64, SocketOp)>,
    rx: Receiver<Message>,
    /// This thread's own mailbox, for the replies of reads it starts.
    mailbox: Mailbox,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generation: u32,
    next_timeout_check: Instant,
    /// Completions reaped and not yet handled.
    done: Vec<SocketDone>,
}

/// A connection's operations carry its slot and generation (`ConnId`).
fn token(id: ConnId) -> u64 {
    (u64::from(id.generation) << 32) | u64::from(id.slot)
}

fn untoken(token: u64) -> ConnId {
    ConnId { slot: token as u32, generation: (token >> 32) as u32 }
}

/// One connection. Its buffers are with the ring while an operation of
/// it is in flight (`op`), and back here once it completed.
struct Conn {
    fd: OwnedFd,
    id: ConnId,
    /// Bytes read: `buf[start..filled]` not yet served.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// The answer being sent: `out` (head, and a small body), then `body`,
    /// `sent` bytes of them so far.
    out: Vec<u8>,
    body: Vec<u8>,
    sent: usize,
    /// An operation of this connection is in the kernel.
    op: bool,
    /// The request being answered, if any.
    pending: Pending,
    /// Close once the answer in progress is sent.
    close_after: bool,
    /// Shut down (timeout, stop, end of stream): closed once nothing of it
    /// is in flight.
    closing: bool,
    /// When the last answer was sent (or the connection adopted): the
    /// next head is due within the header timeout from then.
    idle_since: Instant,
}

/// What a connection waits for.
enum Pending {
    None,
    /// A read of a whole shard (`slot`'s) for a `GET`, holding a turn on
    /// its device.
    Read {
        slot: usize,
        ticket: Option<Ticket>,
        started: Instant,
        head_len: usize,
        close: bool,
    },
    /// An answer from the router's handler, on tokio.
    Handler,
}

impl ThreadFront {
    fn new(shared: Arc<Shared>, slot: usize, store: &StoreHandle) -> (ThreadFront, Mailbox) {
        let (tx, rx) = mpsc::channel();
        let mailbox =
            Mailbox { tx, waiting: Arc::default(), store: store.clone(), live: Arc::new(AtomicUsize::new(0)) };
        let front = ThreadFront {
            shared,
            slot,
            outbox: Vec::new(),
            rx,
            mailbox: mailbox.clone(),
            conns: Vec::new(),
            free: Vec::new(),
            generation: 0,
            next_timeout_check: Instant::now() + TIMEOUT_CHECK_INTERVAL,
            done: Vec::new(),
        };
        (front, mailbox)
    }

    /// Queues `op` for the end of the turn.
    fn submit(&mut self, token: u64, op: SocketOp) {
        self.outbox.push((token, op));
    }

    /// Hands the queued operations to the device's ring. One it refuses
    /// (its limit reached, or the ring failed) ends its connection.
    fn flush(&mut self, local: &mut Local<'_, '_>) {
        for (token, op) in std::mem::take(&mut self.outbox) {
            if let Err(e) = local.submit_socket(token, op) {
                tracing::error!(error = %e, "a store thread's connection operation was refused");
                let id = untoken(token);
                if let Some(c) = self.conn(id) {
                    // Its buffers went with the operation.
                    c.op = false;
                    c.closing = true;
                    c.pending = Pending::None;
                }
                self.close(id);
            }
        }
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.slot as usize)?.as_mut().filter(|c| c.id == id)
    }

    fn adopt(&mut self, fd: OwnedFd) {
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
    fn forget_all(&mut self) {
        let held = std::mem::take(&mut self.conns).into_iter().flatten().count();
        for _ in 0..held {
            self.forget_one();
        }
    }

    /// One connection fewer on this thread.
    fn forget_one(&self) {
        self.mailbox.live.fetch_sub(1, Ordering::SeqCst);
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Reads more of the connection's requests.
    fn recv(&mut self, id: ConnId) {
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
    fn send(&mut self, id: ConnId) {
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
    fn shut(&mut self, id: ConnId) {
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

    fn close(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.slot as usize).and_then(Option::take) else { return };
        if let Pending::Read { slot, ticket: Some(t), .. } = c.pending {
            self.shared.give_back(slot, t);
        }
        self.free.push(id.slot);
        self.forget_one();
    }

    /// A completion of the ring.
    fn completed(&mut self, local: &mut Local<'_, '_>, done: SocketDone) {
        let id = untoken(done.token);
        let Some(c) = self.conn(id) else { return };
        c.op = false;
        // The buffers back where they belong, and what follows.
        let received = matches!(done.op, SocketOp::Recv { .. });
        match done.op {
            SocketOp::Recv { buf, .. } => c.buf = buf,
            SocketOp::Send { head, body, .. } => (c.out, c.body) = (head, body),
            SocketOp::Readable { .. } => {}
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
    fn answered(&mut self, local: &mut Local<'_, '_>, id: ConnId) {
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
    fn serve(&mut self, local: &mut Local<'_, '_>, id: ConnId) {
        let max = self.shared.header_bytes_max;
        let Some(c) = self.conn(id) else { return };
        if c.start == c.filled {
            self.recv(id);
            return;
        }
        match classify(&c.buf[c.start..c.filled], max) {
            Step::More => self.recv(id),
            Step::Fast { head_len, head_only, close, key } => self.fast(local, id, head_len, head_only, close, key),
            Step::Handler => self.through_handler(id),
            Step::HandOff => self.hand_off(id),
        }
    }

    /// A plain `GET` or `HEAD` of a shard: answered here when it can be
    /// (see the module's notes), else by the handler.
    fn fast(
        &mut self,
        local: &mut Local<'_, '_>,
        id: ConnId,
        head_len: usize,
        head_only: bool,
        close: bool,
        key: Vec<u8>,
    ) {
        let started = Instant::now();
        let shared = Arc::clone(&self.shared);
        let app = match &shared.source {
            Source::Stores(app) => app,
            Source::Memory(shards) => {
                let bytes = shards.read().expect("never poisoned").get(&key).cloned();
                match bytes {
                    Some(bytes) => {
                        let stat = ShardStat {
                            size: bytes.len() as u64,
                            crc32c: crc32c::crc32c(&bytes),
                            written_unix_ms: 0,
                            sequence: 0,
                            chunks: 0,
                        };
                        let body = if head_only { Vec::new() } else { bytes.to_vec() };
                        self.answer_shard(id, None, &stat, body, head_only, close, head_len, started);
                    }
                    None => self.through_handler(id),
                }
                return;
            }
        };
        let node = &app.node;
        if !app.shard_read_delay.is_zero() {
            return self.through_handler(id);
        }
        // The route is taken under the key's stripe (a put finishing on
        // another device would make a sole candidate stale, and the tidy
        // after it remove the copy read here); a write of the stripe in
        // progress sends the request the way that waits for it.
        let Ok(stripe) = node.stripe(&key).try_read() else { return self.through_handler(id) };
        let route = node.route(&key);
        let (Route::Sole(slot) | Route::Refuse { slot, sole: true }) = route else {
            return self.through_handler(id);
        };
        let Some(store) = node.slots[slot].store.as_ref() else { return self.through_handler(id) };
        if let Some(hit) = store.cached(&key) {
            drop(stripe);
            let body = if head_only { Vec::new() } else { hit.bytes.to_vec() };
            self.answer_shard(id, Some(slot), &hit.stat, body, head_only, close, head_len, started);
            return;
        }
        if matches!(route, Route::Refuse { .. }) {
            return self.through_handler(id);
        }
        if head_only {
            // A stat is an index probe: on this thread, at once.
            let stat = if slot == self.slot { local.stat(&key) } else { None };
            drop(stripe);
            match stat {
                Some(Some(stat)) => {
                    self.answer_shard(id, Some(slot), &stat, Vec::new(), true, close, head_len, started);
                }
                _ => self.through_handler(id),
            }
            return;
        }
        let Some(ticket) = node.slots[slot].admission.try_admit() else { return self.through_handler(id) };
        if let Some(c) = self.conn(id) {
            c.pending = Pending::Read { slot, ticket: Some(ticket), started, head_len, close };
        }
        let mailbox = self.mailbox.clone();
        if slot == self.slot {
            // Answered on this thread, which gives its front a turn after
            // answering reads (or looks for its work before it waits).
            local.read(key, None, move |result| {
                mailbox.post_here(Message::Read { conn: id, result });
            });
            return;
        }
        let done = move |result| {
            mailbox.post(Message::Read { conn: id, result });
        };
        if let Err(e) = store.submit_read(key, None, done) {
            // Its queue is full (or it stopped): the handler says so.
            tracing::debug!(device = slot, error = %e, "store thread front: read not queued");
            self.give_back_ticket(id);
            drop(stripe);
            return self.through_handler(id);
        }
        drop(stripe);
    }

    fn give_back_ticket(&mut self, id: ConnId) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        if let Pending::Read { slot, ticket: Some(t), .. } = std::mem::replace(&mut c.pending, Pending::None) {
            shared.give_back(slot, t);
        }
    }

    /// A read started by `fast` finished.
    fn read_done(&mut self, id: ConnId, result: shardstore::Result<Read>) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        let Pending::Read { slot, ticket, started, head_len, close } = std::mem::replace(&mut c.pending, Pending::None)
        else {
            return;
        };
        if let Some(t) = ticket {
            shared.give_back(slot, t);
        }
        let closing = c.closing;
        if closing {
            self.close(id);
            return;
        }
        match result {
            Ok(Read::Shard { stat, bytes, .. }) => {
                self.answer_shard(id, Some(slot), &stat, bytes, false, close, head_len, started);
            }
            // Not found where the route said, or a failure: the handler's
            // answer (its search proves an absence; its errors are the
            // router's).
            _ => self.through_handler(id),
        }
    }

    /// Answers a shard read: `body` (empty for a `HEAD`) with the shard's
    /// size and CRC, as the router's handler does.
    #[allow(clippy::too_many_arguments)]
    fn answer_shard(
        &mut self,
        id: ConnId,
        slot: Option<usize>,
        stat: &ShardStat,
        body: Vec<u8>,
        head_only: bool,
        close: bool,
        head_len: usize,
        started: Instant,
    ) {
        let shared = Arc::clone(&self.shared);
        let Some(c) = self.conn(id) else { return };
        c.start += head_len;
        if let (Source::Stores(app), Some(slot), false) = (&shared.source, slot, head_only) {
            let traffic = &app.node.slots[slot].traffic;
            traffic.reads.fetch_add(1, Ordering::Relaxed);
            traffic.read_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        shard_head(&mut c.out, stat, close);
        if body.len() <= BODY_COPIED_BYTES_MAX {
            c.out.extend_from_slice(&body);
        } else {
            c.body = body;
        }
        c.close_after = close;
        c.sent = 0;
        crate::metrics::observe(if head_only { 2 } else { 1 }, 200, started);
        self.send(id);
    }

    /// Has the router's handler answer the request at the start of the
    /// connection's buffer, on tokio; its answer comes back as a message.
    fn through_handler(&mut self, id: ConnId) {
        let max = self.shared.header_bytes_max;
        let Some(c) = self.conn(id) else { return };
        let head = match front::parse(&c.buf[c.start..c.filled], max) {
            Ok(head) if head.body == 0 => head,
            // A body, or not a shard request after all: tokio's front.
            _ => return self.hand_off(id),
        };
        c.start += head.len;
        c.pending = Pending::Handler;
        let (mailbox, shards) = (self.mailbox.clone(), Arc::clone(&self.shared.shards));
        let front::Head { req, close, .. } = head;
        self.shared.runtime.spawn(async move {
            let head_only = req.method() == axum::http::Method::HEAD;
            let op = crate::metrics::operation(req.method(), req.uri().path());
            let started = Instant::now();
            let response = shards(req).await;
            crate::metrics::observe(op, response.status().as_u16(), started);
            let mut out = Vec::new();
            let (bytes, keep_alive) = match front::encode_head(&mut out, response, head_only, close).await {
                Ok((keep_alive, body)) => {
                    out.extend_from_slice(&body);
                    (out, keep_alive)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "store thread front: no answer to write");
                    (Vec::new(), false)
                }
            };
            mailbox.post(Message::Answer { conn: id, bytes, keep_alive });
        });
    }

    /// An answer from the handler, to write.
    fn handler_answered(&mut self, id: ConnId, bytes: Vec<u8>, keep_alive: bool) {
        let Some(c) = self.conn(id) else { return };
        c.pending = Pending::None;
        if c.closing || bytes.is_empty() {
            c.closing = true;
            self.close(id);
            return;
        }
        c.out = bytes;
        c.sent = 0;
        c.close_after = !keep_alive;
        self.send(id);
    }

    /// Hands the connection, with what it sent and was not served, to the
    /// tokio front.
    fn hand_off(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.slot as usize).and_then(Option::take) else { return };
        self.free.push(id.slot);
        self.forget_one();
        let read = c.buf[c.start..c.filled].to_vec();
        metrics::counter!("shardnode_http_connections_moved_to_tokio_total").increment(1);
        let _ = self.shared.handoffs.send(HandOff { fd: c.fd, read });
    }

    /// Closes connections idle past the header timeout, and, while the
    /// agent stops, every connection with no request in progress.
    fn check_idle(&mut self, now: Instant) {
        let stopping = self.shared.stopping.load(Ordering::Relaxed);
        if !stopping && now < self.next_timeout_check {
            return;
        }
        self.next_timeout_check = now + TIMEOUT_CHECK_INTERVAL;
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
        self.check_idle(Instant::now());
        self.flush(local);
    }

    fn has_work(&self) -> bool {
        self.mailbox.waiting.load(Ordering::SeqCst) > 0
    }

    fn close(&mut self, local: &mut Local<'_, '_>) {
        // Every connection shut down, then its operation waited for (its
        // buffers are the kernel's until then), within a bound.
        self.flush(local);
        for c in self.conns.iter_mut().flatten() {
            c.pending = Pending::None;
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

/// What to do with the bytes at the start of a connection's buffer.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not yet a whole head.
    More,
    /// A plain `GET` or `HEAD` of a whole shard, served here.
    Fast { head_len: usize, head_only: bool, close: bool, key: Vec<u8> },
    /// A request without a body the router's handler answers.
    Handler,
    /// Anything else: the tokio front serves the connection from here on.
    HandOff,
}

/// Headers a request served here may carry.
const HEADERS_MAX: usize = 16;

fn classify(buf: &[u8], header_bytes_max: usize) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= header_bytes_max => len,
        Ok(httparse::Status::Partial) if buf.len() <= header_bytes_max => return Step::More,
        // Too many headers for this parser: the handler's parser decides.
        Err(httparse::Error::TooManyHeaders) => return Step::Handler,
        _ => return Step::HandOff,
    };
    let head_only = match parsed.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Step::Handler,
    };
    let Some(raw) = parsed.path.and_then(|p| p.strip_prefix("/v1/shards/")) else { return Step::Handler };
    if raw.is_empty() || raw.contains('?') || parsed.version != Some(1) {
        return Step::Handler;
    }
    let mut close = false;
    for h in parsed.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("host") || is("user-agent") || is("accept") {
            continue;
        }
        if is("content-length") && h.value == b"0" {
            continue;
        }
        if is("connection") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    return Step::Handler;
                }
            }
            continue;
        }
        return Step::Handler;
    }
    match crate::keys::decode_key(raw) {
        Ok(key) => Step::Fast { head_len, head_only, close, key },
        Err(_) => Step::Handler,
    }
}

/// The head of a shard's answer, as the router's handler and the front
/// write it (`api::shard_answer`, `front::encode_head`), into `out`.
fn shard_head(out: &mut Vec<u8>, stat: &ShardStat, close: bool) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "content-length: {}\r\nx-shard-crc32c: {:08x}\r\n", stat.size, stat.crc32c);
    out.extend_from_slice(b"accept-ranges: bytes\r\ndate: ");
    front::date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// A socket handed over as a tokio stream.
pub fn into_tokio(fd: OwnedFd) -> std::io::Result<tokio::net::TcpStream> {
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(wire: &str) -> Step {
        classify(wire.as_bytes(), 8192)
    }

    /// Only plain whole-shard reads are served on the store thread; other
    /// requests without a body go to the handler, bodies and other routes
    /// to the tokio front.
    #[test]
    fn plain_shard_reads_are_served_here_and_the_rest_elsewhere() {
        let fast =
            |head_only, close, key: &[u8], len| Step::Fast { head_len: len, head_only, close, key: key.to_vec() };
        let w = "GET /v1/shards/a%2Fb HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(step(w), fast(false, false, b"a/b", w.len()));
        let w = "HEAD /v1/shards/k HTTP/1.1\r\nHost: t\r\nConnection: Close\r\n\r\n";
        assert_eq!(step(w), fast(true, true, b"k", w.len()));
        let w = "GET /v1/shards/k HTTP/1.1\r\nconnection: keep-alive\r\nuser-agent: x\r\naccept: */*\r\n\r\nGET ";
        assert_eq!(step(w), fast(false, false, b"k", w.len() - 4));
        for (wire, want) in [
            ("GET /v1/shards/k HTTP/1.1\r\nhost: t\r\n", Step::More),
            ("GET /v1/shards/k HTTP/1.1\r\nrange: bytes=0-1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\nx-deadline-ms: 5\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k?priority=background HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\nconnection: upgrade\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.0\r\n\r\n", Step::Handler),
            ("GET /v1/shards/ HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/%zz HTTP/1.1\r\n\r\n", Step::Handler),
            ("DELETE /v1/shards/k HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /healthz HTTP/1.1\r\n\r\n", Step::Handler),
            ("PUT /v1/shards/k HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", Step::Handler),
            ("\x16\x03\x01 not http\r\n\r\n", Step::HandOff),
        ] {
            assert_eq!(step(wire), want, "{wire:?}");
        }
        let many = "x-h: v\r\n".repeat(HEADERS_MAX + 1);
        assert_eq!(step(&format!("GET /v1/shards/k HTTP/1.1\r\n{many}\r\n")), Step::Handler);
        let pad = "p".repeat(9000);
        assert_eq!(step(&format!("GET /v1/shards/k HTTP/1.1\r\nx-pad: {pad}")), Step::HandOff);
    }
}
