//! The unit file as systemd reads it: `systemd-analyze verify` accepts it
//! (with `ExecStart` pointed at the binary just built, which verify checks
//! exists). Skipped, saying so, where systemd-analyze is not installed.

use std::process::Command;

/// The unit written to a temporary directory for systemd-analyze; `None`
/// (a skip, or a failure under CI) where systemd-analyze is missing.
fn staged(unit: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        skip("systemd-analyze is not installed here");
        return None;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-agent.service");
    std::fs::write(&path, unit).unwrap();
    Some((dir, path))
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    let unit = include_str!("../../systemd/shard-agent.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "the unit uses the notify protocol");
    let unit = unit.replace("/usr/local/bin/shard-agent", env!("CARGO_BIN_EXE_shard-agent"));
    let Some((_dir, path)) = staged(&unit) else { return };
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify objects:\n{said}");
}

/// The sandbox is tight: `systemd-analyze security` rates the shipped unit
/// at or under 2.0 ("OK"; well-sandboxed daemons reach 1.5 to 2), with
/// what the agent needs still allowed: io_uring's system calls (@aio, in
/// @system-service), block devices (DeviceAllow= lines, not
/// PrivateDevices=), locked memory, UDP and TCP sockets.
#[test]
fn the_unit_s_exposure_is_at_most_2() {
    let unit = include_str!("../../systemd/shard-agent.service");
    for needed in [
        "SystemCallFilter=@system-service",
        "LimitMEMLOCK=infinity",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "DevicePolicy=closed",
    ] {
        assert!(unit.contains(needed), "the unit lost {needed}");
    }
    assert!(!unit.contains("PrivateDevices=yes") && !unit.contains("PrivateNetwork=yes"), "the agent needs both");
    let Some((_dir, path)) = staged(unit) else { return };
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let line = said.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{said}"));
    let score: f64 = line.split(": ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{said}");
}

/// Every system call of a `systemd-analyze syscall-filter` group, nested
/// groups expanded.
fn syscall_group(group: &str, out: &mut std::collections::BTreeSet<String>) {
    let listed = Command::new("systemd-analyze").args(["syscall-filter", group]).output().unwrap();
    for line in String::from_utf8_lossy(&listed.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            syscall_group(name, out);
        } else {
            out.insert(name.to_owned());
        }
    }
}

/// The unit's system call filter lets the agent work: the agent runs
/// under strace (devices opened and recovered, a put, a get, a listing,
/// /metrics, a clean stop), and every system call it made is one the
/// filter allows. (Starting it under systemd itself needs systemd as the
/// init system, which the test machines lack.)
#[test]
fn every_system_call_the_agent_makes_passes_the_unit_s_filter() {
    let unit = include_str!("../../systemd/shard-agent.service");
    assert!(unit.contains("SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-tool");
    let have = |cmd: &str, pkg: &str| Command::new(script).args([cmd, pkg]).status().is_ok_and(|s| s.success());
    if !have("strace", "strace") || !have("systemd-analyze", "systemd") {
        skip("strace or systemd-analyze missing and not installable here");
        return;
    }
    let mut allowed = std::collections::BTreeSet::new();
    syscall_group("@system-service", &mut allowed);
    let mut denied = std::collections::BTreeSet::new();
    syscall_group("@privileged", &mut denied);
    syscall_group("@resources", &mut denied);
    assert!(allowed.contains("io_uring_enter") && allowed.contains("openat"), "the group listing was read");

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let trace = dir.path().join("trace");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\ndefault_device_size_bytes = {}\n", dir.path().join("data").display(), 64 << 20),
    )
    .unwrap();
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_shard-agent"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log is read to its end (a closed pipe would fail the agent's writes).
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(60)) {
        if line.contains("shard-agent ready") {
            let at = line.find("listen=").expect("the ready line names the address") + "listen=".len();
            addr = line[at..].split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let addr: std::net::SocketAddr = addr.expect("the agent said where it listens").parse().unwrap();
    let call = |req: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    assert!(call("PUT /v1/shards/t%2F1 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
        .starts_with("HTTP/1.1 201"));
    assert!(call("GET /v1/shards/t%2F1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").ends_with("hi"));
    assert!(call("GET /v1/shards?prefix=t HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").contains("200"));
    assert!(call("GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").contains("process_cpu"));
    // strace's child is the agent: a clean stop (checkpoints, the clean
    // shutdown record) is traced too, and strace exits with its status.
    assert!(Command::new("pkill").args(["-TERM", "-P", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "the agent stopped cleanly under strace");
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for line in text.lines() {
        // "<pid> name(args) = result", or "<pid> <... name resumed>".
        let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
        if rest.starts_with('<') || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(name) = rest.split('(').next().filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            used.insert(name.to_owned());
        }
    }
    assert!(
        used.contains("io_uring_setup") && used.contains("io_uring_enter"),
        "the trace saw the data path: {used:?}"
    );
    let refused: Vec<_> = used.iter().filter(|c| !allowed.contains(*c) || denied.contains(*c)).collect();
    assert!(refused.is_empty(), "system calls the unit's filter would refuse: {refused:?}");
}

/// A missing prerequisite: a failure under CI (`CI` set, as `.ci/run`
/// sets it: there every prerequisite must be present), else a skip said
/// on stderr.
fn skip(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "prerequisite missing under CI: {why}");
    eprintln!("SKIPPED: {why}");
}
