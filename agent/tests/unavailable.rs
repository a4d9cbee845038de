//! Unavailable is not absent: after a restart in which one device does not
//! open (its superblock copies rotted to junk), the keys it holds, and keys
//! that exist nowhere, answer `503 Unavailable` naming the device, never
//! `404`: a front end reading 404 would take the shard for gone. Keys on
//! the other devices are served; new shards go to the devices that open.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::{get, put, request, start_configured};
use nix::sys::signal::Signal;

const DEVICE_BYTES: u64 = 256 << 20;

#[test]
fn keys_of_a_device_that_did_not_open_answer_unavailable_not_not_found() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start_configured(dir.path(), DEVICE_BYTES, "t", "");
    for i in 0..60 {
        assert_eq!(put(addr, &format!("k{i}"), format!("value {i}").as_bytes()).status, 201);
    }
    let status = request(addr, "GET", "/v1/status", &[], b"").json();
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
    // A key that never existed cannot be proven absent either.
    for method in ["GET", "HEAD", "DELETE"] {
        let r = request(addr, method, "/v1/shards/never-written", &[], b"");
        assert_eq!(r.status, 503, "{method}");
    }
    // Writes go on, to the devices that opened, and read back.
    assert_eq!(put(addr, "new", b"fresh").status, 201);
    assert_eq!(get(addr, "new").body, b"fresh");
}
