//! `--target=store`: the same jobs through the shard store. `write` puts
//! shards of `bs` bytes under keys `<job>/<n>` for n in 0..size/bs (a
//! time-based job wraps around and overwrites, as fio rewrites a file);
//! `read`/`randread` get them (laid out first if missing, as fio lays out a
//! file); `rw`/`randrw` mix by `rwmixread`. Each of `numjobs` threads keeps
//! `iodepth` requests in flight on the store's queue, as a fio job keeps
//! `iodepth` I/Os in flight on its ring; each put is acknowledged only when
//! durable, so a write job measures durable puts.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context};
use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::thread::{self, StoreHandle};

use super::options::JobSpec;
use super::run::{lay_out, run_clients, JobResult, Start};

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
        lay_out(path, file_size).with_context(|| format!("{}: cannot lay out {file_size} bytes", path.display()))?;
        let mut dev = device::open(path, &OpenOptions { queue_depth: 4, ..OpenOptions::default() })?;
        format(&mut dev, &FormatOptions::default())?;
    }
    let dev = device::open(path, &OpenOptions { queue_depth: 64, ..OpenOptions::default() })?;
    Ok(thread::spawn(Box::new(dev))?)
}

/// Puts every shard a read job needs, many in flight so they share
/// group commits.
fn fill(store: &StoreHandle, spec: &JobSpec, count: u64) -> anyhow::Result<()> {
    const WINDOW: u64 = 256;
    let payload = bytes::Bytes::from(vec![0xA5u8; spec.bs as usize]);
    let (tx, rx) = mpsc::channel();
    let mut in_flight = 0;
    for n in 0..count {
        if in_flight == WINDOW {
            rx.recv().context("the store thread stopped")??;
            in_flight -= 1;
        }
        let tx = tx.clone();
        store.submit_put(key(&spec.name, n), payload.clone(), move |r| {
            let _ = tx.send(r);
        })?;
        in_flight += 1;
    }
    for _ in 0..in_flight {
        rx.recv().context("the store thread stopped")??;
    }
    Ok(())
}

pub fn run_job(spec: &JobSpec) -> anyhow::Result<Vec<JobResult>> {
    let path = spec.filename.clone().expect("validated");
    let (store, join) = open_store(&path, spec)?;
    let count = (spec.size.unwrap_or(256 << 20) / spec.bs).max(1);
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    if read_percent > 0 && store.stat(&key(&spec.name, count - 1))?.is_none() {
        fill(&store, spec, count)?;
    }
    let (client_store, owned) = (store.clone(), spec.clone());
    let per_job = run_clients(spec, spec.numjobs as usize, move |j, start| {
        client(&client_store, &owned, j as u64, count, start)
    })?;
    store.close()?;
    join.join().expect("store thread panicked");
    Ok(per_job)
}

/// What comes back from the store thread for one request.
struct Done {
    slot: usize,
    is_read: bool,
    result: shardstore::error::Result<u64>,
}

fn client(store: &StoreHandle, spec: &JobSpec, job: u64, count: u64, start: &Start) -> anyhow::Result<JobResult> {
    let (next, started) = (&start.next, start.started);
    let mut rng = Rng::new(spec.randseed ^ job.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // One buffer, shared by every put of the job (as fio reuses its buffers).
    let payload: bytes::Bytes = (0..spec.bs).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>().into();
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let depth = spec.iodepth as usize;
    let mut result = JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() };
    let (tx, rx) = mpsc::channel::<Done>();
    let mut issued_at: Vec<Option<(Instant, Vec<u8>)>> = (0..depth).map(|_| None).collect();
    let mut free: Vec<usize> = (0..depth).rev().collect();
    start.barrier.wait();
    let ramp_end = started.elapsed().as_micros() as u64 + spec.ramp_time_us;
    let end = spec.runtime_us.map_or(u64::MAX, |r| ramp_end + r);
    let ops_limit = if spec.time_based { u64::MAX } else { count };
    let mut measured_from = None;
    let mut stopping = false;
    loop {
        // Keep `iodepth` requests in flight until the time or the work runs out.
        while !stopping && !free.is_empty() {
            if started.elapsed().as_micros() as u64 >= end {
                stopping = true;
                break;
            }
            let seq = next.fetch_add(1, Ordering::Relaxed);
            if seq >= ops_limit {
                stopping = true;
                break;
            }
            let n = if spec.rw.is_random() { rng.below(count) } else { seq % count };
            let is_read = read_percent == 100 || (read_percent > 0 && rng.below(100) < u64::from(read_percent));
            let slot = free.pop().expect("a free slot");
            let k = key(&spec.name, n);
            issued_at[slot] = Some((Instant::now(), k.clone()));
            let tx = tx.clone();
            let queued = if is_read {
                store.submit_get(k, 0, u64::MAX, move |r| {
                    let _ = tx.send(Done { slot, is_read, result: r.map(|b| b.len() as u64) });
                })
            } else {
                let bytes = spec.bs;
                store.submit_put(k, payload.clone(), move |r| {
                    let _ = tx.send(Done { slot, is_read, result: r.map(|()| bytes) });
                })
            };
            queued.context("queueing a request on the store")?;
        }
        if free.len() == depth {
            break;
        }
        let done = rx.recv().context("the store thread stopped")?;
        let (t0, k) = issued_at[done.slot].take().expect("a request in flight in this slot");
        free.push(done.slot);
        let what = if done.is_read { "get" } else { "put" };
        let bytes = done.result.with_context(|| format!("{what} {}", String::from_utf8_lossy(&k)))?;
        let ns = t0.elapsed().as_nanos() as u64;
        let now = started.elapsed().as_micros() as u64;
        if now < ramp_end {
            continue;
        }
        measured_from.get_or_insert(now);
        result.record_request(done.is_read, bytes, ns);
    }
    result.runtime_us = (started.elapsed().as_micros() as u64).saturating_sub(measured_from.unwrap_or(ramp_end));
    Ok(result)
}
