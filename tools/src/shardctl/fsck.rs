//! `shardctl fsck DEVICE`: rebuild the index from the extents alone,
//! compare it with the index the checkpoint and log recover, and verify
//! every stored payload. Read-only.

use super::exit;

pub use super::CheckArgs as Args;

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let mut store = super::open_store_read_only(&args.device)?;
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
