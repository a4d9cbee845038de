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
            if d["scrub"].is_object() {
                println!("  scrub                   {}", d["scrub"]["state"].as_str().unwrap_or("?"));
                print_device_scrub(&d["scrub"]);
            }
        }
    }
    let unhealthy = devices
        .iter()
        .any(|d| d["state"].as_str() != Some("open") || d["scrub"]["damaged_shards"].as_u64().unwrap_or(0) > 0);
    Ok(if unhealthy { exit::FAILURE } else { exit::OK })
}
