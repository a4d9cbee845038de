//! Overload without collapse: a real agent is offered far more reads than
//! its devices can serve, by clients that give up after a deadline, and
//! the goodput (reads answered within their deadline) stays near the
//! capacity measured without overload. Refused requests get `Overloaded`
//! or `DeadlineExceeded` quickly instead of waiting in an ever longer line.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{put, read_reply, Agent, KernelTimestamps, Stamped};
use nix::sys::signal::Signal;
use shardstore::rng::Rng;

const SHARDS: u64 = 24;
const SHARD_BYTES: usize = 256 << 10;
const PHASE: Duration = Duration::from_secs(2);
/// Rounds of capacity then overload; medians are compared.
const ROUNDS: usize = 3;

#[derive(Default)]
struct Tally {
    good: AtomicU64,
    late: AtomicU64,
    overloaded: AtomicU64,
    deadline: AtomicU64,
    /// Reads that arrived within the deadline and were read after it.
    client_late: AtomicU64,
}

/// Closed-loop clients on keep-alive connections reading random shards for
/// `PHASE`; a read counts as good when it is a 200 whose last byte reached
/// this host (the kernel's receive time) within `deadline_ms` of sending.
/// Judged by when the answer arrived rather than when a client thread,
/// one of 96 on two cores, got around to reading it: the agent answers
/// for the first, not the second (counted apart as `client_late`).
/// A client that fails (its connection closed, an unexpected answer)
/// fails the test with every failing client's message and the agent's log.
fn offer(agent: &mut Agent, addr: SocketAddr, clients: u64, deadline_ms: Option<u64>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut rng = Rng::new(c);
                let conn = TcpStream::connect(addr).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut conn = Stamped::new(conn);
                let header = deadline_ms.map(|d| format!("x-deadline-ms: {d}\r\n")).unwrap_or_default();
                while !stop.load(Ordering::Relaxed) {
                    let req = format!("GET /v1/shards/load-{} HTTP/1.1\r\nhost: t\r\n{header}\r\n", rng.below(SHARDS));
                    let started = SystemTime::now();
                    conn.last_arrival = None;
                    conn.conn.write_all(req.as_bytes()).unwrap();
                    let r = read_reply(&mut conn, false);
                    let took = conn.last_arrival.expect("timestamped").duration_since(started).unwrap_or_default();
                    let took_here = started.elapsed().unwrap_or_default();
                    if deadline_ms
                        .is_some_and(|d| took <= Duration::from_millis(d) && took_here > Duration::from_millis(d))
                    {
                        tally.client_late.fetch_add(1, Ordering::Relaxed);
                    }
                    match r.status {
                        200 if deadline_ms.is_none_or(|d| took <= Duration::from_millis(d)) => {
                            assert_eq!(r.body.len(), SHARD_BYTES);
                            tally.good.fetch_add(1, Ordering::Relaxed);
                        }
                        200 => {
                            tally.late.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            let counter = match r.code().as_str() {
                                "Overloaded" => {
                                    assert_eq!(r.header("retry-after"), Some("1"));
                                    &tally.overloaded
                                }
                                "DeadlineExceeded" => &tally.deadline,
                                other => panic!("503 {other}"),
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            // A client that was turned away waits a moment
                            // before it tries again: 10 ms, a hundredth of
                            // the Retry-After it was given, so the load
                            // offered stays far above capacity.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        s => panic!("GET answered {s}: {}", String::from_utf8_lossy(&r.body)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(PHASE);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = threads
        .into_iter()
        .enumerate()
        .filter_map(|(c, t)| {
            let panic = t.join().err()?;
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Some(format!("client {c}: {text}"))
        })
        .collect();
    if !failures.is_empty() {
        let log = agent.drain_log();
        panic!(
            "{} of {clients} clients failed:\n{}\nthe agent's log (its last 60 lines of {}):\n{}",
            failures.len(),
            failures.join("\n"),
            log.len(),
            log[log.len().saturating_sub(60)..].join("\n")
        );
    }
    tally
}

#[test]
fn goodput_under_overload_stays_near_capacity() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = dir.path().join("agent.toml");
    // One read at a time per device makes the devices, not the HTTP layer,
    // the bottleneck on a small machine.
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndefault_device_size_bytes = {}\n[limits]\n\
             device_concurrency = 1\ndevice_lifo_after = 4\ndevice_queue_max = 16\n",
            dir.path().display(),
            512u64 << 20
        ),
    )
    .unwrap();
    let _stamps = KernelTimestamps::on();
    // Connections that end with an error are logged at debug: if a client
    // sees its connection closed, the agent's log says why.
    let (mut agent, addr) = Agent::serving_with_env(
        &["--config", config.to_str().unwrap()],
        &[("RUST_LOG", "info,shard_agent::server=debug")],
    );
    let data: Vec<u8> = (0..SHARD_BYTES).map(|i| (i % 253) as u8).collect();
    for i in 0..SHARDS {
        assert_eq!(put(addr, &format!("load-{i}"), &data).status, 201);
    }

    // Capacity and overload alternate for a few rounds and the medians are
    // compared: on a shared two-core machine one round can land on a busy
    // moment of either phase.
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let capacity = offer(&mut agent, addr, 6, None);
        let capacity_rps = capacity.good.load(Ordering::Relaxed) as f64 / PHASE.as_secs_f64();
        let overload = offer(&mut agent, addr, 96, Some(50));
        let goodput_rps = overload.good.load(Ordering::Relaxed) as f64 / PHASE.as_secs_f64();
        let (late, overloaded, deadline) = (
            overload.late.load(Ordering::Relaxed),
            overload.overloaded.load(Ordering::Relaxed),
            overload.deadline.load(Ordering::Relaxed),
        );
        eprintln!(
            "capacity {capacity_rps:.0} reads/s with 6 clients; 96 clients with a 50 ms deadline: \
             goodput {goodput_rps:.0} reads/s ({:.2} of capacity), {late} late, {overloaded} Overloaded, \
             {deadline} DeadlineExceeded; {} more arrived in time but were read late by their client thread",
            goodput_rps / capacity_rps,
            overload.client_late.load(Ordering::Relaxed)
        );
        assert!(overloaded + deadline > 0, "the offered load never exceeded what the devices could take");
        rounds.push((capacity_rps, goodput_rps));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let capacity_rps = median(rounds.iter().map(|r| r.0).collect());
    let goodput_rps = median(rounds.iter().map(|r| r.1).collect());
    assert!(
        goodput_rps >= 0.5 * capacity_rps,
        "goodput collapsed: a median of {goodput_rps:.0} reads/s within the deadline against a median capacity of {capacity_rps:.0}"
    );
    assert!(agent.signal(Signal::SIGTERM).success());
}
