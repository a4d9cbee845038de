//! Connections served on the store threads (`store_front/`): a plain
//! shard read answered on the thread that owns its device, from where
//! another device's thread placed it, or on that thread and back, exactly
//! as the router's handler answers it;
//! idle connections closed at the header timeout. (The move of such a
//! connection to the tokio front, with pipelined requests, and its stop
//! are in `http.rs`.)

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{put, Agent};
use nix::sys::signal::Signal;

/// An agent on `devices` default devices, read cache off (every read
/// reaches a store), with `limits` appended to its `[limits]`.
fn start(dir: &std::path::Path, devices: usize, limits: &str) -> (Agent, SocketAddr) {
    let extra = format!("default_device_count = {devices}\n[read_cache]\nbytes_per_device = 0\n[limits]\n{limits}");
    common::start_configured(dir, 512 << 20, "token", &extra)
}

/// A per-device counter or gauge, by device, from a scrape's `text`.
fn by_device(text: &str, series: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{series}{{device=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (device, value) = rest.split_once("\"} ")?;
            Some((device.to_owned(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

const LOCAL: &str = "shardnode_device_store_local_reads_total";
const TRIPS: &str = "shardnode_device_store_requests_total";
const PLACED: &str = "shardnode_placed_reads_total";

/// A connection for pipelined shard GETs.
struct Getter {
    w: TcpStream,
    r: std::io::BufReader<TcpStream>,
}

impl Getter {
    fn connect(addr: SocketAddr) -> Getter {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Getter { w: s.try_clone().unwrap(), r: std::io::BufReader::new(s) }
    }

    /// GETs of `{name}-{i}` for every `i` below `keys`, sent at once: each
    /// answer must be `expect(i)`, with its CRC in the header.
    fn get_all(&mut self, name: &str, keys: u32, expect: &dyn Fn(u32) -> Vec<u8>) {
        let wire: String = (0..keys)
            .map(|i| format!("GET /v1/shards/{name}-{i} HTTP/1.1\r\nhost: t\r\n\r\n"))
            .collect::<Vec<_>>()
            .concat();
        self.w.write_all(wire.as_bytes()).unwrap();
        for i in 0..keys {
            let reply = common::next_reply(&mut self.r, false);
            assert_eq!(reply.status, 200, "{name}-{i}: {}", reply.text());
            let want = expect(i);
            assert!(reply.body == want, "{name}-{i}: wrong bytes");
            assert_eq!(reply.header("x-shard-crc32c"), Some(format!("{:08x}", crc32c::crc32c(&want)).as_str()));
        }
    }
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(d, a)| (d.clone(), a - before.get(d).copied().unwrap_or(0))).collect()
}

/// With one device every connection is its store thread's: a plain GET is
/// read there (a local read, no trip), a HEAD answered from its index; a
/// GET or HEAD with a header the thread does not serve goes to the
/// router's handler (a trip from tokio). Both answers are the same,
/// header for header and byte for byte, for a body sent with the head and
/// one sent after it, and both are timed and counted.
#[test]
fn a_plain_read_on_the_devices_thread_is_the_handlers_answer() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path(), 1, "");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    assert_eq!(put(addr, "sf%2Fbig", &big).status, 201);
    assert_eq!(put(addr, "sf%2Fsmall", b"small shard").status, 201);
    let local_before = by_device(&common::scrape(addr), LOCAL);
    let gets_before = common::sample(addr, "shardnode_http_requests_total{op=\"get\",status=\"200\"}");
    let pair = |method: &str, key: &str| {
        [
            format!("{method} /v1/shards/{key} HTTP/1.1\r\nhost: t\r\n\r\n"),
            format!("{method} /v1/shards/{key} HTTP/1.1\r\nhost: t\r\nx-probe: handler\r\n\r\n"),
        ]
        .concat()
    };
    let wire = [pair("GET", "sf%2Fbig"), pair("HEAD", "sf%2Fbig"), pair("GET", "sf%2Fsmall")].concat();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(wire.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    for (head, want) in [(false, &big[..]), (true, &[][..]), (false, &b"small shard"[..])] {
        let here = common::next_reply(&mut r, head);
        let handler = common::next_reply(&mut r, head);
        assert_eq!(here.status, 200, "{}", here.text());
        assert!(here.body == want, "the store thread's body differs from what was put");
        assert_eq!(
            (here.status, common::headers_but_date(&here)),
            (handler.status, common::headers_but_date(&handler))
        );
        assert_eq!(here.body, handler.body);
        assert!(here.header("date").is_some());
    }
    let local = delta(&by_device(&common::scrape(addr), LOCAL), &local_before);
    assert_eq!(local.values().sum::<u64>(), 2, "the two plain GETs were read on the device's thread: {local:?}");
    let gets = common::sample(addr, "shardnode_http_requests_total{op=\"get\",status=\"200\"}") - gets_before;
    assert_eq!(gets as u64, 4, "every GET is counted once, wherever it was answered");
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// With three devices, one connection (served by one store thread) reads
/// every shard: those on its own device are read there, the others on
/// their device's thread and answered back, which places them; read
/// again, those are read on the serving thread from their places. Every
/// byte is right, also after overwrites.
#[test]
fn reads_of_other_devices_shards_go_to_their_threads_and_back() {
    const KEYS: u32 = 60;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path(), 3, "");
    let shard = |i: u32| -> Vec<u8> { (0..3000 + i * 7).map(|j| (i * 31 + j) as u8).collect() };
    for i in 0..KEYS {
        assert_eq!(put(addr, &format!("hop-{i}"), &shard(i)).status, 201);
    }
    let held = by_device(&common::scrape(addr), "shardnode_device_shards");
    assert_eq!(held.values().sum::<u64>(), u64::from(KEYS));
    // What a scrape itself costs each device, measured between two.
    let (a, b) = (common::scrape(addr), common::scrape(addr));
    let scrape = delta(&by_device(&b, TRIPS), &by_device(&a, TRIPS));
    let before = common::scrape(addr);
    // One connection for every pass: one serving thread reads them all.
    let mut conn = Getter::connect(addr);
    conn.get_all("hop", KEYS, &shard);
    let after = common::scrape(addr);
    let local = delta(&by_device(&after, LOCAL), &by_device(&before, LOCAL));
    let trips = delta(&by_device(&after, TRIPS), &by_device(&before, TRIPS));
    // One device's thread served the connection: its shards were read
    // there; every other device's were one trip each.
    let serving: Vec<&String> = local.iter().filter(|(_, n)| **n > 0).map(|(d, _)| d).collect();
    assert_eq!(serving.len(), 1, "one thread served the connection: {local:?}");
    for (device, shards) in &held {
        let reads = local[device] + trips[device] - scrape[device];
        assert_eq!(reads, *shards, "device {device}: local {local:?}, trips {trips:?}, scrape {scrape:?}");
        if device != serving[0] {
            assert_eq!(local[device], 0);
        }
    }
    assert!(held.values().filter(|n| **n > 0).count() >= 2, "the shards landed on one device: {held:?}");

    // Those reads placed the shards: read again on the same connection,
    // the other devices' shards are read on the serving thread's own ring
    // (no trip), with the same bytes. Then half are overwritten: no read
    // finds an old place, and the next reads place the new bytes.
    let serving = serving[0].clone();
    // Answered from a place, by device (the `read` outcome's series).
    let placed_reads = |text: &str| {
        let read = text.lines().filter(|l| l.contains("outcome=\"read\"")).map(|l| l.replace(",outcome=\"read\"", ""));
        by_device(&read.collect::<Vec<_>>().join("\n"), PLACED)
    };
    let (before, (t0, l0)) = (placed_reads(&after), (by_device(&after, TRIPS), by_device(&after, LOCAL)));
    conn.get_all("hop", KEYS, &shard);
    let after = common::scrape(addr);
    let placed = delta(&placed_reads(&after), &before);
    let trips = delta(&by_device(&after, TRIPS), &t0);
    let local = delta(&by_device(&after, LOCAL), &l0);
    for (device, shards) in &held {
        if *device == serving {
            assert_eq!((local[device], placed[device]), (*shards, 0), "device {device}: its own shards");
        } else {
            assert_eq!(placed[device], *shards, "device {device}: placed {placed:?}, trips {trips:?}");
            assert_eq!(trips[device], scrape[device], "device {device}: a read went to its thread");
        }
    }
    let new = |i: u32| -> Vec<u8> {
        if i % 2 == 0 {
            vec![i as u8 ^ 0x5a; 2000 + i as usize]
        } else {
            shard(i)
        }
    };
    for i in (0..KEYS).step_by(2) {
        assert_eq!(put(addr, &format!("hop-{i}"), &new(i)).status, 201);
    }
    conn.get_all("hop", KEYS, &new);
    conn.get_all("hop", KEYS, &new);
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// An idle connection on a store thread, and one that sent half a head,
/// is closed once the header timeout has passed since its last answer (or
/// since it opened), as the tokio front closes its own.
#[test]
fn idle_connections_on_a_store_thread_close_at_the_header_timeout() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path(), 1, "header_timeout_ms = 600\n");
    assert_eq!(put(addr, "idle", b"idle").status, 201);
    let mut answered = TcpStream::connect(addr).unwrap();
    answered.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    answered.write_all(b"GET /v1/shards/idle HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(answered);
    assert_eq!(common::next_reply(&mut r, false).body, b"idle");
    let mut half = TcpStream::connect(addr).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    half.write_all(b"GET /v1/shards/idle HTT").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "the idle connection got bytes: {rest:?}");
    assert_eq!(half.read_to_end(&mut rest).unwrap(), 0, "the half-sent head was answered: {rest:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}, not at the 600 ms timeout");
    // A connection still in use stays open past it.
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(busy.try_clone().unwrap());
    for _ in 0..6 {
        busy.write_all(b"GET /v1/shards/idle HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        assert_eq!(common::next_reply(&mut r, false).body, b"idle");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// `limits.connection_threads` caps the store threads that serve
/// connections: with 1 of 3, every connection is the first device's
/// thread's (only it reads locally), and every shard is still read right,
/// the others' through their threads or their places.
#[test]
fn connections_are_served_on_at_most_connection_threads_store_threads() {
    const KEYS: u32 = 30;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path(), 3, "connection_threads = 1\n");
    let shard = |i: u32| -> Vec<u8> { (0..1000 + i * 11).map(|j| (i * 7 + j) as u8).collect() };
    for i in 0..KEYS {
        assert_eq!(put(addr, &format!("cap-{i}"), &shard(i)).status, 201);
    }
    let held = by_device(&common::scrape(addr), "shardnode_device_shards");
    assert!(held.values().filter(|n| **n > 0).count() >= 2, "the shards landed on one device: {held:?}");
    let before = by_device(&common::scrape(addr), LOCAL);
    // Six connections, each handed to a serving thread in turn.
    let mut conns: Vec<Getter> = (0..6).map(|_| Getter::connect(addr)).collect();
    for conn in &mut conns {
        conn.get_all("cap", KEYS, &shard);
    }
    let local = delta(&by_device(&common::scrape(addr), LOCAL), &before);
    assert_eq!(local.get("0").copied(), Some(6 * held["0"]), "device 0's thread read its shards: {local:?}");
    for (device, n) in &local {
        if device != "0" {
            assert_eq!(*n, 0, "device {device}'s thread served a connection: {local:?}");
        }
    }
    assert!(agent.signal(Signal::SIGTERM).success());
}
