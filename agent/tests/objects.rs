//! Objects across seven real agents on loopback with a 4+2 code: they
//! round-trip byte for byte through any agent, ranges and overwrites and
//! deletes behave, reads survive any two agents killed, and with three
//! killed a read fails clearly or returns the right bytes, never wrong
//! ones.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::request;
use nix::sys::signal::Signal;

/// Pseudo-random bytes (no repeating pattern: a 64-byte sample of them
/// is found once on a device).
fn object(n: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn put(c: &TestCluster, via: u32, key: &str, body: &[u8]) -> common::Reply {
    let crc = format!("{:08x}", crc32c::crc32c(body));
    request(c.hosts[(via - 1) as usize].http, "PUT", &format!("/v1/objects/{key}"), &[("x-object-crc32c", &crc)], body)
}

/// Flips one bit of the bytes `needle` on host `id`'s device file (the
/// agent stopped); the device's path.
fn flip_on_device(c: &TestCluster, id: u32, needle: &[u8]) -> std::path::PathBuf {
    let device = c.dir.path().join(format!("host-{id}/dev0.img"));
    let mut bytes = std::fs::read(&device).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the shard's bytes are on the device");
    bytes[at + 3] ^= 0x01;
    std::fs::write(&device, &bytes).unwrap();
    device
}

fn get(c: &TestCluster, via: u32, key: &str) -> common::Reply {
    request(c.hosts[(via - 1) as usize].http, "GET", &format!("/v1/objects/{key}"), &[], b"")
}

#[test]
fn objects_round_trip_and_ride_out_two_dead_agents_and_never_return_wrong_bytes() {
    let mut c = TestCluster::coded(26, 7, 4, 2);
    for id in 1..=7 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("7 agents converge");
    let sizes = [0usize, 1, 1000, 4 * 65_536 - 1, 4 * 65_536, (1 << 20) + 7, (5 << 20) + 3];
    let mut stored = Vec::new();
    let mut groups = std::collections::HashMap::new();
    for (i, &size) in sizes.iter().enumerate() {
        let key = format!("obj-{i}");
        let body = object(size, i as u8);
        let via = 1 + i as u32 % 7;
        let r = put(&c, via, &key, &body);
        assert_eq!(r.status, 201, "put {key} ({size} bytes) via {via}: {}", r.code());
        let layout = r.json()["layout"].as_str().unwrap().to_owned();
        groups.insert(key.clone(), r.json()["group"].as_u64().unwrap() as u32);
        assert_eq!(layout, if size < 4 * 65_536 { "copies" } else { "coded" }, "{key}");
        stored.push((key, body));
    }
    for (i, (key, body)) in stored.iter().enumerate() {
        let via = 1 + (i as u32 + 3) % 7;
        let r = get(&c, via, key);
        assert_eq!(r.status, 200, "get {key} via {via}: {}", r.code());
        assert!(r.body == *body, "{key}: the bytes differ");
        assert_eq!(r.header("x-object-crc32c"), Some(format!("{:08x}", crc32c::crc32c(body)).as_str()));
    }
    // A range of the large object, a HEAD, bad input.
    let (key, body) = &stored[6];
    let r = request(c.hosts[1].http, "GET", &format!("/v1/objects/{key}"), &[("range", "bytes=5000000-5000999")], b"");
    assert_eq!(r.status, 206, "{}", r.code());
    assert!(r.body == body[5_000_000..5_001_000]);
    let r = request(c.hosts[2].http, "HEAD", &format!("/v1/objects/{key}"), &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some(body.len().to_string().as_str())));
    let r = request(c.hosts[0].http, "PUT", "/v1/objects/bad-crc", &[("x-object-crc32c", "00000000")], b"some bytes");
    assert_eq!(r.code(), "BadDigest");
    let r = get(&c, 2, "bad-crc");
    assert_eq!(r.status, 404, "nothing was stored: {}", String::from_utf8_lossy(&r.body));
    // Refused from its content-length, before a byte of the body is read.
    let r = common::raw(
        c.hosts[0].http,
        b"PUT /v1/objects/huge HTTP/1.1\r\nhost: t\r\ncontent-length: 999999999999\r\nconnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.code()), (413, "TooLarge".to_owned()));
    assert_eq!(get(&c, 3, "never-written").status, 404);

    // Overwrite: the new version whole; delete: gone from every agent.
    let newer = object(300_000, 99);
    let r = put(&c, 4, &stored[5].0, &newer);
    assert_eq!(r.status, 201, "{}", r.code());
    groups.insert(stored[5].0.clone(), r.json()["group"].as_u64().unwrap() as u32);
    stored[5].1 = newer;
    assert_eq!(request(c.hosts[4].http, "DELETE", &format!("/v1/objects/{}", stored[2].0), &[], b"").status, 204);
    let deleted = stored.remove(2).0;
    for via in 1..=7 {
        assert_eq!(get(&c, via, &deleted).status, 404, "deleted, as seen from {via}");
        let r = get(&c, via, &stored[4].0);
        assert!(r.status == 200 && r.body == stored[4].1, "the overwrite, as seen from {via}");
    }

    // Two agents stopped (a gray failure: they take requests and never
    // answer): every object reads from the holders that answer.
    for id in [6, 7] {
        c.agent(id).send(Signal::SIGSTOP);
    }
    for (key, body) in &stored {
        let r = get(&c, 1, key);
        assert_eq!(r.status, 200, "{key} with agents 6 and 7 stopped: {}", r.code());
        assert!(r.body == *body, "{key}: wrong bytes with two agents stopped");
    }
    for id in [6, 7] {
        c.agent(id).send(Signal::SIGCONT);
    }

    // Two holders slow to serve shards (they still answer listings): the
    // holders of data shards 0 and 1 of the large object. Its read asks
    // shards 0-4, gets 2-4 at once, and after the peers' usual latency
    // asks shard 5 (a hedge), which wins.
    let large = stored.iter().position(|(_, b)| b.len() > 5 << 20).unwrap();
    let holders = c.holders(groups[&stored[large].0]);
    let slow = [holders[0], holders[1]];
    for &id in &slow {
        assert!(c.agents[(id - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
        c.append_config(id, "\n[limits]\ntest_shard_read_delay_ms = 3000\n");
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged again");
    let via = (1..=7).find(|h| !slow.contains(h)).unwrap();
    let (key, body) = &stored[large];
    let r = get(&c, via, key);
    assert!(r.status == 200 && r.body == *body, "the large object past two slow holders: {}", r.code());
    let metrics =
        String::from_utf8(request(c.hosts[(via - 1) as usize].http, "GET", "/metrics", &[], b"").body).unwrap();
    let counter = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    assert!(
        counter("shardnode_object_hedges_total{outcome=\"won\"}") > 0,
        "the read was not hedged past a slow holder"
    );
    assert!(counter("shardnode_object_decoded_shards_total") >= 2, "the large object was decoded from parity");

    // Any two agents killed: every object still reads.
    for id in [6, 7] {
        c.agents[(id - 1) as usize].take().unwrap().signal(Signal::SIGKILL);
    }
    for (key, body) in &stored {
        let r = get(&c, 1, key);
        assert_eq!(r.status, 200, "{key} with two agents dead: {}", r.code());
        assert!(r.body == *body, "{key}: wrong bytes with two agents dead");
    }
    assert_eq!(get(&c, 2, &deleted).status, 404, "still deleted");
    // A write with two dead: the group with one dead holder takes it on
    // k + 1 holders, or none does.
    let late = object(500_000, 7);
    let r = put(&c, 3, "written-degraded", &late);
    assert!(r.status == 201 || r.code() == "InsufficientHolders", "{}", r.code());

    // Three killed: a read answers the right bytes or a clear error, as
    // the object's holders say it must (placement is fixed by the roster).
    c.agents[4].take().unwrap().signal(Signal::SIGKILL);
    let dead = [5, 6, 7];
    let mut failed = 0;
    for (key, body) in &stored {
        let holders = c.holders(groups[key]);
        let readable = if body.len() < 4 * 65_536 {
            holders[..3].iter().any(|h| !dead.contains(h))
        } else {
            holders.iter().filter(|h| !dead.contains(h)).count() >= 4
        };
        let r = get(&c, 1, key);
        if readable {
            assert_eq!(r.status, 200, "{key} has enough live holders: {}", r.code());
            assert!(r.body == *body, "{key}: wrong bytes with three agents dead");
        } else {
            assert_eq!((r.status, r.code()), (503, "Unavailable".to_owned()), "{key} lost too many holders");
            failed += 1;
        }
    }
    eprintln!("with three of seven agents dead, {failed} of {} objects could not be read", stored.len());
}

#[test]
fn a_rotten_shard_is_found_by_the_scrubber_and_rebuilt_from_its_siblings() {
    let mut c = TestCluster::coded(27, 6, 4, 2);
    for id in 1..=6 {
        c.append_config(id, "repair_interval_ms = 200\n");
    }
    for id in 1..=6 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged");
    let body = object(1 << 20, 42);
    let r = put(&c, 1, "rot-me", &body);
    assert_eq!(r.status, 201, "{}", r.code());
    let group = r.json()["group"].as_u64().unwrap() as u32;
    let holder = c.holders(group)[0];

    // Stop the holder of data shard 0, flip a bit of that shard's bytes in
    // its device file, start it again.
    assert!(c.agents[(holder - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    let device = flip_on_device(&c, holder, &body[4096..4160]);
    c.start(holder);
    within(Duration::from_secs(20), || c.converged()).expect("converged again");
    let http = c.hosts[(holder - 1) as usize].http;
    let auth = format!("Bearer {TOKEN}");
    let r = request(http, "POST", "/v1/devices/0/scrub/start", &[("authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.code());
    within(Duration::from_secs(60), || logged(c.agent(holder), "damaged object shard rebuilt from its siblings"))
        .expect("the scrubber's finding is repaired from the siblings");
    let repairs = request(http, "GET", "/v1/repairs", &[], b"").json();
    assert!(repairs.to_string().matches("o.").count() == 0, "the repaired shard left the repair list: {repairs}");
    for via in 1..=6 {
        let r = get(&c, via, "rot-me");
        assert!(r.status == 200 && r.body == body, "the object from {via} after the repair: {}", r.code());
    }
    // Offline, the device is clean: stop the holder and scrub it.
    assert!(c.agents[(holder - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    let shardctl = std::path::Path::new(env!("CARGO_BIN_EXE_shard-agent")).with_file_name("shardctl");
    assert!(shardctl.exists(), "{} is missing: build the workspace first", shardctl.display());
    let o = std::process::Command::new(&shardctl).args(["scrub", device.to_str().unwrap()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "offline scrub after the repair: {text}");
}

#[test]
fn a_write_with_a_holder_down_is_acknowledged_and_its_shard_delivered_when_it_returns() {
    let mut c = TestCluster::coded(28, 6, 4, 2);
    for id in 1..=6 {
        c.append_config(id, "repair_interval_ms = 200\n");
    }
    for id in 1..=6 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged");
    // Six hosts, 4+2: every stripe group is all six; host 6 misses out.
    assert!(c.agents[5].take().unwrap().signal(Signal::SIGTERM).success());
    within(Duration::from_secs(10), || c.all_see(6, "down", None)).expect("host 6 seen down");
    let body = object(2 << 20, 5);
    let r = put(&c, 1, "written-while-down", &body);
    assert_eq!(r.status, 201, "acknowledged on k + 1: {}", r.code());
    assert_eq!(r.json()["missing_holders"], serde_json::json!([6]));
    c.start(6);
    within(Duration::from_secs(30), || logged(c.agent(1), "shard owed to a holder delivered"))
        .expect("the coordinator delivers host 6's shard once it is back");
    // Proof it is there: with two other holders gone, host 6's shard is
    // one of the four a read needs.
    for id in [2, 3] {
        c.agents[(id - 1) as usize].take().unwrap().signal(Signal::SIGKILL);
    }
    let r = get(&c, 4, "written-while-down");
    assert!(r.status == 200 && r.body == body, "read with hosts 2 and 3 dead: {}", r.code());
}

#[test]
fn a_read_that_meets_a_rotten_shard_answers_right_and_has_it_rebuilt() {
    let mut c = TestCluster::coded(29, 6, 4, 2);
    for id in 1..=6 {
        // The scrubber paused: only the read can find the damage.
        c.append_config(id, "repair_interval_ms = 200\n\n[scrub]\npaused = true\n");
    }
    for id in 1..=6 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged");
    let body = object(1 << 20, 77);
    let r = put(&c, 1, "read-finds-rot", &body);
    assert_eq!(r.status, 201, "{}", r.code());
    let group = r.json()["group"].as_u64().unwrap() as u32;
    let holders = c.holders(group);
    let rotten = holders[0];
    assert!(c.agents[(rotten - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    flip_on_device(&c, rotten, &body[8192..8256]);
    c.start(rotten);
    within(Duration::from_secs(20), || c.converged()).expect("converged again");
    let via = holders[5];
    let r = get(&c, via, "read-finds-rot");
    assert!(r.status == 200 && r.body == body, "the read answers the right bytes: {}", r.code());
    let delivered = within(Duration::from_secs(30), || logged(c.agent(via), "shard owed to a holder delivered"));
    assert!(
        delivered.is_some(),
        "the read's finding was not rebuilt and written back to its holder; logs:\n{}\n---\n{}",
        c.agent(via).drain_log().join("\n"),
        c.agent(rotten).drain_log().join("\n")
    );
    assert!(
        !logged(c.agent(rotten), "scrub found damage"),
        "the paused scrubber found it: the read's path was not the one tested"
    );
    // Its holder has it right again: with two other holders gone, shard 0
    // is one of the four a read needs.
    for id in [holders[1], holders[2]] {
        c.agents[(id - 1) as usize].take().unwrap().signal(Signal::SIGKILL);
    }
    let r = get(&c, via, "read-finds-rot");
    assert!(r.status == 200 && r.body == body, "read through the repaired shard: {}", r.code());
}
