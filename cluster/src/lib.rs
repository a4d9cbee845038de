//! shardnode's cluster layer: who is in the cluster (the operator's signed
//! roster), who is alive (SWIM, by foca, driven sans-IO), and what each
//! host says about itself (sealed health records). Every datagram is
//! checked in full before foca sees it (`envelope`); every record is
//! checked for integrity and for meaning before it is stored or relayed
//! (`records`). `sim` runs many hosts in one thread on a virtual clock with
//! seeded network faults. See docs/cluster.md.

pub mod auth;
pub mod ec;
pub mod envelope;
pub mod gossip;
pub mod keys;
pub mod manifest;
pub mod member;
pub mod placement;
pub mod records;
pub mod roster;
pub mod sim;

/// Errors of the cluster layer's files and settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("keys: {0}")]
    Keys(String),
    #[error("roster: {0}")]
    Roster(String),
}

/// Wall-clock seconds since the epoch.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
