//! The production engine: io_uring driven directly, one ring per device
//! handle, O_DIRECT.
//!
//! Operations are a closed enum ([`IoKind`]); each in-flight operation sits
//! in a preallocated slot whose index is the SQE's `user_data`, and owns its
//! buffer until its CQE is reaped, so the kernel never writes into memory
//! safe code can reach. Submission is batched: `submit` only fills SQEs,
//! `reap` hands the whole batch to the kernel in one `io_uring_enter`.
//!
//! A long write queued while reads are in flight is sent in pieces, a few
//! at a time while reads keep coming (`OpenOptions::write_piece_bytes`):
//! the device serves requests in the order it takes them, and a 4 KiB read
//! behind a whole 1 MiB write waits for all of it. The write completes,
//! as one operation, when its last piece does.
//!
//! Every feature falls back cleanly: `SINGLE_ISSUER`/`DEFER_TASKRUN` (6.0+
//! and 6.1+), registered buffers (refused when `RLIMIT_MEMLOCK` is too low
//! for a non-root user) and a registered file.
//!
//! Threading: with `SINGLE_ISSUER` the ring belongs to one thread. The ring
//! is created disabled and enabled by the first `submit`, so a handle may
//! be opened on one thread and moved to the thread that drives it, but must
//! then stay there.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::file::{open_target, TargetKind};
use super::{
    validate, BlockDevice, BufferPool, Completion, DeviceInfo, EngineFeatures, IoKind, IoOp, OpenOptions, StallWatch,
    Wake,
};
use crate::constants::{QUEUE_DEPTH_MAX, REGISTERED_BUFFERS_COUNT_MAX, SOCKET_OPS_MAX};
use crate::device::IoBuf;
use crate::error::{Error, OpKind, Result};
use crate::sockets::{SocketDone, SocketOp, SocketSlots};

mod pieces;

use pieces::Pieces;

/// `IORING_ENTER_GETEVENTS`: with `DEFER_TASKRUN`, completions are only
/// posted while the owning thread is inside `io_uring_enter` with this flag.
const ENTER_GETEVENTS: u32 = 1;

/// `user_data` of the poll on the wake eventfd; slots are numbered from 0.
const WAKE_TOKEN: u64 = u64::MAX;
/// The bit of `user_data` that marks a socket operation (`submit_socket`);
/// block operations carry a slot and a piece number far below it.
const SOCKET_TAG: u64 = 1 << 62;
/// Submission entries for socket operations, beyond the device's queue:
/// more queued at once are handed to the kernel early.
const SOCKET_ENTRIES: u32 = 256;

/// A piece of a split write carries its slot in the low 32 bits of
/// `user_data` and its number plus one above them (0: a whole operation).
const PIECE_SHIFT: u32 = 32;

/// An SQE built by `$build` (a closure taking a file argument) against the
/// device's registered file when it has one, else its plain descriptor.
macro_rules! with_fd {
    ($dev:expr, $build:expr) => {
        if $dev.info.features.registered_file {
            $build(types::Fixed(0))
        } else {
            $build(types::Fd($dev.file.as_raw_fd()))
        }
    };
}

/// Wakes the thread driving a ring: a write to an eventfd the ring polls.
#[derive(Debug)]
struct EventWaker(EventFd);

impl Wake for EventWaker {
    fn wake(&self) {
        // A full counter (EAGAIN) already means a wake is pending.
        let _ = self.0.write(1);
    }
}

pub struct UringDevice {
    info: DeviceInfo,
    // Field order matters for Drop: the ring goes before the file and pool.
    ring: IoUring,
    file: File,
    registered_pool: Option<BufferPool>,
    ring_enabled: bool,
    read_only: bool,
    poisoned: bool,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<u32>,
    queued: usize,
    /// `OpenOptions::submit_batch`: queued SQEs that trigger an enter.
    submit_batch: usize,
    in_flight: usize,
    /// `OpenOptions::stall_after_ms` (`None`: 0, off).
    stall_after: Option<Duration>,
    /// Where stalls are published, once the store asked (`watch_stalls`).
    stall: Option<Arc<StallWatch>>,
    /// The wake eventfd, once a waker was asked for, and whether a poll on
    /// it is in the ring.
    wake: Option<Arc<EventWaker>>,
    wake_armed: bool,
    /// When a wait for completions ends as if woken (`wake_at`).
    wake_at: Option<Instant>,
    /// Socket operations on this ring (`submit_socket`), and their
    /// completions reaped and not yet taken.
    sockets: SocketSlots,
    socket_done: Vec<SocketDone>,
    /// `OpenOptions::write_piece_bytes` (0: writes go whole) and
    /// `write_pieces_with_reads`.
    piece_bytes: u64,
    pieces_with_reads: usize,
    /// Reads in flight, and pieces of split writes in the kernel.
    reads_in_flight: usize,
    pieces_in_flight: usize,
    /// Slots of split writes with pieces not yet sent, oldest first.
    paced: VecDeque<u32>,
    /// Pieces are queued that no enter has handed over yet.
    pieces_queued: bool,
    /// Writes sent in pieces since the device was opened.
    writes_split: u64,
    /// `OpenOptions::flush_inline`.
    flush_inline: bool,
    /// Completions of flushes made in-line, not yet reaped.
    ready: Vec<Completion>,
    /// Flushes made in-line since the device was opened.
    flushes_inline: u64,
}

#[derive(Debug)]
struct InFlight {
    token: u64,
    op: OpKind,
    offset: u64,
    len: u64,
    buf: Option<IoBuf>,
    /// When it was queued (for the stall watch).
    since: Instant,
    /// A write sent in pieces: how far it is sent and what came back.
    pieces: Option<Pieces>,
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("info", &self.info)
            .field("in_flight", &self.in_flight)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn build_ring(entries: u32, completions: u32) -> io::Result<(IoUring, bool, bool)> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(completions).setup_single_issuer().setup_defer_taskrun().setup_r_disabled();
    match builder.build(entries) {
        Ok(ring) => return Ok((ring, true, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let mut builder = IoUring::builder();
    builder.setup_cqsize(completions).setup_single_issuer().setup_r_disabled();
    match builder.build(entries) {
        Ok(ring) => return Ok((ring, true, false)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    IoUring::builder().setup_cqsize(completions).build(entries).map(|ring| (ring, false, false))
}

impl UringDevice {
    /// Flushes made by the device's thread (`OpenOptions::flush_inline`)
    /// since it was opened.
    pub fn flushes_inline(&self) -> u64 {
        self.flushes_inline
    }

    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let target = open_target(path, options.read_only, options.exclusive, options.busy_wait_ms)?;
        let name = path.display().to_string();
        if options.write_piece_bytes % target.logical_block_size != 0 {
            return Err(Error::InvalidArgument(format!(
                "{name}: write_piece_bytes {} is not a multiple of the device's {}-byte blocks",
                options.write_piece_bytes, target.logical_block_size
            )));
        }
        let depth = options.queue_depth.clamp(1, QUEUE_DEPTH_MAX);
        // One more entry than slots (the wake poll) and room for socket
        // operations; completions for all of them in flight at once.
        let entries = depth + 1 + SOCKET_ENTRIES;
        let completions = (2 * (depth + 1) + SOCKET_OPS_MAX as u32).next_power_of_two();
        let (ring, single_issuer, defer_taskrun) = build_ring(entries, completions).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENOMEM) => " (locked-memory limit too low? raise LimitMEMLOCK / ulimit -l)",
                Some(libc::EPERM) => " (io_uring is disabled: see sysctl kernel.io_uring_disabled)",
                Some(libc::ENOSYS) => " (this kernel has no io_uring)",
                _ => "",
            };
            Error::Open {
                device: name.clone(),
                cause: io::Error::new(e.kind(), format!("io_uring_setup failed: {e}{hint}")),
            }
        })?;
        let ring_enabled = !single_issuer;

        let registered_file =
            options.register_file && ring.submitter().register_files(&[target.file.as_raw_fd()]).is_ok();

        let registered_pool = options.buffers.as_ref().filter(|pool| register(&ring, pool, &name)).cloned();

        let info = DeviceInfo {
            name,
            kind: target.kind,
            size_bytes: target.size_bytes,
            logical_block_size: target.logical_block_size,
            physical_block_size: target.physical_block_size,
            features: EngineFeatures {
                registered_buffers: registered_pool.is_some(),
                registered_file,
                single_issuer,
                defer_taskrun,
            },
        };
        let depth = depth as usize;
        let ext_arg = ring.params().is_feature_ext_arg();
        if !ext_arg && options.stall_after_ms > 0 {
            tracing::warn!(device = %info.name, "this kernel's io_uring cannot wait with a timeout: I/O stalls are not watched");
        }
        Ok(UringDevice {
            info,
            ring,
            file: target.file,
            registered_pool,
            ring_enabled,
            read_only: options.read_only,
            poisoned: false,
            slots: (0..depth).map(|_| None).collect(),
            free_slots: (0..depth as u32).rev().collect(),
            queued: 0,
            submit_batch: options.submit_batch.max(1) as usize,
            in_flight: 0,
            // Timed waits need IORING_FEAT_EXT_ARG (Linux 5.11); without
            // it stalls go unwatched.
            stall_after: (options.stall_after_ms > 0 && ext_arg).then(|| Duration::from_millis(options.stall_after_ms)),
            stall: None,
            wake: None,
            wake_armed: false,
            wake_at: None,
            sockets: SocketSlots::new(SOCKET_TAG),
            socket_done: Vec::new(),
            piece_bytes: options.write_piece_bytes,
            pieces_with_reads: options.write_pieces_with_reads.max(1) as usize,
            reads_in_flight: 0,
            pieces_in_flight: 0,
            paced: VecDeque::with_capacity(depth),
            pieces_queued: false,
            writes_split: 0,
            flush_inline: options.flush_inline,
            ready: Vec::new(),
            flushes_inline: 0,
        })
    }

    fn entry(&self, kind: &mut IoKind) -> squeue::Entry {
        let pool_id = self.registered_pool.as_ref().map(BufferPool::id);
        match kind {
            IoKind::Read { offset, buf } => {
                let len = buf.len() as u32;
                let ptr = buf.as_mut_ptr();
                if Some(buf.pool_id()) == pool_id {
                    let index = buf.slot() as u16;
                    with_fd!(self, |f| opcode::ReadFixed::new(f, ptr, len, index).offset(*offset).build())
                } else {
                    with_fd!(self, |f| opcode::Read::new(f, ptr, len).offset(*offset).build())
                }
            }
            IoKind::Write { offset, buf, fua } => {
                let flags = if *fua { libc::RWF_DSYNC } else { 0 };
                let fixed = (Some(buf.pool_id()) == pool_id).then(|| buf.slot() as u16);
                self.write_entry(buf.as_ptr(), buf.len() as u32, *offset, fixed, flags)
            }
            IoKind::Flush => {
                // On a block device fsync and fdatasync both flush the
                // volatile write cache; on a file, fdatasync also persists
                // the block allocations needed to read the data back.
                let flags = if self.info.kind == TargetKind::File {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                // The plain descriptor even when the file is registered:
                // a flush always runs on an io-wq worker, and a worker
                // resolving a registered file takes the ring's submission
                // lock, spinning while this thread submits or reaps (perf:
                // a sixth of a single durable writer's samples).
                opcode::Fsync::new(types::Fd(self.file.as_raw_fd())).flags(flags).build()
            }
        }
    }

    /// Moves every posted completion to `out`; a wake is consumed, not
    /// reported.
    fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if cqe.user_data() == WAKE_TOKEN {
                self.wake_armed = false;
                if let Some(w) = &self.wake {
                    let _ = w.0.read();
                }
                continue;
            }
            if self.sockets.owns(cqe.user_data()) {
                self.socket_done.push(self.sockets.complete(cqe.user_data(), cqe.result()));
                continue;
            }
            let slot = (cqe.user_data() & u64::from(u32::MAX)) as usize;
            let piece = cqe.user_data() >> PIECE_SHIFT;
            if piece > 0 {
                self.pieces_in_flight -= 1;
                let f = self.slots[slot].as_mut().expect("a piece of a write in flight");
                let (last, failed) = f.piece_done(piece - 1, cqe.result(), self.piece_bytes, &self.info.name);
                if failed {
                    // Nothing more of it is sent.
                    self.paced.retain(|&s| s as usize != slot);
                }
                if !last {
                    continue;
                }
            }
            let InFlight { token, op, offset, len, buf, pieces, .. } =
                self.slots[slot].take().expect("completion for a slot with no operation in flight");
            self.free_slots.push(slot as u32);
            self.in_flight -= 1;
            if op == OpKind::Read {
                self.reads_in_flight -= 1;
            }
            let res = cqe.result();
            let result = if let Some(p) = pieces {
                p.failure.map_or(Ok(()), Err)
            } else if res < 0 {
                Err(Error::io(&self.info.name, op, offset, len, io::Error::from_raw_os_error(-res)))
            } else if op != OpKind::Flush && res as u64 != len {
                Err(Error::io(
                    &self.info.name,
                    op,
                    offset,
                    len,
                    io::Error::new(io::ErrorKind::UnexpectedEof, format!("short {op}: {res} of {len} bytes")),
                ))
            } else {
                Ok(())
            };
            if op == OpKind::Flush && result.is_err() {
                self.poisoned = true;
            }
            out.push(Completion { token, op, offset, len, result, buf });
        }
        drop(cq);
        self.send_pieces();
        // A stall whose operation was just drained ends now, not at the next wait.
        if self.stall.as_ref().is_some_and(|w| w.stalled_for().is_some()) {
            self.check_stalls();
        }
    }

    /// A write SQE of `len` bytes from `ptr` at `offset`, from registered
    /// buffer `fixed` if it is one.
    fn write_entry(&self, ptr: *const u8, len: u32, offset: u64, fixed: Option<u16>, flags: i32) -> squeue::Entry {
        match fixed {
            Some(index) => {
                with_fd!(self, |f| opcode::WriteFixed::new(f, ptr, len, index).offset(offset).rw_flags(flags).build())
            }
            None => with_fd!(self, |f| opcode::Write::new(f, ptr, len).offset(offset).rw_flags(flags).build()),
        }
    }

    /// Puts one operation in the submission queue without entering the
    /// kernel.
    fn queue(&mut self, op: IoOp) -> Result<()> {
        let IoOp { token, mut kind } = op;
        validate(&self.info, &kind, self.read_only, self.poisoned)?;
        if matches!(kind, IoKind::Flush) && self.flush_inline && self.in_flight == 0 && self.sockets.in_flight() == 0 {
            self.flush_now(token);
            return Ok(());
        }
        let Some(slot) = self.free_slots.pop() else {
            return Err(Error::QueueFull { device: self.info.name.clone(), depth: self.slots.len() });
        };
        let split = match &kind {
            IoKind::Write { buf, fua, .. } if self.reads_in_flight > 0 && self.piece_bytes > 0 => {
                (buf.len() as u64 > self.piece_bytes).then_some(*fua)
            }
            _ => None,
        };
        let op_kind = kind.op();
        let entry = split.is_none().then(|| self.entry(&mut kind).user_data(u64::from(slot)));
        let (offset, len, buf) = kind.into_parts();
        let pieces = split.map(|fua| Pieces { fua, sent: 0, outstanding: 0, failure: None });
        debug_assert!(self.slots[slot as usize].is_none());
        self.slots[slot as usize] =
            Some(InFlight { token, op: op_kind, offset, len, buf, since: Instant::now(), pieces });
        self.in_flight += 1;
        if op_kind == OpKind::Read {
            self.reads_in_flight += 1;
        }
        let Some(entry) = entry else {
            self.paced.push_back(slot);
            self.writes_split += 1;
            self.send_pieces();
            return Ok(());
        };
        if self.ring.submission().is_full() {
            // Pieces of split writes can fill the queue the slots size.
            let _ = self.enter(0, None);
        }
        // SAFETY: the SQE points into the buffer now owned by the slot,
        // which keeps it alive and untouched until the CQE is reaped; the
        // fd (or registered index 0) stays open as long as the ring.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The kernel took nothing: the operation is not in flight.
            self.slots[slot as usize] = None;
            self.free_slots.push(slot);
            self.in_flight -= 1;
            if op_kind == OpKind::Read {
                self.reads_in_flight -= 1;
            }
            return Err(Error::QueueFull { device: self.info.name.clone(), depth: self.slots.len() });
        }
        self.queued += 1;
        Ok(())
    }

    /// Submits what is queued and waits for `want` completions, or until
    /// `until`.
    fn enter(&mut self, want: usize, until: Option<Instant>) -> Result<()> {
        self.enable_ring()?;
        // A wait that must also watch for stalls wakes up at least every
        // check interval to look at the operations' ages.
        let watched = self.stall.as_ref().and(self.stall_after).filter(|_| want > 0);
        loop {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            let timeout = watched.map(StallWatch::check_interval).into_iter().chain(left).min();
            let result = if want == 0 && self.info.features.defer_taskrun {
                // SAFETY: no extended argument is passed; the call only
                // submits queued SQEs and runs deferred completion work.
                unsafe { self.ring.submitter().enter::<libc::sigset_t>(self.queued as u32, 0, ENTER_GETEVENTS, None) }
            } else if let Some(timeout) = timeout {
                let ts = types::Timespec::from(timeout);
                self.ring.submitter().submit_with_args(want, &types::SubmitArgs::new().timespec(&ts))
            } else {
                self.ring.submitter().submit_and_wait(want)
            };
            let over = until.is_some_and(|u| Instant::now() >= u);
            match result {
                // A wait that timed out after submitting also returns Ok:
                // it is done once `want` completions are there (or at `until`).
                Ok(_) if timeout.is_none() || over || self.ring.completion().len() >= want => {
                    self.queued = 0;
                    self.pieces_queued = false;
                    // A published stall is looked at again after each wait.
                    if self.stall.as_ref().is_some_and(|w| w.stalled_for().is_some()) {
                        self.check_stalls();
                    }
                    return Ok(());
                }
                Ok(_) => {
                    self.queued = 0;
                    self.pieces_queued = false;
                    self.check_stalls();
                }
                Err(e) if e.raw_os_error() == Some(libc::ETIME) && over => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => self.check_stalls(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(Error::io(&self.info.name, OpKind::Submit, 0, 0, e)),
            }
        }
    }

    /// `wake_at` ends one wait: forgotten once past.
    fn forget_wake_at_once_past(&mut self) {
        self.wake_at = self.wake_at.filter(|&at| Instant::now() < at);
    }

    /// Puts a poll on the wake eventfd on the ring, unless one is there.
    fn arm_wake(&mut self) {
        let Some(wake) = &self.wake else { return };
        if self.wake_armed {
            return;
        }
        let entry =
            opcode::PollAdd::new(types::Fd(wake.0.as_raw_fd()), libc::POLLIN as u32).build().user_data(WAKE_TOKEN);
        // SAFETY: the poll reads no memory of ours; the eventfd lives in
        // `self.wake` as long as the ring.
        unsafe {
            self.ring.submission().push(&entry).expect("the ring has an entry for the wake poll");
        }
        self.queued += 1;
        self.wake_armed = true;
    }

    /// Enables the ring (created disabled, so that it can be opened on
    /// one thread and driven on another) at its first use.
    fn enable_ring(&mut self) -> Result<()> {
        if !self.ring_enabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| Error::io(&self.info.name, OpKind::Submit, 0, 0, e))?;
            self.ring_enabled = true;
        }
        Ok(())
    }

    /// Submits what is queued and waits for one completion (the wake
    /// poll's, with nothing else in flight) for at most `timeout`.
    fn enter_for(&mut self, timeout: Duration) -> Result<()> {
        self.enable_ring()?;
        let ts = types::Timespec::from(timeout);
        let result = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
        match result {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(Error::io(&self.info.name, OpKind::Submit, 0, 0, e)),
        }
        self.queued = 0;
        Ok(())
    }

    /// A flush made by this thread (`OpenOptions::flush_inline`), its
    /// completion reaped as a ring's would be. Nothing else is in flight,
    /// so the flush covers every write completed before it, as one from
    /// the ring does.
    fn flush_now(&mut self, token: u64) {
        let blocking = self.stall.as_ref().map(|w| w.blocking());
        let result = if self.info.kind == TargetKind::File { self.file.sync_data() } else { self.file.sync_all() };
        if let Some(b) = blocking {
            b.end(&self.info.name, "flush");
        }
        let result = result.map_err(|e| Error::io(&self.info.name, OpKind::Flush, 0, 0, e));
        if result.is_err() {
            self.poisoned = true;
        }
        self.flushes_inline += 1;
        self.ready.push(Completion { token, op: OpKind::Flush, offset: 0, len: 0, result, buf: None });
    }

    /// Publishes the age of the oldest operation in flight when it is past
    /// the stall threshold (logging a stall's start, its end, and every
    /// further threshold's worth of waiting), or the end of a stall.
    fn check_stalls(&self) {
        let (Some(watch), Some(after)) = (&self.stall, self.stall_after) else { return };
        let oldest = self.slots.iter().flatten().min_by_key(|f| f.since);
        let age = oldest.map(|f| f.since.elapsed()).filter(|age| *age >= after);
        let name = &self.info.name;
        if let (Some(age), Some(op)) = (age, oldest) {
            let stuck = self.slots.iter().flatten().filter(|f| f.since.elapsed() >= after).count();
            let previous = watch.stalled_for();
            if watch.publish(Some(age)) {
                tracing::error!(
                    device = %name, op = %op.op, offset = op.offset, len = op.len,
                    waited_s = age.as_secs_f64(), stuck, in_flight = self.in_flight,
                    "I/O stalled: the device has not completed an operation in {} s", after.as_secs_f64()
                );
            } else if previous.is_some_and(|p| p.as_millis() / after.as_millis() < age.as_millis() / after.as_millis())
            {
                tracing::error!(
                    device = %name, op = %op.op, offset = op.offset, waited_s = age.as_secs_f64(), stuck,
                    "I/O still stalled"
                );
            }
        } else {
            if let Some(was) = watch.stalled_for() {
                tracing::warn!(device = %name, stalled_s = was.as_secs_f64(), "I/O completing again after a stall");
            }
            watch.publish(None);
        }
    }
}

/// Registers `pool`'s slots as the ring's fixed buffers; false when the
/// pool is too large or the kernel refuses (locked-memory limit).
fn register(ring: &IoUring, pool: &BufferPool, name: &str) -> bool {
    if pool.slot_count() > REGISTERED_BUFFERS_COUNT_MAX {
        return false;
    }
    let iovecs = pool.iovecs();
    // SAFETY: the iovecs describe the pool's mapping, which the caller
    // keeps alive (`registered_pool`) for as long as the ring.
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(device = %name, error = %e, "registered buffers refused; using plain reads and writes");
            false
        }
    }
}

impl BlockDevice for UringDevice {
    fn writes_split(&self) -> u64 {
        self.writes_split
    }

    fn register_pool(&mut self, pool: &BufferPool) -> bool {
        if self.registered_pool.is_some() || !register(&self.ring, pool, &self.info.name) {
            return false;
        }
        self.registered_pool = Some(pool.clone());
        self.info.features.registered_buffers = true;
        true
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn submit(&mut self, op: IoOp) -> Result<()> {
        self.queue(op)?;
        if self.queued >= self.submit_batch {
            // The operation is accepted either way: if the kernel refuses
            // the enter now, the SQE stays queued and the next enter, in
            // `reap`, reports the failure.
            let _ = self.enter(0, None);
        }
        Ok(())
    }

    fn submit_with_next_reap(&mut self, op: IoOp) -> Result<()> {
        self.queue(op)
    }

    fn reap(&mut self, min_complete: usize, out: &mut Vec<Completion>) -> Result<usize> {
        let before = out.len();
        out.append(&mut self.ready);
        let want = min_complete.min(self.in_flight + out.len() - before);
        if self.in_flight == 0 {
            // Socket operations queued go to the kernel, and theirs come
            // back (with deferred task work, only when this thread enters).
            if self.sockets.in_flight() > 0 {
                self.enter(0, None)?;
                self.drain_completions(out);
            }
            return Ok(out.len() - before);
        }
        // A wake may arrive among the completions: wait again until `want`
        // operations have completed.
        loop {
            let got = out.len() - before;
            self.enter(want.saturating_sub(got), None)?;
            self.drain_completions(out);
            if out.len() - before >= want {
                self.submit_pieces()?;
                return Ok(out.len() - before);
            }
        }
    }

    fn reap_or_wake(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        if self.wake.is_none() || !self.ready.is_empty() {
            return self.reap(1, out);
        }
        self.arm_wake();
        let before = out.len();
        // One completion: the wake poll's, when it comes, ends the wait.
        self.enter(1, self.wake_at)?;
        self.forget_wake_at_once_past();
        self.drain_completions(out);
        self.submit_pieces()?;
        Ok(out.len() - before)
    }

    fn wake_at(&mut self, at: Option<Instant>) {
        self.wake_at = at.filter(|_| self.wake.is_some());
    }

    fn wait_for_wake(&mut self, timeout: Duration, out: &mut Vec<Completion>) -> Result<usize> {
        if self.wake.is_none() || self.in_flight > 0 || !self.ready.is_empty() {
            return self.reap_or_wake(out);
        }
        self.arm_wake();
        let before = out.len();
        self.enter_for(self.wake_at.map_or(timeout, |at| at.saturating_duration_since(Instant::now()).min(timeout)))?;
        self.forget_wake_at_once_past();
        self.drain_completions(out);
        Ok(out.len() - before)
    }

    fn waker(&mut self) -> Result<Option<Arc<dyn Wake>>> {
        if self.wake.is_none() {
            let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io(&self.info.name, OpKind::Submit, 0, 0, e.into()))?;
            self.wake = Some(Arc::new(EventWaker(fd)));
        }
        Ok(self.wake.clone().map(|w| w as Arc<dyn Wake>))
    }

    fn submit_socket(&mut self, token: u64, op: SocketOp) -> Result<()> {
        if self.sockets.in_flight() >= SOCKET_OPS_MAX {
            return Err(Error::QueueFull {
                device: format!("{} (socket operations)", self.info.name),
                depth: SOCKET_OPS_MAX,
            });
        }
        // SAFETY: the entry is pushed once; the slot keeps the operation
        // and its buffers until its completion is reaped (or, when the ring
        // goes, leaks them: `SocketSlots::abandon`).
        let entry = unsafe { self.sockets.entry(token, op) };
        loop {
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                break;
            }
            // A full queue: hand it to the kernel, and try again.
            if let Err(e) = self.enter(0, None) {
                self.sockets.unqueue(entry.get_user_data());
                return Err(e);
            }
        }
        self.queued += 1;
        Ok(())
    }

    fn take_socket_completions(&mut self, out: &mut Vec<SocketDone>) {
        out.append(&mut self.socket_done);
    }

    fn sockets_in_flight(&self) -> usize {
        self.sockets.in_flight()
    }

    fn supports_sockets(&self) -> bool {
        true
    }

    fn try_clone_file(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        Some(self.file.try_clone().map(std::os::fd::OwnedFd::from))
    }

    fn watch_stalls(&mut self, watch: Arc<StallWatch>) {
        if let Some(after) = self.stall_after {
            watch.set_threshold(after);
        }
        self.stall = Some(watch);
    }

    fn in_flight(&self) -> usize {
        self.in_flight + self.ready.len()
    }

    fn queue_depth(&self) -> usize {
        self.slots.len()
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // Buffers of in-flight operations must outlive the kernel's use of
        // them: wait for every completion before the slots are freed.
        let mut sink = Vec::new();
        while self.in_flight > 0 {
            if self.reap(self.in_flight, &mut sink).is_err() {
                // The ring itself failed; leak the buffers rather than free
                // memory the kernel may still write into.
                for slot in &mut self.slots {
                    if let Some(op) = slot.take() {
                        std::mem::forget(op.buf);
                    }
                }
                break;
            }
            sink.clear();
        }
        // Ring teardown is asynchronous in the kernel, and a registered file
        // holds a reference until it ends: unregister now so the O_EXCL
        // claim or flock is released when this handle is gone, and a reopen
        // right after does not see the device as busy.
        if self.info.features.registered_file {
            let _ = self.ring.submitter().unregister_files();
        }
    }
}
