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
    /// Show where this shard lives and verify every byte of it.
    #[arg(long, value_name = "KEY")]
    pub shard: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    device: DeviceInfo,
    /// `healthy`, `degraded` (opens, some copies need repair), `unusable`,
    /// or with `--shard`, `shard_not_verified` (missing or corrupt).
    status: &'static str,
    /// Null when healthy, else one line saying why not.
    reason: Option<String>,
    superblock: SuperblockReport,
    /// The shard store, when the superblock is usable.
    store: Option<StoreReport>,
    /// Why the store could not be read, when it could not.
    store_error: Option<String>,
    /// With `--shard KEY`.
    shard: Option<ShardReport>,
}

#[derive(Debug, Serialize)]
struct StoreReport {
    shards: u64,
    shard_bytes: u64,
    chunks: u64,
    opened_clean: bool,
    extent_size_bytes: u64,
    /// Per extent: generation, bytes written this generation, live bytes.
    extents: Vec<ExtentJson>,
}

#[derive(Debug, Serialize)]
struct ExtentJson {
    index: usize,
    generation: u32,
    written_bytes: u64,
    live_bytes: u64,
}

#[derive(Debug, Serialize)]
struct ShardReport {
    key: String,
    found: bool,
    size: Option<u64>,
    crc32c: Option<String>,
    written_unix_ms: Option<u64>,
    /// Device offset of each chunk record.
    chunk_offsets: Vec<u64>,
    verified: bool,
    problem: Option<String>,
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
    let info = dev.info().clone();
    let (mut store, store_error) = if in_force.is_some() {
        match shardstore::store::Store::open_read_only(Box::new(dev)) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let store_report = store.as_ref().map(store_report);
    let shard = match (&args.shard, store.as_mut()) {
        (Some(key), Some(store)) => Some(shard_report(store, key)),
        _ => None,
    };
    let (status, reason) = match (&shard, &store_error) {
        (_, Some(e)) if status == "healthy" => ("unusable", Some(format!("store: {e}"))),
        (Some(sh), _) if !sh.verified => (
            "shard_not_verified",
            Some(format!("shard {:?}: {}", sh.key, sh.problem.as_deref().unwrap_or("not verified"))),
        ),
        _ => (status, reason),
    };
    let report = Report {
        device: info,
        status,
        reason,
        superblock: SuperblockReport { in_force, copies: copies_json },
        store: store_report,
        store_error,
        shard,
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

fn store_report(store: &shardstore::store::Store) -> StoreReport {
    let (shards, shard_bytes, chunks) = store.index_stats();
    let block = store.superblock().layout.block_size_bytes;
    StoreReport {
        shards,
        shard_bytes,
        chunks,
        opened_clean: store.opened_clean(),
        extent_size_bytes: store.superblock().layout.extent_size_bytes,
        extents: store
            .extents()
            .iter()
            .enumerate()
            .map(|(index, e)| ExtentJson {
                index,
                generation: e.generation,
                written_bytes: u64::from(e.write_blocks) * block,
                live_bytes: u64::from(e.live_blocks) * block,
            })
            .collect(),
    }
}

fn shard_report(store: &mut shardstore::store::Store, key: &str) -> ShardReport {
    let stat = store.stat(key.as_bytes());
    let chunk_offsets =
        store.chunk_locations(key.as_bytes()).map(|v| v.iter().map(|(o, _)| *o).collect()).unwrap_or_default();
    let (verified, problem) = match store.get(key.as_bytes()) {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.to_string())),
    };
    ShardReport {
        key: key.to_owned(),
        found: stat.is_some(),
        size: stat.as_ref().map(|s| s.size),
        crc32c: stat.as_ref().map(|s| format!("{:08x}", s.crc32c)),
        written_unix_ms: stat.as_ref().map(|s| s.written_unix_ms),
        chunk_offsets,
        verified,
        problem,
    }
}

/// One character per extent: `.` empty, `0`-`9` tenths, `#` full.
fn extent_row(values: impl Iterator<Item = (u64, u64)>) -> String {
    values
        .map(|(part, whole)| {
            if part == 0 {
                '.'
            } else if part * 20 >= whole * 19 {
                '#'
            } else {
                char::from(b'0' + (part * 10 / whole) as u8)
            }
        })
        .collect()
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
            "layout      block {} B, {} extents x {} from offset {}, metadata {} at offsets {}",
            l.block_size_bytes,
            l.extent_count,
            human_bytes(l.extent_size_bytes),
            l.data_offset,
            human_bytes(l.meta_size_bytes),
            offsets(&l.meta_copies())
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
    if let Some(st) = &r.store {
        println!(
            "store       {} shards, {} in {} chunks; last shutdown {}",
            st.shards,
            human_bytes(st.shard_bytes),
            st.chunks,
            if st.opened_clean { "clean" } else { "NOT clean (crash recovery ran)" }
        );
        let size = st.extent_size_bytes;
        let written = extent_row(st.extents.iter().map(|e| (e.written_bytes, size)));
        let live = extent_row(st.extents.iter().map(|e| (e.live_bytes, size)));
        println!("extents     written (. empty, 0-9 tenths, # full) / live, 64 per line");
        for (w, l) in written.as_bytes().chunks(64).zip(live.as_bytes().chunks(64)) {
            println!("  written   {}", String::from_utf8_lossy(w));
            println!("  live      {}", String::from_utf8_lossy(l));
        }
    }
    if let Some(e) = &r.store_error {
        println!("store       unreadable: {e}");
    }
    if let Some(sh) = &r.shard {
        if sh.found {
            println!(
                "shard       {:?}: {} bytes, crc32c {}, chunks at {:?}: {}",
                sh.key,
                sh.size.unwrap_or(0),
                sh.crc32c.as_deref().unwrap_or("-"),
                sh.chunk_offsets,
                if sh.verified { "verified" } else { sh.problem.as_deref().unwrap_or("not verified") }
            );
        } else {
            println!("shard       {:?}: not found", sh.key);
        }
    }
    println!("status      {}", r.status);
}

/// The offsets of a structure's copies, as "A and B" (one copy: "A").
pub(crate) fn offsets(copies: &[u64]) -> String {
    copies.iter().map(u64::to_string).collect::<Vec<_>>().join(" and ")
}
