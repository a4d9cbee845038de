//! `shardctl scrub DEVICE`: verify every byte the store on a device
//! references (superblock copies, checkpoint and log, every live chunk),
//! with a progress line on a terminal, a summary, and a non-zero exit when
//! anything is wrong. Read-only: use it on a device no agent holds.
//!
//! `shardctl scrub --agent URL [--device ID] [start|pause|resume|status]`:
//! the same for devices a running agent holds, through its background
//! scrubbers.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::exit;
use crate::units::human_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Offline: the block device or file to verify (one no agent holds).
    /// With --agent: what to do, `start` (scrub as fast as requests allow
    /// until the pass ends), `pause`, `resume` or `status` (the default).
    pub target: Option<String>,
    /// Machine-readable output (no progress line).
    #[arg(long)]
    pub json: bool,
    /// A running agent, `http://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,
    /// With --agent: only this device (default: every device).
    #[arg(long = "device", value_name = "ID", requires = "agent")]
    pub device_id: Option<usize>,
    /// With --agent: file holding the admin token (start, pause, resume).
    #[arg(long, value_name = "FILE", requires = "agent")]
    pub token_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    if let Some(url) = &args.agent {
        return online(url, args);
    }
    let Some(device) = &args.target else {
        bail!("give the DEVICE to verify, or --agent URL to talk to a running agent");
    };
    offline(Path::new(device), args.json)
}

fn offline(device: &Path, json: bool) -> anyhow::Result<u8> {
    let args = super::CheckArgs { device: device.to_owned(), json };
    let mut store = super::open_store_read_only(&args.device)?;
    let started = Instant::now();
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let report = store.scrub_pass(|done, total| {
        if show_progress && (last_shown.elapsed().as_millis() >= 200 || done == total) {
            last_shown = Instant::now();
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let _ =
                write!(std::io::stderr(), "\rscrub: {percent:3}% ({} of {})   ", human_bytes(done), human_bytes(total));
        }
    });
    if show_progress {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} superblock copies, {} of metadata, {} chunks ({}) verified in {:.1} s",
            args.device.display(),
            report.superblock_copies_checked,
            human_bytes(report.metadata_bytes_verified),
            report.chunks_verified,
            human_bytes(report.chunk_bytes_verified),
            started.elapsed().as_secs_f64()
        );
        for f in &report.findings {
            let key = f.key.as_deref().map(|k| format!(" shard {k:?}")).unwrap_or_default();
            println!("  {:?}{key} at offset {} ({} bytes): {}", f.kind, f.offset, f.len, f.detail);
        }
        println!("{}", if report.is_clean() { "clean" } else { "DAMAGED" });
    }
    if report.is_clean() {
        Ok(exit::OK)
    } else {
        eprintln!("shardctl: {}: {} finding(s)", args.device.display(), report.findings.len());
        Ok(exit::FAILURE)
    }
}

fn online(url: &str, args: &Args) -> anyhow::Result<u8> {
    let action = args.target.as_deref().unwrap_or("status");
    // Devices that did not open are reported, and fail the command: their
    // scrub is neither running nor changed.
    let (devices, not_open): (Vec<usize>, Vec<serde_json::Value>) = if let Some(id) = args.device_id {
        (vec![id], Vec::new())
    } else {
        let all = crate::http::call_ok(url, "GET", "/v1/scrub", None)?;
        let (open, not_open): (Vec<_>, Vec<_>) =
            all["devices"].as_array().into_iter().flatten().cloned().partition(|d| d["error"].is_null());
        (open.iter().filter_map(|d| d["id"].as_u64()).map(|i| i as usize).collect(), not_open)
    };
    let answers: Vec<serde_json::Value> = match action {
        "status" => devices
            .iter()
            .map(|id| crate::http::call_ok(url, "GET", &format!("/v1/devices/{id}/scrub"), None))
            .collect::<anyhow::Result<_>>()?,
        "start" | "pause" | "resume" => {
            let Some(file) = &args.token_file else {
                bail!("{action} changes the agent: give --token-file with the agent's admin token");
            };
            let token = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
            devices
                .iter()
                .map(|id| {
                    crate::http::call_ok(url, "POST", &format!("/v1/devices/{id}/scrub/{action}"), Some(token.trim()))
                })
                .collect::<anyhow::Result<_>>()?
        }
        other => bail!("unknown scrub action {other:?} (start, pause, resume, status)"),
    };
    if args.json {
        let all: Vec<_> = answers.iter().chain(&not_open).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "devices": all }))?);
    } else {
        for d in &not_open {
            println!(
                "device {} ({}): {}",
                d["id"],
                d["path"].as_str().unwrap_or("?"),
                d["error"].as_str().unwrap_or("?")
            );
        }
        for d in &answers {
            let s = &d["scrub"];
            println!(
                "device {} ({}): scrub {}",
                d["id"],
                d["path"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?")
            );
            print_device_scrub(s);
        }
    }
    let damaged = answers.iter().any(|d| d["scrub"]["damaged_shards"].as_u64().unwrap_or(0) > 0);
    Ok(if (action == "status" && damaged) || !not_open.is_empty() { exit::FAILURE } else { exit::OK })
}

/// Where the scrubber stands against its deadline, in words an operator
/// reads at a glance: "on schedule" while the oldest unverified byte is
/// under 80% of the deadline (or nothing is stored), "behind" from there,
/// "PAST THE DEADLINE" beyond it; a paused scrubber says so first.
pub fn schedule(s: &serde_json::Value) -> String {
    let deadline = s["deadline_seconds"].as_f64();
    let deadline_text = deadline.map_or("?".to_owned(), human_duration);
    let paused = if s["state"].as_str() == Some("paused") { "paused; " } else { "" };
    let Some(age) = s["oldest_unverified_age_seconds"].as_f64() else {
        return format!("{paused}on schedule: nothing stored to verify (deadline {deadline_text})");
    };
    let share = deadline.filter(|d| *d > 0.0).map_or(0.0, |d| age / d);
    let word = match share {
        x if x >= 1.0 => "PAST THE DEADLINE",
        x if x >= 0.8 => "behind",
        _ => "on schedule",
    };
    format!(
        "{paused}{word}: oldest unverified byte {} old, {:.0}% of the {deadline_text} deadline",
        human_duration(age),
        share * 100.0
    )
}

/// One device's scrub status (the agent's `scrub` object), for people.
pub fn print_device_scrub(s: &serde_json::Value) {
    println!("  verification            {}", schedule(s));
    let p = &s["pass"];
    let total = p["total_bytes"].as_u64().unwrap_or(0);
    let eta = p["eta_unix_seconds"].as_f64().map_or("-".to_owned(), |t| format!("in {}", human_duration(t - now_s())));
    if total == 0 {
        println!("  pass                    nothing to verify yet");
    } else {
        println!(
            "  pass                    {:.1}% of {} (next extent {}), paced to end {eta}",
            p["progress"].as_f64().unwrap_or(0.0) * 100.0,
            human_bytes(total),
            p["next_extent"]
        );
    }
    let rate = s["rate_bytes_per_second"]
        .as_u64()
        .map_or("unthrottled".to_owned(), |r| format!("{}/s, what the deadline needs", human_bytes(r)));
    let last = s["last_pass_unix_seconds"].as_f64().map_or_else(
        || "none complete yet".to_owned(),
        |t| format!("last complete {} ago", human_duration(now_s() - t)),
    );
    println!("  rate                    {rate}; passes {}, {last}", s["passes"]);
    println!(
        "  verified                {}; read errors {}; damaged shards {}",
        human_bytes(s["verified_bytes"].as_u64().unwrap_or(0)),
        s["read_errors"],
        s["damaged_shards"]
    );
    let findings: Vec<String> = s["findings"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("  findings                {}", if findings.is_empty() { "none".to_owned() } else { findings.join(", ") });
    for f in s["recent_findings"].as_array().into_iter().flatten() {
        println!(
            "    {} {} at offset {} ({} bytes): {}",
            f["kind"].as_str().unwrap_or("?"),
            f["key"].as_str().map_or_else(|| "metadata".to_owned(), |k| format!("shard {k:?}")),
            f["offset"],
            f["len"],
            f["detail"].as_str().unwrap_or("")
        );
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds as `3d 4h`, `5h 12m`, `7m 3s` or `12.5s`.
pub fn human_duration(s: f64) -> String {
    let s = s.max(0.0);
    let whole = s as u64;
    match whole {
        0..60 => format!("{s:.1}s"),
        60..3600 => format!("{}m {}s", whole / 60, whole % 60),
        3600..86400 => format!("{}h {}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {}h", whole / 86400, whole % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::schedule;

    #[test]
    fn an_idle_or_young_node_reads_as_on_schedule_and_a_late_one_does_not() {
        let day = 86_400.0;
        let at = |age: Option<f64>, state: &str| {
            schedule(&json!({ "deadline_seconds": 14.0 * day, "oldest_unverified_age_seconds": age, "state": state }))
        };
        assert_eq!(at(None, "running"), "on schedule: nothing stored to verify (deadline 14d 0h)");
        assert!(
            at(Some(3.0 * 3600.0), "running").starts_with("on schedule: oldest unverified byte 3h"),
            "{}",
            at(Some(3.0 * 3600.0), "running")
        );
        assert!(at(Some(12.0 * day), "running").starts_with("behind: "), "{}", at(Some(12.0 * day), "running"));
        assert!(at(Some(15.0 * day), "running").starts_with("PAST THE DEADLINE: "));
        assert!(at(Some(day), "paused").starts_with("paused; on schedule"));
    }
}
