//! Scrubbing through a running agent: an operator starts a pass, the
//! scrubber finds a flipped bit in a shard's bytes on the real device
//! file, the shard goes on the repair list and answers `Corrupt`, and the
//! figures show in the scrub status, `/v1/status` and the metrics.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{flip_bit, get, locate, put, request, Agent};

const TOKEN: &str = "scrub-token";

fn start(dir: &Path) -> (Agent, SocketAddr) {
    common::start_configured(dir, 512 << 20, TOKEN, "")
}

/// Runs `shardctl` (built beside the agent) and returns its exit code,
/// stdout and stderr.
fn shardctl(args: &[&str]) -> (i32, String, String) {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let bin = target.join("shardctl");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "shardnode-tools", "--bin", "shardctl"])
            .status()
            .unwrap();
        assert!(built.success(), "cannot build shardctl");
    }
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin(addr: SocketAddr, path: &str) -> common::Reply {
    let auth = format!("Bearer {TOKEN}");
    request(addr, "POST", path, &[("authorization", auth.as_str())], b"")
}

#[test]
fn an_operator_started_pass_finds_a_flipped_bit_and_lists_the_shard_for_repair() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start(dir.path());
    let victim: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(put(addr, "victim", &victim).status, 201);
    for i in 0..20 {
        assert_eq!(put(addr, &format!("other-{i}"), &vec![i as u8; 10_000 + i * 100]).status, 201);
    }
    let (dev, path, payload) = locate(dir.path(), b"victim");
    // Flip one bit of the shard's bytes on the device file.
    flip_bit(&path, payload + 1000, 0x10);

    let all = request(addr, "GET", "/v1/scrub", &[], b"").json();
    assert_eq!(all["devices"].as_array().unwrap().len(), 3);
    assert_eq!(all["devices"][dev]["scrub"]["state"], "running");
    assert_eq!(all["devices"][dev]["scrub"]["deadline_seconds"], 14 * 24 * 3600);

    let start_path = format!("/v1/devices/{dev}/scrub/start");
    assert_eq!(request(addr, "POST", &start_path, &[], b"").status, 401, "scrub control needs the token");
    assert_eq!(admin(addr, &format!("/v1/devices/{dev}/scrub/sideways")).status, 404);
    let started = admin(addr, &start_path);
    assert_eq!(started.status, 200, "{:?}", String::from_utf8_lossy(&started.body));
    assert_eq!(started.json()["scrub"]["state"], "running unthrottled");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = request(addr, "GET", &format!("/v1/devices/{dev}/scrub"), &[], b"").json();
        if s["scrub"]["passes"].as_u64().unwrap() >= 1 && s["scrub"]["damaged_shards"].as_u64().unwrap() >= 1 {
            break s;
        }
        assert!(Instant::now() < deadline, "no complete pass in time: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let scrub = &status["scrub"];
    assert_eq!(scrub["findings"]["chunk_checksum"], 1, "{scrub}");
    assert_eq!(scrub["state"], "running", "start lasts one pass: {scrub}");
    assert!(scrub["oldest_unverified_age_seconds"].as_f64().unwrap() < 60.0, "{scrub}");
    // At least the metadata (superblock copies, checkpoint and log) was
    // read back; the damaged shard's bytes do not count as verified.
    assert!(scrub["verified_bytes"].as_u64().unwrap() >= 4 * 4096, "{scrub}");
    assert_eq!(scrub["recent_findings"][0]["key"], "victim");
    assert_eq!(scrub["recent_findings"][0]["offset"].as_u64().unwrap(), payload);

    let repairs = request(addr, "GET", "/v1/repairs", &[], b"").json();
    assert_eq!(repairs["shards"].as_array().unwrap().len(), 1, "{repairs}");
    assert_eq!(repairs["shards"][0]["key"], "victim");
    assert_eq!(repairs["shards"][0]["device"], dev);
    assert_eq!(repairs["shards"][0]["kind"], "chunk_checksum");
    let read = get(addr, "victim");
    assert_eq!((read.status, read.code()), (500, "Corrupt".to_owned()));
    for i in 0..20 {
        assert_eq!(get(addr, &format!("other-{i}")).status, 200);
    }

    let status = request(addr, "GET", "/v1/status", &[], b"").json();
    assert_eq!(status["devices"][dev]["scrub"]["damaged_shards"], 1);
    let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    let line = format!("shardnode_scrub_findings_total{{device=\"{dev}\",kind=\"chunk_checksum\"}} 1");
    assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    assert!(metrics.contains(&format!("shardnode_scrub_oldest_unverified_seconds{{device=\"{dev}\"}}")));
    assert!(metrics.contains(&format!("shardnode_damaged_shards{{device=\"{dev}\"}} 1")));

    assert_eq!(admin(addr, &format!("/v1/devices/{dev}/scrub/pause")).json()["scrub"]["state"], "paused");
    assert_eq!(admin(addr, &format!("/v1/devices/{dev}/scrub/resume")).json()["scrub"]["state"], "running");

    // The same through shardctl.
    let url = format!("http://{addr}");
    let (code, out, _) = shardctl(&["status", "--agent", &url]);
    assert_eq!(code, 1, "a damaged shard makes status fail:\n{out}");
    assert!(out.contains("damaged shards 1") && out.contains("oldest unverified byte"), "{out}");
    let format_version = shardstore::superblock::FORMAT_VERSION;
    assert!(out.contains(&format!("format version          {format_version}\n")), "{out}");
    assert!(out.contains("  read cache              ") && out.contains("% of GETs hit"), "{out}");
    assert!(out.contains(&format!("chunk_checksum shard \"victim\" at offset {payload}")), "{out}");
    let dev_id = dev.to_string();
    let (code, _, err) = shardctl(&["scrub", "--agent", &url, "--device", &dev_id, "pause"]);
    assert_eq!(code, 1);
    assert!(err.contains("--token-file"), "{err}");
    let token_file = dir.path().join("admin.token");
    let token_arg = token_file.to_str().unwrap();
    let (code, out, err) =
        shardctl(&["scrub", "--agent", &url, "--device", &dev_id, "--token-file", token_arg, "pause"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("scrub paused"), "{out}");
    let (code, out, _) = shardctl(&["scrub", "--agent", &url, "--json"]);
    assert_eq!(code, 1, "status with a damaged shard");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["devices"].as_array().unwrap().len(), 3);
    assert_eq!(json["devices"][dev]["scrub"]["state"], "paused");
    let (code, _, _) = shardctl(&["scrub", "--agent", &url, "--device", &dev_id, "--token-file", token_arg, "resume"]);
    assert_eq!(code, 0);

    // A new put of the key replaces the damaged shard: off the list.
    assert_eq!(put(addr, "victim", b"fresh").status, 201);
    assert_eq!(request(addr, "GET", "/v1/repairs", &[], b"").json()["shards"].as_array().unwrap().len(), 0);
    assert_eq!(get(addr, "victim").body, b"fresh");
}
