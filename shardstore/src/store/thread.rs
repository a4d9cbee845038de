//! The device thread: one thread owns a store and its device (and so its
//! io_uring), callers talk to it through a bounded queue.
//!
//! The thread blocks for the first request, then drains what else is
//! queued (up to `BATCH_OPS_MAX`) so that concurrent puts and deletes share
//! one group commit: one flush and one log write for the whole batch.
//! Reads are served in arrival order from the in-memory index and the
//! device. When the queue is idle it reclaims, at most one extent per
//! `RECLAIM_IDLE_INTERVAL_MS`, so reclamation never competes with a busy
//! queue but keeps ahead of a steady overwrite load (gets arriving during
//! such a pass are served; a write arriving ends it early). Once the log
//! has used 80% of its room, or less when the log fills fast
//! (`checkpoint_due`), busy or idle, it writes a
//! checkpoint beside the commits (`checkpoint::Beside`), so that the one a
//! full log would force on a commit is seldom needed. The background
//! scrubber (`scrub.rs`) takes a step whenever it asks to: its reads share
//! the ring with the gets but only take the room the gets leave.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cache::{ReadCache, ReadCacheSettings};
use super::placed::Placements;
use super::scrub::{DamagedShard, ScrubSettings, ScrubStatus};
pub use super::stats::StoreStats;
use super::{ByteRange, Listed, Lookup, Op, Pace, Read, ShardStat, Store, BATCH_OPS_MAX, STORE_QUEUE_DEPTH};
use crate::device::{BlockDevice, Wake};
use crate::error::{Error, Result};

mod handle;
mod sidecar;

pub use sidecar::{Local, Sidecar};

/// Requests waiting for a store thread at most; beyond it callers get
/// `Overloaded` rather than queueing without bound.
pub const STORE_QUEUE_REQUESTS_MAX: usize = 4096;
/// Idle time between background reclamation passes.
pub const RECLAIM_IDLE_INTERVAL_MS: u64 = 100;

/// How a request's result gets back to its caller: called once, on the
/// store thread, so it must be quick (send on a channel, wake a task).
type Reply<T> = Box<dyn FnOnce(Result<T>) + Send>;

enum Request {
    Write(Op, Reply<()>),
    Get {
        key: Vec<u8>,
        offset: u64,
        len: u64,
        reply: Reply<Vec<u8>>,
    },
    Stat {
        key: Vec<u8>,
        reply: Reply<Option<ShardStat>>,
    },
    Lookup {
        key: Vec<u8>,
        reply: Reply<Lookup>,
    },
    Read {
        key: Vec<u8>,
        range: Option<ByteRange>,
        reply: Reply<Read>,
    },
    Tombstones(Reply<Vec<(Vec<u8>, u64)>>),
    List {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
        reply: Reply<Vec<Listed>>,
    },
    Checkpoint(Reply<()>),
    Close(Reply<()>),
    UpdateScrub(Box<dyn FnOnce(&mut ScrubSettings) + Send>, Reply<ScrubSettings>),
    ScrubStatus(Reply<ScrubStatus>),
    Damaged(Reply<Vec<DamagedShard>>),
    /// Work for the thread beside its requests, from now on; refused when
    /// the device cannot wake the thread for it.
    Attach(Box<dyn Sidecar>, Reply<()>),
}

/// How long an idle scrubber (paused, or nothing stored) waits before
/// looking again.
const SCRUB_IDLE_RECHECK_MS: u64 = 1000;
/// Shortest interval between scrub steps while requests keep the thread
/// busy (a finished scrub read also asks for a step at once).
const SCRUB_BUSY_STEP_INTERVAL_US: u64 = 1000;

/// How long after a vouched commit the thread waits for a write whose
/// commit would confirm it before it confirms it with an empty log write
/// (`Store::confirm`): writers answered by the commit send their next
/// writes within it, and the confirmation's write and flush then cost
/// nothing.
const CONFIRM_WAIT_US: u64 = 500;

/// `Wakeup::parked`: the thread is not waiting (a request sent now is
/// seen without a wake-up).
const AWAKE: u8 = 0;
/// Waiting on the device: any request sent wakes it.
const PARKED: u8 = 1;
/// Waiting on the device with at least `LAZY_WAKE_GETS_MIN` gets in
/// progress and as many operations at the device: a get or read sent now
/// is taken at the next completion, which those operations guarantee,
/// without a wake-up (a system call for the caller, a context switch and
/// an enter for the thread); any other request wakes it, so that what
/// reads only memory never waits on the device.
const PARKED_FOR_READS: u8 = 2;
/// Gets in progress from which a new get waits for the next completion
/// rather than waking the thread. Measured on the agent's 4 KiB GETs at
/// QD32, three devices (`benches/ab-agent`, 6 paired rounds): 4 against
/// waking for every request, rate 1.08x and CPU per GET 0.95x, latency
/// no worse from QD1 to QD32; 2 and 8 against 4, rate 0.98x and 0.97x.
const LAZY_WAKE_GETS_MIN: usize = 4;

/// A cheap, cloneable handle to a store thread.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: SyncSender<Request>,
    name: String,
    wake: Arc<Wakeup>,
    opened_clean: bool,
    format_version: u32,
    cache: Arc<ReadCache>,
    placed: Arc<Placements>,
}

/// What a store thread applies to its store before it serves anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadSettings {
    /// The scrubber's settings (a scrubber configured paused never takes a
    /// step); `None`: the store's defaults.
    pub scrub: Option<ScrubSettings>,
    pub read_cache: ReadCacheSettings,
    /// Commits as the store makes them driven directly (payload copies in
    /// the log for a small batch, two flushes for a larger one) instead of
    /// vouched by their log write (`Store::set_vouched_commits`): no
    /// window after an acknowledgement in which rot of its data could not
    /// be told from a crash before its flush, for more bytes or a second
    /// flush per commit.
    pub unvouched_commits: bool,
}

/// How a caller wakes the store thread while it waits on its device for
/// reads to complete (a wait the request channel cannot end): the thread
/// sets `parked` and checks the queue once more before it waits; a caller
/// that queued a request and finds `parked` set calls the device's waker.
/// One of the two always sees the other, so no request waits for an
/// unrelated completion, except a get sent while the thread waits for
/// gets' reads it is sure to be woken by (`PARKED_FOR_READS`).
#[derive(Debug)]
struct Wakeup {
    parked: AtomicU8,
    waker: Option<Arc<dyn Wake>>,
    stats: StoreStats,
    counters: Arc<crate::health::DeviceCounters>,
}

/// Starts a thread that opens the store on `dev` and serves it. Returns
/// once the store is open (or failed to open).
pub fn spawn(dev: Box<dyn BlockDevice>) -> Result<(StoreHandle, JoinHandle<()>)> {
    spawn_with(dev, ThreadSettings::default())
}

/// As `spawn`, with `settings` applied before the thread serves anything.
pub fn spawn_with(dev: Box<dyn BlockDevice>, settings: ThreadSettings) -> Result<(StoreHandle, JoinHandle<()>)> {
    let name = dev.info().name.clone();
    let (tx, rx) = mpsc::sync_channel(STORE_QUEUE_REQUESTS_MAX);
    let (opened_tx, opened_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("store:{}", short_name(&name)))
        .spawn(move || match Store::open(dev).and_then(|mut s| s.waker().map(|w| (s, w))) {
            Ok((mut store, waker)) => {
                if let Some(scrub) = settings.scrub {
                    store.set_scrub_settings(scrub);
                }
                store.set_read_cache(settings.read_cache);
                // Batches with a put take one flush, vouched by their log
                // write (no payload copies in it), and are confirmed by the
                // next (`serve`).
                store.set_vouched_commits(!settings.unvouched_commits);
                let wake = Arc::new(Wakeup {
                    parked: AtomicU8::new(AWAKE),
                    waker,
                    stats: StoreStats::default(),
                    counters: store.counters(),
                });
                wake.stats.publish(&store.usage());
                wake.stats.publish_counts(&store);
                wake.stats.next_sequence_at_open.store(store.next_sequence(), Ordering::Relaxed);
                let opened = (
                    Arc::clone(&wake),
                    store.opened_clean(),
                    store.superblock().format_version,
                    store.read_cache(),
                    store.placements(),
                );
                let _ = opened_tx.send(Ok(opened));
                serve(store, &rx, &wake);
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
            }
        })
        .map_err(|e| Error::InvalidArgument(format!("cannot start the store thread for {name}: {e}")))?;
    let (wake, opened_clean, format_version, cache, placed) = opened_rx
        .recv()
        .map_err(|_| Error::InvalidArgument(format!("the store thread for {name} died while opening")))??;
    Ok((StoreHandle { tx, name, wake, opened_clean, format_version, cache, placed }, thread))
}

fn short_name(name: &str) -> String {
    let base = PathBuf::from(name).file_name().map_or_else(|| name.to_owned(), |f| f.to_string_lossy().into_owned());
    base.chars().take(9).collect()
}

/// Reads waiting for the device that make the serving loop submit them
/// while it still verifies reaped reads. Measured on the store's 4 KiB
/// gets at QD32 against refilling after every read (`benches/ab-store`
/// style, 10 and 12 paired rounds): CPU per get 0.78x and 0.88x, rate
/// 1.23x and 1.06x, p99 0.92x and 0.89x; 4 and 16 did no better.
const REFILL_READS_MIN: usize = 8;

fn serve(mut store: Store, rx: &Receiver<Request>, wake: &Wakeup) {
    let mut last_reclaim = Instant::now();
    let mut pending: Vec<Request> = Vec::with_capacity(BATCH_OPS_MAX);
    let mut get_replies = Replies::default();
    let mut finished = Vec::with_capacity(STORE_QUEUE_DEPTH);
    let mut next_scrub = Instant::now();
    let mut scrub_failing = false;
    let mut sidecar: Option<Box<dyn Sidecar>> = None;
    // When the last vouched commit is confirmed unless a write arrives to
    // confirm it first.
    let mut confirm_by = Instant::now();
    loop {
        // While gets are in flight or requests wait in `pending`, look for
        // new work without blocking, so reads keep the device's queue full;
        // otherwise sleep until work arrives or it is time for a background
        // reclamation pass.
        let first = if store.completions_pending() || !pending.is_empty() || store.checkpoint_encoding() {
            match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            let mut wait = Duration::from_millis(RECLAIM_IDLE_INTERVAL_MS)
                .min(next_scrub.saturating_duration_since(Instant::now()));
            if store.unconfirmed() {
                wait = wait.min(confirm_by.saturating_duration_since(Instant::now()));
            }
            let arrived = match &sidecar {
                Some(sidecar) => wait_beside(&mut store, rx, wake, sidecar.as_ref(), wait, &mut finished),
                None => rx.recv_timeout(wait).map(Some),
            };
            match arrived {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    // Debug builds (every test) check the whole state when
                    // the thread is idle: the real thread, not only tests
                    // driving the store by hand, keeps its invariants.
                    #[cfg(debug_assertions)]
                    store.check_invariants();
                    // A wait cut short to confirm a vouched commit is not
                    // idleness: the confirmation comes first (below), and a
                    // pass only once the thread has waited for work again.
                    if !store.unconfirmed() && last_reclaim.elapsed() >= Duration::from_millis(RECLAIM_IDLE_INTERVAL_MS)
                    {
                        // A whole extent may take a while to move: gets
                        // arriving meanwhile are served; a write arriving
                        // ends the pass after the chunks being moved (it
                        // waits in `pending` until then).
                        let none = HashSet::new();
                        let writes_wait = std::cell::Cell::new(false);
                        let mut pump = |store: &mut Store| {
                            let mut serving = Serving::new(wake, &mut get_replies, &mut pending, &mut finished);
                            serve_meanwhile(store, rx, &mut serving, &mut sidecar, &none);
                            writes_wait.set(!pending.is_empty());
                        };
                        let before = store.reclaim_counts();
                        // Whatever it did is published (a failure failed
                        // the store, which says why itself).
                        let _ = store.reclaim_with(&mut pump, Pace::Background, &|| writes_wait.get());
                        wake.parked.store(AWAKE, Ordering::SeqCst);
                        if store.reclaim_counts() != before {
                            wake.stats.publish(&store.usage());
                            wake.stats.publish_counts(&store);
                        }
                        last_reclaim = Instant::now();
                    }
                    None
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        if let Some(first) = first {
            pending.push(first);
            while pending.len() < BATCH_OPS_MAX {
                match rx.try_recv() {
                    Ok(r) => pending.push(r),
                    Err(_) => break,
                }
            }
        }
        wake.stats.queued.fetch_sub(pending.len() as u64, Ordering::Relaxed);
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut closing = None;
        for request in pending.drain(..) {
            match request {
                Request::Write(op, reply) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Request::Get { key, offset, len, reply } => get_replies.start(&mut store, &key, offset, len, reply),
                Request::Read { key, range, reply } => read(&mut store, &mut get_replies, &key, range, reply),
                Request::Checkpoint(reply) => {
                    let done = store.checkpoint();
                    wake.stats.publish_counts(&store);
                    reply(done);
                }
                Request::UpdateScrub(change, reply) => {
                    let mut settings = store.scrub_settings();
                    change(&mut settings);
                    store.set_scrub_settings(settings);
                    next_scrub = Instant::now();
                    reply(Ok(settings));
                }
                Request::Close(reply) => closing = Some(reply),
                Request::Attach(attached, reply) => {
                    if store.supports_sockets() {
                        sidecar = Some(attached);
                        reply(Ok(()));
                    } else {
                        reply(Err(Error::InvalidArgument(format!(
                            "{}: its device's ring cannot serve connections beside it (io_uring only)",
                            store.name
                        ))));
                    }
                }
                other => {
                    if answer_from_memory(&store, other, &HashSet::new()).is_some() {
                        unreachable!("every other request reads only memory");
                    }
                }
            }
        }
        if !ops.is_empty() {
            // Gets keep flowing while the commit's writes and flushes are
            // in flight: each time the commit's I/O completes something,
            // finished gets are answered and newly arrived ones started;
            // only gets of keys in the batch wait for it (they then see
            // what it wrote).
            let batch_keys: HashSet<&[u8]> = ops.iter().map(Op::key).collect();
            // While the commit waits, `parked` stays set so that a request
            // arriving then wakes the thread (the device's waker ends the
            // wait) instead of waiting for the commit's next completion.
            let mut pump = |store: &mut Store| {
                let mut serving = Serving::new(wake, &mut get_replies, &mut pending, &mut finished);
                serve_meanwhile(store, rx, &mut serving, &mut sidecar, &batch_keys);
            };
            // Gets taken in the same batch as the writes were only
            // started: their reads go out now, with the commit's first
            // writes, not after its first completion (which a drive whose
            // writes hang never posts).
            pump(&mut store);
            let results = store.commit_with(&ops, &mut pump);
            wake.parked.store(AWAKE, Ordering::SeqCst);
            wake.stats.commits.fetch_add(1, Ordering::Relaxed);
            wake.stats.committed_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
            wake.stats.publish_counts(&store);
            // Usage is kept as the store changes (no walk of the extent
            // table): published before the replies, so that a caller that
            // got its answer sees its write counted.
            wake.stats.publish(&store.usage());
            for (r, reply) in results.into_iter().zip(replies) {
                reply(r);
            }
            if store.unconfirmed() {
                confirm_by = Instant::now() + Duration::from_micros(CONFIRM_WAIT_US);
            }
        }
        // A vouched commit is proved durable by the next log write: the
        // next commit's, or when no write arrives in time to make one, an
        // empty one (until then, recovery could not tell its data rotting
        // from a crash before its flush; see `Store::commit_vouched`).
        if store.unconfirmed()
            && Instant::now() >= confirm_by
            && !pending.iter().any(|r| matches!(r, Request::Write(..)))
        {
            let mut pump = |store: &mut Store| {
                let mut serving = Serving::new(wake, &mut get_replies, &mut pending, &mut finished);
                serve_meanwhile(store, rx, &mut serving, &mut sidecar, &HashSet::new());
            };
            if let Err(e) = store.confirm(&mut pump) {
                tracing::error!(device = %store.name, error = %e, "confirming the last commit failed");
            }
            wake.parked.store(AWAKE, Ordering::SeqCst);
            wake.stats.publish_counts(&store);
        }
        // A log half filling under writes is checkpointed beside them: the
        // store as it stood between two commits, encoded a slice at a
        // time between the commits that follow (gets served meanwhile), its
        // pieces written while commits go on, and made current between two
        // commits once written (`checkpoint::Beside`). Writes then wait
        // for one slice of the encoding and the switch at most.
        if closing.is_none() && (store.checkpoint_under_way() || store.checkpoint_due()) {
            let none = HashSet::new();
            let mut pump = |store: &mut Store| {
                let mut serving = Serving::new(wake, &mut get_replies, &mut pending, &mut finished);
                serve_meanwhile(store, rx, &mut serving, &mut sidecar, &none);
            };
            let moved = if store.checkpoint_under_way() {
                store.advance_checkpoint(&mut pump)
            } else {
                store.start_checkpoint().map(|_| false)
            };
            wake.parked.store(AWAKE, Ordering::SeqCst);
            match moved {
                Ok(true) => wake.stats.publish_counts(&store),
                Ok(false) => {}
                Err(e) => tracing::error!(device = %store.name, error = %e, "checkpoint failed"),
            }
        }
        if let Some(reply) = closing {
            // Writes queued before the close were committed above.
            let result = store.close_in_place();
            store.take_finished_gets(&mut finished);
            get_replies.answer_all(&mut finished);
            if let Some(sidecar) = sidecar.take() {
                close_sidecar(
                    &mut store,
                    sidecar,
                    &mut Serving::new(wake, &mut get_replies, &mut pending, &mut finished),
                );
            }
            reply(result);
            return;
        }
        let now = Instant::now();
        if now >= next_scrub || store.scrub_wants_step() {
            next_scrub = match store.scrub_step() {
                Ok(Some(after)) => {
                    scrub_failing = false;
                    let busy = Duration::from_micros(if store.completions_pending() {
                        SCRUB_BUSY_STEP_INTERVAL_US
                    } else {
                        0
                    });
                    now + after.max(busy)
                }
                Ok(None) => now + Duration::from_millis(SCRUB_IDLE_RECHECK_MS),
                Err(e) => {
                    if !scrub_failing {
                        tracing::error!(device = %store.name, error = %e, "scrubbing stopped");
                        scrub_failing = true;
                    }
                    now + Duration::from_millis(SCRUB_IDLE_RECHECK_MS)
                }
            };
        }
        store.take_finished_gets(&mut finished);
        get_replies.answer_all(&mut finished);
        if let Some(sidecar) = &mut sidecar {
            let none = HashSet::new();
            turn(&mut store, sidecar, &mut Serving::new(wake, &mut get_replies, &mut pending, &mut finished), &none);
        }
        if store.completions_pending() {
            // Wait for a completion or a new request, whichever comes first;
            // with enough gets in progress and operations at the device to
            // complete them, a new get waits for the next completion
            // instead of a wake-up of its own (`PARKED_FOR_READS`).
            let lazy = store.gets_in_progress().min(store.device_in_flight()) >= LAZY_WAKE_GETS_MIN;
            if lazy {
                wake.stats.lazy_waits.fetch_add(1, Ordering::Relaxed);
            }
            wake.parked.store(if lazy { PARKED_FOR_READS } else { PARKED }, Ordering::SeqCst);
            let arrived = match rx.try_recv() {
                Ok(r) => {
                    pending.push(r);
                    true
                }
                Err(_) => false,
            };
            // A checkpoint still encoding goes on instead of sleeping, and
            // so does work for the sidecar.
            let sleep = !arrived && !store.checkpoint_encoding() && !sidecar.as_ref().is_some_and(|s| s.has_work());
            if let Err(e) = store.submit_and_reap_gets(sleep, &mut finished) {
                tracing::error!(error = %e, "store read path failed");
            }
            wake.parked.store(AWAKE, Ordering::SeqCst);
            // Answer each get as soon as its read is verified, and send the
            // gets those answers lead to (a client issuing its next read
            // from a completion) to the device, REFILL_READS_MIN at a time,
            // before verifying the next read: the device's queue is
            // refilled within microseconds, not after the whole batch was
            // handled, and one system call (and doorbell) carries several
            // reads (the rest go with the next wait's enter).
            get_replies.answer_all(&mut finished);
            while store.finish_next_read(&mut finished) {
                if finished.is_empty() {
                    continue;
                }
                get_replies.answer_all(&mut finished);
                start_arrived_gets(&mut store, rx, &mut get_replies, &mut pending, &wake.stats, &HashSet::new());
                if store.reads_unsubmitted() >= REFILL_READS_MIN {
                    store.submit_gets(&mut finished);
                }
                get_replies.answer_all(&mut finished);
            }
            if let Some(sidecar) = &mut sidecar {
                let mut serving = Serving::new(wake, &mut get_replies, &mut pending, &mut finished);
                turn_and_submit(&mut store, sidecar, &mut serving, &HashSet::new());
            }
        }
    }
    let _ = store.close_in_place();
    if let Some(sidecar) = sidecar {
        close_sidecar(&mut store, sidecar, &mut Serving::new(wake, &mut get_replies, &mut pending, &mut finished));
    }
}

/// The thread's request state a pump or a sidecar's turn works on.
struct Serving<'a> {
    wake: &'a Wakeup,
    replies: &'a mut Replies,
    pending: &'a mut Vec<Request>,
    finished: &'a mut Vec<super::FinishedGet>,
}

impl<'a> Serving<'a> {
    fn new(
        wake: &'a Wakeup,
        replies: &'a mut Replies,
        pending: &'a mut Vec<Request>,
        finished: &'a mut Vec<super::FinishedGet>,
    ) -> Serving<'a> {
        Serving { wake, replies, pending, finished }
    }
}

/// Gives the sidecar its turn: the reads it starts go to the device with
/// the next submission (the caller's).
fn turn(store: &mut Store, sidecar: &mut Box<dyn Sidecar>, serving: &mut Serving<'_>, held: &HashSet<&[u8]>) {
    let mut local =
        Local { store, replies: serving.replies, pending: serving.pending, held, stats: &serving.wake.stats };
    sidecar.turn(&mut local);
    // A wait for the device (a commit's too) ends at the sidecar's own
    // time, for its next turn.
    store.wake_at(sidecar.due());
}

/// Gives the sidecar its turn and sends the reads it started to the device
/// at once (answering those that finished without I/O): for a turn the
/// caller does not follow with a submission of its own.
fn turn_and_submit(
    store: &mut Store,
    sidecar: &mut Box<dyn Sidecar>,
    serving: &mut Serving<'_>,
    held: &HashSet<&[u8]>,
) {
    turn(store, sidecar, serving, held);
    store.submit_gets(serving.finished);
    serving.replies.answer_all(serving.finished);
}

/// The sidecar's last turn (the answers of the reads just finished), then
/// its close.
fn close_sidecar(store: &mut Store, mut sidecar: Box<dyn Sidecar>, serving: &mut Serving<'_>) {
    let none = HashSet::new();
    turn(store, &mut sidecar, serving, &none);
    let mut local =
        Local { store, replies: serving.replies, pending: serving.pending, held: &none, stats: &serving.wake.stats };
    sidecar.close(&mut local);
}

/// The idle wait of a thread with a sidecar: for a request, the sidecar's
/// own work (announced through the device's waker, as a request is), its
/// own time (`Sidecar::due`, which its turn handed to the device) or
/// `wait`, whichever comes first; `Ok(None)` when woken without a request
/// before `wait` is over.
/// Reads the device completes meanwhile are collected as gets' are.
fn wait_beside(
    store: &mut Store,
    rx: &Receiver<Request>,
    wake: &Wakeup,
    sidecar: &dyn Sidecar,
    wait: Duration,
    finished: &mut Vec<super::FinishedGet>,
) -> std::result::Result<Option<Request>, RecvTimeoutError> {
    let until = Instant::now() + wait;
    // Set before the last look, so a request sent after it wakes us.
    wake.parked.store(PARKED, Ordering::SeqCst);
    let looked = rx.try_recv();
    let arrived = match looked {
        Ok(r) => Ok(Some(r)),
        Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
        Err(TryRecvError::Empty) if sidecar.has_work() => Ok(None),
        Err(TryRecvError::Empty) => {
            if let Err(e) = store.wait_for_wake(wait, finished) {
                tracing::error!(error = %e, "store idle wait failed");
            }
            match rx.try_recv() {
                Ok(r) => Ok(Some(r)),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if Instant::now() >= until => Err(RecvTimeoutError::Timeout),
                Err(TryRecvError::Empty) => Ok(None),
            }
        }
    };
    wake.parked.store(AWAKE, Ordering::SeqCst);
    arrived
}

/// What the thread does each time a commit or a reclamation pass waiting
/// on the device gets something back: answers finished gets, starts the
/// gets that arrived (except of keys in `held`) and answers what reads
/// only memory (`start_arrived_gets`), and sends the gets' reads to the
/// device; other requests wait in `pending`. Leaves `parked` set, so that
/// a request arriving while the caller waits wakes it (the caller clears
/// it when done). A commit applies its writes to the index only after its
/// last pump (what moves meanwhile is where chunks are, not what a key
/// holds), so nothing answered here sees a write before it is durable.
fn serve_meanwhile(
    store: &mut Store,
    rx: &Receiver<Request>,
    serving: &mut Serving<'_>,
    sidecar: &mut Option<Box<dyn Sidecar>>,
    held: &HashSet<&[u8]>,
) {
    let stats = &serving.wake.stats;
    store.take_finished_gets(serving.finished);
    serving.replies.answer_all(serving.finished);
    start_arrived_gets(store, rx, serving.replies, serving.pending, stats, held);
    if let Some(sidecar) = sidecar {
        turn(store, sidecar, serving, held);
    }
    // Set before the last look, so a request sent after it wakes us.
    serving.wake.parked.store(PARKED, Ordering::SeqCst);
    start_arrived_gets(store, rx, serving.replies, serving.pending, stats, held);
    store.submit_gets(serving.finished);
    serving.replies.answer_all(serving.finished);
    // The sidecar's work that came meanwhile (its nudge found the thread
    // awake), or that those answers made.
    if let Some(sidecar) = sidecar.as_mut().filter(|s| s.has_work()) {
        turn_and_submit(store, sidecar, serving, held);
    }
}

/// Starts the gets (and reads) waiting in the queue and answers the
/// lookups, stats, listings and scrub reports, at most a device queue's
/// worth per call (so a flood of gets cannot keep the thread from
/// finishing the reads it has); other requests, and gets, reads, lookups
/// and stats of a key in `held` (the batch a commit in progress writes),
/// go to `pending` for the next turn of the loop. Reordering is safe: a
/// request answered here overtakes only writes not yet acknowledged,
/// which it may or may not see.
fn start_arrived_gets(
    store: &mut Store,
    rx: &Receiver<Request>,
    replies: &mut Replies,
    pending: &mut Vec<Request>,
    stats: &StoreStats,
    held: &HashSet<&[u8]>,
) {
    for _ in 0..STORE_QUEUE_DEPTH {
        if pending.len() >= BATCH_OPS_MAX {
            return;
        }
        let Ok(request) = rx.try_recv() else { return };
        match request {
            Request::Get { key, offset, len, reply } if !held.contains(key.as_slice()) => {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                replies.start(store, &key, offset, len, reply);
            }
            Request::Read { key, range, reply } if !held.contains(key.as_slice()) => {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                read(store, replies, &key, range, reply);
            }
            other => {
                // No longer queued before it is answered: a caller that has
                // its answer sees the queue without it.
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                if let Some(other) = answer_from_memory(store, other, held) {
                    // Counted as queued again until the loop takes it from
                    // `pending`.
                    stats.queued.fetch_add(1, Ordering::Relaxed);
                    pending.push(other);
                }
            }
        }
    }
}

/// Answers a request that reads only memory (and returns `None`), unless
/// it names a key in `held`; gives any other back. A lookup is an index probe
/// (a put's first step, finding the key's holder, must not wait for
/// another key's commit), as is a stat; a listing and the scrubber's
/// reports read only memory too (a repair scan or an operator's status
/// must not wait for a commit or an idle pass), as does the list of
/// tombstones (the agent's reconciliation at start), keys of a batch in
/// progress showing as they were before it, as for a get overtaking a
/// write not yet acknowledged.
fn answer_from_memory(store: &Store, request: Request, held: &HashSet<&[u8]>) -> Option<Request> {
    match request {
        Request::Lookup { key, reply } if !held.contains(key.as_slice()) => reply(Ok(store.lookup(&key))),
        Request::Stat { key, reply } if !held.contains(key.as_slice()) => reply(Ok(store.stat(&key))),
        Request::List { prefix, start_after, limit, reply } => {
            reply(Ok(store.list(&prefix, start_after.as_deref(), limit)));
        }
        Request::Tombstones(reply) => reply(Ok(store.tombstones())),
        Request::ScrubStatus(reply) => reply(Ok(store.scrub_status())),
        Request::Damaged(reply) => reply(Ok(store.damaged_shards())),
        other => return Some(other),
    }
    None
}

/// A lookup and, for a shard, the get of the range asked for, in one
/// request: what a client's read needs, with one trip to the thread.
fn read(store: &mut Store, replies: &mut Replies, key: &[u8], range: Option<ByteRange>, reply: Reply<Read>) {
    match store.lookup(key) {
        Lookup::Shard(stat) => match range.map_or(Some((0, stat.size)), |r| r.resolve(stat.size)) {
            Some((offset, len)) => replies.start(
                store,
                key,
                offset,
                len,
                Box::new(move |r: Result<Vec<u8>>| reply(r.map(|bytes| Read::Shard { stat, offset, bytes }))),
            ),
            None => reply(Ok(Read::OutOfRange(stat))),
        },
        Lookup::Tombstone(sequence) => reply(Ok(Read::Tombstone(sequence))),
        Lookup::Absent => reply(Ok(Read::Absent)),
    }
}

/// The replies of gets in progress, in slots whose index is the get's id
/// (a free list reuses them): no hashing per get.
#[derive(Default)]
struct Replies {
    slots: Vec<Option<Reply<Vec<u8>>>>,
    free: Vec<u64>,
}

impl Replies {
    /// Starts a get on `store`, its reply parked until it finishes (or
    /// answered at once when it fails before any I/O).
    fn start(&mut self, store: &mut Store, key: &[u8], offset: u64, len: u64, reply: Reply<Vec<u8>>) {
        let id = self.park(reply);
        if let Err(e) = store.start_get(id, key, offset, len) {
            self.answer(id, Err(e));
        }
    }

    fn park(&mut self, reply: Reply<Vec<u8>>) -> u64 {
        if let Some(id) = self.free.pop() {
            self.slots[id as usize] = Some(reply);
            id
        } else {
            self.slots.push(Some(reply));
            self.slots.len() as u64 - 1
        }
    }

    fn answer(&mut self, id: u64, result: Result<Vec<u8>>) {
        if let Some(reply) = self.slots.get_mut(id as usize).and_then(Option::take) {
            self.free.push(id);
            reply(result);
        }
    }

    /// Replies to every finished get.
    fn answer_all(&mut self, finished: &mut Vec<(u64, Result<Vec<u8>>)>) {
        for (id, result) in finished.drain(..) {
            self.answer(id, result);
        }
    }
}
