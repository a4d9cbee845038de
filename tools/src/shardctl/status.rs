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
            if let Some(line) = cache_line(&d["read_cache"]) {
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

/// The device's read cache: what it holds and how often GETs hit it.
fn cache_line(c: &serde_json::Value) -> Option<String> {
    let capacity = c["capacity_bytes"].as_u64()?;
    if capacity == 0 {
        return Some("  read cache              off".to_owned());
    }
    let (hits, misses) = (c["hits"].as_u64().unwrap_or(0), c["misses"].as_u64().unwrap_or(0));
    let ratio = if hits + misses == 0 {
        "no GETs yet".to_owned()
    } else {
        format!("{:.1}% of GETs hit", 100.0 * hits as f64 / (hits + misses) as f64)
    };
    Some(format!(
        "  read cache              {} shards, {} of {}; {ratio}",
        c["shards"],
        human_bytes(c["bytes"].as_u64().unwrap_or(0)),
        human_bytes(capacity),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_read_cache_line_says_what_it_holds_and_how_often_it_hits() {
        let on = json!({ "capacity_bytes": 67_108_864, "bytes": 1_048_576, "shards": 200, "hits": 3, "misses": 1 });
        let line = cache_line(&on).unwrap();
        assert!(line.contains("200 shards") && line.contains("75.0% of GETs hit"), "{line}");
        assert_eq!(cache_line(&json!({ "capacity_bytes": 0 })).unwrap(), "  read cache              off");
        // An agent from before the cache tells nothing: no line.
        assert!(cache_line(&serde_json::Value::Null).is_none());
    }

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
