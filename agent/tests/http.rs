//! The HTTP API end to end: a real agent process on loopback with real
//! file-backed devices, driven with raw HTTP/1.1 so that bad input can be
//! sent exactly as a broken or hostile client would send it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{get, put, raw, request, sample, sample_of, scrape, Agent};
use nix::sys::signal::Signal;

const TOKEN: &str = "s3cret-token";

/// An agent on three small default devices with short client timeouts and
/// an admin token.
fn start(dir: &Path) -> (Agent, SocketAddr) {
    let limits = "[limits]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1000\nheader_bytes_max = 8192\n\
                  body_memory_bytes_max = 1048576\n";
    common::start_configured(dir, 512 << 20, TOKEN, limits)
}

fn crc_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(data))
}

#[test]
fn shard_api_round_trips_and_answers_every_error_with_its_code() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());

    // Put, get, head, range.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = request(addr, "PUT", "/v1/shards/photos%2Fcat.jpg", &[("x-shard-crc32c", &crc_hex(&data))], &data);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-shard-crc32c"), Some(crc_hex(&data).as_str()));
    let r = get(addr, "photos%2Fcat.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("x-shard-crc32c"), Some(crc_hex(&data).as_str()));
    let r = request(addr, "HEAD", "/v1/shards/photos%2Fcat.jpg", &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("100000")));
    assert!(r.body.is_empty());
    let r = request(addr, "GET", "/v1/shards/photos%2Fcat.jpg", &[("range", "bytes=99990-")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[99_990..]);
    assert_eq!(r.header("content-range"), Some("bytes 99990-99999/100000"));
    let r = request(addr, "GET", "/v1/shards/photos%2Fcat.jpg", &[("range", "bytes=-10")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &data[99_990..]));

    // Overwrite: the new bytes, atomically, on the same key.
    assert_eq!(put(addr, "photos%2Fcat.jpg", b"short now").status, 201);
    assert_eq!(get(addr, "photos%2Fcat.jpg").body, b"short now");

    // Any bytes are a key; an empty body is a shard.
    assert_eq!(put(addr, "%00%FF%20bin", b"").status, 201);
    let r = get(addr, "%00%FF%20bin");
    assert_eq!((r.status, r.body.len(), r.header("x-shard-crc32c")), (200, 0, Some("00000000")));

    // Listing: in key order across devices, paginated.
    for i in 0..25 {
        assert_eq!(put(addr, &format!("list%2F{i:03}"), format!("v{i}").as_bytes()).status, 201);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let r = get_list(addr, &format!("?prefix=list%2F&limit=10&start_after={after}"));
        assert_eq!(r.status, 200);
        let v = r.json();
        for s in v["shards"].as_array().unwrap() {
            seen.push(s["key"].as_str().unwrap().to_owned());
        }
        if !v["truncated"].as_bool().unwrap() {
            break;
        }
        after = v["next_start_after"].as_str().unwrap().to_owned();
    }
    let want: Vec<String> = (0..25).map(|i| format!("list%2F{i:03}")).collect();
    assert_eq!(seen, want);

    // Delete, then it is gone.
    assert_eq!(request(addr, "DELETE", "/v1/shards/list%2F000", &[], b"").status, 204);
    assert_eq!(get(addr, "list%2F000").code(), "NotFound");
    assert_eq!(request(addr, "DELETE", "/v1/shards/list%2F000", &[], b"").code(), "NotFound");

    // Error codes.
    let r = request(addr, "PUT", "/v1/shards/bad-digest", &[("x-shard-crc32c", "00000000")], b"data");
    assert_eq!((r.status, r.code()), (400, "BadDigest".to_owned()));
    let r = request(addr, "PUT", "/v1/shards/bad-digest", &[("x-shard-crc32c", "XYZ")], b"data");
    assert_eq!((r.status, r.code()), (400, "BadDigest".to_owned()));
    assert_eq!(get(addr, "bad-digest").code(), "NotFound", "a rejected put stores nothing");
    for key in ["a%zz", "a%4", &"k".repeat(256), &"%41".repeat(256), "a/b"] {
        let r = put(addr, key, b"x");
        assert_eq!((r.status, r.code()), (400, "InvalidKey".to_owned()), "{key}");
    }
    let r = request(addr, "GET", "/v1/shards/photos%2Fcat.jpg", &[("range", "bytes=500-")], b"");
    assert_eq!((r.status, r.code()), (416, "InvalidRange".to_owned()));
    let huge =
        raw(addr, b"PUT /v1/shards/huge HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 67108865\r\n\r\n");
    assert_eq!((huge.status, huge.code()), (413, "TooLarge".to_owned()));
    assert_eq!(get_list(addr, "?limit=0").code(), "InvalidArgument");
    assert_eq!(get_list(addr, "?colour=red").code(), "InvalidArgument");
    assert_eq!(request(addr, "GET", "/v2/nothing", &[], b"").code(), "NoSuchRoute");
    let r = request(addr, "POST", "/v1/shards/photos%2Fcat.jpg", &[], b"");
    assert_eq!((r.status, r.code()), (405, "MethodNotAllowed".to_owned()));
    assert_eq!(r.header("allow"), Some("GET,HEAD,PUT,DELETE"));

    // Admin routes need the token.
    let r = request(addr, "POST", "/v1/devices/0/fence", &[], b"");
    assert_eq!((r.status, r.code()), (401, "Unauthorized".to_owned()));
    let r = request(addr, "POST", "/v1/devices/0/fence", &[("authorization", "Bearer wrong")], b"");
    assert_eq!((r.status, r.code()), (401, "Unauthorized".to_owned()));
    let bearer = format!("Bearer {TOKEN}");
    for id in [0, 1] {
        let r = request(addr, "POST", &format!("/v1/devices/{id}/fence"), &[("authorization", &bearer)], b"");
        assert_eq!(r.status, 200);
    }
    // New shards now all go to the one unfenced device; reads of shards on
    // fenced devices continue.
    let shards = || -> Vec<u64> {
        let status = request(addr, "GET", "/v1/status", &[], b"").json();
        status["devices"].as_array().unwrap().iter().map(|d| d["shards"].as_u64().unwrap()).collect()
    };
    let before = shards();
    for i in 0..20 {
        assert_eq!(put(addr, &format!("fenced%2F{i}"), b"x").status, 201);
    }
    let after = shards();
    assert_eq!(
        (after[0], after[1], after[2]),
        (before[0], before[1], before[2] + 20),
        "placement avoided fenced devices"
    );
    let status = request(addr, "GET", "/v1/status", &[], b"").json();
    let devices = status["devices"].as_array().unwrap();
    assert_eq!(devices[0]["state"], "fenced");
    assert_eq!(devices[2]["state"], "open");
    let r = get_list(addr, "?prefix=fenced%2F");
    assert_eq!(r.json()["shards"].as_array().unwrap().len(), 20);
    assert_eq!(get(addr, "photos%2Fcat.jpg").body, b"short now");
    let r = request(addr, "POST", "/v1/devices/0/unfence", &[("authorization", &bearer)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(request(addr, "POST", "/v1/devices/9/fence", &[("authorization", &bearer)], b"").code(), "NotFound");

    // Operational routes.
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").status, 200);
    let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    for name in
        ["shardnode_http_requests_total", "shardnode_device_free_bytes", "shardnode_http_request_duration_seconds"]
    {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    // Everything acknowledged survives a clean restart.
    assert!(agent.signal(Signal::SIGTERM).success());
    let (mut agent, addr) = start(dir.path());
    assert_eq!(get(addr, "photos%2Fcat.jpg").body, b"short now");
    assert_eq!(get(addr, "list%2F024").body, b"v24");
    assert_eq!(get(addr, "list%2F000").code(), "NotFound");
    assert!(agent.signal(Signal::SIGTERM).success());
}

fn get_list(addr: SocketAddr, query: &str) -> common::Reply {
    request(addr, "GET", &format!("/v1/shards{query}"), &[], b"")
}

#[test]
fn broken_slow_and_hostile_clients_get_errors_and_store_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());

    // Garbage instead of a request.
    let r = raw(addr, b"\x16\x03\x01 this is not http\r\n\r\n");
    assert_eq!(r.status, 400);

    // Headers over the bound.
    let big = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n", "p".repeat(20_000));
    let r = raw(addr, big.as_bytes());
    assert_eq!(r.status, 431);
    // Over the bound, and over the connection's read buffer (256 KiB)
    // too: refused by the HTTP layer before it is parsed.
    let huge = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n", "p".repeat(300_000));
    let r = raw(addr, huge.as_bytes());
    assert_eq!(r.status, 431);
    // Just under the bound: served.
    let pad = 8192 - "GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: \r\n\r\n".len();
    let fits = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n", "p".repeat(pad));
    assert_eq!(raw(addr, fits.as_bytes()).status, 200);
    let over = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n", "p".repeat(pad + 1));
    assert_eq!(raw(addr, over.as_bytes()).status, 431);

    // A body shorter than its content-length, then the client goes away.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PUT /v1/shards/truncated HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\nonly this").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert_eq!(get(addr, "truncated").code(), "NotFound", "a truncated body stores nothing");

    // A client that sends its headers too slowly is cut off.
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "a slow client held a connection for {waited:?}");

    // A client that sends its body too slowly gets 408 and stores nothing.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"PUT /v1/shards/slow HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nfirst part").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = common::read_reply(&mut s, false);
    assert_eq!((r.status, r.code()), (408, "RequestTimeout".to_owned()));
    assert_eq!(get(addr, "slow").code(), "NotFound");

    // Bodies held in memory are bounded: while one 768 KiB upload is
    // arriving, a 512 KiB one is turned away before it is read.
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(b"PUT /v1/shards/big-1 HTTP/1.1\r\nhost: t\r\ncontent-length: 786432\r\n\r\n").unwrap();
    first.write_all(&[1u8; 1000]).unwrap();
    // Once the agent holds the first body's share of the budget (its
    // status says so; well inside the 1 s body timeout):
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while request(addr, "GET", "/v1/status", &[], b"").json()["body_memory_bytes"].as_u64() < Some(786_432) {
        assert!(std::time::Instant::now() < deadline, "the first body's share was not taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = request(addr, "PUT", "/v1/shards/big-2", &[], &vec![2u8; 512 << 10]);
    assert_eq!((r.status, r.code(), r.header("retry-after")), (503, "Overloaded".to_owned(), Some("1")));
    first.write_all(&vec![1u8; 786_432 - 1000]).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(common::read_reply(&mut first, false).status, 201);
    assert_eq!(get(addr, "big-2").code(), "NotFound");
    // A put that does not announce its size is refused.
    let r = raw(
        addr,
        b"PUT /v1/shards/chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.code()), (411, "LengthRequired".to_owned()));

    // The agent is still healthy after all of it.
    assert_eq!(get(addr, "anything").code(), "NotFound");
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// A body that arrives in writes of every size, from one byte to tens of
/// kilobytes (the agent keeps large frames as they came and copies small
/// ones together), is stored whole: its CRC and its bytes read back are
/// the ones sent, with and without the client's CRC.
#[test]
fn a_body_trickled_in_writes_of_every_size_is_stored_whole() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());
    let body: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sizes = [1, 2, 3, 700, 16_383, 16_384, 16_385, 1, 40_000, 5, 9_000, 30_000];
    for (key, with_crc) in [("trickled", false), ("trickled-crc", true)] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let crc = if with_crc { format!("x-shard-crc32c: {}\r\n", crc_hex(&body)) } else { String::new() };
        let head = format!("PUT /v1/shards/{key} HTTP/1.1\r\nhost: t\r\n{crc}content-length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        let mut at = 0;
        for n in sizes.iter().cycle() {
            let end = (at + n).min(body.len());
            s.write_all(&body[at..end]).unwrap();
            at = end;
            if at == body.len() {
                break;
            }
            // Separate reads on the agent's side, well inside its 1 s body timeout.
            if at % 7 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = common::read_reply(&mut s, false);
        assert_eq!(r.status, 201, "{}", r.code());
        assert_eq!(r.header("x-shard-crc32c"), Some(crc_hex(&body).as_str()));
        let back = get(addr, key);
        assert!(back.status == 200 && back.body == body, "{key}: read back {} bytes", back.body.len());
    }
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// A gauge without labels and with a whole value, from the agent's /metrics.
fn gauge(addr: SocketAddr, name: &str) -> u64 {
    let value = sample(addr, name);
    assert!(value >= 0.0 && value.fract() == 0.0, "{name} {value}");
    value as u64
}

/// Waits (up to 5 s) until every landing record is free again.
fn landing_all_free(addr: SocketAddr, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(addr, "shardnode_landing_records_free") != records {
        assert!(Instant::now() < deadline, "landing records not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bodies of 64 KiB or more land in the agent's record buffers; a body
/// that finds too few free is kept as it arrived and stored all the same.
/// A landed body with a wrong CRC, or cut short, stores nothing, and every
/// record comes back.
#[test]
fn bodies_land_in_record_buffers_or_are_kept_as_they_came() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let limits = "[limits]\nbody_timeout_ms = 5000\nlanding_records = 2\n";
    let (mut agent, addr) = common::start_configured(dir.path(), 512 << 20, TOKEN, limits);
    assert_eq!(gauge(addr, "shardnode_landing_records"), 2);
    landing_all_free(addr, 2);
    let pattern = |len: usize, seed: u32| -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ seed as u8).collect()
    };
    // A 1.5 MiB body takes both records while it arrives...
    let big = pattern(3 << 19, 1);
    let mut first = TcpStream::connect(addr).unwrap();
    let head = format!("PUT /v1/shards/landed HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", big.len());
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&big[..1000]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(addr, "shardnode_landing_records_free") != 0 {
        assert!(Instant::now() < deadline, "the first body did not take the records");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...so another finds none free: kept as it arrived, stored whole.
    let other = pattern(300 << 10, 2);
    let r = request(addr, "PUT", "/v1/shards/no-room", &[("x-shard-crc32c", &crc_hex(&other))], &other);
    assert_eq!(r.status, 201, "{}", r.code());
    first.write_all(&big[1000..]).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = common::read_reply(&mut first, false);
    assert_eq!((r.status, r.header("x-shard-crc32c")), (201, Some(crc_hex(&big).as_str())));
    for (key, want) in [("landed", &big), ("no-room", &other)] {
        let back = get(addr, key);
        assert!(back.status == 200 && &back.body == want, "{key}: read back {} bytes", back.body.len());
    }
    landing_all_free(addr, 2);
    // A landed body whose CRC is not the client's: refused, nothing stored.
    let body = pattern(200_000, 3);
    let wrong = format!("{:08x}", crc32c::crc32c(&body) ^ 1);
    let r = request(addr, "PUT", "/v1/shards/bad-crc", &[("x-shard-crc32c", &wrong)], &body);
    assert_eq!((r.status, r.code()), (400, "BadDigest".to_owned()));
    assert_eq!(get(addr, "bad-crc").code(), "NotFound");
    landing_all_free(addr, 2);
    // A landed body cut short: nothing stored.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"PUT /v1/shards/cut-short HTTP/1.1\r\nhost: t\r\ncontent-length: 500000\r\n\r\n").unwrap();
        s.write_all(&[7u8; 1000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert_eq!(get(addr, "cut-short").code(), "NotFound");
    landing_all_free(addr, 2);
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// Every request is counted once under its operation and status, and
/// timed under its operation (the handles are registered once and kept).
#[test]
fn requests_are_counted_by_operation_and_status() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());
    assert_eq!(request(addr, "PUT", "/v1/shards/counted", &[], b"bytes").status, 201);
    let ok = r#"shardnode_http_requests_total{op="get",status="200"}"#;
    let missing = r#"shardnode_http_requests_total{op="get",status="404"}"#;
    let timed = r#"shardnode_http_request_duration_seconds_count{op="get"}"#;
    let before = [sample(addr, ok), sample(addr, missing), sample(addr, timed)];
    for _ in 0..3 {
        assert_eq!(get(addr, "counted").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(addr, "not-there").status, 404);
    }
    let after = [sample(addr, ok), sample(addr, missing), sample(addr, timed)];
    let deltas: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(deltas, [3.0, 2.0, 5.0], "before {before:?}, after {after:?}");
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// Requests to the stores so far, by the agent's own count: trips to a
/// store thread and reads a store thread started for a connection it
/// serves (`shardnode_device_store_requests_total` and
/// `shardnode_device_store_local_reads_total`, summed over devices).
fn store_trips(addr: SocketAddr) -> u64 {
    let text = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("shardnode_device_store_requests_total{")
                || l.starts_with("shardnode_device_store_local_reads_total{")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_get_is_one_trip_to_the_store_thread() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_agent, addr) = start(dir.path());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(put(addr, "one-trip", &data).status, 201);
    assert_eq!(put(addr, "one-trip-ranged", &data).status, 201);
    // A scrape's own trips, measured between two scrapes with nothing
    // in between; then the same around each read.
    let (a, b) = (store_trips(addr), store_trips(addr));
    let scrape = b - a;
    let trips = |ask: &dyn Fn()| {
        let before = store_trips(addr);
        ask();
        store_trips(addr) - before - scrape
    };
    let ranged_of = |key: &'static str| {
        let data = &data;
        move || {
            let r = request(addr, "GET", &format!("/v1/shards/{key}"), &[("range", "bytes=100-199")], b"");
            assert!(r.status == 206 && r.body == data[100..200]);
        }
    };
    let whole = trips(&|| assert!(get(addr, "one-trip").body == data));
    let ranged = trips(&ranged_of("one-trip-ranged"));
    assert_eq!((whole, ranged), (1, 1), "a GET finds and reads the shard in one request to its device's thread");
    // The whole read kept the shard in the read cache: GETs of it, whole
    // or ranged, are answered without any trip.
    let hot = trips(&|| assert!(get(addr, "one-trip").body == data));
    let hot_ranged = trips(&ranged_of("one-trip"));
    let hot_head = trips(&|| {
        let r = request(addr, "HEAD", "/v1/shards/one-trip", &[], b"");
        assert!(r.status == 200 && r.header("content-length") == Some("10000"));
    });
    assert_eq!((hot, hot_ranged, hot_head), (0, 0, 0), "a cached shard is answered from memory");
    let absent = trips(&|| assert_eq!(get(addr, "never-put").status, 404));
    assert!(absent <= 1, "a key no filter may hold costs no trip ({absent})");
}

/// A keep-alive connection starts at the front (shard requests answered
/// without hyper, `front.rs`) and moves to the full server at its first
/// other request, with every byte sent behind it: requests pipelined
/// through a put's body and across the move are all answered, in order;
/// and the front's answers, found, ranged, missing and deleted, are the
/// full server's, header for header.
#[test]
fn a_connection_moves_from_the_front_to_the_full_server_without_losing_a_byte() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());
    // Over the size the front copies behind the head: sent in two writes.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(put(addr, "front%2Fa", &data).status, 201);
    let other = "a second shard";
    for key in ["front%2Fgone-1", "front%2Fgone-2"] {
        assert_eq!(put(addr, key, b"to delete").status, 201);
    }
    // The same requests on each side of the move, each deleting a key of
    // its own.
    let requests = |gone: &str| {
        [
            "GET /v1/shards/front%2Fa HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(),
            "HEAD /v1/shards/front%2Fa HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(),
            "GET /v1/shards/front%2Fa HTTP/1.1\r\nhost: t\r\nrange: bytes=10-19\r\n\r\n".to_owned(),
            "GET /v1/shards/front%2Fmissing HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(),
            format!("DELETE /v1/shards/front%2F{gone} HTTP/1.1\r\nhost: t\r\n\r\n"),
        ]
        .concat()
    };
    // Served by the front: those requests, a put whose body is followed
    // by the next request, a read of it; then a request the front does
    // not serve moves the connection, and the same requests follow.
    let wire = [
        requests("gone-1"),
        format!("PUT /v1/shards/front%2Fb HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{other}", other.len()),
        "GET /v1/shards/front%2Fb HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(),
        "GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n".to_owned(),
        requests("gone-2"),
    ]
    .concat();
    // Both counters from one scrape (counts are whole numbers).
    let counts = || {
        let text = scrape(addr);
        ["shardnode_http_connections_total", "shardnode_http_connections_handed_off_total"]
            .map(|series| sample_of(&text, series) as u64)
    };
    let before = counts();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(wire.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut next = |head: bool| common::next_reply(&mut r, head);
    let answers =
        |next: &mut dyn FnMut(bool) -> common::Reply| [next(false), next(true), next(false), next(false), next(false)];
    let front = answers(&mut next);
    let put_answer = next(false);
    assert_eq!(put_answer.status, 201, "{}", put_answer.text());
    let b = next(false);
    assert_eq!((b.status, b.body.as_slice()), (200, other.as_bytes()));
    assert_eq!(next(false).status, 200, "GET /healthz");
    let full = answers(&mut next);

    let [got, head, range, missing, deleted] = &front;
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the front's body differs from what was put");
    assert_eq!(got.header("x-shard-crc32c"), Some(crc_hex(&data).as_str()));
    assert!(got.header("date").is_some(), "the front's answer has no date");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(data.len().to_string().as_str()));
    assert!(head.body.is_empty());
    assert_eq!((range.status, range.body.as_slice()), (206, &data[10..20]));
    assert_eq!(range.header("x-range-crc32c"), Some(crc_hex(&data[10..20]).as_str()));
    assert_eq!((missing.status, missing.code()), (404, "NotFound".to_owned()));
    assert_eq!((deleted.status, deleted.header("content-length")), (204, None));
    for (f, h) in front.iter().zip(&full) {
        assert_eq!((f.status, common::headers_but_date(f)), (h.status, common::headers_but_date(h)));
        assert_eq!(f.body, h.body);
    }
    // This connection, and the second scrape's own (a scrape is a
    // connection the front hands off, counted before it is answered).
    let after = counts();
    assert_eq!([after[0] - before[0], after[1] - before[1]], [2, 2], "accepted and handed off");
    assert!(agent.signal(Signal::SIGTERM).success());
}

/// A stop closes idle connections at once, at the front and moved to the
/// full server, rather than wait for them the whole grace period.
#[test]
fn a_stop_closes_idle_connections_at_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let limits = "[limits]\nheader_timeout_ms = 60000\nshutdown_grace_ms = 30000\n";
    let (mut agent, addr) = common::start_configured(dir.path(), 512 << 20, TOKEN, limits);
    assert_eq!(put(addr, "idle", b"idle").status, 201);
    let mut idle = Vec::new();
    for first in ["GET /v1/shards/idle", "GET /healthz"] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(format!("{first} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).unwrap();
        let mut r = std::io::BufReader::new(s);
        assert_eq!(common::next_reply(&mut r, false).status, 200);
        idle.push(r);
    }
    let started = Instant::now();
    assert!(agent.signal(Signal::SIGTERM).success());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the agent took {took:?} to stop with idle connections open");
    for mut r in idle {
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "an idle connection was answered at the stop");
    }
}

/// A put refused before its body is read (here too large) gets its
/// answer, not a reset, while the client is still sending the body: the
/// agent drains what comes after the answer before it closes.
#[test]
fn a_put_refused_while_its_body_is_still_coming_gets_its_answer_not_a_reset() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start(dir.path());
    let over = shardstore::store::SHARD_SIZE_BYTES_MAX + 1;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("PUT /v1/shards/too-large HTTP/1.1\r\nhost: t\r\ncontent-length: {over}\r\n\r\n").as_bytes())
        .unwrap();
    // Part of the body, in pieces, while the answer is already sent.
    let piece = vec![7u8; 64 * 1024];
    for _ in 0..32 {
        s.write_all(&piece).expect("the agent reset the connection while the body was coming");
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = common::read_reply(&mut s, false);
    assert_eq!((r.status, r.code(), r.header("connection")), (413, "TooLarge".to_owned(), Some("close")));
    assert_eq!(get(addr, "too-large").code(), "NotFound");
    assert!(agent.signal(Signal::SIGTERM).success());
}
