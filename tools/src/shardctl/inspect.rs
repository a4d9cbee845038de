//! `shardctl inspect DEVICE`: the layout and every superblock copy, which
//! version is in force, and whether anything needs repair. Read-only: it
//! never repairs (the next open by the agent does) and works on a device
//! another process holds.

use std::path::PathBuf;

use serde::Serialize;
use shardstore::device::{self, BlockDevice, DeviceInfo, OpenOptions};
use shardstore::superblock::{self, CopyStatus, Superblock};

use super::exit;
use crate::units::human_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Block device or regular file to inspect.
    pub device: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    device: DeviceInfo,
    /// `healthy`, `degraded` (opens, some copies need repair) or `unusable`.
    status: &'static str,
    /// Null when healthy, else one line saying why not.
    reason: Option<String>,
    superblock: SuperblockReport,
}

#[derive(Debug, Serialize)]
struct SuperblockReport {
    in_force: Option<Superblock>,
    copies: Vec<CopyJson>,
}

#[derive(Debug, Serialize)]
struct CopyJson {
    index: usize,
    offset: u64,
    sequence: Option<u64>,
    valid: bool,
    /// `current`, `stale` or `invalid`.
    status: CopyStatus,
    problem: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let options = OpenOptions { read_only: true, exclusive: false, queue_depth: 4, ..OpenOptions::default() };
    let mut dev = device::open(&args.device, &options)?;
    let copies = superblock::read_copies(&mut dev);
    let selection = superblock::select(&copies);
    let statuses = selection.as_ref().map_or([CopyStatus::Invalid; 4], |s| s.status);
    let copies_json: Vec<CopyJson> = copies
        .iter()
        .map(|c| CopyJson {
            index: c.index,
            offset: c.offset,
            sequence: c.copy.as_ref().ok().map(|sb| sb.sequence),
            valid: c.copy.is_ok(),
            status: if c.copy.is_ok() && selection.is_err() { CopyStatus::Stale } else { statuses[c.index] },
            problem: match &c.copy {
                Ok(_) if statuses[c.index] == CopyStatus::Stale => {
                    Some("stale: older or uncommitted version".to_owned())
                }
                Ok(_) => None,
                Err(p) => Some(p.to_string()),
            },
        })
        .collect();
    let (status, reason, in_force) = match &selection {
        Ok(sel) => {
            let repair = sel.needs_repair();
            if repair.is_empty() {
                ("healthy", None, Some(sel.superblock.clone()))
            } else {
                let list: Vec<String> = repair.iter().map(usize::to_string).collect();
                let reason = format!(
                    "superblock copies {} need repair (the next open rewrites them from sequence {})",
                    list.join(", "),
                    sel.superblock.sequence
                );
                ("degraded", Some(reason), Some(sel.superblock.clone()))
            }
        }
        Err(e) => ("unusable", Some(e.to_string()), None),
    };
    let report = Report {
        device: dev.info().clone(),
        status,
        reason,
        superblock: SuperblockReport { in_force, copies: copies_json },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    if let Some(reason) = &report.reason {
        eprintln!("shardctl: {}: {status}: {reason}", args.device.display());
    }
    Ok(match status {
        "healthy" => exit::OK,
        "degraded" => exit::DEGRADED,
        _ => exit::FAILURE,
    })
}

fn print_human(r: &Report) {
    let d = &r.device;
    println!(
        "device      {} ({:?}, {} bytes = {}, logical block {}, physical block {})",
        d.name,
        d.kind,
        d.size_bytes,
        human_bytes(d.size_bytes),
        d.logical_block_size,
        d.physical_block_size
    );
    if let Some(sb) = &r.superblock.in_force {
        let l = &sb.layout;
        println!(
            "in force    sequence {} (device {}, format version {}, clean shutdown: {})",
            sb.sequence,
            superblock::format_uuid(&sb.device_uuid),
            sb.format_version,
            if sb.clean_shutdown { "yes" } else { "no" }
        );
        println!(
            "layout      block {} B, {} extents x {} from offset {}, metadata {} at offset {}",
            l.block_size_bytes,
            l.extent_count,
            human_bytes(l.extent_size_bytes),
            l.data_offset,
            human_bytes(l.meta_size_bytes),
            l.meta_offset
        );
        println!(
            "identity    cluster {}, node {}, formatted at {} bytes",
            superblock::format_uuid(&sb.cluster_uuid),
            sb.node_id,
            l.device_size_bytes
        );
    }
    println!("copies");
    for c in &r.superblock.copies {
        let seq = c.sequence.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let state = match c.status {
            CopyStatus::Current => "current",
            CopyStatus::Stale => "stale",
            CopyStatus::Invalid => "invalid",
        };
        let problem = c.problem.as_deref().unwrap_or("");
        println!("  #{}  offset {:>14}  sequence {:>6}  {:<8} {}", c.index, c.offset, seq, state, problem);
    }
    println!("status      {}", r.status);
}
