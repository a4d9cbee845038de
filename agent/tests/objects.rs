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
    // Only in the extents: a small shard's payload also has a copy in the
    // log (a one-flush commit's), which is metadata, not the shard.
    let layout = {
        let options = shardstore::device::OpenOptions { read_only: true, exclusive: false, ..Default::default() };
        let mut dev = shardstore::device::open(&device, &options).unwrap();
        shardstore::superblock::open(&mut dev, false).unwrap().superblock.layout
    };
    let mut bytes = std::fs::read(&device).unwrap();
    let extents = &bytes[layout.data_offset as usize..layout.data_end() as usize];
    let at = layout.data_offset as usize
        + extents.windows(needle.len()).position(|w| w == needle).expect("the shard's bytes are in an extent");
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
    c.start_all();
    let sizes = [0usize, 1, 1000, 4 * 65_536 - 1, 4 * 65_536, (1 << 20) + 7, (5 << 20) + 3, 64 << 20];
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
    // Across the end of data shard 0 (cells of 1,310,784 bytes), and the
    // last byte: read from the data shards it covers alone.
    for (range, bytes) in
        [("bytes=1310000-1311999", &body[1_310_000..1_312_000]), ("bytes=-1", &body[body.len() - 1..])]
    {
        let r = request(c.hosts[1].http, "GET", &format!("/v1/objects/{key}"), &[("range", range)], b"");
        assert!(r.status == 206 && r.body == *bytes, "{range}: {}", r.code());
    }
    let metrics = String::from_utf8(request(c.hosts[1].http, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(
        metrics.contains("shardnode_object_range_reads_total{path=\"direct\"} 3"),
        "ranges are read from the pieces of the data shards they cover: {metrics}"
    );
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
    // Shards are sized from the content-length: a body without one is
    // refused, and nothing is stored.
    let r = common::raw(
        c.hosts[0].http,
        b"PUT /v1/objects/chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!((r.status, r.code()), (411, "LengthRequired".to_owned()));
    assert_eq!(get(&c, 2, "chunked").status, 404);
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
        // The whole error body: its message says which shards were missing and why.
        assert_eq!(r.status, 200, "{key} with agents 6 and 7 stopped: {}", String::from_utf8_lossy(&r.body));
        assert!(r.body == *body, "{key}: wrong bytes with two agents stopped");
    }
    let (key, body) = &stored[5];
    let r = request(c.hosts[0].http, "GET", &format!("/v1/objects/{key}"), &[("range", "bytes=100-299999")], b"");
    assert!(r.status == 206 && r.body == body[100..300_000], "a range with two agents stopped: {}", r.code());
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
    c.start_all();
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
    within(Duration::from_secs(60), || logged(c.agent(holder), "object shard rebuilt from its siblings and written"))
        .expect("the scrubber's finding is repaired from the siblings");
    let repairs = request(http, "GET", "/v1/repairs", &[], b"").json();
    assert!(repairs.to_string().matches("o.").count() == 0, "the repaired shard left the repair list: {repairs}");
    for via in 1..=6 {
        let r = get(&c, via, "rot-me");
        assert!(r.status == 200 && r.body == body, "the object from {via} after the repair: {}", r.code());
    }

    // The object deleted, and the holder's tombstone rots: it is rebuilt
    // from another host's tombstone (which must name a key of the same
    // hash), and the object stays deleted.
    let r = request(c.hosts[1].http, "DELETE", "/v1/objects/rot-me", &[], b"");
    assert_eq!(r.status, 204, "{}", r.code());
    assert!(c.agents[(holder - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    flip_on_device(&c, holder, b"SNTBrot-me");
    c.start(holder);
    within(Duration::from_secs(20), || c.converged()).expect("converged again");
    let r = request(http, "POST", "/v1/devices/0/scrub/start", &[("authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.code());
    within(Duration::from_secs(60), || {
        c.agent(holder)
            .drain_log()
            .iter()
            .any(|l| l.contains("rebuilt from its siblings and written") && l.contains(".t holder="))
    })
    .expect("the rotten tombstone is rebuilt");
    for via in 1..=6 {
        assert_eq!(get(&c, via, "rot-me").status, 404, "deleted, as seen from {via}");
    }
    // Offline, the device is clean: stop the holder and scrub it.
    assert!(c.agents[(holder - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    let shardctl = std::path::Path::new(env!("CARGO_BIN_EXE_shard-agent")).with_file_name("shardctl");
    assert!(shardctl.exists(), "{} is missing: build the workspace first", shardctl.display());
    let o = std::process::Command::new(&shardctl).args(["scrub", device.to_str().unwrap()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "offline scrub after the repair: {text}");
}

/// Host `via`'s object repair view (`GET /v1/repairs`, `objects`).
fn repairs(c: &TestCluster, via: u32) -> serde_json::Value {
    request(c.hosts[(via - 1) as usize].http, "GET", "/v1/repairs", &[], b"").json()["objects"].clone()
}

fn set_repair_rate(c: &TestCluster, via: u32, body: &str, token: &str) -> common::Reply {
    let auth = format!("Bearer {token}");
    request(c.hosts[(via - 1) as usize].http, "PUT", "/v1/repairs/rate", &[("authorization", &auth)], body.as_bytes())
}

#[test]
fn a_write_with_a_holder_down_is_acknowledged_and_its_shard_delivered_when_it_returns() {
    let mut c = TestCluster::coded(28, 6, 4, 2);
    for id in 1..=6 {
        c.append_config(id, "repair_interval_ms = 200\n");
    }
    c.start_all();
    // Six hosts, 4+2: every stripe group is all six; host 6 misses out.
    assert!(c.agents[5].take().unwrap().signal(Signal::SIGTERM).success());
    within(Duration::from_secs(10), || c.all_see(6, "down", None)).expect("host 6 seen down");
    let body = object(2 << 20, 5);
    let r = put(&c, 1, "written-while-down", &body);
    assert_eq!(r.status, 201, "acknowledged on k + 1: {}", r.code());
    assert_eq!(r.json()["missing_holders"], serde_json::json!([6]));

    // The coordinator's queue shows the shard owed to host 6, its stripe
    // with one loss more to survive, and the stripe at risk.
    within(Duration::from_secs(10), || repairs(&c, 1)["queue"].as_array().is_some_and(|q| q.len() == 1))
        .expect("the owed shard is in host 1's repair queue");
    let view = repairs(&c, 1);
    let entry = &view["queue"][0];
    assert_eq!((entry["holder"].as_u64(), entry["source"].as_str()), (Some(6), Some("put")), "{view}");
    assert_eq!(entry["redundancy"], 1, "4+2 with one shard missing: {view}");
    assert_eq!(entry["bytes"], 512 << 10, "a quarter of 2 MiB: {view}");
    assert_eq!(view["stripes_at_risk"]["1"], 1, "{view}");
    let metrics = String::from_utf8(request(c.hosts[0].http, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(metrics.contains("shardnode_stripes_at_risk{redundancy=\"1\"} 1"), "{metrics}");
    assert!(metrics.contains("shardnode_repair_queue_bytes{redundancy=\"1\"} 524288"), "{metrics}");

    // The throttle, at run time: bad input and a missing token change
    // nothing; 0 pauses, and host 6 back does not get its shard.
    assert_eq!(set_repair_rate(&c, 1, "fast", TOKEN).code(), "InvalidArgument");
    assert_eq!(set_repair_rate(&c, 1, r#"{"bytes_per_second": 0}"#, "wrong").status, 401);
    assert_eq!(repairs(&c, 1)["rate_bytes_per_second"], 64 << 20, "unchanged");
    let r = set_repair_rate(&c, 1, r#"{"bytes_per_second": 0}"#, TOKEN);
    assert_eq!(r.status, 200, "{}", r.code());
    c.start(6);
    within(Duration::from_secs(20), || c.all_see(6, "alive", None)).expect("host 6 back");
    let rounds = repairs(&c, 1)["rounds"].as_u64().unwrap();
    within(Duration::from_secs(10), || repairs(&c, 1)["rounds"].as_u64().unwrap() >= rounds + 3)
        .expect("repair rounds go on while paused");
    let view = repairs(&c, 1);
    assert_eq!((view["repaired"].as_u64(), view["queue"].as_array().map(Vec::len)), (Some(0), Some(1)), "{view}");
    assert!(!logged(c.agent(1), "object shard rebuilt from its siblings and written"), "paused, yet repaired");

    // Resumed: delivered, and the queue is empty.
    let r = set_repair_rate(&c, 1, r#"{"bytes_per_second": 8388608}"#, TOKEN);
    assert_eq!((r.status, r.json()["before"].as_u64()), (200, Some(0)));
    within(Duration::from_secs(30), || logged(c.agent(1), "object shard rebuilt from its siblings and written"))
        .expect("the coordinator delivers host 6's shard once it is back");
    within(Duration::from_secs(10), || repairs(&c, 1)["queue"].as_array().is_some_and(Vec::is_empty))
        .expect("the delivered shard left the queue");
    assert_eq!(repairs(&c, 1)["bytes_repaired"], 512 << 10);

    // A host under maintenance (its records say so) is given no new
    // shard: the write does not wait for it and owes it one.
    assert!(c.agents[4].take().unwrap().signal(Signal::SIGTERM).success());
    c.append_config(5, "maintenance = true\n");
    c.start(5);
    within(Duration::from_secs(20), || {
        let view = c.view(1);
        let host5 = view["members"].as_array().unwrap().iter().find(|m| m["host"] == 5).cloned().unwrap_or_default();
        host5["records"].as_array().into_iter().flatten().any(|r| r["kind"] == "host" && r["maintenance"] == true)
    })
    .expect("host 1 learns host 5 is under maintenance");
    // The read below goes through host 4, and needs host 5's shard: every
    // host must have seen host 5 back (under load, host 4 could still hold
    // it down and not ask it: "holders [2, 3, 5] could not be asked").
    within(Duration::from_secs(20), || c.all_see(5, "alive", Some(c.own_generation(5))))
        .expect("host 5 back, everywhere");
    let r = put(&c, 1, "not-on-maintenance", &object(1 << 20, 6));
    assert_eq!((r.status, r.json()["missing_holders"].clone()), (201, serde_json::json!([5])), "{}", r.code());
    // Proof it is there: with two other holders gone, host 6's shard is
    // one of the four a read needs.
    for id in [2, 3] {
        c.agents[(id - 1) as usize].take().unwrap().signal(Signal::SIGKILL);
    }
    let r = get(&c, 4, "written-while-down");
    assert!(r.status == 200 && r.body == body, "read with hosts 2 and 3 dead: {} {}", r.code(), r.text());
}

#[test]
fn a_read_that_meets_a_rotten_shard_answers_right_and_has_it_rebuilt() {
    let mut c = TestCluster::coded(29, 6, 4, 2);
    for id in 1..=6 {
        // The scrubber paused: only the read can find the damage.
        c.append_config(id, "repair_interval_ms = 200\n\n[scrub]\npaused = true\n");
    }
    c.start_all();
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
    // A read asks every holder what it has and decides without one that
    // is slower than the others usually are (the listing's grace): a
    // holder just restarted on a loaded machine may be left out, and
    // then that read does not meet its shard. Each read must answer the
    // right bytes; within a few, one must meet the damage.
    let met = within(Duration::from_secs(20), || {
        let r = get(&c, via, "read-finds-rot");
        assert!(r.status == 200 && r.body == body, "the read answers the right bytes: {}", r.code());
        logged(c.agent(via), "a read found an object shard damaged")
    });
    assert!(met.is_some(), "no read met the damaged shard in 20 s");
    let delivered =
        within(Duration::from_secs(30), || logged(c.agent(via), "object shard rebuilt from its siblings and written"));
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

#[test]
fn racing_writers_never_mix_versions_a_delete_outlives_a_late_repair_and_tokens_guard_the_api() {
    let mut c = TestCluster::coded(32, 6, 4, 2);
    std::fs::write(c.path("clients.tokens"), "# rotated monthly\nclient-a\n").unwrap();
    let tokens = c.path("clients.tokens");
    for id in 1..=6 {
        c.append_config(id, &format!("repair_interval_ms = 200\nclient_token_file = \"{}\"\n", tokens.display()));
    }
    c.start_all();
    let with = |token: &str| format!("Bearer {token}");

    // Client tokens: none or a wrong one is refused and stores nothing.
    let (old_token, new_token) = (with("client-a"), with("client-b"));
    let https: Vec<std::net::SocketAddr> = c.hosts.iter().map(|h| h.http).collect();
    let put_as = |via: u32, key: &str, auth: &str, body: &[u8]| {
        let crc = format!("{:08x}", crc32c::crc32c(body));
        let h = [("x-object-crc32c", crc.as_str()), ("authorization", auth)];
        request(https[(via - 1) as usize], "PUT", &format!("/v1/objects/{key}"), &h, body)
    };
    let get_as = |via: u32, key: &str, auth: &str| {
        request(https[(via - 1) as usize], "GET", &format!("/v1/objects/{key}"), &[("authorization", auth)], b"")
    };
    assert_eq!(put(&c, 1, "guarded", b"no token").code(), "Unauthorized");
    assert_eq!(put_as(1, "guarded", &new_token, b"wrong token").code(), "Unauthorized");
    assert_eq!(get_as(2, "guarded", &old_token).status, 404, "nothing was stored");
    assert_eq!(put_as(1, "guarded", &old_token, b"right token").status, 201);
    // Rotation without a restart: the new token added, SIGHUP, the old
    // one dropped, SIGHUP.
    std::fs::write(&tokens, "client-a\nclient-b\n").unwrap();
    for id in 1..=6 {
        c.agent(id).send(Signal::SIGHUP);
    }
    within(Duration::from_secs(10), || get_as(3, "guarded", &new_token).status == 200).expect("the new token works");
    std::fs::write(&tokens, "client-b\n").unwrap();
    for id in 1..=6 {
        c.agent(id).send(Signal::SIGHUP);
    }
    within(Duration::from_secs(10), || get_as(3, "guarded", &old_token).status == 401)
        .expect("the old token is refused");

    // Three agents overwrite one key at once, rounds of a coded and a
    // copied size, while another reads it: every read is one whole
    // version, never a mix of two.
    let payloads: Vec<Vec<u8>> =
        (0..12).map(|i| object(if i % 2 == 0 { 600_000 } else { 5000 }, 100 + i as u8)).collect();
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let reads = std::sync::atomic::AtomicUsize::new(0);
    let writing = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        for w in 0..3u32 {
            let (payloads, acknowledged, new_token) = (&payloads, &acknowledged, &new_token);
            s.spawn(move || {
                for round in 0..4 {
                    let index = round * 3 + w as usize;
                    let r = put_as(w + 1, "contended", new_token, &payloads[index]);
                    assert_eq!(r.status, 201, "writer {w} round {round}: {}", r.code());
                    let version = r.json()["version"].as_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().push((version, index));
                }
            });
        }
        let (payloads, reads, writing, new_token) = (&payloads, &reads, &writing, &new_token);
        s.spawn(move || {
            for _ in 0..400 {
                if !writing.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = get_as(5, "contended", new_token);
                match r.status {
                    200 => {
                        assert!(payloads.contains(&r.body), "a read returned bytes of no single version");
                        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    404 => {}
                    _ => panic!("a read during the overwrites: {} {}", r.status, String::from_utf8_lossy(&r.body)),
                }
            }
        });
        // The writers finish (scoped threads joined below); then the
        // reader stops.
        while acknowledged.lock().unwrap().len() < 12 {
            std::thread::sleep(Duration::from_millis(20));
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(reads.into_inner() > 0, "no read overlapped the writes");
    // The newest acknowledged version wins, seen alike from every agent.
    let newest = acknowledged.into_inner().unwrap().into_iter().max().unwrap();
    for via in 1..=6 {
        let r = get_as(via, "contended", &new_token);
        assert_eq!(r.status, 200, "{}", r.code());
        assert_eq!(r.header("x-object-version"), Some(newest.0.as_str()), "from {via}");
        assert!(r.body == payloads[newest.1], "from {via}: the newest version's bytes");
    }

    // A delete that lands between a degraded write and its repair: the
    // repair finds the version gone and drops its entry; nothing comes
    // back.
    assert_eq!(set_repair_rate(&c, 1, r#"{"bytes_per_second": 0}"#, TOKEN).status, 200);
    assert!(c.agents[5].take().unwrap().signal(Signal::SIGTERM).success());
    within(Duration::from_secs(10), || c.all_see(6, "down", None)).expect("host 6 seen down");
    let r = put_as(1, "deleted-before-repair", &new_token, &object(1 << 20, 9));
    assert_eq!((r.status, r.json()["missing_holders"].clone()), (201, serde_json::json!([6])));
    let r =
        request(c.hosts[1].http, "DELETE", "/v1/objects/deleted-before-repair", &[("authorization", &new_token)], b"");
    assert_eq!(r.status, 204, "{}", r.code());
    c.start(6);
    within(Duration::from_secs(20), || c.all_see(6, "alive", None)).expect("host 6 back");
    // The round after the write shows the owed shard; it stays, paused.
    if within(Duration::from_secs(5), || repairs(&c, 1)["queue"].as_array().map(Vec::len) == Some(1)).is_none() {
        let view = repairs(&c, 1);
        let log: Vec<String> =
            c.agent(1).drain_log().iter().filter(|l| l.contains("repair") || l.contains("owed")).cloned().collect();
        panic!("the owed shard is not queued: {view}\n{}", log.join("\n"));
    }
    let rounds = repairs(&c, 1)["rounds"].as_u64().unwrap();
    within(Duration::from_secs(10), || repairs(&c, 1)["rounds"].as_u64().unwrap() >= rounds + 2).expect("rounds go on");
    assert_eq!(repairs(&c, 1)["queue"].as_array().map(Vec::len), Some(1), "the entry waits, paused");
    assert_eq!(set_repair_rate(&c, 1, r#"{"bytes_per_second": 67108864}"#, TOKEN).status, 200);
    within(Duration::from_secs(20), || repairs(&c, 1)["obsolete"] == 1).expect("the late repair sees the delete");
    assert_eq!(repairs(&c, 1)["queue"].as_array().map(Vec::len), Some(0));
    assert_eq!(repairs(&c, 1)["repaired"], 0, "nothing was written for a deleted object");
    for via in 1..=6 {
        assert_eq!(get_as(via, "deleted-before-repair", &new_token).status, 404, "still deleted, seen from {via}");
    }

    // Read after write for a small object (kept as 3 copies) overwritten
    // while a holder of its copies is down: the copy that holder missed
    // goes to a stand-in, so a read that hears from all but two holders
    // (the other two copy holders stopped) still finds the new version,
    // not the old copy the returning holder kept.
    let (key, x) = (0..)
        .map(|n| format!("small-{n}"))
        .find_map(|key| {
            let [a, b] = c.candidates(&key);
            let (ha, hb) = (c.holders(a), c.holders(b));
            ha[..3].iter().find(|h| hb[..3].contains(h)).map(|&h| (key, h))
        })
        .unwrap();
    let via = (1..=6).find(|&h| h != x).unwrap();
    let (v1, v2) = (object(5000, 1), object(6000, 2));
    assert_eq!(put_as(via, &key, &new_token, &v1).status, 201);
    assert_eq!(set_repair_rate(&c, via, r#"{"bytes_per_second": 0}"#, TOKEN).status, 200);
    assert!(c.agents[(x - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
    within(Duration::from_secs(10), || c.all_see(x, "down", None)).expect("the copy holder seen down");
    let r = put_as(via, &key, &new_token, &v2);
    assert_eq!((r.status, r.json()["missing_holders"].clone()), (201, serde_json::json!([x])), "{}", r.code());
    let others: Vec<u32> =
        c.holders(r.json()["group"].as_u64().unwrap() as u32)[..3].iter().copied().filter(|&h| h != x).collect();
    c.start(x);
    within(Duration::from_secs(20), || c.all_see(x, "alive", None)).expect("the copy holder back");
    let reader = (1..=6).find(|h| !others.contains(h) && *h != x).unwrap();
    for &h in &others {
        c.agent(h).send(Signal::SIGSTOP);
    }
    let r = get_as(reader, &key, &new_token);
    for &h in &others {
        c.agent(h).send(Signal::SIGCONT);
    }
    assert_eq!(r.status, 200, "{}", r.code());
    assert!(r.body == v2, "a read with the new version's copy holders stopped returned the old version");
}

/// A holder whose device did not open is up and gossiping, but cannot say
/// what that device holds: its listing answers 503, and an object reader
/// counts it as not heard from. With m + 1 holders in that state the
/// object is `503 Unavailable`, never `404`: its shards are on devices
/// that did not open, not gone.
#[test]
fn an_object_on_holders_whose_devices_did_not_open_is_unavailable_not_absent() {
    use std::io::{Seek, SeekFrom, Write};
    let mut c = TestCluster::coded(34, 6, 4, 2);
    c.start_all();
    let body = object(1 << 20, 9);
    let r = put(&c, 1, "kept-away", &body);
    assert_eq!(r.status, 201, "{}", r.code());
    let holders = c.holders(r.json()["group"].as_u64().unwrap() as u32);
    for &h in &holders[..3] {
        assert!(c.agents[(h - 1) as usize].take().unwrap().signal(Signal::SIGTERM).success());
        // Junk over both superblock zones: the device no longer opens.
        let device = c.dir.path().join(format!("host-{h}/dev0.img"));
        let size = std::fs::metadata(&device).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(&device).unwrap();
        for zone in [0, size - (1 << 20)] {
            f.seek(SeekFrom::Start(zone)).unwrap();
            f.write_all(&vec![0xa5; 1 << 20]).unwrap();
        }
        c.start(h);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged again");
    let via = holders[5];
    let r = get(&c, via, "kept-away");
    assert_eq!((r.status, r.code()), (503, "Unavailable".to_owned()), "{}", r.text());
    // A holder's repair queue lacks what its dead device holds, and says
    // so once a round has scanned (its rounds go on for the rest).
    let scanned = |host: u32| {
        let mut view = serde_json::Value::Null;
        within(Duration::from_secs(20), || {
            view = repairs(&c, host);
            view["rounds"].as_u64().is_some_and(|n| n > 0)
        })
        .expect("no repair round ran");
        view
    };
    let broken = holders[0];
    let view = scanned(broken);
    let unscanned = view["unscanned_devices"].as_array().expect("unscanned_devices");
    assert_eq!(unscanned.len(), 1, "{view}");
    assert_eq!(unscanned[0]["device"], 0, "{view}");
    assert!(unscanned[0]["reason"].as_str().unwrap().starts_with("not open: "), "{view}");
    let text = request(c.hosts[(broken - 1) as usize].http, "GET", "/metrics", &[], b"").text();
    assert!(text.lines().any(|l| l == "shardnode_repair_unscanned_devices 1"), "{text}");
    // A holder whose devices all opened scanned them all.
    assert_eq!(scanned(via)["unscanned_devices"], serde_json::json!([]));
}
