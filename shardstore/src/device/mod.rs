//! The one I/O seam: [`BlockDevice`] is the only way the store touches a
//! device.
//!
//! Implementations:
//! - [`uring::UringDevice`]: production, io_uring with O_DIRECT on a block
//!   device or a regular file.
//! - [`sync::SyncDevice`]: `pread`/`pwrite`, the `psync` engine of the
//!   benchmark and a reference to compare io_uring against.
//! - [`sim::SimDevice`]: in memory, deterministic, able to crash (drop, tear
//!   or misdirect unflushed writes), fail chosen operations and rot bits.
//!
//! The interface is asynchronous: [`BlockDevice::submit`] queues an
//! operation that owns its buffer; [`BlockDevice::reap`] submits what is
//! queued in one batch and collects completions, each of which hands the
//! buffer back. Everything above this seam is the same code in production
//! and in every test.

pub mod buffer;
mod file;
pub mod sim;
pub mod sync;
pub mod uring;

use std::path::Path;
use std::sync::Arc;

pub use buffer::{BufferPool, IoBuf};
pub use file::TargetKind;

use crate::constants::IO_SIZE_BYTES_MAX;
use crate::error::{Error, OpKind, Result};

/// What a device is and what the engine managed to enable on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// The path as given, used in every error message.
    pub name: String,
    pub kind: TargetKind,
    pub size_bytes: u64,
    /// Smallest unit of O_DIRECT I/O (`BLKSSZGET`); every offset and length
    /// must be a multiple of it.
    pub logical_block_size: u64,
    /// Unit the medium writes atomically at best (`BLKPBSZGET`).
    pub physical_block_size: u64,
    pub features: EngineFeatures,
}

/// io_uring features in use on this handle; each falls back cleanly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineFeatures {
    pub registered_buffers: bool,
    pub registered_file: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

/// How to open a device.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub read_only: bool,
    /// Open block devices with `O_EXCL` (refused while mounted or held) and
    /// take an exclusive `flock` on regular files.
    pub exclusive: bool,
    /// Operations in flight at most (io_uring submission queue depth).
    pub queue_depth: u32,
    /// A pool to register with the ring; buffers from it use fixed-buffer
    /// operations, others plain ones.
    pub buffers: Option<BufferPool>,
    /// Register the file descriptor with the ring (io_uring only).
    pub register_file: bool,
    /// How long to keep retrying while the device is busy before failing
    /// with `Busy` (see `OPEN_BUSY_WAIT_MS_MAX` for why it can be busy).
    pub busy_wait_ms: u64,
    /// Queued operations are handed to the kernel as soon as this many are
    /// waiting (and always before waiting for completions). 1, the default,
    /// hands each over at once, as fio's `iodepth_batch_submit=1` does: on
    /// virtualised disks a batch submitted together tends to complete
    /// together, which starves the device of depth until the whole batch
    /// is back (io_uring only).
    pub submit_batch: u32,
    /// An operation in flight this long is a stall, reported through the
    /// [`StallWatch`] the store hands the device (io_uring only); 0 turns
    /// the watch off.
    pub stall_after_ms: u64,
    /// A write longer than this, queued while reads are in flight, goes to
    /// the kernel in pieces of this size (io_uring only; 0: whole). A read
    /// queued behind a write on the device waits for the whole write: a
    /// 4 KiB read behind a 1 MiB write waits for the megabyte.
    pub write_piece_bytes: u64,
    /// While reads are in flight, at most this many pieces of split writes
    /// are (the rest follow as pieces complete); with no read in flight the
    /// rest go at once.
    pub write_pieces_with_reads: u32,
    /// A flush submitted while nothing else is in flight on the device and
    /// no socket operation is on its ring is made by the device's own
    /// thread (`fdatasync`, or `fsync` on a block device) instead of an
    /// io-wq worker: one wake-up and two context switches fewer for a lone
    /// durable writer. The call's start is marked in the [`StallWatch`],
    /// so a flush that hangs is seen as a stall from other threads
    /// (io_uring only).
    pub flush_inline: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            exclusive: true,
            queue_depth: crate::constants::QUEUE_DEPTH_DEFAULT,
            buffers: None,
            register_file: true,
            busy_wait_ms: crate::constants::OPEN_BUSY_WAIT_MS_MAX,
            submit_batch: 1,
            stall_after_ms: crate::constants::IO_STALL_AFTER_MS_DEFAULT,
            write_piece_bytes: crate::constants::WRITE_PIECE_BYTES_DEFAULT,
            write_pieces_with_reads: crate::constants::WRITE_PIECES_WITH_READS_DEFAULT,
            flush_inline: true,
        }
    }
}

/// One operation. It owns its buffer until its completion returns it.
#[derive(Debug)]
pub struct IoOp {
    /// Chosen by the caller, returned in the completion.
    pub token: u64,
    pub kind: IoKind,
}

#[derive(Debug)]
pub enum IoKind {
    Read {
        offset: u64,
        buf: IoBuf,
    },
    /// `fua`: durable when complete (`RWF_DSYNC`), without a separate flush.
    Write {
        offset: u64,
        buf: IoBuf,
        fua: bool,
    },
    /// Makes every write completed before it durable.
    Flush,
}

impl IoKind {
    pub fn op(&self) -> OpKind {
        match self {
            IoKind::Read { .. } => OpKind::Read,
            IoKind::Write { .. } => OpKind::Write,
            IoKind::Flush => OpKind::Flush,
        }
    }

    fn extent(&self) -> (u64, u64) {
        match self {
            IoKind::Read { offset, buf } | IoKind::Write { offset, buf, .. } => (*offset, buf.len() as u64),
            IoKind::Flush => (0, 0),
        }
    }

    /// Offset, length and the buffer handed back in the completion.
    pub(crate) fn into_parts(self) -> (u64, u64, Option<IoBuf>) {
        match self {
            IoKind::Read { offset, buf } | IoKind::Write { offset, buf, .. } => (offset, buf.len() as u64, Some(buf)),
            IoKind::Flush => (0, 0, None),
        }
    }
}

/// The outcome of one operation.
#[derive(Debug)]
pub struct Completion {
    pub token: u64,
    pub op: OpKind,
    pub offset: u64,
    pub len: u64,
    pub result: Result<()>,
    /// The operation's buffer, back with the caller (reads: filled).
    pub buf: Option<IoBuf>,
}

/// The seam between the store and a device.
pub trait BlockDevice: Send {
    fn info(&self) -> &DeviceInfo;

    /// Queues one operation. Fails at once, without I/O, when the operation
    /// is misaligned, out of range, a write to a poisoned or read-only
    /// handle, or when `queue_depth` operations are already in flight.
    fn submit(&mut self, op: IoOp) -> Result<()>;

    /// Queues one operation like [`BlockDevice::submit`], but leaves it
    /// for the next [`BlockDevice::reap`] or [`BlockDevice::reap_or_wake`]
    /// to hand to the kernel: a caller about to wait submits and waits in
    /// one system call.
    fn submit_with_next_reap(&mut self, op: IoOp) -> Result<()> {
        self.submit(op)
    }

    /// Submits everything queued and appends completions to `out`, waiting
    /// until at least `min_complete` (capped at what is in flight) arrived.
    /// Returns how many were appended.
    fn reap(&mut self, min_complete: usize, out: &mut Vec<Completion>) -> Result<usize>;

    /// Operations submitted and not yet reaped.
    fn in_flight(&self) -> usize;

    fn queue_depth(&self) -> usize;

    /// Writes sent in pieces since the device was opened (longer than a
    /// piece, queued while reads were in flight); 0 for devices that never
    /// split a write.
    fn writes_split(&self) -> u64 {
        0
    }

    /// True once a flush has failed; writes and flushes are then refused.
    fn is_poisoned(&self) -> bool;

    /// Registers `pool` with the device for its whole life when it has
    /// none yet (io_uring: fixed buffers, so no I/O pins its pages again).
    /// Returns whether it did; a refusal (locked-memory limit) is not an
    /// error: plain reads and writes work with any buffer.
    fn register_pool(&mut self, _pool: &BufferPool) -> bool {
        false
    }

    /// A handle other threads use to end a [`BlockDevice::reap_or_wake`]
    /// early (a caller queued new work for the thread driving this device).
    /// `None` for devices whose waits are never long (simulated, psync).
    fn waker(&mut self) -> Result<Option<Arc<dyn Wake>>> {
        Ok(None)
    }

    /// Waits until at least one operation completes or the waker is
    /// called, and appends completions to `out`. Returns how many.
    fn reap_or_wake(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        self.reap(1, out)
    }

    /// Ends a [`BlockDevice::reap_or_wake`] or
    /// [`BlockDevice::wait_for_wake`] in progress at `at` as the waker
    /// would, once (the time of work of the waiting thread's own, a
    /// deadline; `None`: no such time). Devices without a waker ignore it.
    fn wake_at(&mut self, _at: Option<std::time::Instant>) {}

    /// As [`BlockDevice::reap_or_wake`], but also with nothing in flight,
    /// and for at most `timeout`: the wait of a thread that is idle but
    /// for what its waker announces (a store thread serving connections,
    /// `store::thread::Sidecar`). Devices without a waker wait for what is
    /// in flight, or sleep out the timeout.
    fn wait_for_wake(&mut self, timeout: std::time::Duration, out: &mut Vec<Completion>) -> Result<usize> {
        if self.in_flight() > 0 {
            return self.reap_or_wake(out);
        }
        std::thread::sleep(timeout);
        Ok(0)
    }

    /// Queues a socket operation on the device's own ring (io_uring only:
    /// others refuse): the connections of the thread driving the device
    /// share its ring, so that its waits for completions or a wake-up end
    /// on theirs too. Handed to the kernel with the next wait or reap;
    /// completions are collected by every wait and reap, and taken with
    /// [`BlockDevice::take_socket_completions`]. At most `SOCKET_OPS_MAX`
    /// in flight. The descriptor stays open while its operation is.
    fn submit_socket(&mut self, _token: u64, _op: crate::sockets::SocketOp) -> Result<()> {
        Err(Error::InvalidArgument(format!("{}: socket operations need an io_uring device", self.info().name)))
    }

    /// Socket operations completed since the last call.
    fn take_socket_completions(&mut self, _out: &mut Vec<crate::sockets::SocketDone>) {}

    /// Socket operations queued or in flight.
    fn sockets_in_flight(&self) -> usize {
        0
    }

    /// Whether `submit_socket` takes operations.
    fn supports_sockets(&self) -> bool {
        false
    }

    /// A duplicate of the device's descriptor (O_DIRECT, as opened), for
    /// other threads to read it on rings of their own
    /// (`store::placed`); `None` when the device has none to share.
    fn try_clone_file(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        None
    }

    /// Has the device report operations that stop completing to `watch`
    /// (see [`StallWatch`]). Devices that never wait on hardware (the
    /// simulated one, psync, whose calls block their caller) ignore it.
    fn watch_stalls(&mut self, _watch: Arc<StallWatch>) {}
}

/// Ends a device thread's wait from another thread.
pub trait Wake: Send + Sync + std::fmt::Debug {
    fn wake(&self);
}

/// What a device publishes about operations that stop completing (a hung
/// drive, controller or path: an I/O the hardware never answers blocks the
/// thread waiting for it, and no latency is ever recorded for it). While
/// it waits for completions, a device checks at least every
/// [`StallWatch::check_interval`] whether its oldest operation in flight is
/// older than its `stall_after_ms`: it is then stalled (counted once, its
/// oldest operation's age published and logged) until no operation that
/// old is left in flight. Read by other threads (the drive-health judge,
/// metrics).
///
/// A device thread that blocks in a call of its own (a flush made
/// in-line, `OpenOptions::flush_inline`) cannot look while it waits: it
/// marks the call's start ([`StallWatch::blocking`]), and readers on other
/// threads see the stall from that mark once it is past the threshold.
#[derive(Debug, Default)]
pub struct StallWatch {
    /// Age (ms) of the oldest operation in flight while stalled; 0 when not.
    stalled_ms: std::sync::atomic::AtomicU64,
    /// Stalls since the device was opened.
    stalls: std::sync::atomic::AtomicU64,
    /// When the device thread's blocking call began, in ms since
    /// `STALL_EPOCH` plus one; 0 when it is not in one.
    blocking_since: std::sync::atomic::AtomicU64,
    /// The device's stall threshold (ms), for readers of a blocking call.
    after_ms: std::sync::atomic::AtomicU64,
}

/// The origin of `StallWatch::blocking_since`.
static STALL_EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn stall_clock_ms() -> u64 {
    STALL_EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// A blocking call in progress on the device thread, seen by the watch's
/// readers until it ends (`StallWatch::blocking`).
#[must_use]
#[derive(Debug)]
pub struct Blocking<'a> {
    watch: &'a StallWatch,
}

impl Blocking<'_> {
    /// Ends the call: one that lasted past the threshold is counted and
    /// logged as a stall that began and ended.
    pub fn end(self, name: &str, what: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let took_ms = stall_clock_ms().saturating_sub(self.watch.blocking_since.load(Relaxed) - 1);
        let after = self.watch.after_ms.load(Relaxed);
        if after > 0 && took_ms >= after {
            self.watch.stalls.fetch_add(1, Relaxed);
            let took_s = took_ms as f64 / 1000.0;
            tracing::error!(
                device = %name, op = %what, waited_s = took_s,
                "I/O stalled: a {what} made on the device's thread took {took_s} s"
            );
        }
    }
}

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        self.watch.blocking_since.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl StallWatch {
    /// How often a waiting device looks at its operations' ages, at most:
    /// a quarter of the stall threshold, and at least every second.
    pub fn check_interval(stall_after: std::time::Duration) -> std::time::Duration {
        (stall_after / 4).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1))
    }

    /// How long the oldest operation in flight has been, while stalled
    /// (an operation in the ring, or a blocking call on the device's
    /// thread, past the threshold).
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut ms = self.stalled_ms.load(Relaxed);
        let since = self.blocking_since.load(Relaxed);
        let after = self.after_ms.load(Relaxed);
        if since > 0 && after > 0 {
            let age = stall_clock_ms().saturating_sub(since - 1);
            if age >= after {
                ms = ms.max(age);
            }
        }
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// The device's stall threshold, for the readers of a blocking call.
    pub fn set_threshold(&self, after: std::time::Duration) {
        self.after_ms.store((after.as_millis() as u64).max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Marks a blocking call on the device's thread from now until the
    /// guard is ended or dropped.
    pub fn blocking(&self) -> Blocking<'_> {
        self.blocking_since.store(stall_clock_ms() + 1, std::sync::atomic::Ordering::Relaxed);
        Blocking { watch: self }
    }

    /// Stalls since the device was opened.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The device's oldest operation in flight is `age` old (`None`: none
    /// is past the threshold). Returns whether this starts a stall.
    pub fn publish(&self, age: Option<std::time::Duration>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = age.map_or(0, |a| (a.as_millis() as u64).max(1));
        let was = self.stalled_ms.swap(ms, Relaxed);
        let starts = was == 0 && ms > 0;
        if starts {
            self.stalls.fetch_add(1, Relaxed);
        }
        starts
    }
}

/// Blocking helpers for code that does one operation at a time (superblock
/// updates, tools). They must not be mixed with asynchronous operations in
/// flight on the same handle.
pub trait BlockDeviceExt: BlockDevice {
    fn run_one(&mut self, kind: IoKind) -> Result<Option<IoBuf>> {
        assert_eq!(self.in_flight(), 0, "blocking helper used with operations in flight");
        self.submit(IoOp { token: u64::MAX, kind })?;
        let mut out = Vec::with_capacity(1);
        self.reap(1, &mut out)?;
        let completion = out.pop().expect("reap(1) returned a completion");
        assert_eq!(completion.token, u64::MAX);
        completion.result.map(|()| completion.buf)
    }

    /// Reads `len` bytes at `offset` into a fresh standalone buffer.
    fn read_at(&mut self, offset: u64, len: usize) -> Result<IoBuf> {
        let buf = IoBuf::standalone(len)?;
        Ok(self.run_one(IoKind::Read { offset, buf })?.expect("read returns its buffer"))
    }

    /// Writes `data` at `offset` (copied into an aligned buffer).
    fn write_at(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        self.run_one(IoKind::Write { offset, buf: IoBuf::copy_of(data)?, fua }).map(drop)
    }

    fn flush(&mut self) -> Result<()> {
        self.run_one(IoKind::Flush).map(drop)
    }
}

impl<T: BlockDevice + ?Sized> BlockDeviceExt for T {}

/// The checks every implementation makes before accepting an operation.
pub(crate) fn validate(info: &DeviceInfo, kind: &IoKind, read_only: bool, poisoned: bool) -> Result<()> {
    let op = kind.op();
    let name = || info.name.clone();
    if op != OpKind::Read && poisoned {
        return Err(Error::Poisoned { device: name(), op });
    }
    if op != OpKind::Read && read_only {
        let (offset, len) = kind.extent();
        return Err(Error::io(
            &info.name,
            op,
            offset,
            len,
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "device handle is read-only"),
        ));
    }
    if op == OpKind::Flush {
        return Ok(());
    }
    let (offset, len) = kind.extent();
    let align = info.logical_block_size;
    if len == 0 || offset % align != 0 || len % align != 0 {
        return Err(Error::Misaligned { device: name(), op, offset, len, align });
    }
    if len > IO_SIZE_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "{}: {op} of {len} bytes exceeds the largest single I/O ({IO_SIZE_BYTES_MAX} bytes)",
            info.name
        )));
    }
    if offset.checked_add(len).is_none_or(|end| end > info.size_bytes) {
        return Err(Error::OutOfRange { device: name(), op, offset, len, size: info.size_bytes });
    }
    Ok(())
}

/// Opens `path` with the production engine.
pub fn open(path: &Path, options: &OpenOptions) -> Result<uring::UringDevice> {
    uring::UringDevice::open(path, options)
}
