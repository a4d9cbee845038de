//! `--target=store`: the same jobs through the shard store. `write` puts
//! shards of `bs` bytes under keys `<job>/<n>` for n in 0..size/bs (a
//! time-based job wraps around and overwrites, as fio rewrites a file);
//! `read`/`randread` get them (laid out first if missing, as fio lays out a
//! file); `rw`/`randrw` mix by `rwmixread`. Each of `numjobs` jobs keeps
//! `iodepth` requests in flight on the store's queue, as a fio job keeps
//! `iodepth` I/Os in flight on its ring, issuing the next request from the
//! completion of the last (see [`client`]); each put is acknowledged only
//! when durable, so a write job measures durable puts.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::scrub::ScrubSettings;
use shardstore::store::thread::{self, StoreHandle};

use super::options::{JobSpec, Scrub};
use super::run::{lay_out, run_clients, JobResult, Progress, Start};

fn key(job: &str, n: u64) -> Vec<u8> {
    format!("{job}/{n:010}").into_bytes()
}

/// The key of the `n`th shard a job with its own write size (bs=R,W)
/// puts: apart from the shards its gets read, which keep their size.
fn write_key(job: &str, n: u64) -> Vec<u8> {
    format!("{job}/w/{n:010}").into_bytes()
}

/// Lays out and formats a store on `path` if it does not exist yet.
pub(super) fn prepare(path: &Path, spec: &JobSpec) -> anyhow::Result<()> {
    if !path.exists() {
        let Some(size) = spec.size else { bail!("{}: does not exist (give --size to create a store)", path.display()) };
        // Room for the shards as stored (a header block plus block-padded
        // payload each), a quarter more for reclamation, and the store's
        // own regions; the metadata region (1/64 of the device) then also
        // holds the index of that many shards.
        let count = (size / spec.bs).max(1);
        let record = shardstore::store::record::record_size_bytes(spec.name.len() + 11, spec.bs as usize);
        // Writes of another size (bs=R,W) go to a key set of their own.
        let written = spec.bs_write.map_or(0, |w| {
            (size / w).max(1) * shardstore::store::record::record_size_bytes(spec.name.len() + 13, w as usize)
        });
        let data = count * record + written;
        let file_size = (data + data / 4 + (512 << 20)).next_multiple_of(1 << 20);
        super::run::made_whole(path, |making| {
            lay_out(making, file_size)
                .with_context(|| format!("{}: cannot lay out {file_size} bytes", making.display()))?;
            let mut dev = device::open(making, &OpenOptions { queue_depth: 4, ..OpenOptions::default() })?;
            format(&mut dev, &FormatOptions::default())?;
            Ok(())
        })?;
    }
    Ok(())
}

/// Opens the store on `path` (laid out and formatted first if missing)
/// and starts its thread.
pub(super) fn open_store(path: &Path, spec: &JobSpec) -> anyhow::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
    prepare(path, spec)?;
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
        store.submit_put(key(&spec.name, n), payload.clone(), None, move |r| {
            let _ = tx.send(r);
        })?;
        in_flight += 1;
    }
    for _ in 0..in_flight {
        rx.recv().context("the store thread stopped")??;
    }
    Ok(())
}

pub fn run_job(spec: &JobSpec, progress: &Arc<Progress>) -> anyhow::Result<Vec<JobResult>> {
    let path = spec.filename.clone().expect("validated");
    let (store, join) = open_store(&path, spec)?;
    let count = (spec.size.unwrap_or(256 << 20) / spec.bs).max(1);
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    if read_percent > 0 && store.stat(&key(&spec.name, count - 1))?.is_none() {
        fill(&store, spec, count)?;
    }
    if spec.scrub_only && store.stat(&key(&spec.name, count - 1))?.is_none() {
        fill(&store, spec, count)?;
    }
    store.set_scrub(scrub_settings(spec.scrub))?;
    let per_job = if spec.scrub_only {
        vec![scrub_only(&store, spec)?]
    } else {
        let (client_store, owned, progress) = (store.clone(), spec.clone(), Arc::clone(progress));
        run_clients(spec, spec.numjobs as usize, move |j, start| {
            client(&client_store, &owned, j as u64, count, start, &progress)
        })?
    };
    store.close()?;
    join.join().expect("store thread panicked");
    Ok(per_job)
}

fn scrub_settings(scrub: Scrub) -> ScrubSettings {
    let base = ScrubSettings::default();
    match scrub {
        Scrub::Off => ScrubSettings { paused: true, ..base },
        Scrub::Deadline => base,
        Scrub::Max => ScrubSettings { unthrottled: true, ..base },
        Scrub::Rate(rate) => ScrubSettings { unthrottled: true, rate_bytes_max: Some(rate.max(1)), ..base },
    }
}

/// Measures the scrubber alone: the bytes it verifies (chunk payloads and
/// metadata), over the runtime or until a pass completes, as the job's
/// read bandwidth; `total_ios` counts chunks. No latencies: the scrubber
/// has no requests to time.
fn scrub_only(store: &StoreHandle, spec: &JobSpec) -> anyhow::Result<JobResult> {
    let first = store.scrub_status()?;
    let started = Instant::now();
    let ramp_end = started + std::time::Duration::from_micros(spec.ramp_time_us);
    let runtime = std::time::Duration::from_micros(spec.runtime_us.unwrap_or(u64::MAX / 2));
    let mut from = None;
    let usage_start = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let last = loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let st = store.scrub_status()?;
        let now = Instant::now();
        if from.is_none() && now >= ramp_end {
            from = Some((now, st.clone()));
        }
        let Some((t0, _)) = &from else { continue };
        let over = if spec.time_based { now - *t0 >= runtime } else { st.passes > first.passes };
        if over {
            break st;
        }
    };
    let (t0, at_start) = from.expect("set before the loop ends");
    let bytes = |s: &shardstore::store::scrub::ScrubStatus| {
        s.counters.chunk_bytes_verified + s.counters.metadata_bytes_verified
    };
    let usage_end = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let mut result = JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() };
    result.read.io_bytes = bytes(&last) - bytes(&at_start);
    result.read.total_ios = last.counters.chunks_verified - at_start.counters.chunks_verified;
    result.runtime_us = t0.elapsed().as_micros() as u64;
    result.usr_cpu_us =
        super::run::micros(usage_end.user_time()).saturating_sub(super::run::micros(usage_start.user_time()));
    result.sys_cpu_us =
        super::run::micros(usage_end.system_time()).saturating_sub(super::run::micros(usage_start.system_time()));
    Ok(result)
}

/// The state of one job whose requests are issued from their completions.
struct Chain {
    store: StoreHandle,
    spec: JobSpec,
    start: Arc<Start>,
    progress: Arc<Progress>,
    count: u64,
    read_percent: u32,
    payload: bytes::Bytes,
    ramp_end: u64,
    end: u64,
    ops_limit: u64,
    state: Mutex<ChainState>,
    finished: Condvar,
}

struct ChainState {
    rng: Rng,
    in_flight: usize,
    stopping: bool,
    measured_from: Option<u64>,
    result: JobResult,
    error: Option<anyhow::Error>,
}

impl Chain {
    /// Issues one more request unless the job is over; called with the state locked.
    fn issue(self: &Arc<Self>, st: &mut ChainState) {
        if st.stopping || self.start.started.elapsed().as_micros() as u64 >= self.end {
            st.stopping = true;
            return;
        }
        let seq = self.start.next.fetch_add(1, Ordering::Relaxed);
        if seq >= self.ops_limit {
            st.stopping = true;
            return;
        }
        let n = if self.spec.rw.is_random() { st.rng.below(self.count) } else { seq % self.count };
        let is_read =
            self.read_percent == 100 || (self.read_percent > 0 && st.rng.below(100) < u64::from(self.read_percent));
        let k = match self.spec.bs_write {
            Some(w) if !is_read => {
                let writes = (self.spec.size.unwrap_or(256 << 20) / w).max(1);
                write_key(&self.spec.name, if self.spec.rw.is_random() { st.rng.below(writes) } else { seq % writes })
            }
            _ => key(&self.spec.name, n),
        };
        let (me, name, t0) = (Arc::clone(self), k.clone(), Instant::now());
        let done = move |r: shardstore::error::Result<u64>| {
            let ns = t0.elapsed().as_nanos() as u64;
            let mut st = me.state.lock().expect("chain state");
            st.in_flight -= 1;
            match r {
                Ok(bytes) => {
                    me.progress.add(is_read, bytes);
                    let now = me.start.started.elapsed().as_micros() as u64;
                    if now >= me.ramp_end {
                        st.measured_from.get_or_insert(now);
                        st.result.record_request(is_read, bytes, ns);
                    }
                    me.issue(&mut st);
                }
                Err(e) => {
                    let what = if is_read { "get" } else { "put" };
                    let e = anyhow::Error::new(e).context(format!("{what} {}", String::from_utf8_lossy(&name)));
                    st.error.get_or_insert(e);
                    st.stopping = true;
                }
            }
            if st.in_flight == 0 {
                me.finished.notify_all();
            }
        };
        st.in_flight += 1;
        let queued = if is_read {
            self.store.submit_get(k, 0, u64::MAX, move |r| done(r.map(|b| b.len() as u64)))
        } else {
            let bytes = self.spec.bs_write.unwrap_or(self.spec.bs);
            self.store.submit_put(k, self.payload.clone(), None, move |r| done(r.map(|()| bytes)))
        };
        if let Err(e) = queued {
            st.in_flight -= 1;
            st.error.get_or_insert(anyhow::Error::new(e).context("queueing a request on the store"));
            st.stopping = true;
        }
    }
}

/// Runs one job: issues `iodepth` requests, then each completion (on the
/// store thread) records itself and issues the job's next request, as a
/// fio job issues its next I/O from its reap loop; this thread waits for
/// the last one. Requests still go through the store's queue.
fn client(
    store: &StoreHandle,
    spec: &JobSpec,
    job: u64,
    count: u64,
    start: &Arc<Start>,
    progress: &Arc<Progress>,
) -> anyhow::Result<JobResult> {
    let mut rng = Rng::new(spec.randseed ^ job.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // One buffer, shared by every put of the job (as fio reuses its buffers).
    let payload: bytes::Bytes =
        (0..spec.bs_write.unwrap_or(spec.bs)).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>().into();
    start.barrier.wait();
    let ramp_end = start.started.elapsed().as_micros() as u64 + spec.ramp_time_us;
    let chain = Arc::new(Chain {
        store: store.clone(),
        spec: spec.clone(),
        start: Arc::clone(start),
        progress: Arc::clone(progress),
        count,
        read_percent: spec.rw.read_percent(spec.rwmixread),
        payload,
        ramp_end,
        end: spec.runtime_us.map_or(u64::MAX, |r| ramp_end + r),
        ops_limit: if spec.time_based { u64::MAX } else { count },
        state: Mutex::new(ChainState {
            rng,
            in_flight: 0,
            stopping: false,
            measured_from: None,
            result: JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() },
            error: None,
        }),
        finished: Condvar::new(),
    });
    let mut st = chain.state.lock().expect("chain state");
    for _ in 0..spec.iodepth {
        chain.issue(&mut st);
    }
    while st.in_flight > 0 {
        st = chain.finished.wait(st).expect("chain state");
    }
    if let Some(e) = st.error.take() {
        return Err(e);
    }
    let mut result = std::mem::take(&mut st.result);
    result.runtime_us =
        (start.started.elapsed().as_micros() as u64).saturating_sub(st.measured_from.unwrap_or(ramp_end));
    Ok(result)
}
