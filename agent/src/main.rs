//! `shard-agent`: the per-host storage daemon.
//!
//! Today it owns the host's devices (opening, repairing and marking them in
//! use) and shuts them down cleanly on SIGTERM. The HTTP API, placement and
//! admission control (issue 4) and scrubbing (issue 5) build on this.

mod config;
mod devices;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use config::Config;
use devices::DeviceState;

/// shardnode storage node agent.
#[derive(Debug, Parser)]
#[command(name = "shard-agent", version, about)]
struct Args {
    /// TOML config file (see systemd/agent.toml for every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory; overrides the config file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A device to serve (repeatable); overrides the config file's list.
    #[arg(long = "device")]
    devices: Vec<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Block the stop signals before any thread starts, then wait for them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;

    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if !args.devices.is_empty() {
        config.devices.clone_from(&args.devices);
    }

    let paths = devices::device_paths(&config)?;
    let mut devices: Vec<_> = paths.iter().map(|p| devices::open_device(p)).collect();
    for d in &devices {
        match &d.state {
            DeviceState::Open { superblock, .. } => tracing::info!(
                device = %d.path.display(),
                uuid = %shardstore::superblock::format_uuid(&superblock.device_uuid),
                extents = superblock.layout.extent_count,
                sequence = superblock.sequence,
                "device open"
            ),
            DeviceState::Failed { error } => tracing::error!(device = %d.path.display(), %error, "device failed"),
        }
    }
    let open = devices.iter().filter(|d| matches!(d.state, DeviceState::Open { .. })).count();
    tracing::info!(open, failed = devices.len() - open, "shard-agent ready");

    let signal = signals.wait()?;
    tracing::info!(?signal, "stopping");
    let mut failures = 0;
    for d in &mut devices {
        if let Err(e) = devices::close_device(d) {
            tracing::error!(device = %d.path.display(), error = %format!("{e:#}"), "clean shutdown not recorded");
            failures += 1;
        }
    }
    anyhow::ensure!(failures == 0, "{failures} device(s) could not record a clean shutdown");
    tracing::info!("stopped cleanly");
    Ok(())
}
