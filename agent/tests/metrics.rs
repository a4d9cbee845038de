//! `/metrics` as Prometheus's own tool sees it: every family described
//! (`# HELP`), `shardnode_build_info`, the standard `process_*` metrics,
//! and `promtool check metrics` without a complaint.

mod common;

use common::{get, put, request, start_configured};
use nix::sys::signal::Signal;

/// promtool, installed by the project's script when missing. `None` (the
/// caller skips, saying so) only where it cannot be installed; under CI
/// (`CI=true`) that is a failure.
pub fn promtool() -> Option<std::path::PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-promtool");
    let ok = std::process::Command::new(script).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "promtool is required under CI and could not be installed");
        eprintln!("SKIPPED: promtool is not installed and cannot be (run scripts/ensure-promtool as root)");
        return None;
    }
    Some("promtool".into())
}

#[test]
fn metrics_pass_promtool_and_describe_every_family() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start_configured(dir.path(), 64 << 20, "admin-secret", "");
    assert_eq!(put(addr, "m%2F1", b"hello").status, 201);
    assert_eq!(get(addr, "m%2F1").body, b"hello");
    assert_eq!(get(addr, "m%2Fmissing").code(), "NotFound");
    let text = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(agent.signal(Signal::SIGTERM).success());

    // Every family has HELP and TYPE lines.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count"))
        .collect();
    assert!(families.len() > 20, "{} families:\n{text}", families.len());
    for family in &families {
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP line:\n{text}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} has no TYPE line");
    }
    let build = text.lines().find(|l| l.starts_with("shardnode_build_info{")).expect("shardnode_build_info");
    assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))) && build.ends_with(" 1"), "{build}");
    // The put's body was let go once it was stored.
    assert!(text.lines().any(|l| l == "shardnode_body_memory_bytes 0"), "no idle body memory gauge:\n{text}");
    // Every device's reclamation and split-write counters, at 0 on an idle store.
    for line in [
        "shardnode_device_writes_split_total{device=\"0\"} 0",
        "shardnode_reclaim_chunks_moved_total{device=\"0\",how=\"along\"} 0",
        "shardnode_reclaim_extents_total{device=\"0\",how=\"whole\"} 0",
        "shardnode_reclaim_passes_given_way_total{device=\"0\"} 0",
        "shardnode_checkpoints_total{device=\"0\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    }
    // The size of the next checkpoint and the half that must hold it.
    for line in ["shardnode_checkpoint_bytes{device=\"0\"} ", "shardnode_metadata_half_bytes{device=\"0\"} "] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no `{line}`:\n{text}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "`{line}{value}`");
    }
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"] {
        assert!(families.contains(name), "{name} missing");
    }

    let Some(promtool) = promtool() else { return };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

/// The shipped alert and recording rules load in Prometheus, raise what
/// their unit tests say on the series given there, and name only metrics
/// the agent exports.
#[test]
fn alert_rules_pass_promtool_check_and_their_tests() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    let text = std::fs::read_to_string(format!("{rules}/shardnode.rules.yml")).unwrap();
    let catalog = include_str!("../src/catalog.rs");
    let mut named = 0;
    for (at, _) in text.match_indices("shardnode_") {
        let name: String = text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(catalog.contains(&format!("\"{name}\",")), "the rules use {name}, which the agent does not export");
        named += 1;
    }
    assert!(named > 15, "the rules name the agent's metrics ({named})");
    let Some(promtool) = promtool() else { return };
    for args in [["check", "rules", "shardnode.rules.yml"], ["test", "rules", "shardnode.rules.test.yml"]] {
        let out = std::process::Command::new(&promtool).args(args).current_dir(rules).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
