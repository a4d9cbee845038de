//! A device whose I/O stops completing, through a running agent: one of
//! its two devices is a file on an ext4 file system (on a loop device) that
//! the test freezes, so the writes of a PUT placed there wait as they would
//! on a hung drive. The agent logs the stall, its metric and status show
//! how long the oldest I/O has waited, the device turns suspect (and its
//! store thread is not asked for what it cannot answer), and once the file
//! system is thawed every PUT is acknowledged and reads back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{get, request, Agent};

#[path = "../../shardstore/tests/common/frozen_fs.rs"]
mod frozen_fs;
use frozen_fs::Mounted;

fn device0(addr: SocketAddr) -> serde_json::Value {
    request(addr, "GET", "/v1/status", &[], b"").json()["devices"][0].clone()
}

#[test]
fn a_hung_device_is_reported_stalled_and_suspect_until_its_io_completes() {
    if !frozen_fs::prerequisites("a_hung_device_is_reported_stalled_and_suspect_until_its_io_completes") {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fs = Mounted::new(dir.path());
    let (hung, fine) = (fs.mnt.join("dev0.img"), dir.path().join("dev1.img"));
    frozen_fs::formatted_file(&hung, 128 << 20);
    frozen_fs::formatted_file(&fine, 128 << 20);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndevices = [\"{}\", \"{}\"]\n[health]\ninterval_ms = 100\nio_stall_ms = 2000\n",
            dir.path().join("data").display(),
            hung.display(),
            fine.display()
        ),
    )
    .unwrap();
    let (mut agent, addr) = Agent::serving(&["--config", config.to_str().unwrap()]);
    assert_eq!(device0(addr)["io_stalled_seconds"], serde_json::Value::Null);
    assert_eq!(device0(addr)["io_stalls"], 0);

    // Freeze device 0's file system; PUTs of new keys go to both devices.
    fs.freeze(true);
    let frozen_at = Instant::now();
    let puts: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let r = request(addr, "PUT", &format!("/v1/shards/stall-{i}"), &[], &vec![i as u8; 5000]);
                (r.status, frozen_at.elapsed())
            })
        })
        .collect();
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

    let thawed_at = frozen_at.elapsed();
    fs.freeze(false);
    let answered: Vec<(u16, Duration)> = puts.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(answered.iter().all(|(status, _)| *status == 201), "{answered:?}");
    assert!(answered.iter().any(|(_, t)| *t >= thawed_at), "no PUT waited for the thaw: {answered:?}");
    for i in 0..8 {
        assert_eq!(get(addr, &format!("stall-{i}")).body, vec![i as u8; 5000]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while device0(addr)["io_stalled_seconds"] != serde_json::Value::Null {
        assert!(Instant::now() < deadline, "the stall did not clear: {}", device0(addr));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    drop(fs);
}
