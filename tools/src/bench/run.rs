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
use super::options::{Engine, JobSpec};

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
    /// What the engine enabled on this thread's device handle.
    pub features: EngineFeatures,
}

impl JobResult {
    /// Records one request served by the store or the agent: `bytes` moved
    /// in `ns` from asking to the answer (no separate submission stage, so
    /// `slat` is 0 and `clat` is the whole latency).
    pub fn record_request(&mut self, is_read: bool, bytes: u64, ns: u64) {
        let dir: &mut DirStats = if is_read { &mut self.read } else { &mut self.write };
        dir.io_bytes += bytes;
        dir.total_ios += 1;
        dir.slat.record(0);
        dir.clat.record(ns);
        dir.lat.record(ns);
    }

    pub fn merge(&mut self, o: &JobResult) {
        self.jobs += o.jobs;
        self.read.merge(&o.read);
        self.write.merge(&o.write);
        self.runtime_us = self.runtime_us.max(o.runtime_us);
        self.usr_cpu_us += o.usr_cpu_us;
        self.sys_cpu_us += o.sys_cpu_us;
        self.ctx_switches += o.ctx_switches;
        for (a, b) in self.depth_hist.iter_mut().zip(o.depth_hist) {
            *a += b;
        }
    }
}

/// Runs one job (all its threads) and returns one result per thread.
pub fn run_job(spec: &JobSpec) -> anyhow::Result<Vec<JobResult>> {
    let path = spec.filename.clone().expect("validated: every job has a filename");
    prepare_target(&path, spec)?;
    let barrier = Arc::new(Barrier::new(spec.numjobs as usize));
    let handles: Vec<_> = (0..spec.numjobs)
        .map(|i| {
            let spec = spec.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .name(format!("{}-{i}", spec.name))
                .spawn(move || worker(&spec, i, &barrier))
                .expect("spawn job thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("job thread panicked")).collect()
}

/// fio creates a missing file of `size` by writing it; so do we.
fn prepare_target(path: &Path, spec: &JobSpec) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let Some(size) = spec.size else {
        bail!("{}: does not exist (give --size to create it)", path.display());
    };
    let total = spec.offset + size;
    lay_out(path, total).with_context(|| format!("{}: cannot lay out {total} bytes", path.display()))
}

/// Writes the whole file, as fio lays out a file it creates: a sparse file
/// would make every first write allocate blocks (and every flush commit
/// the file system's journal), which a raw device never does and the fio
/// file it is compared with no longer does. Zeros, with O_DIRECT in 8 MiB
/// pieces; an unaligned tail through the page cache.
pub(super) fn lay_out(path: &Path, size: u64) -> anyhow::Result<()> {
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

fn worker(spec: &JobSpec, thread: u32, barrier: &Barrier) -> anyhow::Result<JobResult> {
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
    if spec.bs % dev.info().logical_block_size != 0 {
        bail!(
            "{}: bs {} is not a multiple of the device's {}-byte logical block",
            path.display(),
            spec.bs,
            dev.info().logical_block_size
        );
    }
    if spec.offset >= size {
        bail!("{}: offset {} is beyond the end of the device ({size} bytes)", path.display(), spec.offset);
    }
    let region = spec.size.unwrap_or(size - spec.offset).min(size - spec.offset);
    let blocks = region / spec.bs;
    if blocks == 0 {
        bail!("{}: the I/O region ({region} bytes) is smaller than bs ({})", path.display(), spec.bs);
    }
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let mut rng = Rng::new(spec.randseed ^ u64::from(thread).wrapping_mul(0x9E37_79B9));
    let mut slots: Vec<Slot> = (0..depth).map(|_| Slot { queued_ns: 0, submitted_ns: 0 }).collect();
    let mut free: Vec<u64> = (0..depth as u64).collect();
    let mut unsubmitted: Vec<u64> = Vec::with_capacity(depth);
    let mut completions: Vec<Completion> = Vec::with_capacity(depth);
    let mut result =
        JobResult { name: spec.name.clone(), jobs: 1, features: dev.info().features, ..JobResult::default() };
    let mut next_block = 0u64;
    let mut issued_bytes = 0u64;
    let bytes_limit = if spec.time_based { u64::MAX } else { blocks * spec.bs };

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
    let mut written = std::collections::BTreeSet::new();

    loop {
        let now = now_ns();
        let stop_issuing = now >= end_ns || (issued_bytes >= bytes_limit && !spec.time_based);
        if !stop_issuing {
            while let Some(token) = free.pop() {
                if issued_bytes >= bytes_limit {
                    free.push(token);
                    break;
                }
                let block = if spec.rw.is_random() {
                    rng.below(blocks)
                } else {
                    let b = next_block;
                    next_block = (next_block + 1) % blocks;
                    b
                };
                let offset = spec.offset + block * spec.bs;
                let mut buf = pool.take(bs).expect("one buffer per slot");
                let is_read = read_percent == 100 || (read_percent > 0 && rng.below(100) < u64::from(read_percent));
                if spec.verify && !is_read {
                    verify::fill(buf.as_mut_slice(), offset, spec.randseed);
                    written.insert(offset);
                }
                let kind =
                    if is_read { IoKind::Read { offset, buf } } else { IoKind::Write { offset, buf, fua: false } };
                slots[token as usize].queued_ns = now_ns();
                dev.submit(IoOp { token, kind })?;
                unsubmitted.push(token);
                issued_bytes += spec.bs;
            }
        }
        if dev.in_flight() == 0 {
            break;
        }
        let submit_ns = now_ns();
        for &token in &unsubmitted {
            slots[token as usize].submitted_ns = submit_ns;
        }
        let batch_depth = dev.in_flight();
        unsubmitted.clear();
        dev.reap(1, &mut completions)?;
        let done_ns = now_ns();
        if !measuring && done_ns >= ramp_end_ns {
            measuring = true;
            usage_start = Some(getrusage(UsageWho::RUSAGE_THREAD)?);
        }
        for c in completions.drain(..) {
            if let Err(e) = c.result {
                return Err(e).context(format!("job {}", spec.name));
            }
            if spec.verify && c.op == OpKind::Read {
                let buf = c.buf.as_ref().expect("reads return their buffer");
                verify::check(buf.as_slice(), c.offset)
                    .with_context(|| format!("job {}: {}", spec.name, path.display()))?;
            }
            free.push(c.token);
            if !measuring {
                continue;
            }
            let slot = &slots[c.token as usize];
            let dir = if c.op == OpKind::Read { &mut result.read } else { &mut result.write };
            dir.io_bytes += c.len;
            dir.total_ios += 1;
            let slat = slot.submitted_ns.saturating_sub(slot.queued_ns);
            let clat = done_ns.saturating_sub(slot.submitted_ns);
            dir.slat.record(slat);
            dir.clat.record(clat);
            dir.lat.record(slat + clat);
            result.depth_hist[depth_bucket(batch_depth)] += 1;
            last_completion_ns = done_ns;
        }
    }
    result.runtime_us = last_completion_ns.saturating_sub(ramp_end_ns) / 1000;
    if spec.verify && spec.do_verify && !written.is_empty() {
        verify_written(dev.as_mut(), &pool, bs, &written)
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
    bs: usize,
    written: &std::collections::BTreeSet<u64>,
) -> anyhow::Result<()> {
    let depth = dev.queue_depth().min(pool.slot_count()).max(1);
    let mut offsets = written.iter().copied();
    let mut done = Vec::new();
    loop {
        while dev.in_flight() < depth {
            let Some(offset) = offsets.next() else { break };
            let buf = pool.take(bs).expect("a free buffer for every slot");
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
