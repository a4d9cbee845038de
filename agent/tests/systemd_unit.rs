//! The unit file as systemd reads it: `systemd-analyze verify` accepts it
//! (with `ExecStart` pointed at the binary just built, which verify checks
//! exists). Skipped, saying so, where systemd-analyze is not installed.

use std::process::Command;

#[test]
fn systemd_analyze_accepts_the_unit() {
    let unit = include_str!("../../systemd/shard-agent.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "the unit uses the notify protocol");
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed here");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-agent.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/shard-agent", env!("CARGO_BIN_EXE_shard-agent"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify objects:\n{said}");
}
