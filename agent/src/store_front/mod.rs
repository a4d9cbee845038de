//! Connections served on the store threads: each store thread (one per
//! device) owns a share of the agent's connections, reads their requests
//! and writes their answers through an io_uring of its own, and answers a
//! shard `GET` or `HEAD` there and then: from the read cache, from its own
//! store (the lookup and the read started on the thread, no hand-off),
//! from where another device's store thread placed the shard (read on this
//! thread's ring, `placed.rs`), or from that thread (one request through
//! its queue, whose answer comes back to this thread). The thread's waits end when
//! the ring has completions (`shardstore::store::thread::Sidecar`), so it
//! waits in one place for its device, its requests and its connections.
//!
//! Only the plain case is served here: a `GET` or `HEAD` of a whole shard
//! with no query and no headers beyond `host`, `user-agent`, `accept`,
//! `connection`, `x-deadline-ms` and a zero `content-length`, whose key
//! only one device may hold, not under a write of its stripe. Its device's
//! admission is asked here too (`answer.rs`): a refusal is written here,
//! and a read that must wait for a turn waits here, its connection
//! parked, until the turn's message or its deadline. Every
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
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardstore::sockets::{SocketDone, SocketOp};
use shardstore::store::thread::StoreHandle;
use shardstore::store::Read;

use crate::admission::{Ticket, Turn};
use crate::api::App;
use crate::front::ShardApi;

mod answer;
mod placed;
mod request;
mod thread;

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
    threads: Vec<Arc<Mailbox>>,
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

    /// Lets go of what a connection that leaves was waiting with: the turn
    /// its read held, or its place in a device's queue (if its turn was
    /// given meanwhile, the message that tells it passes the turn on).
    fn let_go(&self, pending: Pending) {
        let Source::Stores(app) = &self.source else { return };
        match pending {
            Pending::Read { slot, ticket: Some(t), .. } => app.node.slots[slot].admission.done(t),
            Pending::Queued { slot, waiter, .. } => {
                app.node.slots[slot].admission.withdraw(waiter);
            }
            _ => {}
        }
    }

    /// Gives back a turn on `slot`'s device that was not used.
    fn pass(&self, slot: usize, ticket: Ticket) {
        if let Source::Stores(app) = &self.source {
            app.node.slots[slot].admission.pass(ticket);
        }
    }
}

/// How other threads (and its own store's reply closures) reach one
/// store thread's front.
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
    fn post(&self, message: Message) -> Result<(), Message> {
        self.post_here(message)?;
        self.store.nudge();
        Ok(())
    }

    /// Sends `message` on the thread itself (the store's reply closures,
    /// called before the thread gives its front a turn or looks for work
    /// before it waits).
    /// Gives `message` back when the thread is gone.
    fn post_here(&self, message: Message) -> Result<(), Message> {
        self.tx.send(message).map_err(|e| e.0)?;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Ok(())
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
    /// A turn on `slot`'s device for a connection's queued read, or the
    /// news that its deadline can no longer be met.
    Admitted { conn: ConnId, slot: usize, turn: Turn },
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
    /// Attaches a front to each of the first `limits.connection_threads`
    /// of `stores` (device id and store thread; by default as many as
    /// there are CPUs to run on) whose device's ring takes socket
    /// operations (io_uring); `None` when none does. Plain reads are answered from `source`, other requests
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
        let serving = match limits.connection_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        for &(id, store) in stores.iter().take(serving) {
            let (thread, mailbox) = ThreadFront::new(Arc::clone(&shared), id, store);
            match store.attach(Box::new(thread)) {
                Ok(()) => threads.push(mailbox),
                Err(e) => tracing::info!(device = id, error = %e, "connections not served on this store thread"),
            }
        }
        (!threads.is_empty()).then(|| StoreFronts { threads, next: AtomicUsize::new(0), shared })
    }

    /// Gives `stream` to a store thread with room for it (the next in
    /// turn), or back when none has (or the fronts are stopping). A thread
    /// that is gone (its device closed, or its thread ended in a panic) is
    /// passed over.
    pub fn adopt(&self, stream: tokio::net::TcpStream) -> Result<(), tokio::net::TcpStream> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(stream);
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let mut with_room = (0..n)
            .map(|i| &self.threads[(first + i) % n])
            .filter(|m| m.live.load(Ordering::Relaxed) < CONNECTIONS_PER_THREAD_MAX)
            .peekable();
        if with_room.peek().is_none() {
            return Err(stream);
        }
        let mut fd = match stream.into_std() {
            Ok(s) => OwnedFd::from(s),
            Err(e) => {
                tracing::debug!(error = %e, "a connection could not leave tokio's reactor");
                return Ok(());
            }
        };
        for mailbox in with_room {
            // Counted before it is sent: a stop waiting for the count to
            // reach 0 waits for it too.
            mailbox.live.fetch_add(1, Ordering::SeqCst);
            self.shared.live.fetch_add(1, Ordering::SeqCst);
            match mailbox.post(Message::Adopt(fd)) {
                Ok(()) => return Ok(()),
                Err(message) => {
                    mailbox.live.fetch_sub(1, Ordering::SeqCst);
                    self.shared.live.fetch_sub(1, Ordering::SeqCst);
                    let Message::Adopt(back) = message else { unreachable!("the message just sent") };
                    fd = back;
                }
            }
        }
        // Every thread with room is gone: the tokio front serves it.
        into_tokio(fd)
            .map_err(|e| tracing::debug!(error = %e, "a connection could not return to tokio"))
            .map_or(Ok(()), Err)
    }

    /// Stops taking connections; each thread closes its idle ones now and
    /// the others after their answer in progress.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for m in &self.threads {
            let _ = m.post(Message::Look);
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
    /// This thread's own mailbox (shared with the replies of reads it
    /// starts: one count to clone per read).
    mailbox: Arc<Mailbox>,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    generation: u32,
    next_timeout_check: Instant,
    /// Completions reaped and not yet handled.
    done: Vec<SocketDone>,
    /// Buffers for reads of shards other devices placed (`placed.rs`);
    /// `None` when none could be mapped (every such read goes to the
    /// shard's own thread).
    placed_buffers: Option<shardstore::device::BufferPool>,
    /// Connections whose read waits in a device's queue with a deadline,
    /// and the deadline (taken out when the read is told its turn, is
    /// withdrawn, or its connection closes).
    queued: Vec<(Instant, ConnId)>,
}

/// A connection's operations carry its slot and generation (`ConnId`).
fn token(id: ConnId) -> u64 {
    (u64::from(id.generation) << 32) | u64::from(id.slot)
}

fn untoken(token: u64) -> ConnId {
    ConnId { slot: token as u32, generation: (token >> 32) as u32 }
}

/// One connection. Its buffers are with the ring while an operation of
/// it is in flight (at most one at a time), and back here once it
/// completed.
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
        /// Read on this thread's ring from where `slot`'s thread placed
        /// the shard (`placed.rs`), while that read is in flight.
        placed: Option<placed::Placed>,
    },
    /// An answer from the router's handler, on tokio.
    Handler,
    /// A turn on `slot`'s device for a plain read, in its queue as
    /// `waiter` (`Admission::try_admit_or_queue`); told by a message
    /// (`Message::Admitted`), or withdrawn at its deadline.
    Queued {
        slot: usize,
        waiter: u64,
        plain: request::Plain,
        started: Instant,
    },
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
    use shardstore::device::sim::{SimConfig, SimDevice};
    use shardstore::format::{format, FormatOptions};

    /// A thread that is gone (its device closed, or its thread ended in a
    /// panic) is passed over: a connection goes to the next thread, or
    /// back to the tokio front when none is left, and is never dropped.
    #[tokio::test]
    async fn a_connection_is_never_given_to_a_thread_that_is_gone() {
        let mut dev = SimDevice::new(SimConfig::new(64 << 20, 1));
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
        let (store, join) = shardstore::store::thread::spawn(Box::new(dev)).unwrap();
        let mailbox =
            |tx| Arc::new(Mailbox { tx, waiting: Arc::default(), store: store.clone(), live: Arc::default() });
        let (gone_tx, gone_rx) = std::sync::mpsc::channel();
        drop(gone_rx);
        let (tx, rx) = std::sync::mpsc::channel();
        let (handoffs, _received) = tokio::sync::mpsc::unbounded_channel();
        let shards: ShardApi = Arc::new(|_| Box::pin(async { axum::response::Response::default() }));
        let shared = Arc::new(Shared {
            source: Source::Memory(Arc::default()),
            shards,
            runtime: tokio::runtime::Handle::current(),
            handoffs,
            header_bytes_max: 1024,
            header_timeout: Duration::from_secs(1),
            stopping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
        });
        let fronts = StoreFronts { threads: vec![mailbox(gone_tx), mailbox(tx)], next: AtomicUsize::new(0), shared };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..4 {
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            assert!(fronts.adopt(stream).is_ok(), "a thread was left to take it");
        }
        let adopted = rx.try_iter().filter(|m| matches!(m, Message::Adopt(_))).count();
        assert_eq!(adopted, 4, "connections given to the thread that is gone were lost");
        assert_eq!(fronts.live(), 4);
        assert_eq!(fronts.threads[0].live.load(Ordering::SeqCst), 0);
        // With no thread left, the tokio front serves it.
        drop(rx);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(fronts.adopt(stream).is_err(), "a connection no thread can take was not given back");
        assert_eq!(fronts.live(), 4);
        store.close().unwrap();
        join.join().unwrap();
    }
}
