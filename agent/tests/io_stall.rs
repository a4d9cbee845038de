//! A device whose I/O stops completing, through a running agent: one of
//! its two devices is a file on an ext4 file system (on a loop device) that
//! the test freezes, so the writes of a PUT placed there wait as they would
//! on a hung drive. The agent logs the stall, its metric and status show
//! how long the oldest I/O has waited, the device turns suspect (and its
//! store thread is not asked for what it cannot answer). The requests sent
//! to it before the stall was seen are given up on (`503 DeviceStalled`,
//! outcome unknown) instead of waiting for the device; once the file system
//! is thawed each of those writes has taken effect or not, and nothing
//! else.
//!
//! While the stall lasts the device is treated as one that cannot be
//! asked: new PUTs (and an overwrite of a key it holds) go to the other
//! device at once, a GET of a key it holds is answered `503 Unavailable`
//! naming the stall (not left waiting, not "not found"), a DELETE of such
//! a key leaves a tombstone on the other device (the copy does not come
//! back once the device answers again), listing and the repair list say
//! the device could not be asked, and the other device's keys are served.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{get, request, Agent};

#[path = "../../shardstore/tests/common/frozen_fs.rs"]
mod frozen_fs;
use frozen_fs::Mounted;

fn device(addr: SocketAddr, id: usize) -> serde_json::Value {
    request(addr, "GET", "/v1/status", &[], b"").json()["devices"][id].clone()
}

fn device0(addr: SocketAddr) -> serde_json::Value {
    device(addr, 0)
}

/// The agent's stripe of a key (`node::STRIPES`, by CRC32C): a PUT waiting
/// for the frozen device holds its key's stripe, and a request of another
/// key in that stripe waits for it, as the agent means it to.
fn stripe(key: &str) -> u32 {
    crc32c::crc32c(key.as_bytes()) % 1024
}

/// Puts keys `{prefix}-N` one at a time until one has landed on each
/// device (told by the devices' shard counts), among keys whose stripe is
/// not in `avoid`: `(key on device 0, key on device 1)`.
fn one_key_per_device(addr: SocketAddr, prefix: &str, avoid: &[u32]) -> (String, String) {
    let (mut on0, mut on1) = (None, None);
    for i in 0..64 {
        let key = format!("{prefix}-{i}");
        if avoid.contains(&stripe(&key)) {
            continue;
        }
        // A store thread publishes its shard count before it answers: the
        // new shard is counted once the PUT is answered.
        let counts = || [0, 1].map(|d| device(addr, d)["shards"].as_u64().unwrap());
        let before = counts();
        assert_eq!(request(addr, "PUT", &format!("/v1/shards/{key}"), &[], key.as_bytes()).status, 201);
        let after = counts();
        assert_eq!(after[0] + after[1], before[0] + before[1] + 1, "{key} counted once, on one device");
        if after[0] > before[0] {
            on0.get_or_insert(key);
        } else {
            on1.get_or_insert(key);
        }
        if let (Some(a), Some(b)) = (&on0, &on1) {
            return (a.clone(), b.clone());
        }
    }
    panic!("64 puts did not land on both devices");
}

#[test]
fn a_hung_device_is_reported_stalled_and_suspect_until_its_io_completes() {
    // health.owed_keys_max at its default (systemd/agent.toml): every key
    // written elsewhere during the stall is remembered.
    stall("a_hung_device_is_reported_stalled_and_suspect_until_its_io_completes", 100_000);
}

/// The same stall with room to remember one key written elsewhere while it
/// lasts, where two are: the device's whole listing is swept for older
/// copies once it answers again, and the same checks hold.
#[test]
fn past_the_keys_remembered_during_a_stall_the_device_is_swept() {
    stall("past_the_keys_remembered_during_a_stall_the_device_is_swept", 1);
}

fn stall(test: &str, owed_keys_max: usize) {
    let Some(fs) = Mounted::for_test(test) else {
        return;
    };
    let (hung, fine) = (fs.mnt.join("dev0.img"), fs.dir.path().join("dev1.img"));
    frozen_fs::formatted_file(&hung, 128 << 20);
    frozen_fs::formatted_file(&fine, 128 << 20);
    let config = fs.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndevices = [\"{}\", \"{}\"]\n[health]\ninterval_ms = 100\nio_stall_ms = 2000\nowed_keys_max = {owed_keys_max}\n",
            fs.dir.path().join("data").display(),
            hung.display(),
            fine.display()
        ),
    )
    .unwrap();
    let (mut agent, addr) = Agent::serving(&["--config", config.to_str().unwrap()]);
    // Dropped before the agent should an assertion fail while frozen.
    let thaw = fs.thaw_on_drop();
    assert_eq!(device0(addr)["io_stalled_seconds"], serde_json::Value::Null);
    assert_eq!(device0(addr)["io_stalls"], 0);
    let mut hung_stripes: Vec<u32> = (0..8).map(|i| stripe(&format!("stall-{i}"))).collect();
    let (hung, _) = one_key_per_device(addr, "hung", &hung_stripes);
    hung_stripes.push(stripe(&hung));
    let (to_delete, on1) = one_key_per_device(addr, "kept", &hung_stripes);
    let (to_overwrite, _) = one_key_per_device(addr, "over", &hung_stripes);

    // Freeze device 0's file system. An overwrite of a key it holds goes
    // to it (and waits); PUTs of new keys go to either device.
    let shards0 = device0(addr)["shards"].as_u64().unwrap();
    fs.freeze(true);
    let frozen_at = Instant::now();
    let put = move |key: String, body: Vec<u8>| {
        std::thread::spawn(move || {
            let r = request(addr, "PUT", &format!("/v1/shards/{key}"), &[], &body);
            let code = if r.status == 201 { String::new() } else { r.code() };
            (r.status, code, frozen_at.elapsed())
        })
    };
    let overwrite = put(hung.clone(), b"given up on".to_vec());
    let puts: Vec<_> = (0..8).map(|i| put(format!("stall-{i}"), vec![i as u8; 5000])).collect();
    agent.wait_for("I/O stalled");
    let deadline = Instant::now() + Duration::from_secs(30);
    let d0 = loop {
        let d0 = device0(addr);
        if d0["health"]["state"] != "healthy" && d0["io_stalled_seconds"].as_f64().is_some() {
            break d0;
        }
        assert!(Instant::now() < deadline, "no stall in the status: {d0}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(d0["io_stalled_seconds"].as_f64().unwrap() >= 2.0, "{d0}");
    assert!(d0["health"]["reason"].as_str().unwrap().contains("I/O stalled"), "{d0}");
    assert_eq!(d0["io_stalls"], 1);
    // Its store thread is not asked what it cannot answer while it waits
    // for the device (a view of every device would wait 5 s for it).
    assert!(d0["scrub"]["error"].as_str().is_some_and(|e| e.contains("I/O is stalled")), "{d0}");
    let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    let stalled: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shardnode_device_io_stalled_seconds{device=\"0\"} "))
        .unwrap_or_else(|| panic!("no stall metric for device 0:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(stalled >= 2.0, "{stalled}");
    assert!(metrics.contains("shardnode_device_io_stalls_total{device=\"0\"} 1"), "{metrics}");

    // The stalled device cannot be asked: its keys are unavailable, new
    // writes go to the other device, the other device's keys are served.
    let r = get(addr, &to_delete);
    assert_eq!((r.status, r.code()), (503, "Unavailable".to_owned()), "{}", r.text());
    assert!(r.text().contains("its I/O is stalled"), "{}", r.text());
    assert_eq!(get(addr, &on1).body, on1.as_bytes());
    let shards1 = device(addr, 1)["shards"].as_u64().unwrap();
    for i in 0..4 {
        let key = format!("during-{i}");
        assert_eq!(request(addr, "PUT", &format!("/v1/shards/{key}"), &[], b"while stalled").status, 201, "{key}");
    }
    assert_eq!(request(addr, "PUT", &format!("/v1/shards/{to_overwrite}"), &[], b"newer").status, 201);
    assert_eq!(request(addr, "DELETE", &format!("/v1/shards/{to_delete}"), &[], b"").status, 204);
    // The four new shards and the overwrite, all on device 1.
    assert_eq!(device(addr, 1)["shards"].as_u64().unwrap(), shards1 + 5, "{}", device(addr, 1));
    assert_eq!(get(addr, &to_overwrite).body, b"newer");
    let list = request(addr, "GET", "/v1/shards?prefix=", &[], b"");
    assert_eq!((list.status, list.code()), (503, "Unavailable".to_owned()), "without device 0's keys: {}", list.text());
    assert!(list.text().contains("stalled"), "{}", list.text());
    let list = request(addr, "GET", "/v1/shards?prefix=during-&partial=1", &[], b"").json();
    assert_eq!(list["shards"].as_array().unwrap().len(), 4, "{list}");
    let left_out = list["unavailable"][0].as_str().unwrap();
    assert!(left_out.starts_with("device 0 (") && left_out.contains("its I/O is stalled"), "{list}");
    let repairs = request(addr, "GET", "/v1/repairs", &[], b"").json();
    assert_eq!(repairs["unavailable"][0]["device"], 0, "{repairs}");

    // The requests sent to it before the stall was seen are given up on
    // (within a second of it), not left waiting for the device: 503
    // DeviceStalled, outcome unknown. The others were stored on device 1.
    let (status, code, _) = overwrite.join().unwrap();
    assert_eq!((status, code.as_str()), (503, "DeviceStalled"), "the overwrite of a key on the stalled device");
    let answered: Vec<(u16, String, Duration)> = puts.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(answered.iter().all(|(s, c, _)| *s == 201 || (*s, c.as_str()) == (503, "DeviceStalled")), "{answered:?}");
    fs.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while device0(addr)["io_stalled_seconds"] != serde_json::Value::Null {
        assert!(Instant::now() < deadline, "the stall did not clear: {}", device0(addr));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once the device answers, a write given up on may have taken effect
    // or not, and nothing else: the key reads back as before or as put.
    for (i, (status, ..)) in answered.iter().enumerate() {
        let r = get(addr, &format!("stall-{i}"));
        let stored = r.status == 200 && r.body == vec![i as u8; 5000];
        assert!(stored || (*status == 503 && r.status == 404), "stall-{i}: {status} then {}", r.status);
    }
    let r = get(addr, &hung);
    assert!(r.status == 200 && (r.body == hung.as_bytes() || r.body == b"given up on"), "{hung}: {}", r.text());
    // Device 0 answers again. The keys it was not asked about meanwhile are
    // tidied in the background (the next health interval), with no request
    // of them needed: its older copies of the key deleted and the key
    // overwritten go (a GET or a listing would tidy what it finds, so
    // neither is sent before this). What it holds besides: the shards it
    // held, and the PUTs given up on that took effect.
    // (A write given up on may still be landing: counted again each time.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let landed = answered
            .iter()
            .enumerate()
            .filter(|(i, (status, ..))| *status == 503 && get(addr, &format!("stall-{i}")).status == 200)
            .count() as u64;
        let held = device0(addr)["shards"].as_u64().unwrap();
        if held == shards0 - 2 + landed {
            break;
        }
        assert!(Instant::now() < deadline, "device 0 holds {held} shards, not {shards0} - 2 + {landed} given up on");
        std::thread::sleep(Duration::from_millis(100));
    }
    if owed_keys_max < 2 {
        // Two keys were owed: the sweep, not the remembered key, did it.
        agent.wait_for("sweep for older copies done");
    }
    let list = request(addr, "GET", "/v1/shards?prefix=", &[], b"").json();
    let listed =
        |key: &str| list["shards"].as_array().unwrap().iter().find(|s| s["key"] == key).map(|s| s["size"].clone());
    assert_eq!((listed(&to_delete), listed(&to_overwrite)), (None, Some(5.into())), "{list}");
    // Its older copies lost to what was written while it stalled, and the
    // delete holds.
    assert_eq!(get(addr, &to_overwrite).body, b"newer");
    assert_eq!(get(addr, &to_delete).status, 404);
    assert_eq!(get(addr, &on1).body, on1.as_bytes());
    let repairs = request(addr, "GET", "/v1/repairs", &[], b"").json();
    assert_eq!(repairs["unavailable"], serde_json::json!([]), "{repairs}");
    drop(agent);
    drop(thaw);
    drop(fs);
}

/// An agent on one device, a file on the frozen file system's mount, with
/// one request slot (`limits` adds to `[limits]`, `read_cache` is its
/// `[read_cache]`), the stall watch off (the device stays askable, merely
/// overloaded, while a write holds the slot) and the scrubber paused
/// (whose record of a finished pass would be a write of the store
/// thread's own to wait on the frozen file system).
fn one_slot_agent(fs: &Mounted, limits: &str, read_cache: &str) -> (Agent, SocketAddr) {
    let dev = fs.mnt.join("dev0.img");
    frozen_fs::formatted_file(&dev, 128 << 20);
    let config = fs.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndevices = [\"{}\"]\n[limits]\ndevice_concurrency = 1\n{limits}\n\
             [health]\nio_stall_ms = 0\n[read_cache]\n{read_cache}\n[scrub]\npaused = true\n",
            fs.dir.path().join("data").display(),
            dev.display()
        ),
    )
    .unwrap();
    Agent::serving(&["--config", config.to_str().unwrap()])
}

/// A device whose one request slot is held by a write its frozen file
/// system keeps waiting (the stall watch off, so the device stays askable
/// and merely overloaded; the scrubber paused, whose record of a finished
/// pass would be a write of the store thread's own to wait on the frozen
/// file system): a GET of a shard in its read cache is still
/// answered, from memory, while one that must read the device is refused
/// `503 Overloaded` at once. Once the file system thaws, the write lands
/// and the other shard reads again.
#[test]
fn a_cached_shard_is_answered_while_its_device_is_overloaded() {
    let Some(fs) = Mounted::for_test("a_cached_shard_is_answered_while_its_device_is_overloaded") else {
        return;
    };
    let (agent, addr) = one_slot_agent(&fs, "device_queue_max = 0", "shard_bytes_max = 16");
    let thaw = fs.thaw_on_drop();
    let (hot, cold, held) = ("hot", "cold", "held");
    assert!(stripe(held) != stripe(hot) && stripe(held) != stripe(cold), "the held PUT must not hold their stripe");
    // The cold shard is past `shard_bytes_max`: however often it is read
    // (below, until the device is full), it is never cached.
    let cold_body = vec![b'c'; 64];
    assert_eq!(request(addr, "PUT", "/v1/shards/hot", &[], b"hot").status, 201);
    assert_eq!(request(addr, "PUT", "/v1/shards/cold", &[], &cold_body).status, 201);
    assert_eq!(get(addr, hot).body, b"hot", "read once: now in the read cache");

    fs.freeze(true);
    // The PUT is refused while a GET below holds the one slot: it tries
    // again until it holds the slot itself (and waits, frozen).
    let waiting = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = request(addr, "PUT", &format!("/v1/shards/{held}"), &[], b"w");
            if r.status != 503 || Instant::now() > deadline {
                return r.status;
            }
            assert_eq!(r.code(), "Overloaded");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, cold);
        if r.status == 503 {
            assert_eq!(r.code(), "Overloaded", "{}", r.text());
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "the held write never took the device's slot (it finished: {}): {}",
            waiting.is_finished(),
            device0(addr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = get(addr, hot);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hot"[..]), "{}", r.text());
    let r = request(addr, "GET", "/v1/shards/hot", &[("range", "bytes=1-")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"ot"[..]));
    assert_eq!((get(addr, cold).status, get(addr, cold).code()), (503, "Overloaded".to_owned()));

    fs.freeze(false);
    assert_eq!(waiting.join().unwrap(), 201, "the held write lands once the file system thaws");
    assert_eq!(get(addr, cold).body, cold_body);
    assert_eq!(get(addr, held).body, b"w");
    drop(agent);
    drop(thaw);
    drop(fs);
}

/// Reads that wait for a turn on their device, on the store thread that
/// read them (no trip to the router's handler): the device's one request
/// slot is held by a write its frozen file system keeps waiting (the stall
/// watch off, the scrubber paused, the read cache off). A read with an
/// `x-deadline-ms` waits in the device's queue and is answered
/// `DeadlineExceeded` once its deadline passes, while the slot is still
/// held; past the queue's bound a read is refused `Overloaded` at once.
/// Both answers are the handler's, header for header. Reads without a
/// deadline wait; once the file system thaws each gets its turn and is
/// read on the thread, and a client that left while it waited gives its
/// turn back: the slot is free again afterwards.
#[test]
fn reads_waiting_for_a_held_device_get_their_turn_or_their_deadline_on_the_store_thread() {
    let test = "reads_waiting_for_a_held_device_get_their_turn_or_their_deadline_on_the_store_thread";
    let Some(fs) = Mounted::for_test(test) else {
        return;
    };
    let (agent, addr) = one_slot_agent(&fs, "device_queue_max = 3", "bytes_per_device = 0");
    let thaw = fs.thaw_on_drop();
    let held = "held";
    let body = |key: &str| key.repeat(100).into_bytes();
    let keys = ["wait-a", "wait-b", "wait-c", "probe"];
    for key in keys {
        assert!(stripe(key) != stripe(held), "the held PUT must not hold {key}'s stripe");
        assert_eq!(request(addr, "PUT", &format!("/v1/shards/{key}"), &[], &body(key)).status, 201);
    }
    let local_reads = "shardnode_device_store_local_reads_total{device=\"0\"}";
    let local_before = common::sample(addr, local_reads);
    let deadline_drops = "shardnode_admission_drops_total{device=\"0\",reason=\"deadline\"}";
    let drops_before = common::sample(addr, deadline_drops);
    let with_deadline = |ms: &str, extra: &[(&str, &str)]| {
        let headers: Vec<(&str, &str)> = [("x-deadline-ms", ms)].into_iter().chain(extra.iter().copied()).collect();
        request(addr, "GET", "/v1/shards/probe", &headers, b"")
    };

    fs.freeze(true);
    let writer = std::thread::spawn(move || request(addr, "PUT", &format!("/v1/shards/{held}"), &[], b"w").status);
    // The PUT holds the slot once a read with a deadline, queued behind
    // it, runs out of time (before that it is read: counted).
    let (mut read_before_held, until) = (0, Instant::now() + Duration::from_secs(10));
    loop {
        let r = with_deadline("200", &[]);
        if r.status == 503 {
            assert_eq!(r.code(), "DeadlineExceeded", "{}", r.text());
            break;
        }
        assert_eq!((r.status, r.body), (200, body("probe")));
        read_before_held += 1;
        assert!(Instant::now() < until, "the held write never took the device's slot");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Answered at its deadline, not before (it waited in the queue) and
    // not when the slot frees (it is held until the thaw): the handler's
    // answer, which the header it does not serve asks for.
    let sent = Instant::now();
    let here = with_deadline("300", &[]);
    let waited = sent.elapsed();
    let handler = with_deadline("300", &[("x-probe", "handler")]);
    assert_eq!((here.status, here.code()), (503, "DeadlineExceeded".to_owned()), "{}", here.text());
    assert!(waited >= Duration::from_millis(300), "answered after {waited:?}, before its deadline");
    assert_eq!((here.status, common::headers_but_date(&here)), (handler.status, common::headers_but_date(&handler)));
    assert_eq!(here.body, handler.body);

    // Three reads without a deadline wait in the queue (one that finds it
    // full for a moment tries again); the third's client leaves.
    let (queued_tx, queued) = std::sync::mpsc::channel();
    let waiter = |key: &'static str, leaves: bool| {
        let queued_tx = queued_tx.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(format!("GET /v1/shards/{key} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).unwrap();
                // No answer within 300 ms: it waits (nothing frees the slot).
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                if s.peek(&mut [0]).is_err() {
                    queued_tx.send(key).unwrap();
                    if leaves {
                        return None;
                    }
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let r = common::read_reply(&mut s, false);
                    return Some((r.status, r.body));
                }
                let r = common::read_reply(&mut s, false);
                assert_eq!((r.status, r.code()), (503, "Overloaded".to_owned()), "{key}: {}", r.text());
                assert!(Instant::now() < until, "{key} never found room in the queue");
            }
        })
    };
    let waiting = [waiter("wait-a", false), waiter("wait-b", false), waiter("wait-c", true)];
    for _ in 0..3 {
        queued.recv_timeout(Duration::from_secs(30)).expect("a read without a deadline never waited in the queue");
    }
    // The queue is full: a read is refused at once, as the handler refuses
    // it.
    let here = with_deadline("100", &[]);
    assert_eq!((here.status, here.code()), (503, "Overloaded".to_owned()), "{}", here.text());
    let handler = with_deadline("100", &[("x-probe", "handler")]);
    assert_eq!(here.header("retry-after"), Some("1"));
    assert_eq!((here.status, common::headers_but_date(&here)), (handler.status, common::headers_but_date(&handler)));
    assert_eq!(here.body, handler.body);

    fs.freeze(false);
    assert_eq!(writer.join().unwrap(), 201, "the held write lands once the file system thaws");
    let answers: Vec<_> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(answers[0], Some((200, body("wait-a"))));
    assert_eq!(answers[1], Some((200, body("wait-b"))));
    // Each waiting read was read on the store thread once its turn came
    // (the one whose client left too).
    let local = common::sample(addr, local_reads) - local_before;
    assert_eq!(local as u64, read_before_held + 3, "the waiting reads were not all read on the thread");
    assert!(common::sample(addr, deadline_drops) - drops_before >= 2.0, "the deadline refusals were not counted");
    // No turn was kept: one at a time, reads go on being served in time.
    for key in keys {
        let r = request(addr, "GET", &format!("/v1/shards/{key}"), &[("x-deadline-ms", "5000")], b"");
        assert_eq!((r.status, r.body), (200, body(key)));
    }
    drop(agent);
    drop(thaw);
    drop(fs);
}
