//! `shardctl`: the operator's admin CLI. One module per subcommand.

pub mod cluster;
pub mod cluster_local;
pub mod cluster_status;
pub mod docs;
pub mod format;
pub mod fsck;
pub mod inspect;
pub mod object;
pub mod repairs;
pub mod scrub;
pub mod status;

use clap::{Parser, Subcommand};

/// shardctl, the shardnode admin CLI: format, inspect, check and scrub
/// devices; watch and steer a running agent; manage a cluster and its
/// objects. Exit codes: 0 ok, 1 failure, 2 usage, 3 degraded (docs/cli.md).
#[derive(Debug, Parser)]
#[command(
    name = "shardctl",
    version,
    about = "shardctl, the shardnode admin CLI: devices, agents, clusters and objects",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage error, 3 degraded (a device that needs repair). See docs/cli.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Format a block device or a regular file as a shardnode store.
    Format(format::Args),
    /// Print the layout and every superblock copy of a device.
    Inspect(inspect::Args),
    /// Rebuild the index from the extents and compare; verify every payload.
    Fsck(fsck::Args),
    /// Verify every byte a device's store references (offline), or
    /// control and watch a running agent's scrubbers (--agent).
    Scrub(scrub::Args),
    /// A running agent's devices: state, space, scrub progress, findings.
    Status(status::Args),
    /// The cluster: keys, the signed roster, status, a local cluster to try.
    Cluster(cluster::Args),
    /// Objects of a cluster through any agent: put, get, stat, rm.
    Object(object::Args),
    /// What an agent has to repair: damaged shards, the object repair
    /// queue by remaining redundancy, the repair throttle (--rate).
    Repairs(repairs::Args),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(docs::CompletionsArgs),
    /// Write man pages for shardctl and every subcommand into a directory.
    Man(docs::ManArgs),
}

/// A running agent to ask, and how to print its answer (`status`,
/// `cluster status`, `repairs`).
#[derive(Debug, clap::Args)]
pub struct AgentReport {
    /// The agent, `http://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    pub agent: String,
    /// Machine-readable output: the agent's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of the read-only checks (`fsck`, `scrub`).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Block device or regular file to check (one no agent holds).
    pub device: std::path::PathBuf,
    /// Machine-readable output (no progress line).
    #[arg(long)]
    pub json: bool,
}

/// Opens the store on a device without writing anything and without
/// claiming it exclusively (the checks read only).
pub fn open_store_read_only(device: &std::path::Path) -> anyhow::Result<shardstore::store::Store> {
    let options = shardstore::device::OpenOptions {
        read_only: true,
        exclusive: false,
        queue_depth: 8,
        ..shardstore::device::OpenOptions::default()
    };
    let dev = shardstore::device::open(device, &options)?;
    Ok(shardstore::store::Store::open_read_only(Box::new(dev))?)
}

/// Exit codes, documented in docs/cli.md.
pub mod exit {
    pub const OK: u8 = 0;
    /// Bad input, or the device is unusable.
    pub const FAILURE: u8 = 1;
    /// Usage error (clap).
    pub const USAGE: u8 = 2;
    /// The device opens but some superblock copies need repair.
    pub const DEGRADED: u8 = 3;
}
