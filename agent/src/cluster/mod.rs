//! This agent as a host of a cluster (`[cluster]` in its config): the
//! verified roster, the gossip keyring, the UDP socket and the gossip
//! state (`shardnode_cluster::gossip::Gossip`), driven by `driver`, shown
//! by `routes` (`GET /v1/cluster`, metrics) and fed by `peer` (record
//! catch-up and roster fetches over authenticated HTTP).
//!
//! Setup runs before any device is opened or formatted: a bad roster, a
//! wrong key or a busy gossip port stops the agent before it touches a
//! disk.

mod driver;
pub mod peer;
pub mod routes;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use shardnode_cluster::gossip::{lan_config, Gossip, Output};
use shardnode_cluster::keys::{self, Keyring};
use shardnode_cluster::member::{next_generation, NodeId};
use shardnode_cluster::placement::Placement;
use shardnode_cluster::roster::SignedRoster;

pub use driver::run;

use crate::config;

/// The file in the data directory holding this host's last generation.
const GENERATION_FILE: &str = "cluster-generation";
/// The file in the data directory holding the newest roster adopted at
/// run time (signed; used at the next start when newer than the
/// configured one).
const ADOPTED_ROSTER_FILE: &str = "roster.adopted";

/// Peer requests remembered for the replay check (a few MiB; far more than
/// a host answers in the 10-minute window it must cover).
const REPLAY_GUARD_ENTRIES: usize = 1 << 20;

/// This host's cluster state, shared by the driver and the HTTP routes.
pub struct Cluster {
    pub settings: config::Cluster,
    pub gossip: Mutex<Gossip>,
    /// The signed roster in use, as served to peers.
    pub roster: Mutex<SignedRoster>,
    operator_key: VerifyingKey,
    data_dir: PathBuf,
    socket: Mutex<Option<std::net::UdpSocket>>,
    pub listen: SocketAddr,
    pub started: Instant,
    /// Peer requests answered within the clock-skew window (replays are
    /// refused).
    pub replay: Mutex<shardnode_cluster::auth::ReplayGuard>,
    /// The stripe groups of the roster in use (computed once per epoch).
    placement: Mutex<Option<std::sync::Arc<Placement>>>,
    /// This host's object repair queue and throttle.
    pub repairs: crate::objects::repair::Repairer,
    /// Tokens a client must present to the object API (none: open).
    client_tokens: Mutex<Vec<String>>,
    /// Kept-alive connections to peers.
    pub connections: peer::Connections,
}

/// The client tokens of `path`: one per line (several while one is
/// rotated out), `#` comments and blank lines ignored; a file with none
/// is refused rather than leaving the object API open.
fn load_client_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the client token file", path.display()))?;
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    anyhow::ensure!(!tokens.is_empty(), "{}: the client token file holds no token", path.display());
    Ok(tokens)
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &self.settings.host_id)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the epoch (records carry it; the checks
/// compare with it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// Loads and verifies the roster and keys, binds the gossip socket and
    /// moves this host to its next generation (persisted first).
    pub fn prepare(settings: &config::Cluster, data_dir: &Path) -> anyhow::Result<Cluster> {
        let operator_key = keys::load_public_key(&settings.operator_public_key)?;
        let mut signed = SignedRoster::load(&settings.roster, &operator_key)?;
        if let Ok(adopted) = SignedRoster::load(&data_dir.join(ADOPTED_ROSTER_FILE), &operator_key) {
            if adopted.roster.cluster == signed.roster.cluster && adopted.roster.epoch > signed.roster.epoch {
                tracing::info!(
                    epoch = adopted.roster.epoch,
                    "using the roster adopted at run time (newer than the configured one)"
                );
                signed = adopted;
            }
        }
        let keyring = Keyring::load(&settings.gossip_key)?;
        let roster = signed.roster.clone();
        let me = roster.host(settings.host_id).with_context(|| {
            format!(
                "host_id {} is not on roster {:?} epoch {} ({})",
                settings.host_id,
                roster.cluster,
                roster.epoch,
                settings.roster.display()
            )
        })?;
        let client_tokens = match &settings.client_token_file {
            Some(path) => load_client_tokens(path)?,
            None => Vec::new(),
        };
        let listen = settings.gossip_listen.unwrap_or(me.gossip);
        let socket =
            std::net::UdpSocket::bind(listen).with_context(|| format!("cannot listen for gossip on {listen}"))?;
        socket.set_nonblocking(true)?;
        std::fs::create_dir_all(data_dir).with_context(|| format!("{}: cannot create", data_dir.display()))?;
        let generation = advance_generation(&data_dir.join(GENERATION_FILE))?;
        let id = NodeId { host: me.id, generation, addr: me.gossip };
        let mut swim = lan_config(roster.hosts.len());
        if let Some(ms) = settings.probe_period_ms {
            swim.probe_period = Duration::from_millis(ms.max(10));
        }
        if let Some(ms) = settings.probe_rtt_ms {
            swim.probe_rtt = Duration::from_millis(ms.max(5));
        }
        if let Some(ms) = settings.suspect_to_down_ms {
            swim.suspect_to_down_after = Duration::from_millis(ms.max(10));
        }
        anyhow::ensure!(
            swim.probe_rtt < swim.probe_period,
            "probe_rtt_ms must be shorter than probe_period_ms (SWIM waits for a direct answer within one period)"
        );
        let seed = u64::from_le_bytes(keys::random_bytes::<8>()?);
        let gossip = Gossip::new(id, roster.clone(), keyring, swim, seed, unix_ms());
        tracing::info!(
            host = me.id,
            name = %me.display_name(),
            generation,
            cluster = %roster.cluster,
            epoch = roster.epoch,
            hosts = roster.hosts.len(),
            %listen,
            "cluster member prepared"
        );
        Ok(Cluster {
            settings: settings.clone(),
            gossip: Mutex::new(gossip),
            roster: Mutex::new(signed),
            operator_key,
            data_dir: data_dir.to_owned(),
            socket: Mutex::new(Some(socket)),
            listen,
            started: Instant::now(),
            replay: Mutex::new(shardnode_cluster::auth::ReplayGuard::new(REPLAY_GUARD_ENTRIES)),
            placement: Mutex::new(None),
            repairs: crate::objects::repair::Repairer::new(settings.repair_bytes_per_second),
            client_tokens: Mutex::new(client_tokens),
            connections: peer::Connections::default(),
        })
    }

    pub fn gossip(&self) -> std::sync::MutexGuard<'_, Gossip> {
        self.gossip.lock().expect("the gossip state is never poisoned")
    }

    /// Records a new life of this host (after it was declared down and
    /// renewed), so a restart moves past it.
    fn persist_generation(&self, generation: u64) {
        if let Err(e) = write_durably(&self.data_dir.join(GENERATION_FILE), format!("{generation}\n").as_bytes()) {
            tracing::error!(error = %format!("{e:#}"), generation, "cannot record this host's generation");
        }
    }

    /// Where objects go under the roster in use; an error when the roster
    /// has no `[code]`.
    pub fn placement(&self) -> Result<std::sync::Arc<Placement>, String> {
        let roster = self.gossip().roster().clone();
        let mut cached = self.placement.lock().expect("never poisoned");
        if let Some(p) = cached.as_ref().filter(|p| p.epoch == roster.epoch) {
            return Ok(std::sync::Arc::clone(p));
        }
        let p = std::sync::Arc::new(Placement::new(&roster).map_err(|e| e.to_string())?);
        *cached = Some(std::sync::Arc::clone(&p));
        Ok(p)
    }

    /// The keyring in use (peer requests are signed and checked with it).
    pub fn keyring(&self) -> Keyring {
        self.gossip().keyring().clone()
    }

    /// Whether `given` (`Authorization: Bearer ...`) may use the object
    /// API: any configured client token, compared in constant time; open
    /// when none is configured.
    pub fn client_allowed(&self, given: Option<&str>) -> bool {
        let tokens = self.client_tokens.lock().expect("never poisoned");
        if tokens.is_empty() {
            return true;
        }
        let Some(given) = given else { return false };
        tokens.iter().fold(false, |ok, t| ok | crate::api::constant_time_eq(t.as_bytes(), given.as_bytes()))
    }

    /// Re-reads the client token file (SIGHUP): a token rotation step.
    pub fn reload_client_tokens(&self) -> anyhow::Result<()> {
        let Some(path) = &self.settings.client_token_file else { return Ok(()) };
        let tokens = load_client_tokens(path)?;
        tracing::info!(tokens = tokens.len(), "client tokens reloaded");
        *self.client_tokens.lock().expect("never poisoned") = tokens;
        Ok(())
    }

    /// Re-reads the keyring file (SIGHUP): a key rotation step.
    pub fn reload_keyring(&self) -> anyhow::Result<()> {
        let keyring = Keyring::load(&self.settings.gossip_key)?;
        let primary = keyring.primary().id;
        self.gossip().set_keyring(keyring);
        tracing::info!(primary, "gossip keyring reloaded");
        Ok(())
    }

    /// Adopts a signed roster if it verifies and is newer, and persists
    /// it; `None` if it is not newer. The output (down notices for hosts
    /// taken off) is the driver's to send.
    pub fn adopt(&self, bytes: &[u8], from: &str) -> anyhow::Result<Option<Output>> {
        let signed = SignedRoster::verify(bytes, &self.operator_key).with_context(|| format!("roster from {from}"))?;
        if signed.roster.epoch <= self.gossip().roster().epoch {
            return Ok(None);
        }
        let epoch = signed.roster.epoch;
        let out = self
            .gossip()
            .adopt_roster(signed.roster.clone(), unix_ms())
            .map_err(|e| anyhow::anyhow!("roster epoch {epoch} from {from} not adopted: {e}"))?;
        *self.roster.lock().expect("never poisoned") = signed;
        write_durably(&self.data_dir.join(ADOPTED_ROSTER_FILE), bytes)?;
        tracing::warn!(epoch, from, "adopted a newer roster");
        Ok(Some(out))
    }
}

/// Reads the last generation (0 if none), moves past it and past the wall
/// clock, and writes the new one durably before it is used.
fn advance_generation(path: &Path) -> anyhow::Result<u64> {
    let last = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().with_context(|| {
            format!("{}: not a generation number (delete it to start from the clock)", path.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let next = next_generation(last, shardnode_cluster::unix_seconds());
    write_durably(path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// Writes a small file so that after a crash it holds the old or the new
/// bytes: a temporary file, synced, renamed over, the directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_move_past_the_stored_one_and_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATION_FILE);
        let first = advance_generation(&path).unwrap();
        assert!(first >= shardnode_cluster::unix_seconds() - 1);
        let second = advance_generation(&path).unwrap();
        assert!(second > first, "{second} after {first}");
        std::fs::write(&path, format!("{}\n", first + 1_000_000)).unwrap();
        assert_eq!(advance_generation(&path).unwrap(), first + 1_000_001, "a stored life ahead of the clock");
        std::fs::write(&path, "garbage").unwrap();
        let err = advance_generation(&path).unwrap_err();
        assert!(format!("{err:#}").contains("not a generation number"), "{err:#}");
    }
}
