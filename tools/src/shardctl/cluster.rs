//! `shardctl cluster`: the operator's keys and the signed roster
//! (docs/cluster.md).
//!
//! - `keygen DIR` writes `operator.key` (Ed25519 secret, mode 0600: keep it
//!   off the hosts), `operator.pub` and `gossip.keys` (the cluster's MAC
//!   key, mode 0600, installed on every host). It refuses to overwrite.
//! - `sign ROSTER --key DIR/operator.key [--out FILE]` checks the roster
//!   and writes the signed file (`ROSTER.signed` by default).
//! - `verify SIGNED --pub DIR/operator.pub` checks a signed roster as an
//!   agent would and prints its summary.
//! - `status --agent URL` (cluster_status.rs) and `local --hosts N --dir
//!   DIR` (cluster_local.rs).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shardnode_cluster::keys::{self, GossipKey, Keyring};
use shardnode_cluster::roster::SignedRoster;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Write a new operator key pair and cluster gossip key into DIR.
    Keygen {
        /// Directory to write operator.key, operator.pub and gossip.keys into
        /// (created if missing; existing files are never overwritten).
        dir: PathBuf,
    },
    /// Check a roster and sign it with the operator's secret key.
    Sign {
        /// The roster document (TOML; see docs/cluster.md).
        roster: PathBuf,
        /// The operator's secret key file (from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed roster (default: ROSTER.signed).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Machine-readable output: what was signed, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster as one agent sees it: hosts, states, devices, space.
    Status(super::cluster_status::Args),
    /// Start a cluster of N agents on this machine (127.0.0.2, ...) to try it.
    Local(super::cluster_local::Args),
    /// Verify a signed roster with the operator's public key.
    Verify {
        /// The signed roster file.
        signed: PathBuf,
        /// The operator's public key file.
        #[arg(long = "pub")]
        public: PathBuf,
        /// Machine-readable output: the roster's summary, as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    match &args.command {
        ClusterCommand::Keygen { dir } => keygen(dir),
        ClusterCommand::Sign { roster, key, out, json } => sign(roster, key, out.as_deref(), *json),
        ClusterCommand::Verify { signed, public, json } => verify(signed, public, *json),
        ClusterCommand::Status(a) => super::cluster_status::run(a),
        ClusterCommand::Local(a) => super::cluster_local::run(a),
    }
}

/// Creates `path` with `text`, never replacing an existing file.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (an existing key file is never overwritten)", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub(super) fn keygen(dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = ["operator.key", "operator.pub", "gossip.keys"];
    if let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        anyhow::bail!("{} exists; keygen never overwrites keys (use another directory)", existing.display());
    }
    let secret = keys::random_bytes::<32>()?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
    let gossip = Keyring::new(vec![GossipKey::new(1, keys::random_bytes::<32>()?)])?;
    write_new(
        &dir.join("operator.key"),
        &format!(
            "# shardnode operator secret key (Ed25519): signs rosters; keep it off the hosts\n{}\n",
            keys::encode_hex(&secret)
        ),
        0o600,
    )?;
    write_new(
        &dir.join("operator.pub"),
        &format!(
            "# shardnode operator public key (Ed25519): agents verify rosters with it\n{}\n",
            keys::encode_hex(&signing.verifying_key().to_bytes())
        ),
        0o644,
    )?;
    write_new(&dir.join("gossip.keys"), &gossip.to_text(), 0o600)?;
    println!("wrote {}/{{operator.key, operator.pub, gossip.keys}}", dir.display());
    Ok(exit::OK)
}

pub(super) fn sign(roster: &Path, key: &Path, out: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(roster).with_context(|| format!("reading {}", roster.display()))?;
    let signing = keys::load_signing_key(key)?;
    let signed = SignedRoster::sign(&text, &signing).with_context(|| format!("{}", roster.display()))?;
    let out = out.map_or_else(|| PathBuf::from(format!("{}.signed", roster.display())), Path::to_path_buf);
    std::fs::write(&out, &signed.bytes).with_context(|| format!("writing {}", out.display()))?;
    if json {
        println!("{}", summary(&signed, &out, "signed"));
    } else {
        println!(
            "signed {}: cluster {} epoch {}, {} hosts in {} failure domains -> {}",
            roster.display(),
            signed.roster.cluster,
            signed.roster.epoch,
            signed.roster.hosts.len(),
            signed.roster.domains().len(),
            out.display()
        );
    }
    Ok(exit::OK)
}

/// A signed roster's summary as JSON (`sign --json`, `verify --json`).
fn summary(s: &SignedRoster, file: &Path, what: &str) -> serde_json::Value {
    serde_json::json!({
        "file": file.display().to_string(),
        what: true,
        "cluster": s.roster.cluster,
        "epoch": s.roster.epoch,
        "hosts": s.roster.hosts.len(),
        "failure_domains": s.roster.domains().len(),
    })
}

fn verify(signed: &Path, public: &Path, json: bool) -> anyhow::Result<u8> {
    let key = keys::load_public_key(public)?;
    let s = SignedRoster::load(signed, &key)?;
    if json {
        println!("{}", summary(&s, signed, "valid_signature"));
    } else {
        println!(
            "{}: valid signature; cluster {} epoch {}, {} hosts in {} failure domains",
            signed.display(),
            s.roster.cluster,
            s.roster.epoch,
            s.roster.hosts.len(),
            s.roster.domains().len()
        );
    }
    Ok(exit::OK)
}
