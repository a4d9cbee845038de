//! `shardctl cluster keygen | sign | verify` as an operator runs them.

use std::process::{Command, Output};

#[path = "../../agent/tests/common/testnet.rs"]
mod testnet;

/// The agent `cluster local` runs as host `host` (its address 127.R.NET.host).
fn url(net: u8, host: u8, port: u16) -> String {
    format!("http://127.{}.{net}.{host}:{port}", testnet::run_octet())
}

fn shardctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl")).args(args).output().expect("run shardctl")
}

/// `shardctl cluster local` running: stopped (SIGINT, then waited for)
/// also when a test fails, so no agent outlives the test.
struct Local(Option<std::process::Child>);

impl Local {
    fn stop(mut self) -> Output {
        let child = self.0.take().expect("running");
        interrupt(&child);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            interrupt(&child);
            let _ = child.wait();
        }
    }
}

fn interrupt(child: &std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
}

/// The warnings, errors and object shards not sent, from the logs of a
/// `cluster local`'s agents.
fn agent_warnings(dir: &std::path::Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for host in 1..=8 {
        let Ok(log) = std::fs::read_to_string(dir.join(format!("host-{host}/agent.log"))) else { continue };
        for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("not sent")) {
            let _ = writeln!(out, "host {host}: {line}");
        }
    }
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const ROSTER: &str = r#"cluster = "cli-test"
epoch = 1

[[host]]
id = 1
gossip = "127.0.0.2:7946"
http = "127.0.0.2:8080"
domain = "a"

[[host]]
id = 2
gossip = "127.0.0.3:7946"
http = "127.0.0.3:8080"
domain = "b"
"#;

#[test]
fn keygen_sign_and_verify_a_roster() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    let o = shardctl(&["cluster", "keygen", k]);
    assert!(o.status.success(), "{}", text(&o));
    for (name, mode) in [("operator.key", 0o600), ("operator.pub", 0o644), ("gossip.keys", 0o600)] {
        let meta = std::fs::metadata(keys.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    // Never overwrites keys.
    let o = shardctl(&["cluster", "keygen", k]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("never overwrites"), "{}", text(&o));

    let roster = dir.path().join("roster.toml");
    std::fs::write(&roster, ROSTER).unwrap();
    let key = keys.join("operator.key");
    let o = shardctl(&["cluster", "sign", roster.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 hosts in 2 failure domains"), "{}", text(&o));
    let signed = dir.path().join("roster.toml.signed");
    let public = keys.join("operator.pub");
    let verify = |path: &std::path::Path| {
        shardctl(&["cluster", "verify", path.to_str().unwrap(), "--pub", public.to_str().unwrap()])
    };
    let o = verify(&signed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("valid signature"), "{}", text(&o));
    let o = shardctl(&["cluster", "verify", signed.to_str().unwrap(), "--pub", public.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(
        (v["valid_signature"].as_bool(), v["hosts"].as_u64(), v["epoch"].as_u64()),
        (Some(true), Some(2), Some(1))
    );
    let again = dir.path().join("again.signed");
    let o = shardctl(&[
        "cluster",
        "sign",
        roster.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!((v["signed"].as_bool(), v["failure_domains"].as_u64()), (Some(true), Some(2)), "{v}");

    // An edited signed roster no longer verifies.
    let tampered = dir.path().join("tampered");
    std::fs::write(&tampered, std::fs::read_to_string(&signed).unwrap().replace("epoch = 1", "epoch = 9")).unwrap();
    let o = verify(&tampered);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not verify"), "{}", text(&o));

    // A roster with a mistake is refused before signing, naming it.
    std::fs::write(&roster, ROSTER.replace("id = 2", "id = 1")).unwrap();
    let o =
        shardctl(&["cluster", "sign", roster.to_str().unwrap(), "--key", key.to_str().unwrap(), "--out", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("host id 1 appears twice"), "{}", text(&o));
}

/// `cluster local` for real: three agents (the `shard-agent` built next to
/// this shardctl, as `cargo test --workspace` builds it) on 127.R.30.x,
/// seen alive by `cluster status`, all stopped by one SIGINT.
#[test]
fn cluster_local_starts_a_cluster_status_shows_it_and_sigint_stops_it() {
    use std::time::{Duration, Instant};
    let agent = std::path::Path::new(env!("CARGO_BIN_EXE_shardctl")).with_file_name("shard-agent");
    assert!(
        agent.exists(),
        "{} is missing: build the workspace first (cargo test --workspace builds it)",
        agent.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("local");
    // Dry run: the files, and the commands it would run.
    let o = shardctl(&["cluster", "local", "--hosts", "3", "--dir", d.to_str().unwrap(), "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("host 3:") && d.join("host-3/agent.toml").exists() && d.join("roster.signed").exists());
    let child = Local(Some(
        Command::new(env!("CARGO_BIN_EXE_shardctl"))
            .args(["cluster", "local", "--hosts", "3", "--dir", d.to_str().unwrap(), "--http-port", "7481"])
            .args(["--gossip-port", "7947", "--device-size", "256MiB", "--agent-bin", agent.to_str().unwrap()])
            // 127.R.30.x: not the 127.0.0.x the README uses, nor another
            // test run's (`testnet`).
            .args(["--first-ip", &format!("127.{}.30.2", testnet::run_octet())])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    let all_alive = loop {
        assert!(Instant::now() < deadline, "no converged status within 30 s; last:\n{last}");
        std::thread::sleep(Duration::from_millis(300));
        let o = shardctl(&["cluster", "status", "--agent", &url(30, 2, 7481)]);
        last = text(&o);
        if o.status.success() {
            break last.clone();
        }
    };
    assert_eq!(all_alive.lines().filter(|l| l.contains(" alive ")).count(), 3, "{all_alive}");
    let json = shardctl(&["cluster", "status", "--agent", &url(30, 3, 7481), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    let out = child.stop();
    assert!(out.status.success(), "{}", text(&out));
    let agents = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(d.to_str().unwrap()))
        .count();
    assert_eq!(agents, 0, "an agent outlived cluster local");
}

/// `shardctl object put|stat|get|rm` through a six-agent `cluster local`
/// (4+2): a file round-trips byte for byte through two different agents.
#[test]
fn objects_round_trip_through_shardctl() {
    use std::time::{Duration, Instant};
    let agent = std::path::Path::new(env!("CARGO_BIN_EXE_shardctl")).with_file_name("shard-agent");
    assert!(agent.exists(), "{} is missing: build the workspace first", agent.display());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("local");
    let child = Local(Some(
        Command::new(env!("CARGO_BIN_EXE_shardctl"))
            .args(["cluster", "local", "--hosts", "6", "--dir", d.to_str().unwrap(), "--http-port", "7482"])
            .args(["--gossip-port", "7948", "--device-size", "256MiB", "--agent-bin", agent.to_str().unwrap()])
            .args(["--first-ip", &format!("127.{}.31.2", testnet::run_octet())])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // Every agent the test talks to coordinates with its own view of the
    // cluster: each must see all six alive (one agent's view converging
    // said nothing of another's, whose PUT then found two holders not yet
    // alive: 503 InsufficientHolders, about one run in ten).
    let deadline = Instant::now() + Duration::from_secs(30);
    for host in 2..=7 {
        let agent = url(31, host, 7482);
        while !shardctl(&["cluster", "status", "--agent", &agent]).status.success() {
            assert!(Instant::now() < deadline, "the cluster did not converge in {agent}'s view");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let file = dir.path().join("in.bin");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    // The object API needs the client token cluster local made.
    let client = d.join("keys/client.token");
    let o = shardctl(&["object", "put", "--agent", &url(31, 3, 7482), "dir/file.bin", file.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("Unauthorized"), "{}", text(&o));
    let shardctl = |args: &[&str]| {
        let mut all = args.to_vec();
        if args[0] == "object" {
            all.extend(["--token-file", client.to_str().unwrap()]);
        }
        shardctl(&all)
    };
    let o = shardctl(&["object", "put", "--agent", &url(31, 3, 7482), "dir/file.bin", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}\nthe agents' warnings:\n{}", text(&o), agent_warnings(&d));
    assert!(text(&o).contains("coded"), "{}", text(&o));
    let o = shardctl(&["object", "put", "--agent", &url(31, 3, 7482), "dir/j", file.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["key"], "dir/j");
    assert!(v["version"].is_string() && v["layout"].is_string() && v["crc32c"].is_string(), "{v}");
    // shardbench's objects target against the same cluster.
    let o = Command::new(env!("CARGO_BIN_EXE_shardbench"))
        .args(["--name=objs", "--target=objects", &format!("--url={}", url(31, 4, 7482)), "--rw=randread", "--bs=512k"])
        .args(["--size=4m", "--runtime=1", "--time_based", "--output-format=json"])
        .env("SHARDNODE_TOKEN_FILE", &client)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["jobs"][0]["read"]["io_bytes"].as_u64().unwrap() >= 512 << 10, "{report}");
    // The repair queue, and its throttle set with the admin token.
    let admin = d.join("keys/admin.token");
    let o = shardctl(&["repairs", "--agent", &url(31, 3, 7482), "--rate", "32MiB"]);
    assert!(!o.status.success() && text(&o).contains("--token-file"), "{}", text(&o));
    let o = shardctl(&[
        "repairs",
        "--agent",
        &url(31, 3, 7482),
        "--rate",
        "32MiB",
        "--token-file",
        admin.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 queued, throttle 32MiB/s"), "{}", text(&o));
    let o = shardctl(&["repairs", "--agent", &url(31, 3, 7482), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["objects"]["rate_bytes_per_second"], 32 << 20);
    let o = shardctl(&["object", "stat", "--agent", &url(31, 4, 7482), "dir/file.bin", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size"], 3_000_000);
    let out = dir.path().join("out.bin");
    let o = shardctl(&["object", "get", "--agent", &url(31, 5, 7482), "dir/file.bin", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&out).unwrap() == body, "the bytes differ");
    let o = shardctl(&["object", "rm", "--agent", &url(31, 6, 7482), "dir/file.bin"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = shardctl(&["object", "stat", "--agent", &url(31, 2, 7482), "dir/file.bin"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no such object"), "{}", text(&o));
    let out = child.stop();
    assert!(out.status.success(), "{}", text(&out));
}
