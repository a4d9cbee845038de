//! `shardctl fsck DEVICE`: rebuild the index from the extents alone,
//! compare it with the index the checkpoint and log recover, and verify
//! every stored payload. Read-only.

use std::path::PathBuf;

use shardstore::device::{self, OpenOptions};
use shardstore::store::Store;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Block device or regular file to check.
    pub device: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let options = OpenOptions { read_only: true, exclusive: false, queue_depth: 8, ..OpenOptions::default() };
    let dev = device::open(&args.device, &options)?;
    let mut store = Store::open_read_only(Box::new(dev))?;
    let report = store.fsck();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} extents scanned, {} records ({} live, {} dead), {} shards checked",
            args.device.display(),
            report.extents_scanned,
            report.records_found,
            report.records_live,
            report.records_dead,
            report.shards_checked
        );
        for p in &report.problems {
            println!("  problem: {p}");
        }
        println!("{}", if report.is_consistent() { "consistent" } else { "INCONSISTENT" });
    }
    if report.is_consistent() {
        Ok(exit::OK)
    } else {
        eprintln!("shardctl: {}: {} problem(s) found", args.device.display(), report.problems.len());
        Ok(exit::FAILURE)
    }
}
