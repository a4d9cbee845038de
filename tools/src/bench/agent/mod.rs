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

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// One keep-alive HTTP/1.1 connection to the agent.
struct Conn {
    stream: TcpStream,
    host: String,
    auth: String,
    buf: Vec<u8>,
}

impl Conn {
    fn open(api: &Api) -> anyhow::Result<Conn> {
        let host = &api.host;
        let stream = TcpStream::connect(host).with_context(|| format!("cannot connect to the agent at {host}"))?;
        stream.set_nodelay(true)?;
        // An agent that stops answering (stopped, hung) fails the job
        // rather than holding it past its runtime for ever.
        stream.set_read_timeout(Some(crate::http::TIMEOUT))?;
        stream.set_write_timeout(Some(crate::http::TIMEOUT))?;
        Ok(Conn { stream, host: host.to_owned(), auth: api.auth.clone(), buf: Vec::with_capacity(1 << 16) })
    }

    /// Sends a request and reads the answer; returns the status and the
    /// body length.
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, usize)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{}content-length: {}\r\n\r\n",
            self.host,
            self.auth,
            body.len()
        );
        let silent = |e: std::io::Error| {
            let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            let why = if timed_out {
                format!("the agent did not answer within {:?}", crate::http::TIMEOUT)
            } else {
                e.to_string()
            };
            anyhow::anyhow!("{method} {path}: {why}")
        };
        self.stream.write_all(head.as_bytes()).map_err(silent)?;
        self.stream.write_all(body).map_err(silent)?;
        self.buf.clear();
        let mut chunk = vec![0u8; 1 << 16];
        let header_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk).map_err(silent)?;
            if n == 0 {
                bail!("the agent closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
        // A HEAD answer has the length of a body it does not send.
        let len: usize = if method == "HEAD" {
            0
        } else {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let mut have = self.buf.len() - header_end;
        while have < len {
            let n = self.stream.read(&mut chunk[..(len - have).min(1 << 16)]).map_err(silent)?;
            if n == 0 {
                bail!("the agent closed the connection in a body");
            }
            have += n;
        }
        Ok((status, len))
    }
}

pub fn run_job(spec: &JobSpec, progress: &Arc<Progress>) -> anyhow::Result<Vec<JobResult>> {
    let count = (spec.size.unwrap_or(256 << 20) / spec.bs).max(1);
    let read_percent = spec.rw.read_percent(spec.rwmixread);
    let api = Api::of(spec)?;
    if read_percent > 0 {
        let mut conn = Conn::open(&api)?;
        let (status, _) = conn.call("HEAD", &api.path(&spec.name, count - 1), b"")?;
        if status == 404 {
            let payload = vec![0xA5u8; spec.bs as usize];
            for n in 0..count {
                let (status, _) = conn.call("PUT", &api.path(&spec.name, n), &payload)?;
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
    while in_flight > 0 {
        for (i, answer) in conns.wait(WAIT_SLICE, &payload)? {
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
