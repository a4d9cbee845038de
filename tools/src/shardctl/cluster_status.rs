//! `shardctl cluster status --agent URL [--json]`: the cluster as one
//! agent sees it (its `GET /v1/cluster`): every roster host with its
//! SWIM state, its devices, free space, oldest unverified byte, damaged
//! shards and how old the newest record from it is.

use super::exit;
use crate::units::human_bytes;

pub type Args = super::AgentReport;

/// A host's devices as its records say.
#[derive(Debug, Default, PartialEq, Eq)]
struct Devices {
    healthy: usize,
    total: usize,
    free_bytes: u64,
    oldest_unverified_s: Option<u64>,
    damaged: u64,
}

fn devices_of(member: &serde_json::Value) -> Devices {
    let mut d = Devices::default();
    for r in member["records"].as_array().into_iter().flatten().filter(|r| r["kind"] == "device") {
        let dev = &r["device"];
        d.total += 1;
        d.healthy += usize::from(dev["state"] == "open" && dev["health"] == "healthy");
        d.free_bytes += dev["free_bytes"].as_u64().unwrap_or(0);
        d.damaged += dev["damaged_shards"].as_u64().unwrap_or(0);
        if let Some(s) = dev["scrub_oldest_unverified_s"].as_u64() {
            d.oldest_unverified_s = Some(d.oldest_unverified_s.map_or(s, |o| o.max(s)));
        }
    }
    d
}

fn human_age(s: u64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let view = crate::http::call_ok(&args.agent, "GET", "/v1/cluster", None)?;
    let members = view["members"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "cluster {} roster epoch {}, seen from host {} (generation {})",
            view["cluster"].as_str().unwrap_or("?"),
            view["roster_epoch"],
            view["host"],
            view["generation"]
        );
        println!(
            "{:>5}  {:<16} {:<12} {:<8} {:>8} {:>10} {:>10} {:>8} {:>10}",
            "host", "name", "domain", "state", "devices", "free", "unverified", "damaged", "record age"
        );
        for m in &members {
            let d = devices_of(m);
            let age = m["records"].as_array().into_iter().flatten().filter_map(|r| r["age_ms"].as_u64()).min();
            println!(
                "{:>5}  {:<16} {:<12} {:<8} {:>8} {:>10} {:>10} {:>8} {:>10}",
                m["host"].to_string(),
                m["name"].as_str().unwrap_or("?"),
                m["domain"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?"),
                if d.total == 0 { "-".to_owned() } else { format!("{}/{}", d.healthy, d.total) },
                if d.total == 0 { "-".to_owned() } else { human_bytes(d.free_bytes) },
                d.oldest_unverified_s.map_or_else(|| "-".to_owned(), human_age),
                if d.total == 0 { "-".to_owned() } else { d.damaged.to_string() },
                age.map_or_else(|| "-".to_owned(), |ms| human_age(ms / 1000)),
            );
        }
        let c = &view["counters"];
        let rejected: u64 = c["rejected"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_u64()).sum();
        println!(
            "gossip: {} datagrams sent, {} received, {rejected} rejected; {} records accepted",
            c["datagrams_sent"], c["datagrams_received"], c["records_accepted"]
        );
    }
    // Not all well: a member not alive, or a device not open and healthy.
    let troubled = members.iter().any(|m| {
        let d = devices_of(m);
        m["state"] != "alive" || d.healthy < d.total || d.damaged > 0
    });
    Ok(if troubled { exit::FAILURE } else { exit::OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_summed_from_the_records() {
        let m = serde_json::json!({ "records": [
            { "kind": "host" },
            { "kind": "device", "device": { "state": "open", "health": "healthy", "free_bytes": 10, "damaged_shards": 0, "scrub_oldest_unverified_s": 5 } },
            { "kind": "device", "device": { "state": "fenced", "health": "suspect", "free_bytes": 7, "damaged_shards": 2, "scrub_oldest_unverified_s": null } },
        ]});
        assert_eq!(
            devices_of(&m),
            Devices { healthy: 1, total: 2, free_bytes: 17, oldest_unverified_s: Some(5), damaged: 2 }
        );
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3600), "60m");
        assert_eq!(human_age(86400 * 3), "3d");
    }
}
