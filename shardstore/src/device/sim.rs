//! The simulated device: an in-memory disk with a volatile write cache,
//! for reaching states a real disk cannot produce on demand.
//!
//! It keeps the *durable image* (what survives power loss) and the *pending
//! writes* (submitted but not yet covered by a completed flush). A flush
//! covers only the writes that completed before it was submitted, as on a
//! real drive: here a write completes when a reap hands its completion
//! over, so a flush sent while a write is still in flight leaves that
//! write to the crash's mercy. Reads see
//! the durable image with pending writes applied in order, as a real drive
//! with a write-back cache does. A [`SimHandle`] held by the test can:
//! - **crash** the device: every pending write independently persists, is
//!   dropped, is torn at sector granularity, or lands at another offset
//!   (misdirected); earlier handles are dead afterwards, as if the host
//!   rebooted, and [`SimHandle::attach`] gives a fresh one;
//! - **cut power** after N more writes or flushes, so a test can stop a
//!   multi-step protocol at every step; the write that meets the cut fails
//!   but, as on real hardware, may still land whole or torn at the crash;
//! - **inject I/O errors** on chosen operations and ranges;
//! - **rot** chosen bits of the durable image;
//! - **hold completions back**: each reap hands over only as many
//!   completions as it must wait for (at least one), oldest first, so a
//!   test controls which operations are still in flight at each step.
//!
//! All randomness comes from a seed, so every failing case replays.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{validate, BlockDevice, Completion, DeviceInfo, EngineFeatures, IoKind, IoOp, TargetKind};
use crate::error::{Error, OpKind, Result};
use crate::rng::Rng;

/// Geometry and seed of a simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub size_bytes: u64,
    /// Logical sector: unit of alignment and of tearing.
    pub sector_size: u64,
    pub seed: u64,
    pub queue_depth: usize,
}

impl SimConfig {
    pub fn new(size_bytes: u64, seed: u64) -> Self {
        SimConfig { size_bytes, sector_size: 512, seed, queue_depth: 128 }
    }
}

/// A write that is not yet durable.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub offset: u64,
    pub data: Vec<u8>,
    /// Its completion was handed over: a flush submitted from now on
    /// makes it durable.
    pub completed: bool,
    id: u64,
}

/// What a crash does to one pending write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Persist,
    Drop,
    /// Only the sectors whose flag is true reach the medium.
    Tear(Vec<bool>),
    /// The whole write lands at this offset instead.
    Misdirect(u64),
}

/// An injected I/O error. `OpKind::Submit` fails a reap (the ring's
/// `io_uring_enter`), leaving what completed to the next one.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: OpKind,
    /// Only operations overlapping `[offset, offset + len)` are hit; `None`
    /// hits every operation of the kind.
    pub range: Option<(u64, u64)>,
    /// Matching operations to let through before failing.
    pub skip: u64,
    /// Failures left; `None` fails forever (an unreadable sector).
    pub remaining: Option<u64>,
}

impl Fault {
    pub fn once(op: OpKind) -> Self {
        Fault { op, range: None, skip: 0, remaining: Some(1) }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub faults_hit: u64,
    /// The most operations submitted and not yet reaped at once, since the
    /// device was made or `reset_in_flight_max`.
    pub in_flight_max: u64,
}

#[derive(Debug)]
struct SimState {
    name: String,
    sector_size: u64,
    durable: Vec<u8>,
    image: Vec<u8>,
    pending: Vec<PendingWrite>,
    /// Names the next pending write, so that its completion can find it.
    next_write_id: u64,
    faults: Vec<Fault>,
    /// Writes and flushes that may still complete before power is lost.
    power_budget: Option<u64>,
    powered: bool,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: u64,
    rng: Rng,
    stats: SimStats,
    /// Added to every operation (a slow drive), and to the next one only.
    latency: std::time::Duration,
    next_delay: std::time::Duration,
    /// Transfer rate (bytes per second): a read or write of n bytes also
    /// takes n / rate, as on a real drive (`None`: no transfer time).
    bandwidth_bytes_per_s: Option<u64>,
    /// Completions one reap hands over beyond what it must wait for
    /// (`None`: every completed operation, as a fast drive).
    reap_extra_max: Option<usize>,
    /// The next operation's completion is held back until released (an
    /// I/O that completes after later ones, as on a real queue).
    hold_next: bool,
    held_released: bool,
}

/// The test's grip on a simulated device, shared with every handle.
#[derive(Debug, Clone)]
pub struct SimHandle {
    state: Arc<Mutex<SimState>>,
    config: SimConfig,
}

#[derive(Debug)]
pub struct SimDevice {
    info: DeviceInfo,
    state: Arc<Mutex<SimState>>,
    epoch: u64,
    poisoned: bool,
    depth: usize,
    /// Completions not yet handed over, each with the pending write it
    /// completes (if it is a write that did not reach the medium at once).
    done: VecDeque<(Completion, Option<u64>)>,
    /// Completions held back (`SimHandle::hold_next_completion`).
    held: VecDeque<(Completion, Option<u64>)>,
}

/// A handle dropped with completions it never handed over (a store
/// dropped, or a process gone, with writes in flight): those writes
/// completed at the device all the same, so a later flush, by whichever
/// handle, covers them. Left pending, a crash long after could replay one
/// over newer data written to the same place and flushed since.
impl Drop for SimDevice {
    fn drop(&mut self) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.epoch != self.epoch {
            return; // the device crashed since: its pending writes met their fate
        }
        for id in self.done.iter().chain(&self.held).filter_map(|(_, id)| *id) {
            if let Some(w) = s.pending.iter_mut().find(|w| w.id == id) {
                w.completed = true;
            }
        }
    }
}

impl SimDevice {
    pub fn new(config: SimConfig) -> SimDevice {
        assert!(config.sector_size.is_power_of_two() && config.size_bytes % config.sector_size == 0);
        let size = usize::try_from(config.size_bytes).expect("simulated device fits in memory");
        let state = SimState {
            name: format!("sim{:x}", config.seed),
            sector_size: config.sector_size,
            durable: vec![0; size],
            image: vec![0; size],
            pending: Vec::new(),
            next_write_id: 0,
            faults: Vec::new(),
            power_budget: None,
            powered: true,
            epoch: 0,
            rng: Rng::new(config.seed),
            stats: SimStats::default(),
            latency: std::time::Duration::ZERO,
            next_delay: std::time::Duration::ZERO,
            reap_extra_max: None,
            hold_next: false,
            held_released: false,
            bandwidth_bytes_per_s: None,
        };
        SimHandle { state: Arc::new(Mutex::new(state)), config }.attach()
    }

    pub fn handle(&self) -> SimHandle {
        let state = self.state.lock().expect("sim lock");
        let config = SimConfig {
            size_bytes: self.info.size_bytes,
            sector_size: self.info.logical_block_size,
            seed: 0,
            queue_depth: self.depth,
        };
        drop(state);
        SimHandle { state: Arc::clone(&self.state), config }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("sim lock")
    }

    /// Runs `kind` against the image; for a write left pending, its id.
    fn execute(&mut self, kind: &mut IoKind) -> io::Result<Option<u64>> {
        let epoch = self.epoch;
        let mut s = self.lock();
        if s.epoch != epoch {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "device handle is gone: the device crashed"));
        }
        if !s.powered {
            return Err(io::Error::other("simulated power loss"));
        }
        let op = kind.op();
        let (offset, len) = kind.extent();
        match op {
            OpKind::Read => s.stats.reads += 1,
            OpKind::Write => s.stats.writes += 1,
            OpKind::Flush => s.stats.flushes += 1,
            OpKind::Open | OpKind::Submit => {}
        }
        if s.take_fault(op, offset, len) {
            s.stats.faults_hit += 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if op != OpKind::Read {
            if let Some(budget) = s.power_budget.as_mut() {
                if *budget == 0 {
                    s.powered = false;
                    // A write in flight when power fails may still reach
                    // the medium, whole or in part: it joins the pending
                    // writes and the crash decides its fate.
                    if let IoKind::Write { offset, buf, .. } = kind {
                        let (offset, data) = (*offset, buf.as_slice().to_vec());
                        s.push_pending(offset, data);
                    }
                    return Err(io::Error::other("simulated power loss"));
                }
                *budget -= 1;
            }
        }
        let (start, end) = (offset as usize, (offset + len) as usize);
        match kind {
            IoKind::Read { buf, .. } => buf.as_mut_slice().copy_from_slice(&s.image[start..end]),
            IoKind::Write { buf, fua, .. } => {
                s.image[start..end].copy_from_slice(buf.as_slice());
                if *fua {
                    s.durable[start..end].copy_from_slice(buf.as_slice());
                } else {
                    return Ok(Some(s.push_pending(offset, buf.as_slice().to_vec())));
                }
            }
            IoKind::Flush => {
                // Only what completed before the flush; the rest stays
                // pending, in order, for a later flush or the crash.
                let state = &mut *s;
                for w in std::mem::take(&mut state.pending) {
                    if w.completed {
                        let at = w.offset as usize;
                        state.durable[at..at + w.data.len()].copy_from_slice(&w.data);
                    } else {
                        state.pending.push(w);
                    }
                }
            }
        }
        Ok(None)
    }
}

impl SimState {
    fn push_pending(&mut self, offset: u64, data: Vec<u8>) -> u64 {
        let id = self.next_write_id;
        self.next_write_id += 1;
        self.pending.push(PendingWrite { offset, data, completed: false, id });
        id
    }

    fn take_fault(&mut self, op: OpKind, offset: u64, len: u64) -> bool {
        let hit = self.faults.iter().position(|f| {
            f.op == op
                && f.range.is_none_or(
                    |(o, l)| {
                        if op == OpKind::Flush {
                            true
                        } else {
                            offset < o + l && o < offset + len
                        }
                    },
                )
        });
        let Some(i) = hit else { return false };
        let fault = &mut self.faults[i];
        if fault.skip > 0 {
            fault.skip -= 1;
            return false;
        }
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                self.faults.remove(i);
            }
        }
        true
    }
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("sim lock")
    }

    /// A new device handle on the current state (after a crash: the
    /// rebooted host opening its disk again).
    pub fn attach(&self) -> SimDevice {
        let s = self.lock();
        let info = DeviceInfo {
            name: s.name.clone(),
            kind: TargetKind::Simulated,
            size_bytes: s.image.len() as u64,
            logical_block_size: s.sector_size,
            physical_block_size: s.sector_size.max(4096),
            features: EngineFeatures::default(),
        };
        let epoch = s.epoch;
        drop(s);
        SimDevice {
            info,
            state: Arc::clone(&self.state),
            epoch,
            poisoned: false,
            depth: self.config.queue_depth.max(1),
            done: VecDeque::new(),
            held: VecDeque::new(),
        }
    }

    /// Lets `n` more writes or flushes through, then fails everything until
    /// the next crash.
    pub fn cut_power_after(&self, n: u64) {
        self.lock().power_budget = Some(n);
    }

    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    pub fn pending(&self) -> Vec<PendingWrite> {
        self.lock().pending.clone()
    }

    /// Crashes the device, deciding each pending write's fate with `fate`.
    pub fn crash_with(&self, mut fate: impl FnMut(usize, &PendingWrite) -> Fate) {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        let sector = s.sector_size as usize;
        for (i, w) in pending.iter().enumerate() {
            let start = w.offset as usize;
            match fate(i, w) {
                Fate::Persist => s.durable[start..start + w.data.len()].copy_from_slice(&w.data),
                Fate::Drop => {}
                Fate::Tear(keep) => {
                    assert_eq!(keep.len(), w.data.len() / sector, "tear mask must cover every sector");
                    for (k, kept) in keep.iter().enumerate() {
                        if *kept {
                            let at = start + k * sector;
                            s.durable[at..at + sector].copy_from_slice(&w.data[k * sector..(k + 1) * sector]);
                        }
                    }
                }
                Fate::Misdirect(to) => {
                    let to = to as usize;
                    assert!(to % sector == 0 && to + w.data.len() <= s.durable.len(), "misdirect target in range");
                    s.durable[to..to + w.data.len()].copy_from_slice(&w.data);
                }
            }
        }
        let state = &mut *s;
        state.image.copy_from_slice(&state.durable);
        state.powered = true;
        state.power_budget = None;
        state.faults.clear();
        state.epoch += 1;
    }

    /// Crashes with a seeded random fate per pending write: half persist,
    /// a quarter are dropped, the rest torn or (rarely) misdirected.
    pub fn crash(&self) {
        let mut rng = {
            let mut s = self.lock();
            Rng::new(s.rng.next_u64())
        };
        let size = self.config.size_bytes;
        let sector = self.lock().sector_size;
        self.crash_with(|_, w| match rng.below(20) {
            0..=9 => Fate::Persist,
            10..=14 => Fate::Drop,
            15..=18 => Fate::Tear((0..w.data.len() as u64 / sector).map(|_| rng.chance(1, 2)).collect()),
            _ => {
                let slots = (size - w.data.len() as u64) / sector;
                Fate::Misdirect(rng.below(slots + 1) * sector)
            }
        });
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Makes every later operation take at least `latency` (a drive gone
    /// slow: a gray failure).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.lock().latency = latency;
    }

    /// Makes the next operation alone take `delay` longer.
    pub fn delay_next(&self, delay: std::time::Duration) {
        self.lock().next_delay = delay;
    }

    /// Gives reads and writes a transfer time of their length over
    /// `rate` bytes per second, besides the fixed latency.
    pub fn set_bandwidth(&self, rate: Option<u64>) {
        self.lock().bandwidth_bytes_per_s = rate;
    }

    /// Holds completions back: from now on a reap hands over only what it
    /// waits for (at least one) plus `extra`, oldest first; `None` hands
    /// over everything again. Operations still execute at submission, so
    /// a held-back read has its bytes; it is only not yet reaped.
    pub fn hold_completions(&self, extra: Option<usize>) {
        self.lock().reap_extra_max = extra;
    }

    /// Holds the next operation's completion back (it executes, but is
    /// not reaped) until `release_held`: a read that completes after the
    /// writes submitted after it, which a real queue may do.
    pub fn hold_next_completion(&self) {
        let mut s = self.lock();
        (s.hold_next, s.held_released) = (true, false);
    }

    pub fn release_held(&self) {
        self.lock().held_released = true;
    }

    /// Starts `SimStats::in_flight_max` again from nothing.
    pub fn reset_in_flight_max(&self) {
        self.lock().stats.in_flight_max = 0;
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Flips one bit of the medium (durable image and what reads see).
    pub fn rot_bit(&self, offset: u64, bit: u8) {
        let mut s = self.lock();
        let mask = 1u8 << (bit % 8);
        s.durable[offset as usize] ^= mask;
        s.image[offset as usize] ^= mask;
    }

    /// Overwrites bytes of the medium directly (durable and visible), as
    /// another program writing to the disk would.
    pub fn scribble(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        let at = offset as usize;
        s.durable[at..at + data.len()].copy_from_slice(data);
        s.image[at..at + data.len()].copy_from_slice(data);
    }

    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }
}

impl BlockDevice for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn submit(&mut self, op: IoOp) -> Result<()> {
        let IoOp { token, mut kind } = op;
        validate(&self.info, &kind, false, self.poisoned)?;
        if self.in_flight() >= self.depth {
            return Err(Error::QueueFull { device: self.info.name.clone(), depth: self.depth });
        }
        let (delay, hold) = {
            let mut s = self.lock();
            let hold = std::mem::take(&mut s.hold_next);
            let transfer = s.bandwidth_bytes_per_s.map_or(std::time::Duration::ZERO, |rate| {
                std::time::Duration::from_secs_f64(kind.extent().1 as f64 / rate.max(1) as f64)
            });
            (s.latency + transfer + std::mem::take(&mut s.next_delay), hold)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let (result, write) = match self.execute(&mut kind) {
            Ok(write) => (Ok(()), write),
            Err(e) => (Err(e), None),
        };
        let op = kind.op();
        if op == OpKind::Flush && result.is_err() {
            self.poisoned = true;
        }
        let (offset, len, buf) = kind.into_parts();
        let result = result.map_err(|e| Error::io(&self.info.name, op, offset, len, e));
        let c = Completion { token, op, offset, len, result, buf };
        if hold {
            self.held.push_back((c, write));
        } else {
            self.done.push_back((c, write));
        }
        let in_flight = self.in_flight() as u64;
        let mut s = self.lock();
        s.stats.in_flight_max = s.stats.in_flight_max.max(in_flight);
        Ok(())
    }

    fn reap(&mut self, min_complete: usize, out: &mut Vec<Completion>) -> Result<usize> {
        let (extra_max, released) = {
            let mut s = self.lock();
            if s.take_fault(OpKind::Submit, 0, 0) {
                s.stats.faults_hit += 1;
                let e = io::Error::from_raw_os_error(libc::EIO);
                return Err(Error::io(&self.info.name, OpKind::Submit, 0, 0, e));
            }
            (s.reap_extra_max, s.held_released)
        };
        if released {
            self.done.append(&mut self.held);
        }
        let n = match extra_max {
            // Only what the caller waits for (at least one) has completed.
            Some(extra) => self.done.len().min(min_complete.max(1) + extra),
            None => self.done.len(),
        };
        let state = Arc::clone(&self.state);
        let mut s = state.lock().expect("sim lock");
        for (c, write) in self.done.drain(..n) {
            if let Some(id) = write {
                if let Some(w) = s.pending.iter_mut().find(|w| w.id == id) {
                    w.completed = true;
                }
            }
            out.push(c);
        }
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.done.len() + self.held.len()
    }

    fn queue_depth(&self) -> usize {
        self.depth
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{BlockDeviceExt, IoBuf};

    #[test]
    fn unflushed_writes_are_lost_and_flushed_ones_kept() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 1));
        let h = dev.handle();
        dev.write_at(0, &[1u8; 4096], false).unwrap();
        dev.flush().unwrap();
        dev.write_at(4096, &[2u8; 4096], false).unwrap();
        assert_eq!(dev.read_at(4096, 4096).unwrap().as_slice(), &[2u8; 4096], "reads see the cache");
        h.crash_with(|_, _| Fate::Drop);
        let mut dev = h.attach();
        assert_eq!(dev.read_at(0, 4096).unwrap().as_slice(), &[1u8; 4096]);
        assert_eq!(dev.read_at(4096, 4096).unwrap().as_slice(), &[0u8; 4096]);
    }

    #[test]
    fn a_flush_covers_only_writes_completed_before_it() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 3));
        let h = dev.handle();
        let write = |at: u64, byte: u8| IoOp {
            token: at,
            kind: IoKind::Write { offset: at, buf: IoBuf::copy_of(&[byte; 4096]).unwrap(), fua: false },
        };
        // The first write's completion is reaped before the flush is sent;
        // the second is still in flight when the flush goes out with it.
        dev.submit(write(0, 1)).unwrap();
        let mut out = Vec::new();
        dev.reap(1, &mut out).unwrap();
        dev.submit(write(4096, 2)).unwrap();
        dev.submit(IoOp { token: 99, kind: IoKind::Flush }).unwrap();
        dev.reap(2, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|c| c.result.is_ok()));
        let pending = h.pending();
        assert_eq!(pending.len(), 1, "the write in flight stays pending");
        assert_eq!((pending[0].offset, pending[0].completed), (4096, true));
        h.crash_with(|_, _| Fate::Drop);
        let mut dev = h.attach();
        assert_eq!(dev.read_at(0, 4096).unwrap().as_slice(), &[1u8; 4096], "completed before the flush: durable");
        assert_eq!(dev.read_at(4096, 4096).unwrap().as_slice(), &[0u8; 4096], "in flight at the flush: lost");
    }

    /// A handle dropped with a write's completion not yet handed over (a
    /// store dropped with writes in flight): the write completed at the
    /// device, so the next handle's flush covers it. Left pending, the
    /// crash below would persist it over the newer write to the same
    /// place (the model test's shrunk case: a checkpoint written twice to
    /// one place, the first by a store dropped before it reaped it).
    #[test]
    fn writes_of_a_dropped_handle_are_covered_by_the_next_flush() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 5));
        let h = dev.handle();
        dev.submit(IoOp {
            token: 1,
            kind: IoKind::Write { offset: 0, buf: IoBuf::copy_of(&[1u8; 4096]).unwrap(), fua: false },
        })
        .unwrap();
        drop(dev);
        let mut dev = h.attach();
        dev.flush().unwrap();
        assert_eq!(h.pending().len(), 0, "the dropped handle's write was covered by the flush");
        dev.write_at(0, &[2u8; 4096], false).unwrap();
        dev.flush().unwrap();
        h.crash_with(|_, _| Fate::Persist);
        let mut dev = h.attach();
        assert_eq!(dev.read_at(0, 4096).unwrap().as_slice(), &[2u8; 4096], "the newer write stands");
    }

    #[test]
    fn torn_write_keeps_chosen_sectors_and_old_handles_die() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 2));
        let h = dev.handle();
        dev.write_at(0, &[7u8; 2048], false).unwrap();
        h.crash_with(|_, _| Fate::Tear(vec![true, false, true, false]));
        assert!(dev.read_at(0, 512).is_err(), "a handle from before the crash must be dead");
        let img = h.durable_image();
        assert!(img[..512].iter().all(|&b| b == 7) && img[512..1024].iter().all(|&b| b == 0));
        assert!(img[1024..1536].iter().all(|&b| b == 7) && img[1536..2048].iter().all(|&b| b == 0));
    }

    #[test]
    fn power_cut_and_faults_fail_operations() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 3));
        let h = dev.handle();
        h.inject(Fault { op: OpKind::Read, range: Some((8192, 512)), skip: 0, remaining: None });
        assert!(dev.read_at(8192, 4096).is_err());
        assert!(dev.read_at(0, 4096).is_ok());
        h.cut_power_after(1);
        dev.write_at(0, &[1u8; 512], false).unwrap();
        assert!(dev.write_at(512, &[1u8; 512], false).is_err());
        assert!(!h.is_powered());
    }

    #[test]
    fn failed_flush_poisons_the_handle() {
        let mut dev = SimDevice::new(SimConfig::new(1 << 20, 4));
        dev.handle().inject(Fault::once(OpKind::Flush));
        dev.write_at(0, &[1u8; 512], false).unwrap();
        assert!(dev.flush().is_err());
        let err = dev.write_at(0, &[1u8; 512], false).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        assert!(dev.read_at(0, 512).is_ok(), "reads still work on a poisoned handle");
    }
}
