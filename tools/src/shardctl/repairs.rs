//! `shardctl repairs --agent URL [--json] [--rate SIZE --token-file F]`:
//! what an agent has to repair (its `GET /v1/repairs`): the devices'
//! damaged shards and, in a cluster, its object repair queue, most
//! endangered stripes first, with the throttle; `--rate` changes the
//! throttle at once (`0` pauses repairs).

use anyhow::Context;

use super::exit;
use crate::units::{human_bytes, parse_size};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub report: super::AgentReport,
    /// Set the object repair throttle, bytes of siblings read per second
    /// (`64MiB`, `0` pauses); needs --token-file.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rate: Option<u64>,
    /// File holding the agent's admin token (for --rate).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Queue entries to print (most endangered first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    if let Some(rate) = args.rate {
        let file =
            args.token_file.as_ref().context("--rate changes the agent: give --token-file with its admin token")?;
        let token = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
        let body = serde_json::json!({ "bytes_per_second": rate }).to_string();
        let (status, answer) =
            crate::http::call_with(&args.report.agent, "PUT", "/v1/repairs/rate", Some(token.trim()), body.as_bytes())?;
        if status != 200 {
            anyhow::bail!(
                "setting the repair rate: {status} {}: {}",
                answer["code"].as_str().unwrap_or("?"),
                answer["message"].as_str().unwrap_or("")
            );
        }
        eprintln!(
            "repair rate {}/s (was {}/s)",
            human_bytes(rate),
            human_bytes(answer["before"].as_u64().unwrap_or_default())
        );
    }
    let view = crate::http::call_ok(&args.report.agent, "GET", "/v1/repairs", None)?;
    if args.report.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(exit::OK);
    }
    let shards = view["shards"].as_array().cloned().unwrap_or_default();
    println!("{} damaged shard(s) on this agent's devices", shards.len());
    for u in view["unavailable"].as_array().into_iter().flatten() {
        println!("  device {} not asked: {}", u["device"], u["reason"].as_str().unwrap_or("?"));
    }
    for s in shards.iter().take(args.limit) {
        println!(
            "  device {} {} ({} at {} +{})",
            s["device"],
            s["key"].as_str().unwrap_or("?"),
            s["kind"],
            s["offset"],
            s["len"]
        );
    }
    let o = &view["objects"];
    if o.is_null() {
        return Ok(exit::OK);
    }
    let rate = o["rate_bytes_per_second"].as_u64().unwrap_or(0);
    let queue = o["queue"].as_array().cloned().unwrap_or_default();
    println!(
        "object repairs: {} queued, throttle {}, {} rounds, {} repaired ({}), {} failed, {} obsolete{}",
        queue.len(),
        if rate == 0 { "paused".to_owned() } else { format!("{}/s", human_bytes(rate)) },
        o["rounds"],
        o["repaired"],
        human_bytes(o["bytes_repaired"].as_u64().unwrap_or(0)),
        o["failed"],
        o["obsolete"],
        match o["backoff_ms"].as_u64() {
            Some(ms) if ms > 0 => format!(", backing off {ms} ms (holders busy)"),
            _ => String::new(),
        }
    );
    for line in unscanned(o) {
        println!("{line}");
    }
    let at_risk = &o["stripes_at_risk"];
    println!("stripes at risk: {} with redundancy 0, {} with redundancy 1", at_risk["0"], at_risk["1"]);
    if !queue.is_empty() {
        println!("{:>4} {:>7} {:>9} {:>8} {:>8}  key", "red", "holder", "source", "bytes", "tries");
    }
    for e in queue.iter().take(args.limit) {
        println!(
            "{:>4} {:>7} {:>9} {:>8} {:>8}  {}{}",
            e["redundancy"],
            e["holder"],
            e["source"].as_str().unwrap_or("?"),
            human_bytes(e["bytes"].as_u64().unwrap_or(0)),
            e["attempts"],
            e["key"].as_str().unwrap_or("?"),
            e["last_error"].as_str().map(|w| format!("\n{:>41}last error: {w}", "")).unwrap_or_default()
        );
    }
    if queue.len() > args.limit {
        println!("... and {} more (--limit, --json)", queue.len() - args.limit);
    }
    Ok(exit::OK)
}

/// A line per device the agent's last repair scan could not read: the
/// queue lacks what they hold, which is said before the queue is shown.
fn unscanned(objects: &serde_json::Value) -> Vec<String> {
    objects["unscanned_devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            format!(
                "  device {} not scanned: {} (repairs it holds are not in the queue)",
                u["device"],
                u["reason"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::unscanned;

    #[test]
    fn devices_the_scan_could_not_read_are_named_with_why() {
        let view = serde_json::json!({
            "queue": [],
            "unscanned_devices": [{ "device": 2, "reason": "not open: no superblock copy is valid" }],
        });
        assert_eq!(
            unscanned(&view),
            ["  device 2 not scanned: not open: no superblock copy is valid (repairs it holds are not in the queue)"]
        );
        assert!(unscanned(&serde_json::json!({ "queue": [], "unscanned_devices": [] })).is_empty());
    }
}
