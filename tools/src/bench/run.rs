//! Running a job through the shardnode device engine: one thread per
//! `numjobs`, each with its own device handle (its own ring), an aligned
//! buffer pool registered with the ring, and `iodepth` operations kept in
//! flight. Latencies are taken as fio takes them: `slat` from queueing an
//! operation to handing it to the kernel, `clat` from there to its
//! completion, `lat` the sum.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::{bail, Context};
use nix::sys::resource::{getrusage, UsageWho};
use shardstore::constants::BLOCK_SIZE_BYTES;
use shardstore::device::sync::SyncDevice;
use shardstore::device::uring::UringDevice;
use shardstore::device::{
    BlockDevice, BlockDeviceExt, BufferPool, Completion, EngineFeatures, IoBuf, IoKind, IoOp, OpenOptions,
};
use shardstore::error::OpKind;
use shardstore::rng::Rng;

use super::hist::LatencyStats;
use super::options::{BlockSizes, Engine, JobSpec};

/// What one direction (read or write) of a job did.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub io_bytes: u64,
    pub total_ios: u64,
    pub slat: LatencyStats,
    pub clat: LatencyStats,
    pub lat: LatencyStats,
}

impl DirStats {
    fn merge(&mut self, o: &DirStats) {
        self.io_bytes += o.io_bytes;
        self.total_ios += o.total_ios;
        self.slat.merge(&o.slat);
        self.clat.merge(&o.clat);
        self.lat.merge(&o.lat);
    }
}

/// The result of one job thread (or of a group, merged).
#[derive(Debug, Clone, Default)]
pub struct JobResult {
    pub name: String,
    /// fio's reporting group (jobs split by `stonewall`).
    pub groupid: u32,
    pub jobs: u32,
    pub read: DirStats,
    pub write: DirStats,
    /// Measured time after the ramp, in microseconds.
    pub runtime_us: u64,
    pub usr_cpu_us: u64,
    pub sys_cpu_us: u64,
    pub ctx_switches: u64,
    /// Completions by how many operations were in flight when each batch
    /// was submitted (fio's `IO depths`): index k counts depth buckets
    /// 1, 2, 4, 8, 16, 32, >=64.
    pub depth_hist: [u64; 7],
    /// Submissions by how many I/Os each handed to the kernel, and reaps
    /// by how many each returned (fio's `submit` and `complete`
    /// distributions; buckets 0, 4, 8, 16, 32, 64, >64).
    pub submit_hist: [u64; 7],
    pub complete_hist: [u64; 7],
    /// Every I/O's total latency in fio's distribution buckets (see
    /// [`lat_level`]).
    pub lat_levels: [u64; 32],
    /// The job's fsync/fdatasync operations (fio's `sync`).
    pub sync: LatencyStats,
    /// What the engine enabled on this thread's device handle.
    pub features: EngineFeatures,
}

impl JobResult {
    /// Records one request served by the store or the agent: `bytes` moved
    /// in `ns` from asking to the answer (no separate submission stage, so
    /// `slat` is 0 and `clat` is the whole latency).
    pub fn record_request(&mut self, is_read: bool, bytes: u64, ns: u64) {
        self.record(is_read, bytes, 0, ns);
    }

    /// Records one completed I/O of `bytes`, `slat` + `clat` nanoseconds.
    pub fn record(&mut self, is_read: bool, bytes: u64, slat: u64, clat: u64) {
        let dir: &mut DirStats = if is_read { &mut self.read } else { &mut self.write };
        dir.io_bytes += bytes;
        dir.total_ios += 1;
        dir.slat.record(slat);
        dir.clat.record(clat);
        dir.lat.record(slat + clat);
        self.lat_levels[lat_level(slat + clat)] += 1;
    }

    pub fn merge(&mut self, o: &JobResult) {
        self.jobs += o.jobs;
        self.read.merge(&o.read);
        self.write.merge(&o.write);
        self.runtime_us = self.runtime_us.max(o.runtime_us);
        self.usr_cpu_us += o.usr_cpu_us;
        self.sys_cpu_us += o.sys_cpu_us;
        self.ctx_switches += o.ctx_switches;
        let hists = [
            (&mut self.depth_hist[..], &o.depth_hist[..]),
            (&mut self.submit_hist[..], &o.submit_hist[..]),
            (&mut self.complete_hist[..], &o.complete_hist[..]),
            (&mut self.lat_levels[..], &o.lat_levels[..]),
        ];
        for (mine, theirs) in hists {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.sync.merge(&o.sync);
    }
}

/// What the jobs have done so far, for the progress line. Counted only
/// while the line is shown: otherwise every job thread would touch the
/// same shared counters once per I/O for nothing.
#[derive(Debug, Default)]
pub struct Progress {
    pub shown: bool,
    pub bytes: [std::sync::atomic::AtomicU64; 2],
    pub ios: [std::sync::atomic::AtomicU64; 2],
}

impl Progress {
    pub fn add(&self, is_read: bool, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.shown {
            return;
        }
        let d = usize::from(!is_read);
        self.bytes[d].fetch_add(bytes, Relaxed);
        self.ios[d].fetch_add(1, Relaxed);
    }
}

/// Runs one job (all its threads) and returns one result per thread.
pub fn run_job(spec: &JobSpec, progress: &Arc<Progress>) -> anyhow::Result<Vec<JobResult>> {
    let path = spec.filename.clone().expect("validated: every job has a filename");
    prepare(&path, spec)?;
    let barrier = Arc::new(Barrier::new(spec.numjobs as usize));
    let handles: Vec<_> = (0..spec.numjobs)
        .map(|i| {
            let spec = spec.clone();
            let barrier = Arc::clone(&barrier);
            let progress = Arc::clone(progress);
            std::thread::Builder::new()
                .name(format!("{}-{i}", spec.name))
                .spawn(move || worker(&spec, i, &barrier, &progress))
                .expect("spawn job thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("job thread panicked")).collect()
}

/// fio creates a missing file of `size` by writing it; so do we.
pub(super) fn prepare(path: &Path, spec: &JobSpec) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let Some(size) = spec.size else {
        bail!("{}: does not exist (give --size to create it)", path.display());
    };
    let total = spec.offset + size;
    made_whole(path, |making| {
        lay_out(making, total).with_context(|| format!("{}: cannot lay out {total} bytes", making.display()))
    })
}

/// Makes a missing file under another name (`make`), then renames it to
/// `path`: a run cut short (a full disk, ^C) leaves no half-made file
/// behind that the next run would take as made, and a failed one removes
/// what it made.
pub(super) fn made_whole(path: &Path, make: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut making = path.as_os_str().to_owned();
    making.push(".making");
    let making = std::path::PathBuf::from(making);
    if let Err(e) = make(&making) {
        let _ = std::fs::remove_file(&making);
        return Err(e);
    }
    std::fs::rename(&making, path).with_context(|| format!("{}: cannot rename to {}", making.display(), path.display()))
}

/// Writes the whole file, as fio lays out a file it creates: a sparse file
/// would make every first write allocate blocks (and every flush commit
/// the file system's journal), which a raw device never does and the fio
/// file it is compared with no longer does. Zeros, with O_DIRECT in 8 MiB
/// pieces; an unaligned tail through the page cache.
pub fn lay_out(path: &Path, size: u64) -> anyhow::Result<()> {
    const PIECE: u64 = 8 << 20;
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    let aligned = size / BLOCK_SIZE_BYTES * BLOCK_SIZE_BYTES;
    let mut dev = shardstore::device::open(path, &OpenOptions { queue_depth: 1, ..OpenOptions::default() })?;
    let mut buf = IoBuf::standalone(PIECE.min(aligned).max(BLOCK_SIZE_BYTES) as usize)?;
    let mut at = 0;
    while at < aligned {
        let n = PIECE.min(aligned - at);
        buf.set_len(n as usize);
        buf = dev.run_one(IoKind::Write { offset: at, buf, fua: false })?.expect("writes return their buffer");
        at += n;
    }
    dev.flush()?;
    drop(dev);
    if aligned < size {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&vec![0u8; (size - aligned) as usize], aligned)?;
    }
    file.sync_all()?;
    Ok(())
}

fn open(spec: &JobSpec, path: &Path, pool: &BufferPool) -> anyhow::Result<Box<dyn BlockDevice>> {
    let options = OpenOptions {
        read_only: spec.rw.read_percent(spec.rwmixread) == 100,
        // Several jobs (and fio) may share the target, as with fio.
        exclusive: false,
        queue_depth: spec.iodepth,
        buffers: spec.fixedbufs.then(|| pool.clone()),
        register_file: spec.registerfiles,
        submit_batch: match spec.iodepth_batch_submit {
            0 => spec.iodepth,
            n => n,
        },
        ..OpenOptions::default()
    };
    Ok(match spec.ioengine {
        Engine::IoUring => Box::new(UringDevice::open(path, &options)?),
        Engine::Psync => Box::new(SyncDevice::open(path, &OpenOptions { queue_depth: 1, ..options })?),
    })
}

struct Slot {
    queued_ns: u64,
    submitted_ns: u64,
}

/// Where client threads of one job start from: they wait at `barrier`,
/// take operation numbers from `next`, and time themselves from `started`.
#[derive(Debug)]
pub(crate) struct Start {
    pub barrier: std::sync::Barrier,
    pub next: std::sync::atomic::AtomicU64,
    pub started: Instant,
}

/// Runs `threads` client threads of `spec` (thread `t` runs `client(t,
/// start)`), folds thread `t` into result `t % numjobs`, and charges the
/// whole process's CPU over the run to the results, shared evenly: in the
/// store and agent modes the work is done by threads that are not the
/// clients (the store thread) or not ours at all.
pub(crate) fn run_clients(
    spec: &JobSpec,
    threads: usize,
    client: impl Fn(usize, &Arc<Start>) -> anyhow::Result<JobResult> + Send + Sync + 'static,
) -> anyhow::Result<Vec<JobResult>> {
    let usage_start = getrusage(UsageWho::RUSAGE_SELF)?;
    let start = Arc::new(Start {
        barrier: std::sync::Barrier::new(threads),
        next: std::sync::atomic::AtomicU64::new(0),
        started: Instant::now(),
    });
    let client = Arc::new(client);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (start, client) = (Arc::clone(&start), Arc::clone(&client));
            std::thread::spawn(move || client(t, &start))
        })
        .collect();
    let jobs = spec.numjobs as usize;
    let mut per_job: Vec<JobResult> =
        (0..jobs).map(|_| JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() }).collect();
    for (t, h) in handles.into_iter().enumerate() {
        per_job[t % jobs].merge(&h.join().expect("client thread panicked")?);
    }
    let usage_end = getrusage(UsageWho::RUSAGE_SELF)?;
    let usr = micros(usage_end.user_time()).saturating_sub(micros(usage_start.user_time()));
    let sys = micros(usage_end.system_time()).saturating_sub(micros(usage_start.system_time()));
    for j in &mut per_job {
        j.jobs = 1;
        j.usr_cpu_us = usr / jobs as u64;
        j.sys_cpu_us = sys / jobs as u64;
    }
    Ok(per_job)
}

/// A `getrusage` time in microseconds.
pub(crate) fn micros(t: nix::sys::time::TimeVal) -> u64 {
    t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64
}

/// fio's buckets of I/Os per submit or per reap: 0, 1-4, 5-8, 9-16,
/// 17-32, 33-64, more.
fn count_bucket(n: usize) -> usize {
    match n {
        0 => 0,
        1..=4 => 1,
        5..=8 => 2,
        9..=16 => 3,
        17..=32 => 4,
        33..=64 => 5,
        _ => 6,
    }
}

/// fio's latency distribution bucket of a total latency: 2, 4, 10, 20,
/// 50, 100, 250, 500, 750, 1000 ns, the same in µs and in ms, then 2000
/// ms and more (indices 0-9, 10-19, 20-31). A bucket counts latencies
/// below its bound and at or above the previous one.
pub fn lat_level(ns: u64) -> usize {
    const EDGES: [u64; 10] = [2, 4, 10, 20, 50, 100, 250, 500, 750, 1000];
    let (base, v) = match ns {
        0..=999 => (0, ns),
        1_000..=999_999 => (10, ns / 1_000),
        _ => (20, ns / 1_000_000),
    };
    match EDGES.iter().position(|&e| v < e) {
        Some(i) => base + i,
        None if v < 2000 => 30,
        None => 31,
    }
}

fn depth_bucket(depth: usize) -> usize {
    match depth {
        0 | 1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        8..=15 => 3,
        16..=31 => 4,
        32..=63 => 5,
        _ => 6,
    }
}

/// fio's random map: which blocks (of the smallest block size) a random
/// job has touched this pass, so it touches every block once before any
/// twice; a full map starts a new pass.
struct RandomMap {
    bits: Vec<u64>,
    set: u64,
    blocks: u64,
}

impl RandomMap {
    fn new(blocks: u64) -> RandomMap {
        RandomMap { bits: vec![0; blocks.div_ceil(64) as usize], set: 0, blocks }
    }

    fn is_set(&self, b: u64) -> bool {
        self.bits[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// The first untouched block at or after `from`, wrapping (fio's
    /// `axmap_next_free`).
    fn next_free(&mut self, from: u64) -> u64 {
        if self.set == self.blocks {
            self.bits.fill(0);
            self.set = 0;
        }
        let mut b = from;
        loop {
            let word = self.bits[(b / 64) as usize] | ((1u64 << (b % 64)) - 1);
            if word != u64::MAX {
                let free = (b / 64) * 64 + u64::from(word.trailing_ones());
                if free < self.blocks {
                    return free;
                }
            }
            b = ((b / 64) + 1) * 64;
            if b >= self.blocks {
                b = 0;
            }
        }
    }

    /// Marks up to `count` blocks from `first` (which is free), stopping
    /// at the first one already touched; returns how many it marked (fio
    /// shortens the I/O to them, so a pass moves exactly the region).
    fn mark(&mut self, first: u64, count: u64) -> u64 {
        let mut marked = 0;
        for b in first..(first + count).min(self.blocks) {
            if self.is_set(b) {
                break;
            }
            self.bits[(b / 64) as usize] |= 1 << (b % 64);
            self.set += 1;
            marked += 1;
        }
        marked
    }
}

/// fio's choice of each I/O: its direction, offset and length.
struct Picker {
    rw_random: bool,
    read_percent: u32,
    sizes: BlockSizes,
    /// The region, in units of the smallest block size.
    unit: u64,
    start: u64,
    blocks: u64,
    next_block: u64,
    map: Option<RandomMap>,
    rng: Rng,
}

impl Picker {
    fn next(&mut self) -> (bool, u64, u64) {
        let rp = self.read_percent;
        let is_read = rp == 100 || (rp > 0 && self.rng.below(100) < u64::from(rp));
        let len = self.sizes.pick(&mut self.rng);
        let block = if self.rw_random {
            let b = self.rng.below(self.blocks);
            match &mut self.map {
                Some(map) => map.next_free(b),
                None => b,
            }
        } else {
            // Sequential I/O wraps to the start when the next one would
            // not fit (fio starts the file over).
            let b = if self.next_block + len / self.unit > self.blocks { 0 } else { self.next_block };
            self.next_block = (b + len / self.unit) % self.blocks;
            b
        };
        // An I/O never runs past the region's end (as fio shortens it).
        let mut len = len.min((self.blocks - block) * self.unit);
        if let Some(map) = &mut self.map {
            len = map.mark(block, len / self.unit) * self.unit;
        }
        (is_read, self.start + block * self.unit, len)
    }
}

/// fio's `rate`/`rate_iops`: when the next I/O of a direction may be
/// issued, given what it has issued since the job began.
fn rate_due_ns(spec: &JobSpec, dir: usize, issued_bytes: u64, issued_ios: u64) -> u64 {
    let by_bytes = match spec.rate[dir] {
        0 => 0,
        r => (u128::from(issued_bytes) * 1_000_000_000 / u128::from(r)) as u64,
    };
    let by_ios = match spec.rate_iops[dir] {
        0 => 0,
        r => (u128::from(issued_ios) * 1_000_000_000 / u128::from(r)) as u64,
    };
    by_bytes.max(by_ios)
}

#[allow(clippy::too_many_lines)]
fn worker(spec: &JobSpec, thread: u32, barrier: &Barrier, progress: &Progress) -> anyhow::Result<JobResult> {
    let path = spec.filename.as_deref().expect("validated");
    let bs = spec.bs as usize;
    let depth = if spec.ioengine == Engine::Psync { 1 } else { spec.iodepth as usize };
    let pool = BufferPool::new(bs.next_multiple_of(4096), depth)?;
    // Like fio, write random bytes, not zeros: a virtualised or
    // compressing/deduplicating device treats zero blocks specially.
    {
        let mut fill_rng = Rng::new(spec.randseed.rotate_left(17) ^ u64::from(thread));
        let mut bufs: Vec<_> = (0..depth).filter_map(|_| pool.take(pool.slot_size())).collect();
        for buf in &mut bufs {
            for chunk in buf.as_mut_slice().chunks_exact_mut(8) {
                chunk.copy_from_slice(&fill_rng.next_u64().to_le_bytes());
            }
        }
    }
    let mut dev = open(spec, path, &pool)?;
    let size = dev.info().size_bytes;
    let unit = spec.sizes.min();
    if unit % dev.info().logical_block_size != 0 {
        bail!(
            "{}: bs {unit} is not a multiple of the device's {}-byte logical block",
            path.display(),
            dev.info().logical_block_size
        );
    }
    if spec.offset >= size {
        bail!("{}: offset {} is beyond the end of the device ({size} bytes)", path.display(), spec.offset);
    }
    let region = spec.size.unwrap_or(size - spec.offset).min(size - spec.offset);
    let blocks = region / unit;
    if blocks == 0 || region < spec.bs {
        bail!("{}: the I/O region ({region} bytes) is smaller than bs ({})", path.display(), spec.bs);
    }
    // randrepeat=0: a different sequence every run (fio seeds from time).
    let seed = if spec.randrepeat { spec.randseed } else { spec.randseed ^ shardstore::superblock::now_unix_ms() };
    let mut picker = Picker {
        rw_random: spec.rw.is_random(),
        read_percent: spec.rw.read_percent(spec.rwmixread),
        sizes: spec.sizes.clone(),
        unit,
        start: spec.offset,
        blocks,
        next_block: 0,
        map: (spec.rw.is_random() && spec.randommap).then(|| RandomMap::new(blocks)),
        rng: Rng::new(seed ^ u64::from(thread).wrapping_mul(0x9E37_79B9)),
    };
    let sync_every = if spec.fsync > 0 { spec.fsync } else { spec.fdatasync };
    let mut slots: Vec<Slot> = (0..depth).map(|_| Slot { queued_ns: 0, submitted_ns: 0 }).collect();
    let mut sync_token = None;
    let mut free: Vec<u64> = (0..depth as u64).collect();
    let mut unsubmitted: Vec<u64> = Vec::with_capacity(depth);
    let mut completions: Vec<Completion> = Vec::with_capacity(depth);
    let mut result =
        JobResult { name: spec.name.clone(), jobs: 1, features: dev.info().features, ..JobResult::default() };
    let submit_batch = match spec.iodepth_batch_submit {
        0 => depth,
        n => (n as usize).min(depth),
    };
    let mut issued_bytes = 0u64;
    // Per direction (read, write), for rate limits.
    let mut dir_bytes = [0u64; 2];
    let mut dir_ios = [0u64; 2];
    let mut writes_since_sync = 0u32;
    let mut sync_wanted = false;
    let mut held: Option<(bool, u64, u64)> = None;
    let bytes_limit = if spec.time_based { u64::MAX } else { blocks * unit };

    barrier.wait();
    let base = Instant::now();
    let now_ns = || base.elapsed().as_nanos() as u64;
    let ramp_end_ns = spec.ramp_time_us * 1000;
    let end_ns = spec.runtime_us.map_or(u64::MAX, |r| ramp_end_ns + r * 1000);
    let mut usage_start = None;
    let mut measuring = ramp_end_ns == 0;
    if measuring {
        usage_start = Some(getrusage(UsageWho::RUSAGE_THREAD)?);
    }
    let mut last_completion_ns = 0;
    let mut written = std::collections::BTreeMap::new();
    let mut ended_sync = !spec.end_fsync;

    loop {
        let now = now_ns();
        let stop_issuing = now >= end_ns || issued_bytes >= bytes_limit;
        let mut wait_until = None;
        if sync_wanted && dev.in_flight() == 0 {
            // fio's fsync/fdatasync: once the writes before it completed,
            // in one of the job's `iodepth` slots.
            let token = free.pop().expect("nothing in flight: every slot is free");
            sync_token = Some(token);
            slots[token as usize].queued_ns = now_ns();
            dev.submit(IoOp { token, kind: IoKind::Flush })?;
            unsubmitted.push(token);
            sync_wanted = false;
        }
        if !stop_issuing && !sync_wanted {
            while let Some(token) = free.pop() {
                if issued_bytes >= bytes_limit || sync_wanted {
                    free.push(token);
                    break;
                }
                let (is_read, offset, len) = held.take().unwrap_or_else(|| picker.next());
                let dir = usize::from(!is_read);
                let due = rate_due_ns(spec, dir, dir_bytes[dir], dir_ios[dir]);
                if due > now_ns() {
                    held = Some((is_read, offset, len));
                    wait_until = Some(due);
                    free.push(token);
                    break;
                }
                let mut buf = pool.take(len as usize).expect("one buffer per slot");
                if spec.verify && !is_read {
                    verify::fill(buf.as_mut_slice(), offset, spec.randseed);
                    // A newer write replaces every older one it overlaps.
                    let older: Vec<u64> = written
                        .range(..offset + len)
                        .rev()
                        .take_while(|&(&o, &l)| o + l > offset)
                        .map(|(&o, _)| o)
                        .collect();
                    for o in older {
                        written.remove(&o);
                    }
                    written.insert(offset, len);
                }
                let kind =
                    if is_read { IoKind::Read { offset, buf } } else { IoKind::Write { offset, buf, fua: false } };
                slots[token as usize].queued_ns = now_ns();
                dev.submit(IoOp { token, kind })?;
                unsubmitted.push(token);
                issued_bytes += len;
                dir_bytes[dir] += len;
                dir_ios[dir] += 1;
                if !is_read && sync_every > 0 {
                    writes_since_sync += 1;
                    if writes_since_sync == sync_every {
                        writes_since_sync = 0;
                        sync_wanted = true;
                    }
                }
            }
        }
        if dev.in_flight() == 0 {
            if let Some(due) = wait_until.filter(|&d| d < end_ns) {
                std::thread::sleep(std::time::Duration::from_nanos(due.saturating_sub(now_ns())));
                continue;
            }
            if sync_wanted {
                continue;
            }
            if !ended_sync && dir_ios[1] > 0 {
                // fio's end_fsync: part of the job, so inside its runtime.
                ended_sync = true;
                sync_wanted = true;
                continue;
            }
            break;
        }
        let submit_ns = now_ns();
        for &token in &unsubmitted {
            slots[token as usize].submitted_ns = submit_ns;
        }
        let batch_depth = dev.in_flight();
        if !unsubmitted.is_empty() {
            let n = unsubmitted.len();
            result.submit_hist[count_bucket(submit_batch)] += (n / submit_batch) as u64;
            if n % submit_batch != 0 {
                result.submit_hist[count_bucket(n % submit_batch)] += 1;
            }
        }
        unsubmitted.clear();
        dev.reap(1, &mut completions)?;
        let done_ns = now_ns();
        if !measuring && done_ns >= ramp_end_ns {
            measuring = true;
            usage_start = Some(getrusage(UsageWho::RUSAGE_THREAD)?);
        }
        if measuring {
            result.complete_hist[count_bucket(completions.len())] += 1;
        }
        for c in completions.drain(..) {
            if let Err(e) = c.result {
                return Err(e).context(format!("job {}", spec.name));
            }
            if sync_token == Some(c.token) {
                sync_token = None;
                free.push(c.token);
                if measuring {
                    result.sync.record(done_ns.saturating_sub(slots[c.token as usize].submitted_ns));
                    last_completion_ns = done_ns;
                }
                continue;
            }
            if spec.verify && c.op == OpKind::Read {
                let buf = c.buf.as_ref().expect("reads return their buffer");
                verify::check(buf.as_slice(), c.offset)
                    .with_context(|| format!("job {}: {}", spec.name, path.display()))?;
            }
            free.push(c.token);
            progress.add(c.op == OpKind::Read, c.len);
            if !measuring {
                continue;
            }
            let slot = &slots[c.token as usize];
            let slat = slot.submitted_ns.saturating_sub(slot.queued_ns);
            let clat = done_ns.saturating_sub(slot.submitted_ns);
            result.record(c.op == OpKind::Read, c.len, slat, clat);
            result.depth_hist[depth_bucket(batch_depth)] += 1;
            last_completion_ns = done_ns;
        }
    }
    result.runtime_us = last_completion_ns.saturating_sub(ramp_end_ns) / 1000;
    if spec.verify && spec.do_verify && !written.is_empty() {
        verify_written(dev.as_mut(), &pool, &written)
            .with_context(|| format!("job {}: {}", spec.name, path.display()))?;
    }
    if let Some(start) = usage_start {
        let end = getrusage(UsageWho::RUSAGE_THREAD)?;
        result.usr_cpu_us = micros(end.user_time()).saturating_sub(micros(start.user_time()));
        result.sys_cpu_us = micros(end.system_time()).saturating_sub(micros(start.system_time()));
        result.ctx_switches = (end.voluntary_context_switches() + end.involuntary_context_switches())
            .saturating_sub(start.voluntary_context_switches() + start.involuntary_context_switches())
            as u64;
    }
    Ok(result)
}

/// fio's verify phase: reads back every block the job wrote, `iodepth` at
/// a time, and checks each one's header and CRC32C. Not timed.
fn verify_written(
    dev: &mut dyn BlockDevice,
    pool: &BufferPool,
    written: &std::collections::BTreeMap<u64, u64>,
) -> anyhow::Result<()> {
    let depth = dev.queue_depth().min(pool.slot_count()).max(1);
    let mut blocks = written.iter();
    let mut done = Vec::new();
    loop {
        while dev.in_flight() < depth {
            let Some((&offset, &len)) = blocks.next() else { break };
            let buf = pool.take(len as usize).expect("a free buffer for every slot");
            dev.submit(IoOp { token: offset, kind: IoKind::Read { offset, buf } })?;
        }
        if dev.in_flight() == 0 {
            return Ok(());
        }
        dev.reap(1, &mut done)?;
        for c in done.drain(..) {
            c.result?;
            verify::check(c.buf.as_ref().expect("reads return their buffer").as_slice(), c.offset)?;
        }
    }
}

/// fio-style verification blocks: a header (magic, length, offset, CRC32C
/// of the data after the header) and data derived from the offset and the
/// job's seed, so any block can be checked on its own.
mod verify {
    use anyhow::bail;
    use shardstore::rng::Rng;

    const MAGIC: [u8; 4] = *b"SBVF";
    const HEADER: usize = 24;

    pub fn fill(buf: &mut [u8], offset: u64, seed: u64) {
        let mut rng = Rng::new(seed ^ offset.rotate_left(29));
        for chunk in buf[HEADER..].chunks_mut(8) {
            let v = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let crc = crc32c::crc32c(&buf[HEADER..]);
        buf[..4].copy_from_slice(&MAGIC);
        let len = buf.len() as u32;
        buf[4..8].copy_from_slice(&len.to_le_bytes());
        buf[8..16].copy_from_slice(&offset.to_le_bytes());
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
        buf[20..24].fill(0);
    }

    /// Checks a block read at `offset`: fio's "bad magic", "wrong offset"
    /// and "crc32c mismatch" cases, each naming the offset.
    pub fn check(buf: &[u8], offset: u64) -> anyhow::Result<()> {
        if buf[..4] != MAGIC {
            bail!("verify: bad magic in the block at offset {offset} (never written with verify, or overwritten)");
        }
        let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        if len as usize != buf.len() {
            bail!(
                "verify: the block at offset {offset} was written as {len} bytes, read as {} (use the writer's bs)",
                buf.len()
            );
        }
        let at = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        if at != offset {
            bail!("verify: the block at offset {offset} says it was written at {at} (misdirected)");
        }
        let want = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
        let got = crc32c::crc32c(&buf[HEADER..]);
        if got != want {
            bail!("verify: crc32c mismatch in the block at offset {offset}: stored {want:08x}, computed {got:08x}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
