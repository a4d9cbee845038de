//! `--crash-test` (store target): writes shards that carry their own
//! verification header, stops the store at a random moment the hard way,
//! recovers, and checks that every acknowledged put reads back intact.
//!
//! - `kill` (the default): a child `shardbench` runs the store on the real
//!   file through io_uring and reports each put it issues and each
//!   acknowledgement on a pipe; the parent kills it with SIGKILL, opens
//!   the store again (recovery) and checks.
//! - `sim`: the store runs on a simulated device whose power is cut; the
//!   writes it had not flushed are dropped, torn or misdirected at random,
//!   as a real power cut may leave them.
//!
//! A put is acknowledged only when durable, so after recovery each shard
//! must hold its last acknowledged version or a newer one that was in
//! flight; never an older one, never bytes that fail their checksum, never
//! a version that was not written. One put per shard is in flight at a
//! time, so "newer" is well defined.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use shardstore::device::sim::{SimConfig, SimDevice};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::thread::{self, StoreHandle};

use super::options::{CrashTest, Invocation, JobSpec, OutputFormat};

/// The environment variable that makes `shardbench` the child of a kill
/// test: `JOB:ROUND`.
pub const CHILD_ENV: &str = "SHARDBENCH_CRASH_CHILD";
const MAGIC: [u8; 4] = *b"SBCT";
const HEADER: usize = 24;

fn key(job: &str, n: u64) -> Vec<u8> {
    format!("{job}/{n:010}").into_bytes()
}

/// Shard `n`'s version `seq`: a header (magic, n, seq, CRC32C of the rest)
/// and bytes derived from both.
fn payload(len: usize, n: u64, seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len.max(HEADER)];
    let mut rng = Rng::new(n.rotate_left(32) ^ seq ^ 0xC4A5_4000);
    for chunk in buf[HEADER..].chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let crc = crc32c::crc32c(&buf[HEADER..]);
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..12].copy_from_slice(&n.to_le_bytes());
    buf[12..20].copy_from_slice(&seq.to_le_bytes());
    buf[20..24].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The version a shard's bytes claim, if they are intact and are shard `n`'s.
fn parse(bytes: &[u8], n: u64) -> Option<u64> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return None;
    }
    let at = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    (at(4..12) == n && crc32c::crc32c(&bytes[HEADER..]) == crc).then(|| at(12..20))
}

/// What the writer did, as the checker needs it.
#[derive(Debug, Default)]
pub struct Ledger {
    issued: HashMap<u64, BTreeSet<u64>>,
    acked: HashMap<u64, u64>,
    puts_issued: u64,
    puts_acked: u64,
}

impl Ledger {
    fn event(&mut self, acked: bool, n: u64, seq: u64) {
        if acked {
            let v = self.acked.entry(n).or_insert(seq);
            *v = (*v).max(seq);
            self.puts_acked += 1;
        } else {
            self.issued.entry(n).or_default().insert(seq);
            self.puts_issued += 1;
        }
    }

    /// Reads the child's `i N SEQ` / `a N SEQ` lines.
    fn line(&mut self, line: &str) -> bool {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(n), Some(seq)) = (parts.next(), parts.next(), parts.next()) else { return false };
        let (Ok(n), Ok(seq)) = (n.parse(), seq.parse()) else { return false };
        match kind {
            "i" => self.event(false, n, seq),
            "a" => self.event(true, n, seq),
            _ => return false,
        }
        true
    }
}

/// Puts shards, `iodepth` in flight and never two of one shard, until
/// `stop` says so or a put fails (the power is gone); reports each put
/// before it is issued and each acknowledgement through `log`.
fn write(
    store: &StoreHandle,
    spec: &JobSpec,
    rng: &mut Rng,
    seq_base: u64,
    stop: &dyn Fn() -> bool,
    log: &mut dyn FnMut(bool, u64, u64),
) {
    let count = (spec.size.unwrap_or(DEFAULT_SIZE) / spec.bs).max(1);
    let (tx, rx) = mpsc::channel();
    let mut busy = HashSet::new();
    let mut seq = seq_base;
    let mut next_seq_n = 0;
    let mut failed = false;
    loop {
        while !failed && busy.len() < spec.iodepth as usize && !stop() && (busy.len() as u64) < count {
            let n = if spec.rw.is_random() {
                rng.below(count)
            } else {
                let n = next_seq_n;
                next_seq_n = (next_seq_n + 1) % count;
                n
            };
            if !busy.insert(n) {
                continue;
            }
            seq += 1;
            log(false, n, seq);
            let tx = tx.clone();
            let data = bytes::Bytes::from(payload(spec.bs as usize, n, seq));
            let s = seq;
            if store
                .submit_put(key(&spec.name, n), data, None, move |r| {
                    let _ = tx.send((n, s, r.is_ok()));
                })
                .is_err()
            {
                busy.remove(&n);
                failed = true;
            }
        }
        if busy.is_empty() {
            return;
        }
        // Bounded: a store thread that died (a panic) answers nothing more,
        // and its panic then surfaces at its join instead of a hang here.
        let Ok((n, s, ok)) = rx.recv_timeout(std::time::Duration::from_secs(60)) else { return };
        busy.remove(&n);
        if ok {
            log(true, n, s);
        } else {
            failed = true;
        }
    }
}

/// What one round found.
#[derive(Debug, Default)]
struct Check {
    acked_intact: u64,
    in_flight_present: u64,
    in_flight_absent: u64,
    lost: u64,
    wrong: u64,
    problems: Vec<String>,
}

/// Reads back every shard the writer touched and judges it.
fn check(store: &StoreHandle, job: &str, ledger: &Ledger) -> Check {
    let mut c = Check::default();
    for (&n, versions) in &ledger.issued {
        let acked = ledger.acked.get(&n).copied();
        let name = String::from_utf8_lossy(&key(job, n)).into_owned();
        let problem = |c: &mut Check, what: String| {
            if c.problems.len() < 10 {
                c.problems.push(format!("{name}: {what}"));
            }
        };
        match store.get(&key(job, n)) {
            Ok(bytes) => match parse(&bytes, n) {
                None => {
                    c.wrong += 1;
                    problem(&mut c, "bytes that fail their header or checksum".to_owned());
                }
                Some(seq) if !versions.contains(&seq) => {
                    c.wrong += 1;
                    problem(&mut c, format!("version {seq}, which was never written"));
                }
                Some(seq) => match acked {
                    Some(a) if seq < a => {
                        c.lost += 1;
                        problem(&mut c, format!("version {seq}, older than the acknowledged {a}"));
                    }
                    Some(a) if seq == a => c.acked_intact += 1,
                    _ => c.in_flight_present += 1,
                },
            },
            Err(e) => {
                if let Some(a) = acked {
                    c.lost += 1;
                    problem(&mut c, format!("acknowledged version {a} unreadable: {e}"));
                } else {
                    c.in_flight_absent += 1;
                }
            }
        }
    }
    c
}

const DEFAULT_SIZE: u64 = 64 << 20;

/// The child of a kill test: runs the writer on the real file and reports
/// on standard output until it is killed.
pub fn child(invocation: &Invocation, which: &str) -> anyhow::Result<()> {
    let (job, round) = which.split_once(':').context("malformed crash-test child marker")?;
    let spec = invocation.jobs.get(job.parse::<usize>()?).context("no such job")?;
    let round: u64 = round.parse()?;
    let path = spec.filename.clone().expect("validated");
    let (store, _join) = super::store::open_store(&path, spec)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "r")?;
    out.flush()?;
    let mut rng = Rng::new(seed(spec) ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1);
    // Each line is written (one write call) before the put is issued or
    // once it is acknowledged.
    write(&store, spec, &mut rng, round << 40, &|| false, &mut |acked, n, seq| {
        let _ = writeln!(out, "{} {n} {seq}", if acked { 'a' } else { 'i' });
        let _ = out.flush();
    });
    bail!("the crash-test child's store failed before it was killed")
}

fn seed(spec: &JobSpec) -> u64 {
    if spec.randrepeat {
        spec.randseed
    } else {
        spec.randseed ^ shardstore::superblock::now_unix_ms()
    }
}

struct Round {
    ran_for: Duration,
    recovery: Duration,
    ledger_issued: u64,
    ledger_acked: u64,
    check: Check,
}

/// When to stop the writer: uniformly in the last nine tenths of the
/// job's runtime (2 s unless given).
fn crash_after(spec: &JobSpec, rng: &mut Rng) -> Duration {
    let runtime = spec.runtime_us.unwrap_or(2_000_000).max(10);
    Duration::from_micros(runtime / 10 + rng.below(runtime - runtime / 10))
}

/// A kill test starts from an empty store (shards left by anything else
/// could not be told from the test's own): the file is laid out and
/// formatted anew, as a fio write job overwrites its file.
fn fresh_store(spec: &JobSpec) -> anyhow::Result<()> {
    let path = spec.filename.clone().expect("validated");
    if path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("{}: cannot replace it", path.display()))?;
    }
    let (store, join) = super::store::open_store(&path, spec)?;
    store.close()?;
    join.join().expect("store thread panicked");
    Ok(())
}

fn kill_round(spec: &JobSpec, job: usize, round: u64, rng: &mut Rng, ledger: &mut Ledger) -> anyhow::Result<Round> {
    use std::process::{Command, Stdio};
    let path = spec.filename.clone().expect("validated");
    let mut child = Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env(CHILD_ENV, format!("{job}:{round}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the crash-test child")?;
    let stdout = child.stdout.take().expect("piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    let before = (ledger.puts_issued, ledger.puts_acked);
    let mut taken = std::mem::take(ledger);
    let reader = std::thread::spawn(move || {
        let mut ledger = std::mem::take(&mut taken);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "r" {
                let _ = ready_tx.send(());
            } else {
                ledger.line(&line);
            }
        }
        ledger
    });
    let wait = crash_after(spec, rng);
    let started = ready_rx.recv_timeout(Duration::from_secs(120)).map(|()| Instant::now());
    if started.is_ok() {
        std::thread::sleep(wait);
    }
    // SIGKILL: no chance to flush or close anything.
    let _ = child.kill();
    let output = child.wait_with_output()?;
    *ledger = reader.join().expect("reader thread panicked");
    let killed = std::os::unix::process::ExitStatusExt::signal(&output.status) == Some(9);
    if started.is_err() || !killed {
        bail!(
            "the crash-test child ended before it was killed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    recover_and_check(spec, ledger, before, wait, || {
        super::store::open_store(&path, spec).context("recovering the store after the kill")
    })
}

/// Reopens the store (`open`, timed: that is the recovery), checks every
/// shard the ledger knows, and reports the round: what was issued and
/// acknowledged since the ledger stood at `before`.
fn recover_and_check(
    spec: &JobSpec,
    ledger: &Ledger,
    before: (u64, u64),
    ran_for: Duration,
    open: impl FnOnce() -> anyhow::Result<(StoreHandle, std::thread::JoinHandle<()>)>,
) -> anyhow::Result<Round> {
    let t0 = Instant::now();
    let (store, join) = open()?;
    let recovery = t0.elapsed();
    let check = check(&store, &spec.name, ledger);
    store.close()?;
    join.join().expect("store thread panicked");
    Ok(Round {
        ran_for,
        recovery,
        ledger_issued: ledger.puts_issued - before.0,
        ledger_acked: ledger.puts_acked - before.1,
        check,
    })
}

/// The simulated device: the image of a store `spec` fills, formatted.
fn sim_device(spec: &JobSpec) -> anyhow::Result<SimDevice> {
    let count = (spec.size.unwrap_or(DEFAULT_SIZE) / spec.bs).max(1);
    let record = shardstore::store::record::record_size_bytes(spec.name.len() + 11, spec.bs as usize);
    // Small extents keep the image (held twice in memory) small.
    let size = (count * record * 3 / 2 + (48 << 20)).next_multiple_of(1 << 20);
    let mut dev = SimDevice::new(SimConfig::new(size, spec.randseed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() })?;
    Ok(dev)
}

fn sim_round(spec: &JobSpec, dev: &SimDevice, round: u64, rng: &mut Rng, ledger: &mut Ledger) -> anyhow::Result<Round> {
    let h = dev.handle();
    let (store, join) = thread::spawn(Box::new(h.attach()))?;
    let wait = crash_after(spec, rng);
    let cut = Instant::now() + wait;
    let mut wrng = Rng::new(rng.next_u64());
    let before = (ledger.puts_issued, ledger.puts_acked);
    // The power goes out from under the running store: from then on every
    // write and flush fails, and whatever was not flushed meets its fate.
    let power = std::thread::spawn({
        let h = h.clone();
        move || {
            std::thread::sleep(cut.saturating_duration_since(Instant::now()));
            h.cut_power_after(0);
        }
    });
    write(
        &store,
        spec,
        &mut wrng,
        round << 40,
        &|| !h.is_powered() || Instant::now() >= cut + Duration::from_secs(5),
        &mut |a, n, s| {
            ledger.event(a, n, s);
        },
    );
    power.join().expect("power thread panicked");
    let _ = store.close();
    join.join().expect("store thread panicked");
    h.crash();
    recover_and_check(spec, ledger, before, wait, || {
        thread::spawn(Box::new(h.attach())).context("recovering the store after the power cut")
    })
}

/// Runs the crash test of each job and reports; the second value is false
/// when anything acknowledged was lost or anything read back was wrong.
pub fn run(invocation: &Invocation) -> anyhow::Result<(String, bool)> {
    let mut text = String::new();
    let mut jobs_json = Vec::new();
    let mut passed = true;
    for (j, spec) in invocation.jobs.iter().enumerate() {
        let Some(mode) = spec.crash_test else {
            bail!("job {:?}: every job of a crash test needs --crash-test", spec.name)
        };
        let mut rng = Rng::new(seed(spec));
        let mut rounds = Vec::new();
        let sim = if mode == CrashTest::Sim { Some(sim_device(spec)?) } else { None };
        if sim.is_none() {
            fresh_store(spec)?;
        }
        // One ledger across rounds: shards persist from round to round.
        let mut ledger = Ledger::default();
        for round in 1..=u64::from(spec.crash_rounds) {
            let r = match &sim {
                Some(dev) => sim_round(spec, dev, round, &mut rng, &mut ledger)?,
                None => kill_round(spec, j, round, &mut rng, &mut ledger)?,
            };
            rounds.push(r);
        }
        let mode_name = if mode == CrashTest::Sim { "sim" } else { "kill" };
        let lost: u64 = rounds.iter().map(|r| r.check.lost).sum();
        let wrong: u64 = rounds.iter().map(|r| r.check.wrong).sum();
        passed &= lost == 0 && wrong == 0;
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "{}: (crash-test={mode_name}, rounds={}): bs={} iodepth={}\n",
                spec.name,
                rounds.len(),
                spec.bs,
                spec.iodepth
            ),
        );
        let mut rounds_json = Vec::new();
        for (i, r) in rounds.iter().enumerate() {
            let c = &r.check;
            let _ = std::fmt::Write::write_fmt(
                &mut text,
                format_args!(
                    "  round {}: {} after {:.3}s: {} puts issued, {} acknowledged; recovered in {:.3}s; \
                     {} shards at their acknowledged version, {} at an in-flight version, {} never acknowledged \
                     and absent; lost={}, wrong={}\n",
                    i + 1,
                    if mode == CrashTest::Sim { "power cut" } else { "killed" },
                    r.ran_for.as_secs_f64(),
                    r.ledger_issued,
                    r.ledger_acked,
                    r.recovery.as_secs_f64(),
                    c.acked_intact,
                    c.in_flight_present,
                    c.in_flight_absent,
                    c.lost,
                    c.wrong
                ),
            );
            for p in &c.problems {
                let _ = std::fmt::Write::write_fmt(&mut text, format_args!("    {p}\n"));
            }
            rounds_json.push(json!({
                "crash_after_ms": r.ran_for.as_millis() as u64,
                "puts_issued": r.ledger_issued,
                "puts_acknowledged": r.ledger_acked,
                "recovery_ms": r.recovery.as_secs_f64() * 1000.0,
                "shards_acknowledged_intact": c.acked_intact,
                "shards_in_flight_present": c.in_flight_present,
                "shards_in_flight_absent": c.in_flight_absent,
                "lost": c.lost,
                "wrong": c.wrong,
                "problems": c.problems,
            }));
        }
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "  result: {}: {} rounds, lost={lost}, wrong={wrong}\n",
                if lost == 0 && wrong == 0 { "PASS" } else { "FAIL" },
                rounds.len()
            ),
        );
        jobs_json.push(json!({
            "jobname": spec.name,
            "mode": mode_name,
            "rounds": rounds_json,
            "lost": lost,
            "wrong": wrong,
            "passed": lost == 0 && wrong == 0,
        }));
    }
    let out = match invocation.output_format {
        OutputFormat::Normal => text,
        _ => {
            serde_json::to_string_pretty(&json!({
                "fio version": concat!("shardbench-", env!("CARGO_PKG_VERSION")),
                "crash test": jobs_json,
            }))? + "\n"
        }
    };
    Ok((out, passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_check_themselves() {
        let p = payload(4096, 7, 99);
        assert_eq!(parse(&p, 7), Some(99));
        assert_eq!(parse(&p, 8), None, "another shard's bytes");
        let mut q = p.clone();
        q[3000] ^= 1;
        assert_eq!(parse(&q, 7), None, "a flipped bit");
    }

    #[test]
    fn the_checker_calls_an_older_version_lost() {
        let mut l = Ledger::default();
        for line in ["i 1 10", "a 1 10", "i 1 11", "a 1 11", "i 2 12"] {
            assert!(l.line(line));
        }
        assert!(!l.line("x 1 2"));
        assert_eq!((l.puts_issued, l.puts_acked, l.acked[&1]), (3, 2, 11));
        // A store that kept version 10 of shard 1 (11 was acknowledged),
        // holds a never-written version of shard 2 and garbage for shard 3.
        let dev = SimDevice::new(SimConfig::new(64 << 20, 1));
        let mut d = dev.handle().attach();
        format(&mut d, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
        let (store, join) = thread::spawn(Box::new(d)).unwrap();
        store.put(&key("j", 1), payload(4096, 1, 10)).unwrap();
        store.put(&key("j", 2), payload(4096, 2, 99)).unwrap();
        assert!(l.line("i 3 13") && l.line("a 3 13"));
        let mut bad = payload(4096, 3, 13);
        bad[100] ^= 1;
        store.put(&key("j", 3), bad).unwrap();
        let c = check(&store, "j", &l);
        assert_eq!((c.lost, c.wrong, c.acked_intact), (1, 2, 0), "{:?}", c.problems);
        // The same store with every acknowledged version in place passes.
        store.put(&key("j", 1), payload(4096, 1, 11)).unwrap();
        store.put(&key("j", 2), payload(4096, 2, 12)).unwrap();
        store.put(&key("j", 3), payload(4096, 3, 13)).unwrap();
        let c = check(&store, "j", &l);
        assert_eq!((c.lost, c.wrong, c.acked_intact, c.in_flight_present), (0, 0, 2, 1), "{:?}", c.problems);
        store.close().unwrap();
        join.join().unwrap();
    }
}
