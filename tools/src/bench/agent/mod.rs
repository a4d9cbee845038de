//! `--target=agent --url=http://HOST:PORT`: the store jobs over the agent's
//! HTTP API. `write` puts shards of `bs` bytes under keys `<job>/<n>` (as
//! in the store mode, `/` sent as `%2F`), `read`/`randread` get them (put
//! first when missing), `rw`/`randrw` mix by `rwmixread`. Each of the
//! `numjobs` client threads keeps `iodepth` requests in flight, one on each
//! of its keep-alive connections, driven by epoll (`conns`), as the store
//! mode's client keeps `iodepth` requests on the store's queue from one
//! thread; a put counts once the agent answered 201, which it sends only
//! when the shard is durable.
//!
//! `--target=objects` runs the same jobs on the cluster's object API
//! (`/v1/objects/<job>%2F<n>`): a put counts once the object is durable
//! on its holders; a read is a whole object, verified and decoded by the
//! agent. A client token, if the cluster requires one, is read from the
//! file named by `SHARDNODE_TOKEN_FILE`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use shardstore::rng::Rng;

mod conns;

use conns::{Conns, Request};

use super::options::{JobSpec, Target};
use super::run::{run_clients, JobResult, Progress, Start};

/// What a job's requests go to: shards or objects, with the token.
#[derive(Debug, Clone)]
struct Api {
    host: String,
    prefix: &'static str,
    auth: String,
}

impl Api {
    fn of(spec: &JobSpec) -> anyhow::Result<Api> {
        let auth = match std::env::var_os("SHARDNODE_TOKEN_FILE") {
            Some(f) if spec.target == Target::Objects => {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("{}: cannot read SHARDNODE_TOKEN_FILE", f.to_string_lossy()))?;
                let token = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
                format!("authorization: Bearer {}\r\n", token.context("SHARDNODE_TOKEN_FILE holds no token")?)
            }
            _ => String::new(),
        };
        let prefix = if spec.target == Target::Objects { "/v1/objects/" } else { "/v1/shards/" };
        let host = spec.url.clone().expect("validated: agent and objects jobs have a url");
        Ok(Api { host, prefix, auth })
    }

    fn path(&self, job: &str, n: u64) -> String {
        format!("{}{job}%2F{n:010}", self.prefix)
    }
}

pub fn run_job(spec: &JobSpec, progress: &Arc<Progress>) -> anyhow::Result<Vec<JobResult>> {
    let count = (spec.size.unwrap_or(256 << 20) / spec.bs).max(1);
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let api = Api::of(spec)?;
    if read_percent > 0 {
        // One connection, one request at a time.
        let mut conn = Conns::open(&api.host, &api.auth, 1)?;
        let head = Request { method: "HEAD", path: api.path(&spec.name, count - 1), put: false };
        if conn.call(0, &head, b"")?.status == 404 {
            let payload = vec![0xA5u8; spec.bs as usize];
            for n in 0..count {
                let put = Request { method: "PUT", path: api.path(&spec.name, n), put: true };
                let status = conn.call(0, &put, &payload)?.status;
                if status != 201 {
                    bail!("laying out {}: PUT answered {status}", api.path(&spec.name, n));
                }
            }
        }
    }
    // CPU figures are the client's: the agent's is its own process's.
    let (owned, progress) = (spec.clone(), Arc::clone(progress));
    let threads = spec.numjobs as usize;
    let per_job = run_clients(spec, threads, move |c, start| client(&api, &owned, c as u64, count, start, &progress))?;
    Ok(per_job)
}

/// One job thread: `iodepth` connections, each with one request in
/// flight, the next sent as soon as an answer is whole.
fn client(
    api: &Api,
    spec: &JobSpec,
    client: u64,
    count: u64,
    start: &Start,
    progress: &Progress,
) -> anyhow::Result<JobResult> {
    let (next, started) = (&start.next, start.started);
    let mut rng = Rng::new(spec.randseed ^ client.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // With bs=READ,WRITE the puts go to keys of their own (`<name>/w/<n>`), as
    // many as the size holds at the write size, so that gets keep reading
    // shards of the read size.
    let put_bs = spec.bs_write.unwrap_or(spec.bs);
    let put_name = spec.bs_write.map_or_else(|| spec.name.clone(), |_| format!("{}%2Fw", spec.name));
    let put_count = (spec.size.unwrap_or(256 << 20) / put_bs).max(1);
    // One buffer, shared by every put of the job (as fio reuses its buffers).
    let payload: Vec<u8> = (0..put_bs).map(|_| rng.next_u64() as u8).collect();
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let mut conns = Conns::open(&api.host, &api.auth, spec.iodepth as usize)?;
    let mut result = JobResult { name: spec.name.clone(), jobs: 1, ..JobResult::default() };
    start.barrier.wait();
    let ramp_end = started.elapsed().as_micros() as u64 + spec.ramp_time_us;
    let end = spec.runtime_us.map_or(u64::MAX, |r| ramp_end + r);
    let ops_limit = if spec.time_based { u64::MAX } else { count };
    let mut measured_from = None;
    // Per connection: whether its request is a read, and when it was sent
    // (µs into the run), to count it only when sent after the ramp.
    let mut sent: Vec<(bool, u64)> = vec![(false, 0); conns.len()];
    let mut in_flight = 0;
    let mut issue = |conns: &mut Conns, i: usize, sent: &mut [(bool, u64)]| -> anyhow::Result<bool> {
        let now = started.elapsed().as_micros() as u64;
        if now >= end {
            return Ok(false);
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= ops_limit {
            return Ok(false);
        }
        let n = if spec.rw.is_random() { rng.below(count) } else { seq % count };
        let is_read = read_percent == 100 || (read_percent > 0 && rng.below(100) < u64::from(read_percent));
        let path = if is_read || spec.bs_write.is_none() {
            api.path(&spec.name, n)
        } else {
            api.path(&put_name, if spec.rw.is_random() { rng.below(put_count) } else { seq % put_count })
        };
        let (method, put) = if is_read { ("GET", false) } else { ("PUT", true) };
        conns.send(i, &Request { method, path, put }, &payload)?;
        sent[i] = (is_read, now);
        Ok(true)
    };
    for i in 0..conns.len() {
        if issue(&mut conns, i, &mut sent)? {
            in_flight += 1;
        } else {
            conns.retire(i)?;
        }
    }
    let mut answers = Vec::with_capacity(conns.len());
    while in_flight > 0 {
        conns.wait(WAIT_SLICE, &payload, &mut answers)?;
        for (i, answer) in answers.drain(..) {
            in_flight -= 1;
            let (is_read, at) = sent[i];
            match (is_read, answer.status) {
                (true, 200) | (false, 201) => {}
                _ => bail!("{} answered {}", conns.request(i), answer.status),
            }
            let bytes = if is_read { answer.len as u64 } else { put_bs };
            progress.add(is_read, bytes);
            if at >= ramp_end {
                measured_from = Some(measured_from.map_or(at, |m: u64| m.min(at)));
                result.record_request(is_read, bytes, answer.elapsed.as_nanos() as u64);
            }
            if issue(&mut conns, i, &mut sent)? {
                in_flight += 1;
            } else {
                conns.retire(i)?;
            }
        }
    }
    result.runtime_us = (started.elapsed().as_micros() as u64).saturating_sub(measured_from.unwrap_or(ramp_end));
    Ok(result)
}

/// How long one wait for answers may last before the client looks at the
/// clock (an agent that answers nothing fails the job after the client's
/// timeout, counted across waits).
const WAIT_SLICE: Duration = Duration::from_millis(100);
