//! `shardctl status --agent URL`: a running agent's devices, their state,
//! space, scrub progress, oldest unverified byte and findings.

use super::exit;
use super::scrub::print_device_scrub;
use crate::units::human_bytes;

pub type Args = super::AgentReport;

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let status = crate::http::call_ok(&args.agent, "GET", "/v1/status", None)?;
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "node {} (shardnode {})",
            status["node"].as_str().unwrap_or("?"),
            status["version"].as_str().unwrap_or("?")
        );
        for d in &devices {
            let state = d["state"].as_str().unwrap_or("?");
            if let Some(e) = d["error"].as_str() {
                println!("device {} ({}): {state}: {e}", d["id"], d["path"].as_str().unwrap_or("?"));
                continue;
            }
            println!(
                "device {} ({}): {state}, {} shards, {} used of {}, {} free; errors: corruption {}, io {}",
                d["id"],
                d["path"].as_str().unwrap_or("?"),
                d["shards"],
                human_bytes(d["live_bytes"].as_u64().unwrap_or(0)),
                human_bytes(d["capacity_bytes"].as_u64().unwrap_or(0)),
                human_bytes(d["free_bytes"].as_u64().unwrap_or(0)),
                d["errors"]["corruption"],
                d["errors"]["io"],
            );
            if let Some(h) = d["health"]["state"].as_str() {
                let reason = d["health"]["reason"].as_str().filter(|r| !r.is_empty());
                println!("  health                  {h}{}", reason.map(|r| format!(": {r}")).unwrap_or_default());
            }
            if let Some(v) = d["format_version"].as_u64() {
                println!("  format version          {v}");
            }
            if let Some(line) = stall_line(d) {
                println!("{line}");
            }
            if d["scrub"].is_object() {
                println!("  scrub                   {}", d["scrub"]["state"].as_str().unwrap_or("?"));
                print_device_scrub(&d["scrub"]);
            }
        }
    }
    Ok(if devices.iter().any(unhealthy) { exit::FAILURE } else { exit::OK })
}

/// A device that is not open, holds damaged shards, or whose I/O is
/// stalled makes the status fail (exit 1), for scripts and checks.
fn unhealthy(d: &serde_json::Value) -> bool {
    d["state"].as_str() != Some("open")
        || d["scrub"]["damaged_shards"].as_u64().unwrap_or(0) > 0
        || d["io_stalled_seconds"].as_f64().is_some()
}

fn stall_line(d: &serde_json::Value) -> Option<String> {
    let waited = d["io_stalled_seconds"].as_f64()?;
    Some(format!(
        "  I/O stalled             an operation has waited {waited:.0} s; the device is not asked until it completes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stalled_device_is_shown_and_fails_the_status() {
        let open = json!({ "state": "open", "io_stalled_seconds": null, "scrub": { "damaged_shards": 0 } });
        assert!(!unhealthy(&open) && stall_line(&open).is_none());
        let stalled = json!({ "state": "open", "io_stalled_seconds": 12.4, "scrub": { "error": "I/O is stalled" } });
        assert!(unhealthy(&stalled));
        assert_eq!(
            stall_line(&stalled).unwrap(),
            "  I/O stalled             an operation has waited 12 s; the device is not asked until it completes"
        );
        // A device that failed to open has no stall figure: unhealthy for
        // its state alone.
        assert!(unhealthy(&json!({ "state": "failed", "error": "did not open" })));
    }
}
