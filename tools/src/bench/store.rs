//! `--target=store`: the same jobs through the shard store. `write` puts
//! shards of `bs` bytes under keys `<job>/<n>` for n in 0..size/bs (a
//! time-based job wraps around and overwrites, as fio rewrites a file);
//! `read`/`randread` get them (laid out first if missing, as fio lays out a
//! file); `rw`/`randrw` mix by `rwmixread`. `iodepth` is the number of
//! concurrent clients on the store's queue; each put is acknowledged only
//! when durable, so a write job measures durable puts.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::{bail, Context};
use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::thread::{self, StoreHandle};

use super::options::JobSpec;
use super::run::{micros, DirStats, JobResult};

fn key(job: &str, n: u64) -> Vec<u8> {
    format!("{job}/{n:010}").into_bytes()
}

fn open_store(path: &Path, spec: &JobSpec) -> anyhow::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
    if !path.exists() {
        let Some(size) = spec.size else { bail!("{}: does not exist (give --size to create a store)", path.display()) };
        // Room for the shards as stored (a header block plus block-padded
        // payload each), a quarter more for reclamation, and the store's
        // own regions; the metadata region (1/64 of the device) then also
        // holds the index of that many shards.
        let count = (size / spec.bs).max(1);
        let record = shardstore::store::record::record_size_bytes(spec.name.len() + 11, spec.bs as usize);
        let data = count * record;
        let file_size = (data + data / 4 + (512 << 20)).next_multiple_of(1 << 20);
        std::fs::File::create(path)
            .and_then(|f| f.set_len(file_size))
            .with_context(|| format!("{}: cannot create", path.display()))?;
        let mut dev = device::open(path, &OpenOptions { queue_depth: 4, ..OpenOptions::default() })?;
        format(&mut dev, &FormatOptions::default())?;
    }
    let dev = device::open(path, &OpenOptions { queue_depth: 64, ..OpenOptions::default() })?;
    Ok(thread::spawn(Box::new(dev))?)
}

pub fn run_job(spec: &JobSpec) -> anyhow::Result<Vec<JobResult>> {
    let path = spec.filename.clone().expect("validated");
    let (store, join) = open_store(&path, spec)?;
    let count = (spec.size.unwrap_or(256 << 20) / spec.bs).max(1);
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    if read_percent > 0 && store.stat(&key(&spec.name, count - 1))?.is_none() {
        let payload = vec![0xA5u8; spec.bs as usize];
        for n in 0..count {
            store.put(&key(&spec.name, n), payload.clone())?;
        }
    }
    // The work happens on the store thread and the clients: charge the
    // whole process's CPU over the run to the job.
    let usage_start = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let clients = spec.iodepth as usize * spec.numjobs as usize;
    let barrier = Arc::new(Barrier::new(clients));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (store, spec, barrier, next) = (store.clone(), spec.clone(), Arc::clone(&barrier), Arc::clone(&next));
            std::thread::spawn(move || client(&store, &spec, c as u64, count, &barrier, &next, started))
        })
        .collect();
    let mut per_job: Vec<JobResult> =
        (0..spec.numjobs).map(|_| JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() }).collect();
    for (c, h) in handles.into_iter().enumerate() {
        let r = h.join().expect("client thread panicked")?;
        per_job[c % spec.numjobs as usize].merge(&r);
    }
    let usage_end = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let usr = micros(usage_end.user_time()).saturating_sub(micros(usage_start.user_time()));
    let sys = micros(usage_end.system_time()).saturating_sub(micros(usage_start.system_time()));
    let share = u64::from(spec.numjobs);
    for j in &mut per_job {
        j.jobs = 1;
        j.usr_cpu_us = usr / share;
        j.sys_cpu_us = sys / share;
    }
    store.close()?;
    join.join().expect("store thread panicked");
    Ok(per_job)
}

fn client(
    store: &StoreHandle,
    spec: &JobSpec,
    client: u64,
    count: u64,
    barrier: &Barrier,
    next: &AtomicU64,
    started: Instant,
) -> anyhow::Result<JobResult> {
    let mut rng = Rng::new(spec.randseed ^ client.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let payload: Vec<u8> = (0..spec.bs).map(|_| rng.next_u64() as u8).collect();
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let mut result = JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() };
    barrier.wait();
    let ramp_end = started.elapsed().as_micros() as u64 + spec.ramp_time_us;
    let end = spec.runtime_us.map_or(u64::MAX, |r| ramp_end + r);
    let ops_limit = if spec.time_based { u64::MAX } else { count };
    let mut measured_from = None;
    loop {
        let now = started.elapsed().as_micros() as u64;
        if now >= end {
            break;
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= ops_limit {
            break;
        }
        let n = if spec.rw.is_random() { rng.below(count) } else { seq % count };
        let is_read = read_percent == 100 || (read_percent > 0 && rng.below(100) < u64::from(read_percent));
        let k = key(&spec.name, n);
        let t0 = Instant::now();
        let bytes = if is_read {
            let got = store.get(&k).with_context(|| format!("get {}", String::from_utf8_lossy(&k)))?;
            got.len() as u64
        } else {
            store.put(&k, payload.clone()).with_context(|| format!("put {}", String::from_utf8_lossy(&k)))?;
            spec.bs
        };
        let ns = t0.elapsed().as_nanos() as u64;
        if now < ramp_end {
            continue;
        }
        measured_from.get_or_insert(now);
        let dir: &mut DirStats = if is_read { &mut result.read } else { &mut result.write };
        dir.io_bytes += bytes;
        dir.total_ios += 1;
        dir.slat.record(0);
        dir.clat.record(ns);
        dir.lat.record(ns);
    }
    result.runtime_us = (started.elapsed().as_micros() as u64).saturating_sub(measured_from.unwrap_or(ramp_end));
    Ok(result)
}
