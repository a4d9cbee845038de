//! `shardctl format DEVICE`: lay out a device (creating a file when
//! `--size` is given: sparse, or written whole with `--lay-out`) and write
//! its first superblock.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use shardstore::device::{self, BlockDevice, OpenOptions};
use shardstore::format::{format, FormatOptions};

use crate::units::{human_bytes, parse_size};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Block device or regular file to format.
    pub device: PathBuf,
    /// Create (or with --force, resize) a regular file of this size, e.g. 10G.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Extent size: a power of two, 4MiB..=1GiB. Default: 64MiB, halved
    /// (down to 4MiB) until the device holds at least 16 extents, so a
    /// 256MiB device gets 8MiB extents.
    #[arg(long, value_parser = parse_size)]
    pub extent_size: Option<u64>,
    /// With --size, write every block of the new file (zeros) instead of
    /// leaving it sparse, as fio lays out its files: a file-backed device
    /// then behaves like a raw one (no block allocation on first writes,
    /// no file-system journal commit with each flush). For benchmarks.
    #[arg(long, requires = "size")]
    pub lay_out: bool,
    /// Overwrite a device that holds a shardnode store or any other data.
    #[arg(long)]
    pub force: bool,
    /// Print the new superblock as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let path = &args.device;
    let created = prepare_file(args)?;
    let result = format_path(args);
    if result.is_err() && created {
        // Leave nothing behind for a format that did not happen.
        let _ = std::fs::remove_file(path);
    }
    let sb = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sb)?);
    } else {
        let l = &sb.layout;
        println!(
            "formatted {}: device {}, {} extents of {}, metadata {} at offsets {}, data at offset {}",
            path.display(),
            shardstore::superblock::format_uuid(&sb.device_uuid),
            l.extent_count,
            human_bytes(l.extent_size_bytes),
            human_bytes(l.meta_size_bytes),
            super::inspect::offsets(&l.meta_copies()),
            l.data_offset
        );
    }
    Ok(super::exit::OK)
}

/// Creates or resizes the backing file for `--size`; returns whether it
/// created the file.
fn prepare_file(args: &Args) -> anyhow::Result<bool> {
    let path = &args.device;
    match (std::fs::metadata(path), args.size) {
        (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file or block device (pass --size SIZE to create a file-backed device)", path.display())
        }
        (Err(e), None) => Err(e).with_context(|| format!("{}: cannot stat", path.display())),
        (Err(e), Some(size)) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("{}: cannot create", path.display()))?;
            file.set_len(size).with_context(|| format!("{}: cannot size to {size} bytes", path.display()))?;
            drop(file);
            if args.lay_out {
                if let Err(e) = crate::bench::run::lay_out(path, size) {
                    let _ = std::fs::remove_file(path);
                    return Err(e).with_context(|| format!("{}: cannot lay out {size} bytes", path.display()));
                }
            }
            Ok(true)
        }
        (Ok(_), Some(_)) if args.lay_out => {
            bail!("{}: exists; --lay-out writes only a file --size creates", path.display())
        }
        (Err(e), Some(_)) => Err(e).with_context(|| format!("{}: cannot stat", path.display())),
        (Ok(meta), Some(size)) => {
            if meta.file_type().is_block_device() {
                bail!("{}: --size applies only to regular files; a block device has its own size", path.display());
            }
            if meta.len() != size {
                if !args.force {
                    bail!(
                        "{}: exists with {} bytes, not the {size} given by --size (pass --force to resize it)",
                        path.display(),
                        meta.len()
                    );
                }
                std::fs::OpenOptions::new().write(true).open(path)?.set_len(size)?;
            }
            Ok(false)
        }
        (Ok(_), None) => Ok(false),
    }
}

fn format_path(args: &Args) -> anyhow::Result<shardstore::superblock::Superblock> {
    let mut dev = device::open(&args.device, &OpenOptions { queue_depth: 4, ..OpenOptions::default() })?;
    let options = FormatOptions { extent_size_bytes: args.extent_size, force: args.force, ..FormatOptions::default() };
    let sb = format(&mut dev, &options)?;
    debug_assert!(!dev.is_poisoned());
    Ok(sb)
}
