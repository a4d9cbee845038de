//! `shardctl scrub DEVICE`: verify every byte the store on a device
//! references (superblock copies, checkpoint and log, every live chunk),
//! with a progress line on a terminal, a summary, and a non-zero exit when
//! anything is wrong. Read-only: use it on a device no agent holds.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::exit;
use crate::units::human_bytes;

pub use super::CheckArgs as Args;

pub fn run(args: &Args) -> anyhow::Result<u8> {
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
