//! Unavailable is not absent: after a restart in which one device does not
//! open, the keys it holds, and keys that exist nowhere, answer `503
//! Unavailable` naming the device, never `404`: a front end reading 404
//! would take the shard for gone. Keys on the other devices are served;
//! new shards go to the devices that open. A device that misses an
//! overwrite and a delete while it is away and then returns brings back
//! neither its old bytes nor the deleted shard, not even to a listing made
//! while its old copies are being removed.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::{get, put, request, start_configured};
use nix::sys::signal::Signal;

const DEVICE_BYTES: u64 = 256 << 20;

/// The agent's status, its devices counting `n` shards in all (each store
/// thread publishes its count before it answers a put).
fn counted(addr: std::net::SocketAddr, n: u64) -> serde_json::Value {
    let status = request(addr, "GET", "/v1/status", &[], b"").json();
    let total: u64 = status["devices"].as_array().unwrap().iter().map(|d| d["shards"].as_u64().unwrap()).sum();
    assert_eq!(total, n, "{status}");
    status
}

#[test]
fn keys_of_a_device_that_did_not_open_answer_unavailable_not_not_found() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start_configured(dir.path(), DEVICE_BYTES, "t", "");
    for i in 0..60 {
        assert_eq!(put(addr, &format!("k{i}"), format!("value {i}").as_bytes()).status, 201);
    }
    let status = counted(addr, 60);
    let shards = |d: usize| status["devices"][d]["shards"].as_u64().unwrap();
    assert!(shards(1) > 0, "{status}");
    assert!(agent.signal(Signal::SIGTERM).success());

    // Junk over both superblock zones of device 1: it no longer opens.
    let path = dir.path().join("data").join("dev1.img");
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for zone in [0, DEVICE_BYTES - (1 << 20)] {
        f.seek(SeekFrom::Start(zone)).unwrap();
        f.write_all(&vec![0xa5; 1 << 20]).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);

    let (_agent, addr) = start_configured(dir.path(), DEVICE_BYTES, "t", "");
    let (mut served, mut unavailable) = (0, 0);
    for i in 0..60 {
        let r = get(addr, &format!("k{i}"));
        match r.status {
            200 => {
                assert_eq!(r.body, format!("value {i}").as_bytes());
                served += 1;
            }
            503 => {
                assert_eq!(r.code(), "Unavailable");
                let message = r.json()["message"].as_str().unwrap().to_owned();
                assert!(message.contains("device 1") && message.contains("not proven"), "{message}");
                assert_eq!(r.header("retry-after"), Some("30"));
                unavailable += 1;
            }
            other => panic!("k{i}: {other} {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert_eq!(unavailable, shards(1), "exactly the keys of the device that did not open");
    assert_eq!(served + unavailable, 60);
    // A listing would leave its keys out: refused, naming it, unless the
    // client asks for what the others hold.
    let r = request(addr, "GET", "/v1/shards?prefix=k", &[], b"");
    assert_eq!((r.status, r.code()), (503, "Unavailable".to_owned()));
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("device 1") && message.contains("partial=1"), "{message}");
    let r = request(addr, "GET", "/v1/shards?prefix=k&partial=1", &[], b"");
    assert_eq!(r.status, 200);
    let listing = r.json();
    assert_eq!(listing["shards"].as_array().unwrap().len() as u64, served, "{listing}");
    let left_out = listing["unavailable"].as_array().unwrap();
    assert!(left_out.len() == 1 && left_out[0].as_str().unwrap().starts_with("device 1 "), "{listing}");
    assert_eq!(request(addr, "GET", "/v1/shards?partial=yes", &[], b"").status, 400);
    // Nor does the repair list claim the device has no damaged shard.
    let repairs = request(addr, "GET", "/v1/repairs", &[], b"").json();
    assert_eq!(repairs["unavailable"][0]["device"], 1, "{repairs}");
    assert!(repairs["unavailable"][0]["reason"].as_str().unwrap().starts_with("not open: "), "{repairs}");
    // Nor the scrub statuses that it is being scrubbed.
    let scrub = request(addr, "GET", "/v1/scrub", &[], b"").json();
    assert!(scrub["devices"][1]["error"].as_str().unwrap().starts_with("not open: "), "{scrub}");
    assert!(scrub["devices"][0]["scrub"].is_object(), "{scrub}");
    let shardctl = std::path::Path::new(env!("CARGO_BIN_EXE_shard-agent")).with_file_name("shardctl");
    assert!(shardctl.exists(), "{} is missing: build the workspace first", shardctl.display());
    let o =
        std::process::Command::new(&shardctl).args(["scrub", "--agent", &format!("http://{addr}")]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.starts_with("device 1 (") && l.contains("): not open: ")), "{out}");
    assert!(out.contains("device 0 (") && out.contains("scrub running"), "{out}");
    // A key that never existed cannot be proven absent either; deleting
    // it leaves a tombstone on a device that opened, so whatever the
    // missing device holds of it never comes back.
    for method in ["GET", "HEAD"] {
        let r = request(addr, method, "/v1/shards/never-written", &[], b"");
        assert_eq!(r.status, 503, "{method}");
    }
    assert_eq!(request(addr, "DELETE", "/v1/shards/never-written", &[], b"").status, 204);
    // Writes go on, to the devices that opened, and read back.
    assert_eq!(put(addr, "new", b"fresh").status, 201);
    assert_eq!(get(addr, "new").body, b"fresh");
}

/// Three configured device files; `start` serves those present (a
/// missing one fails to open, as a pulled disk does).
fn configured(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    (0..3)
        .map(|d| {
            let path = dir.join(format!("disk{d}.img"));
            std::fs::File::create(&path).unwrap().set_len(DEVICE_BYTES).unwrap();
            let mut dev = shardstore::device::open(&path, &shardstore::device::OpenOptions::default()).unwrap();
            shardstore::format::format(&mut dev, &shardstore::format::FormatOptions::default()).unwrap();
            path
        })
        .collect()
}

fn start(dir: &std::path::Path, devices: &[std::path::PathBuf]) -> (common::Agent, std::net::SocketAddr) {
    let data = dir.join("data");
    let mut args = vec!["--data-dir".to_owned(), data.display().to_string()];
    for d in devices {
        args.extend(["--device".to_owned(), d.display().to_string()]);
    }
    common::Agent::serving(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_device_that_missed_an_overwrite_and_a_delete_returns_without_bringing_them_back() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let devices = configured(dir.path());
    let (mut agent, addr) = start(dir.path(), &devices);
    for i in 0..60 {
        assert_eq!(put(addr, &format!("v{i}"), format!("old {i}").as_bytes()).status, 201);
    }
    let before = counted(addr, 60);
    let held = before["devices"][1]["shards"].as_u64().unwrap();
    assert!(held > 0);
    assert!(agent.signal(Signal::SIGTERM).success());

    // Device 1 is pulled: its keys answer 503; they are overwritten (odd)
    // or deleted (even) meanwhile, on the devices that remain.
    let away = dir.path().join("disk1.away");
    std::fs::rename(&devices[1], &away).unwrap();
    let (mut agent, addr) = start(dir.path(), &devices);
    let mut missed = Vec::new();
    for i in 0..60 {
        let key = format!("v{i}");
        if get(addr, &key).status == 503 {
            missed.push(i);
            if i % 2 == 1 {
                assert_eq!(put(addr, &key, format!("newer {i}").as_bytes()).status, 201);
            } else {
                assert_eq!(request(addr, "DELETE", &format!("/v1/shards/{key}"), &[], b"").status, 204);
            }
        }
    }
    assert_eq!(missed.len() as u64, held, "exactly the pulled device's keys were unavailable");
    assert!(agent.signal(Signal::SIGTERM).success());

    // It comes back with its old copies: the newer writes and the deletes
    // win, in a listing (each key's newest copy, its size; none for a key
    // deleted) as in reads.
    std::fs::rename(&away, &devices[1]).unwrap();
    let (mut agent, addr) = start(dir.path(), &devices);
    let listing = request(addr, "GET", "/v1/shards?prefix=v", &[], b"").json();
    let listed: std::collections::BTreeMap<String, u64> = listing["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap().to_owned(), s["size"].as_u64().unwrap()))
        .collect();
    let want: std::collections::BTreeMap<String, u64> = (0..60)
        .filter(|i| !missed.contains(i) || i % 2 == 1)
        .map(|i| {
            let value = if missed.contains(&i) { format!("newer {i}") } else { format!("old {i}") };
            (format!("v{i}"), value.len() as u64)
        })
        .collect();
    assert_eq!(listed, want, "the listing after the device returned: {listing}");
    // The listing found the old copies of the overwritten keys, and has
    // them removed (no read of those keys is made before this is checked).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while request(addr, "GET", "/v1/status", &[], b"").json()["devices"][1]["shards"].as_u64().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "old copies left on device 1 after the listing saw them");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for i in 0..60 {
        let key = format!("v{i}");
        let r = get(addr, &key);
        if !missed.contains(&i) {
            assert_eq!(r.body, format!("old {i}").as_bytes(), "{key} was never touched");
        } else if i % 2 == 1 {
            assert_eq!((r.status, r.body.clone()), (200, format!("newer {i}").into_bytes()), "{key}: the overwrite");
        } else {
            assert_eq!(r.status, 404, "{key}: deleted while its device was away, and came back");
        }
    }
    // The old copies are gone from the returned device, and so are the
    // tombstones (every device is back: nothing older can return).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = request(addr, "GET", "/v1/status", &[], b"").json();
        if status["devices"][1]["shards"].as_u64().unwrap() == 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            assert!(agent.signal(Signal::SIGTERM).success());
            let store = shardstore::store::Store::open_read_only(Box::new(
                shardstore::device::open(&devices[1], &shardstore::device::OpenOptions::default()).unwrap(),
            ))
            .unwrap();
            panic!("old copies still on device 1: {:?}", store.list(b"", None, 100));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(agent.signal(Signal::SIGTERM).success());
    for path in &devices {
        let store = shardstore::store::Store::open_read_only(Box::new(
            shardstore::device::open(path, &shardstore::device::OpenOptions::default()).unwrap(),
        ))
        .unwrap();
        assert!(store.tombstones().is_empty(), "{}: tombstones left after every device came back", path.display());
    }
}

/// Listings made while the returned device's old copies are being removed
/// (at start, beside the serving) never show a deleted key: a listing that
/// saw a key's old copy on one device must also see the tombstone that
/// hides it on another, even if the reconciliation removes both meanwhile.
#[test]
fn listings_during_the_reconciliation_of_a_returned_device_never_show_a_deleted_key() {
    const KEYS: usize = 1200;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let devices = configured(dir.path());
    let (mut agent, addr) = start(dir.path(), &devices);
    for i in 0..KEYS {
        assert_eq!(put(addr, &format!("w{i:04}"), b"old").status, 201);
    }
    assert!(agent.signal(Signal::SIGTERM).success());

    // Every key of device 1 is deleted while it is away: a tombstone on
    // another device each.
    let away = dir.path().join("disk1.away");
    std::fs::rename(&devices[1], &away).unwrap();
    let (mut agent, addr) = start(dir.path(), &devices);
    let mut deleted = std::collections::BTreeSet::new();
    for i in 0..KEYS {
        let key = format!("w{i:04}");
        if get(addr, &key).status == 503 {
            assert_eq!(request(addr, "DELETE", &format!("/v1/shards/{key}"), &[], b"").status, 204);
            deleted.insert(key);
        }
    }
    assert!(deleted.len() > KEYS / 6, "device 1 held {} of {KEYS} keys", deleted.len());
    assert!(agent.signal(Signal::SIGTERM).success());

    // It returns; the agent reconciles the tombstones while it serves.
    std::fs::rename(&away, &devices[1]).unwrap();
    let (mut agent, addr) = start(dir.path(), &devices);
    let want: Vec<String> = (0..KEYS).map(|i| format!("w{i:04}")).filter(|k| !deleted.contains(k)).collect();
    let old_copies = || request(addr, "GET", "/v1/status", &[], b"").json()["devices"][1]["shards"].as_u64().unwrap();
    // Two clients list over and over until the old copies are gone (at
    // most 1000 listings each, or 60 s).
    let reconciled = std::sync::atomic::AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let during: usize = std::thread::scope(|s| {
        let listers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut during = 0;
                    while during < 1000 && std::time::Instant::now() < deadline {
                        if reconciled.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let r = request(addr, "GET", &format!("/v1/shards?prefix=w&limit={}", KEYS + 1), &[], b"");
                        assert_eq!(r.status, 200);
                        let listed: Vec<String> = r.json()["shards"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s["key"].as_str().unwrap().to_owned())
                            .collect();
                        let shown: Vec<&String> = listed.iter().filter(|k| deleted.contains(*k)).collect();
                        assert!(shown.is_empty(), "listing {during} shows deleted keys {shown:?}");
                        assert_eq!(listed, want, "listing {during}");
                        during += 1;
                    }
                    during
                })
            })
            .collect();
        while std::time::Instant::now() < deadline && old_copies() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        reconciled.store(true, std::sync::atomic::Ordering::SeqCst);
        listers.into_iter().map(|l| l.join().unwrap()).sum()
    });
    assert_eq!(old_copies(), 0, "old copies left on device 1");
    assert!(during > 0, "no listing ran while the old copies were being removed: the test proves nothing");
    assert!(agent.signal(Signal::SIGTERM).success());
}
