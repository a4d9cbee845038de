//! Drive health through a running agent: a device file that starts failing
//! reads (it is cut short under the agent, so the kernel answers reads past
//! its new end with nothing) turns suspect and is fenced automatically; new
//! shards go elsewhere, the transition shows in the status and the metrics,
//! and an operator can lift the fence.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{get, put, request, Agent};

const TOKEN: &str = "health-token";

fn start(dir: &Path) -> (Agent, SocketAddr) {
    common::start_configured(dir, 512 << 20, TOKEN, "[health]\ninterval_ms = 100\nwindow_intervals = 50\n")
}

fn status(addr: SocketAddr) -> serde_json::Value {
    request(addr, "GET", "/v1/status", &[], b"").json()
}

#[test]
fn a_device_failing_reads_is_fenced_automatically_and_unfenced_by_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start(dir.path());
    for i in 0..40 {
        assert_eq!(put(addr, &format!("h-{i}"), &vec![i as u8; 20_000]).status, 201);
    }
    let before = status(addr);
    let shards = |s: &serde_json::Value, d: usize| s["devices"][d]["shards"].as_u64().unwrap();
    let bad = (0..3).max_by_key(|&d| shards(&before, d)).unwrap();
    assert!(shards(&before, bad) >= 5);
    for d in 0..3 {
        assert_eq!(before["devices"][d]["health"]["state"], "healthy");
    }

    // Cut the device file short under the agent: its data region is gone.
    let path = dir.path().join("data").join(format!("dev{bad}.img"));
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4 << 20).unwrap();
    let mut failed_reads = 0;
    for i in 0..40 {
        let r = get(addr, &format!("h-{i}"));
        if r.status != 200 {
            failed_reads += 1;
        }
    }
    assert_eq!(failed_reads, shards(&before, bad), "every read from the cut device fails, no other");

    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let h = status(addr)["devices"][bad]["health"].clone();
        if h["state"] == "fenced" {
            break h;
        }
        assert!(Instant::now() < deadline, "not fenced in time: {h}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health["reason"].as_str().unwrap().contains("I/O errors"), "{health}");
    assert_eq!(status(addr)["devices"][bad]["state"], "fenced");
    let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    for line in [
        format!("shardnode_device_health{{device=\"{bad}\",state=\"fenced\"}} 1"),
        format!("shardnode_device_health_transitions_total{{device=\"{bad}\",to=\"suspect\"}} 1"),
        format!("shardnode_device_health_transitions_total{{device=\"{bad}\",to=\"fenced\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "no {line:?}");
    }

    // New shards go to the healthy devices only.
    let on_bad = shards(&status(addr), bad);
    for i in 0..20 {
        assert_eq!(put(addr, &format!("new-{i}"), b"fresh").status, 201);
    }
    assert_eq!(shards(&status(addr), bad), on_bad, "nothing new on a fenced device");
    for d in (0..3).filter(|&d| d != bad) {
        assert_eq!(status(addr)["devices"][d]["health"]["state"], "healthy");
    }

    // The operator lifts the fence: the evidence starts over.
    let auth = format!("Bearer {TOKEN}");
    let r = request(addr, "POST", &format!("/v1/devices/{bad}/unfence"), &[("authorization", auth.as_str())], b"");
    assert_eq!(r.status, 200);
    let h = status(addr)["devices"][bad].clone();
    assert_eq!((h["state"].as_str(), h["health"]["state"].as_str()), (Some("open"), Some("healthy")), "{h}");
}

/// With every device fenced by an operator, a PUT used to answer `507
/// NoSpace` on empty disks. It answers `503 NoWritableDevice` naming each
/// device and why; reads go on; unfencing one device restores writes.
#[test]
fn a_put_with_no_writable_device_says_why_and_not_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start(dir.path());
    assert_eq!(put(addr, "before", b"kept").status, 201);
    let auth = format!("Bearer {TOKEN}");
    for d in 0..3 {
        let r = request(addr, "POST", &format!("/v1/devices/{d}/fence"), &[("authorization", auth.as_str())], b"");
        assert_eq!(r.status, 200);
    }
    let r = put(addr, "refused", b"new");
    assert_eq!((r.status, r.code()), (503, "NoWritableDevice".to_owned()), "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["message"].as_str().unwrap().to_owned();
    for d in 0..3 {
        assert!(message.contains(&format!("device {d} fenced (fenced by an operator)")), "{message}");
    }
    assert_eq!(r.header("retry-after"), Some("30"));
    assert_eq!(get(addr, "before").body, b"kept");
    assert_eq!(get(addr, "refused").status, 404);
    let r = request(addr, "POST", "/v1/devices/2/unfence", &[("authorization", auth.as_str())], b"");
    assert_eq!(r.status, 200);
    assert_eq!(put(addr, "refused", b"new").status, 201);
}
