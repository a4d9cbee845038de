//! The agent's configuration: a TOML file (every key documented in
//! `systemd/agent.toml`), overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Default data directory when neither the file nor a flag names one.
pub const DATA_DIR_DEFAULT: &str = "/var/lib/shardnode";

/// Number and size of the file-backed devices made on a first run.
pub const DEFAULT_DEVICE_COUNT: usize = 3;
pub const DEFAULT_DEVICE_SIZE_BYTES: u64 = 4 << 30;

/// Where the agent listens when neither the file nor a flag says.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7480";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the agent keeps its own files (and its default devices).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Block devices or files to serve. Empty: three default files in
    /// `data_dir`, created and formatted on the first run.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// How many default file-backed devices a first run makes.
    #[serde(default = "default_device_count")]
    pub default_device_count: usize,
    /// Size of each default file-backed device.
    #[serde(default = "default_device_size")]
    pub default_device_size_bytes: u64,
    /// The HTTP address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token that admin routes require. Without
    /// one, admin routes answer 401 to everyone.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub scrub: Scrub,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub read_cache: ReadCache,
    /// Membership and health gossip with the other agents of a cluster.
    /// Without it the agent runs alone.
    #[serde(default)]
    pub cluster: Option<Cluster>,
}

/// This agent as a host of a cluster (docs/cluster.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// This host's id on the roster.
    pub host_id: u32,
    /// The signed roster (`shardctl cluster sign`).
    pub roster: PathBuf,
    /// The cluster's gossip keyring (`shardctl cluster keygen`).
    pub gossip_key: PathBuf,
    /// The operator's public key, which signs the roster.
    pub operator_public_key: PathBuf,
    /// Where to receive gossip; default: this host's roster address.
    #[serde(default)]
    pub gossip_listen: Option<SocketAddr>,
    /// Tokens the object API requires (`Authorization: Bearer <token>`),
    /// one per line; re-read on SIGHUP. Unset: the object API is open to
    /// anyone who reaches the listen address.
    #[serde(default)]
    pub client_token_file: Option<PathBuf>,
    /// Announce this host as under maintenance (not to be given new data).
    #[serde(default)]
    pub maintenance: bool,
    /// How often this host republishes its health records unchanged (a
    /// device's state or health, or whether the host takes writes, is
    /// published within `join_interval_ms` of changing). Every record
    /// relayed costs every host a few transmissions: at 60 s, 100 hosts
    /// gossip about 23 KB/s each (BENCHMARKS.md).
    #[serde(default = "default_publish_interval")]
    pub publish_interval_ms: u64,
    /// How often this host announces itself to roster hosts it has not
    /// heard of yet (its seeds while it joins), and checks its devices for
    /// a change worth publishing at once.
    #[serde(default = "default_join_interval")]
    pub join_interval_ms: u64,
    /// How often this host looks for damaged object shards on its devices
    /// (the scrubber's findings) and rebuilds them from their siblings.
    #[serde(default = "default_repair_interval")]
    pub repair_interval_ms: u64,
    /// Whether object reads ask one holder more than they need at once and
    /// hedge slow answers (more holders asked after the peers' usual
    /// latency). Off: exactly k are asked, one more only after a failure
    /// (less traffic, a slow holder slows the read).
    #[serde(default = "default_true")]
    pub hedge_reads: bool,
    /// The repair throttle: bytes of sibling shards read per second (a
    /// token bucket; 0 pauses repairs). Settable at run time with `PUT
    /// /v1/repairs/rate`.
    #[serde(default = "default_repair_rate")]
    pub repair_bytes_per_second: u64,
    /// SWIM timing; unset: `shardnode_cluster::gossip::lan_config` for the
    /// roster's size (1 s probes, 500 ms RTT, 3 x max(1, log10 N) s suspicion).
    #[serde(default)]
    pub probe_period_ms: Option<u64>,
    #[serde(default)]
    pub probe_rtt_ms: Option<u64>,
    #[serde(default)]
    pub suspect_to_down_ms: Option<u64>,
}

fn default_publish_interval() -> u64 {
    60_000
}

fn default_repair_interval() -> u64 {
    5000
}

fn default_true() -> bool {
    true
}

fn default_repair_rate() -> u64 {
    64 << 20
}

fn default_join_interval() -> u64 {
    1000
}

/// Drive health rules (see `shardstore::health`), evaluated every
/// `interval_ms`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    pub interval_ms: u64,
    pub window_intervals: usize,
    pub io_errors_suspect: u64,
    pub checksum_failures_suspect: u64,
    pub slow_factor: f64,
    pub latency_samples_min: u64,
    pub slow_intervals_suspect: u32,
    pub recovery_intervals: u32,
    pub baseline_intervals_min: u32,
    pub auto_fence: bool,
    /// An I/O in flight this long is a stall: the device is suspect (and
    /// fenced automatically within the limit) while it lasts. 0 turns the
    /// watch off.
    pub io_stall_ms: u64,
    /// Keys written to other devices while a device stalled that are
    /// remembered, to remove its older copies once it answers again; past
    /// as many, its whole listing is swept instead.
    pub owed_keys_max: usize,
}

impl Default for Health {
    fn default() -> Self {
        let r = shardstore::health::HealthRules::default();
        Health {
            interval_ms: 1000,
            window_intervals: r.window_intervals,
            io_errors_suspect: r.io_errors_suspect,
            checksum_failures_suspect: r.checksum_failures_suspect,
            slow_factor: r.slow_factor,
            latency_samples_min: r.latency_samples_min,
            slow_intervals_suspect: r.slow_intervals_suspect,
            recovery_intervals: r.recovery_intervals,
            baseline_intervals_min: r.baseline_intervals_min,
            auto_fence: r.auto_fence,
            io_stall_ms: shardstore::constants::IO_STALL_AFTER_MS_DEFAULT,
            owed_keys_max: crate::node::OWED_KEYS_MAX_DEFAULT,
        }
    }
}

impl Health {
    pub fn rules(&self) -> shardstore::health::HealthRules {
        shardstore::health::HealthRules {
            window_intervals: self.window_intervals.max(1),
            io_errors_suspect: self.io_errors_suspect.max(1),
            checksum_failures_suspect: self.checksum_failures_suspect.max(1),
            slow_factor: self.slow_factor.max(1.5),
            latency_samples_min: self.latency_samples_min,
            slow_intervals_suspect: self.slow_intervals_suspect.max(1),
            recovery_intervals: self.recovery_intervals.max(1),
            baseline_intervals_min: self.baseline_intervals_min.max(1),
            auto_fence: self.auto_fence,
        }
    }
}

/// Each device's read cache: whole small shards kept in memory as reads
/// verified them, answered without a device read (the store reads with
/// `O_DIRECT`, so the kernel's page cache holds none of them).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadCache {
    /// Memory for each device's cache (shards, keys and overhead); 0 turns
    /// caching off.
    pub bytes_per_device: u64,
    /// Largest shard kept.
    pub shard_bytes_max: u64,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache { bytes_per_device: 64 << 20, shard_bytes_max: 128 << 10 }
    }
}

impl ReadCache {
    pub fn settings(&self) -> shardstore::store::cache::ReadCacheSettings {
        shardstore::store::cache::ReadCacheSettings {
            capacity_bytes: self.bytes_per_device,
            shard_bytes_max: self.shard_bytes_max,
        }
    }
}

/// The background scrubber of every device.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Scrub {
    /// Every live byte is to be verified at least this often, in days.
    pub deadline_days: u64,
    /// Ceiling on each device's scrub reads, bytes per second; 0: none.
    pub rate_bytes_max: u64,
    /// Start with scrubbing paused (an operator's `resume` starts it).
    pub paused: bool,
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub { deadline_days: shardstore::store::scrub::SCRUB_DEADLINE_DAYS_DEFAULT, rate_bytes_max: 0, paused: false }
    }
}

impl Scrub {
    pub fn settings(&self) -> shardstore::store::scrub::ScrubSettings {
        shardstore::store::scrub::ScrubSettings {
            deadline_ms: self.deadline_days.max(1) * 24 * 3600 * 1000,
            rate_bytes_max: (self.rate_bytes_max > 0).then_some(self.rate_bytes_max),
            paused: self.paused,
            ..shardstore::store::scrub::ScrubSettings::default()
        }
    }
}

/// Bounds on what a client may send and how long it may take.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request line and headers together, in bytes.
    pub header_bytes_max: usize,
    /// Time to receive the request line and headers.
    pub header_timeout_ms: u64,
    /// Time to receive a whole request body once the headers are in.
    pub body_timeout_ms: u64,
    /// Time SIGTERM gives requests in flight before they are cut off.
    pub shutdown_grace_ms: u64,
    /// Request bodies held in memory at once, in bytes; a put that would
    /// pass it is refused (`Overloaded`) before its body is read.
    pub body_memory_bytes_max: u64,
    /// Put bodies of 64 KiB or more land, as they arrive, in record-shaped
    /// I/O buffers the store writes without copying; this many 1 MiB
    /// chunks' worth are kept (mapped at start: about 1 MiB each). A body
    /// that finds too few free is kept as it arrived. 0: never land.
    pub landing_records: usize,
    /// Requests running on one device at once; more wait in its queue.
    pub device_concurrency: usize,
    /// Waiting requests past which a device's queue is served newest first.
    pub device_lifo_after: usize,
    /// Waiting requests past which new ones are refused (`Overloaded`).
    pub device_queue_max: usize,
    /// A device write longer than this, sent while reads are in flight on
    /// the device, goes in pieces of this size, so that a read waits for a
    /// piece and not the whole write; a multiple of 4096, 0: whole
    /// (`OpenOptions::write_piece_bytes`).
    pub write_piece_bytes: u64,
    /// Pieces of such writes in flight at once while reads are; at least 1.
    pub write_pieces_with_reads: u32,
    /// Serve connections on the store threads (one per device), each
    /// reading its connections' requests through an io_uring of its own
    /// and answering plain shard reads without a hand-off between threads;
    /// off: every connection on the tokio runtime. Outside a cluster only.
    pub connections_on_store_threads: bool,
    /// Store threads that serve connections (the first devices'), at
    /// most; 0: as many as the CPUs the agent may run on. The others'
    /// shards are read by the serving threads from where their threads
    /// placed them, or through their threads.
    pub connection_threads: usize,
    /// Testing only: every shard GET waits this long before it is served
    /// (a slow holder, for the hedged-read tests and benchmarks). 0: off.
    pub test_shard_read_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: 16 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            shutdown_grace_ms: 10_000,
            body_memory_bytes_max: 1 << 30,
            landing_records: 32,
            device_concurrency: 32,
            device_lifo_after: 32,
            device_queue_max: 512,
            write_piece_bytes: shardstore::constants::WRITE_PIECE_BYTES_DEFAULT,
            write_pieces_with_reads: shardstore::constants::WRITE_PIECES_WITH_READS_DEFAULT,
            connections_on_store_threads: true,
            connection_threads: 0,
            test_shard_read_delay_ms: 0,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DATA_DIR_DEFAULT)
}

fn default_device_count() -> usize {
    DEFAULT_DEVICE_COUNT
}

fn default_device_size() -> u64 {
    DEFAULT_DEVICE_SIZE_BYTES
}

fn default_listen() -> SocketAddr {
    LISTEN_DEFAULT.parse().expect("a valid default address")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            devices: Vec::new(),
            default_device_count: DEFAULT_DEVICE_COUNT,
            default_device_size_bytes: DEFAULT_DEVICE_SIZE_BYTES,
            listen: default_listen(),
            admin_token_file: None,
            limits: Limits::default(),
            scrub: Scrub::default(),
            health: Health::default(),
            read_cache: ReadCache::default(),
            cluster: None,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
        let config: Config = toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
        config.check().with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(config)
    }

    /// What parsing cannot check: values that would fail every I/O.
    pub fn check(&self) -> anyhow::Result<()> {
        let piece = self.limits.write_piece_bytes;
        if piece % shardstore::constants::BLOCK_SIZE_BYTES != 0 {
            anyhow::bail!("limits.write_piece_bytes = {piece}: must be a multiple of 4096 (or 0: writes go whole)");
        }
        if self.limits.write_pieces_with_reads == 0 {
            anyhow::bail!("limits.write_pieces_with_reads = 0: must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../systemd/agent.toml");
        let config: Config = toml::from_str(text).unwrap();
        // The example documents the defaults: it must say what the code does.
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_example_cluster_table_parses() {
        // systemd/agent.toml shows [cluster] commented out; uncommented, it
        // must parse, with the defaults the code uses.
        let text = include_str!("../../systemd/agent.toml");
        let start = text.find("# [cluster]").expect("the example shows [cluster]");
        let table: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .collect::<Vec<_>>()
            .join("\n");
        let config: Config = toml::from_str(&table).unwrap();
        let c = config.cluster.unwrap();
        assert_eq!((c.publish_interval_ms, c.join_interval_ms), (default_publish_interval(), default_join_interval()));
        assert_eq!(c.probe_period_ms, None);
    }

    /// Every key the code knows is in the example, in its place: the
    /// tables of the defaults and of the example hold the same keys.
    #[test]
    fn the_example_config_names_every_key() {
        fn keys(value: &toml::Value, at: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(table) = value {
                for (k, v) in table {
                    let path = format!("{at}{k}");
                    keys(v, &format!("{path}."), out);
                    out.push(path);
                }
            }
        }
        let (mut documented, mut known) = (Vec::new(), Vec::new());
        keys(&toml::from_str(include_str!("../../systemd/agent.toml")).unwrap(), "", &mut documented);
        keys(&toml::Value::try_from(Config::default()).unwrap(), "", &mut known);
        documented.sort();
        known.sort();
        let missing: Vec<_> = known.iter().filter(|k| !documented.contains(k)).collect();
        assert!(missing.is_empty(), "systemd/agent.toml lacks {missing:?}");
        assert_eq!(documented, known);
    }

    #[test]
    fn values_that_would_fail_every_io_are_refused_by_name() {
        let mut config = Config::default();
        config.check().unwrap();
        config.limits.write_piece_bytes = 1000;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("limits.write_piece_bytes = 1000") && err.contains("4096"), "{err}");
        config.limits.write_piece_bytes = 0;
        config.check().unwrap();
        config.limits.write_pieces_with_reads = 0;
        assert!(config.check().unwrap_err().to_string().contains("limits.write_pieces_with_reads"));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<Config>("data_dirr = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("data_dirr"), "{err}");
    }
}
