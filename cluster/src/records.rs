//! Health records: what each host publishes about itself, and only about
//! itself, as foca custom broadcasts.
//!
//! A record is sealed by its origin (CRC32C and a MAC under the gossip
//! key) and relayed byte for byte, so a record altered anywhere on the way
//! is refused by everyone after that point. Before a record is stored or
//! relayed its meaning is checked (free space within capacity, counts and
//! times within limits, sequence moving forward by a bounded step): a
//! record that fails is vetoed (foca is told it is not new), never applied
//! and never relayed.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SNHR"
//!      4     1  version (1)
//!      5     1  kind (1 host, 2 device)
//!      6     2  key id
//!      8     2  slot (the device slot; 0 for the host record)
//!     10     2  reserved (0)
//!     12     4  origin host id
//!     16     8  origin generation
//!     24     8  sequence (per origin life, over all its records)
//!     32     8  published, unix milliseconds
//!     40     2  body length n
//!     42     n  body (HostHealth or DeviceHealth, little-endian)
//!   42+n    16  MAC: keyed BLAKE3 over [0, 42+n)
//!   58+n     4  CRC32C over [0, 58+n)
//! ```

use std::collections::HashMap;

use serde::Serialize;

use crate::keys::{macs_equal, Keyring};

pub const MAGIC: [u8; 4] = *b"SNHR";
pub const VERSION: u8 = 1;
const HEADER_BYTES: usize = 42;
const TRAILER_BYTES: usize = 20;
/// Clock skew tolerated between hosts, milliseconds.
pub const CLOCK_SKEW_MS_MAX: u64 = 5 * 60 * 1000;
/// A record published longer ago than this is not relayed any more.
pub const RECORD_AGE_MS_MAX: u64 = 10 * 60 * 1000;
/// Largest forward step of an origin's sequence between two records a
/// host accepts (a host publishes a few dozen records a minute; this is
/// years of them).
pub const SEQUENCE_STEP_MAX: u64 = 1 << 24;
/// Limits on counts and sizes in a record.
pub const COUNT_MAX: u64 = 1 << 56;
pub const DEVICES_MAX: u16 = 4096;
pub const LATENCY_US_MAX: u32 = 3_600_000_000;
const VERSION_TEXT_BYTES_MAX: usize = 32;

/// The facts a host publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostHealth {
    /// The roster epoch the host runs with.
    pub roster_epoch: u64,
    pub uptime_s: u64,
    pub accepting_reads: bool,
    pub accepting_writes: bool,
    pub maintenance: bool,
    pub devices: u16,
    /// The agent's version.
    pub version: String,
    /// Datagrams this host rejected, by reason (`envelope::Reject::ALL`
    /// order) since it started.
    pub gossip_rejected: Vec<u64>,
}

/// A device's state as its host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Open,
    Fenced,
    Failed,
    Unavailable,
}

/// Health a device's host judges it to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceHealthState {
    Healthy,
    Suspect,
    Failing,
}

/// The facts a host publishes about one of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceHealth {
    pub state: DeviceState,
    pub health: DeviceHealthState,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub shards: u64,
    pub io_errors: u64,
    pub checksum_errors: u64,
    pub read_p50_us: u32,
    pub read_p99_us: u32,
    pub commit_p50_us: u32,
    pub commit_p99_us: u32,
    /// Age of the oldest unverified live byte, seconds (None: nothing
    /// stored).
    pub scrub_oldest_unverified_s: Option<u64>,
    pub scrub_deadline_s: u64,
    pub damaged_shards: u64,
}

/// A record's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Body {
    Host(HostHealth),
    Device { slot: u16, device: DeviceHealth },
}

impl Body {
    fn kind_and_slot(&self) -> (u8, u16) {
        match self {
            Body::Host(_) => (1, 0),
            Body::Device { slot, .. } => (2, *slot),
        }
    }
}

/// A record with its seal's header fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub origin: u32,
    pub generation: u64,
    pub sequence: u64,
    pub published_ms: u64,
    pub body: Body,
}

/// Why a record was vetoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Veto {
    /// The CRC does not match (damaged).
    Corrupt,
    /// Unknown key, or the MAC does not verify.
    Auth,
    /// Not a record of ours, or fields that cannot be decoded.
    Malformed,
    /// The origin is not on the roster (or is this host).
    UnknownOrigin,
    /// Decodes, but says something that cannot be true.
    Invalid,
    /// Not newer than what is held, or too old to relay.
    Stale,
    /// Held already, or one of this host's own records relayed back to it
    /// (not counted).
    Known,
}

impl Veto {
    pub const ALL: [Veto; 7] =
        [Veto::Corrupt, Veto::Auth, Veto::Malformed, Veto::UnknownOrigin, Veto::Invalid, Veto::Stale, Veto::Known];

    pub fn name(self) -> &'static str {
        match self {
            Veto::Corrupt => "corrupt",
            Veto::Auth => "auth",
            Veto::Malformed => "malformed",
            Veto::UnknownOrigin => "unknown_origin",
            Veto::Invalid => "invalid",
            Veto::Stale => "stale",
            Veto::Known => "known",
        }
    }
}

/// Splits records laid end to end (the catch-up answer) by their length
/// fields; `None` if the bytes do not divide into whole records. Each
/// piece is still to be opened and checked.
pub fn split(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < HEADER_BYTES || bytes[..4] != MAGIC {
            return None;
        }
        let n = HEADER_BYTES + usize::from(u16::from_le_bytes([bytes[40], bytes[41]])) + TRAILER_BYTES;
        if bytes.len() < n {
            return None;
        }
        out.push(&bytes[..n]);
        bytes = &bytes[n..];
    }
    Some(out)
}

/// Seals a record with the keyring's primary key.
pub fn seal(keyring: &Keyring, record: &Record) -> Vec<u8> {
    let key = keyring.primary();
    let (kind, slot) = record.body.kind_and_slot();
    let mut body = Vec::new();
    encode_body(&record.body, &mut body);
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + TRAILER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&key.id.to_le_bytes());
    out.extend_from_slice(&slot.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&record.origin.to_le_bytes());
    out.extend_from_slice(&record.generation.to_le_bytes());
    out.extend_from_slice(&record.sequence.to_le_bytes());
    out.extend_from_slice(&record.published_ms.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    let mac = key.mac(&[&out]);
    out.extend_from_slice(&mac);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn encode_body(body: &Body, out: &mut Vec<u8>) {
    match body {
        Body::Host(h) => {
            out.extend_from_slice(&h.roster_epoch.to_le_bytes());
            out.extend_from_slice(&h.uptime_s.to_le_bytes());
            out.push(u8::from(h.accepting_reads) | u8::from(h.accepting_writes) << 1 | u8::from(h.maintenance) << 2);
            out.extend_from_slice(&h.devices.to_le_bytes());
            let v = &h.version.as_bytes()[..h.version.len().min(VERSION_TEXT_BYTES_MAX)];
            out.push(v.len() as u8);
            out.extend_from_slice(v);
            out.push(h.gossip_rejected.len() as u8);
            for c in &h.gossip_rejected {
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        Body::Device { device: d, .. } => {
            out.push(d.state as u8);
            out.push(d.health as u8);
            for v in [d.capacity_bytes, d.free_bytes, d.used_bytes, d.shards, d.io_errors, d.checksum_errors] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [d.read_p50_us, d.read_p99_us, d.commit_p50_us, d.commit_p99_us] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&d.scrub_oldest_unverified_s.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&d.scrub_deadline_s.to_le_bytes());
            out.extend_from_slice(&d.damaged_shards.to_le_bytes());
        }
    }
}

/// A little-endian reader that fails instead of panicking.
struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Veto> {
        if self.b.len() < n {
            return Err(Veto::Malformed);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Veto> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Veto> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, Veto> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, Veto> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Checks a sealed record's integrity (CRC, key, MAC) and decodes it.
/// Meaning is checked separately (`validate`).
pub fn open(keyring: &Keyring, bytes: &[u8]) -> Result<Record, Veto> {
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(Veto::Malformed);
    }
    let crc_at = bytes.len() - 4;
    if crc32c::crc32c(&bytes[..crc_at]) != u32::from_le_bytes(bytes[crc_at..].try_into().expect("4")) {
        return Err(Veto::Corrupt);
    }
    let mut r = Reader { b: bytes };
    if r.take(4)? != MAGIC || r.u8()? != VERSION {
        return Err(Veto::Malformed);
    }
    let kind = r.u8()?;
    let key_id = r.u16()?;
    let slot = r.u16()?;
    let _reserved = r.u16()?;
    let origin = r.u32()?;
    let generation = r.u64()?;
    let sequence = r.u64()?;
    let published_ms = r.u64()?;
    let n = r.u16()? as usize;
    if bytes.len() != HEADER_BYTES + n + TRAILER_BYTES {
        return Err(Veto::Malformed);
    }
    let key = keyring.get(key_id).ok_or(Veto::Auth)?;
    let mac: [u8; 16] = bytes[HEADER_BYTES + n..HEADER_BYTES + n + 16].try_into().expect("16");
    if !macs_equal(&key.mac(&[&bytes[..HEADER_BYTES + n]]), &mac) {
        return Err(Veto::Auth);
    }
    let mut r = Reader { b: &bytes[HEADER_BYTES..HEADER_BYTES + n] };
    let body = match kind {
        1 => {
            let roster_epoch = r.u64()?;
            let uptime_s = r.u64()?;
            let flags = r.u8()?;
            if flags & !0b111 != 0 || slot != 0 {
                return Err(Veto::Malformed);
            }
            let devices = r.u16()?;
            let len = r.u8()? as usize;
            if len > VERSION_TEXT_BYTES_MAX {
                return Err(Veto::Malformed);
            }
            let version = std::str::from_utf8(r.take(len)?).map_err(|_| Veto::Malformed)?.to_string();
            let count = r.u8()? as usize;
            let gossip_rejected = (0..count).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            Body::Host(HostHealth {
                roster_epoch,
                uptime_s,
                accepting_reads: flags & 1 != 0,
                accepting_writes: flags & 2 != 0,
                maintenance: flags & 4 != 0,
                devices,
                version,
                gossip_rejected,
            })
        }
        2 => {
            let state = match r.u8()? {
                0 => DeviceState::Open,
                1 => DeviceState::Fenced,
                2 => DeviceState::Failed,
                3 => DeviceState::Unavailable,
                _ => return Err(Veto::Malformed),
            };
            let health = match r.u8()? {
                0 => DeviceHealthState::Healthy,
                1 => DeviceHealthState::Suspect,
                2 => DeviceHealthState::Failing,
                _ => return Err(Veto::Malformed),
            };
            let device = DeviceHealth {
                state,
                health,
                capacity_bytes: r.u64()?,
                free_bytes: r.u64()?,
                used_bytes: r.u64()?,
                shards: r.u64()?,
                io_errors: r.u64()?,
                checksum_errors: r.u64()?,
                read_p50_us: r.u32()?,
                read_p99_us: r.u32()?,
                commit_p50_us: r.u32()?,
                commit_p99_us: r.u32()?,
                scrub_oldest_unverified_s: Some(r.u64()?).filter(|v| *v != u64::MAX),
                scrub_deadline_s: r.u64()?,
                damaged_shards: r.u64()?,
            };
            Body::Device { slot, device }
        }
        _ => return Err(Veto::Malformed),
    };
    if !r.b.is_empty() {
        return Err(Veto::Malformed);
    }
    Ok(Record { origin, generation, sequence, published_ms, body })
}

/// Checks what a record says against what can be true, at the receiver's
/// `now_ms`.
pub fn validate(record: &Record, now_ms: u64) -> Result<(), Veto> {
    let ok = |cond: bool| if cond { Ok(()) } else { Err(Veto::Invalid) };
    ok(record.sequence > 0)?;
    ok(record.published_ms <= now_ms + CLOCK_SKEW_MS_MAX)?;
    ok(record.generation <= (now_ms / 1000) + crate::envelope::GENERATION_AHEAD_SECONDS_MAX)?;
    match &record.body {
        Body::Host(h) => {
            ok(h.roster_epoch > 0)?;
            ok(h.uptime_s < COUNT_MAX)?;
            ok(h.devices <= DEVICES_MAX)?;
            ok(h.version.bytes().all(|b| b.is_ascii_graphic()))?;
            ok(h.gossip_rejected.len() <= 32 && h.gossip_rejected.iter().all(|c| *c < COUNT_MAX))?;
        }
        Body::Device { slot, device: d } => {
            ok(*slot < DEVICES_MAX)?;
            ok(d.capacity_bytes < COUNT_MAX)?;
            ok(d.free_bytes <= d.capacity_bytes && d.used_bytes <= d.capacity_bytes)?;
            ok([d.shards, d.io_errors, d.checksum_errors, d.damaged_shards].iter().all(|c| *c < COUNT_MAX))?;
            ok(d.damaged_shards <= d.shards)?;
            ok(d.read_p50_us <= d.read_p99_us && d.commit_p50_us <= d.commit_p99_us)?;
            ok(d.read_p99_us <= LATENCY_US_MAX && d.commit_p99_us <= LATENCY_US_MAX)?;
            ok(d.scrub_oldest_unverified_s.is_none_or(|s| s < COUNT_MAX))?;
            ok(d.scrub_deadline_s >= 60 && d.scrub_deadline_s < COUNT_MAX)?;
        }
    }
    Ok(())
}

/// What a record replaces: the same origin's record of the same kind and
/// slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub origin: u32,
    pub kind: u8,
    pub slot: u16,
}

/// foca's key for a custom broadcast: a record's slot and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    pub slot: Slot,
    pub generation: u64,
    pub sequence: u64,
}

impl foca::Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.slot == other.slot && (self.generation, self.sequence) >= (other.generation, other.sequence)
    }
}

/// A record held, as received.
#[derive(Debug, Clone)]
pub struct Held {
    pub record: Record,
    pub bytes: Vec<u8>,
    /// When this host received it, unix ms.
    pub received_ms: u64,
}

/// Every host's latest records, as this host holds them.
#[derive(Debug)]
pub struct RecordBook {
    keyring: Keyring,
    me: u32,
    on_roster: std::collections::BTreeSet<u32>,
    held: HashMap<Slot, Held>,
    /// The newest (generation, sequence) seen from each origin.
    newest: HashMap<u32, (u64, u64)>,
    /// The receiver's clock for the checks (set before foca is called).
    pub now_ms: u64,
    pub accepted: u64,
    pub vetoed: [u64; Veto::ALL.len()],
}

impl RecordBook {
    pub fn new(keyring: Keyring, me: u32, on_roster: impl IntoIterator<Item = u32>) -> RecordBook {
        RecordBook {
            keyring,
            me,
            on_roster: on_roster.into_iter().collect(),
            held: HashMap::new(),
            newest: HashMap::new(),
            now_ms: 0,
            accepted: 0,
            vetoed: [0; Veto::ALL.len()],
        }
    }

    pub fn set_roster(&mut self, hosts: impl IntoIterator<Item = u32>) {
        self.on_roster = hosts.into_iter().collect();
        self.held.retain(|s, _| self.on_roster.contains(&s.origin));
    }

    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// Every record held from `origin`.
    pub fn of(&self, origin: u32) -> impl Iterator<Item = &Held> {
        self.held.iter().filter(move |(s, _)| s.origin == origin).map(|(_, h)| h)
    }

    pub fn all(&self) -> impl Iterator<Item = &Held> {
        self.held.values()
    }

    /// Checks a record's seal, origin, freshness and meaning and stores it
    /// if it is newer than what is held; the veto otherwise. `own`: a
    /// record this host publishes (its origin must be this host).
    pub fn receive(&mut self, bytes: &[u8], own: bool) -> Result<RecordKey, Veto> {
        let result = self.check(bytes, own);
        match result {
            Ok(_) => self.accepted += u64::from(!own),
            // Records already held, and this host's own coming back from
            // peers, arrive as a matter of course: not worth counting.
            Err(Veto::Known) => {}
            Err(v) => self.vetoed[v as usize] += 1,
        }
        result
    }

    fn check(&mut self, bytes: &[u8], own: bool) -> Result<RecordKey, Veto> {
        let record = open(&self.keyring, bytes)?;
        if record.origin == self.me && !own {
            return Err(Veto::Known);
        }
        if (record.origin == self.me) != own || !self.on_roster.contains(&record.origin) {
            return Err(Veto::UnknownOrigin);
        }
        validate(&record, self.now_ms)?;
        if record.published_ms + RECORD_AGE_MS_MAX < self.now_ms {
            return Err(Veto::Stale);
        }
        let (kind, slot) = record.body.kind_and_slot();
        let slot = Slot { origin: record.origin, kind, slot };
        let version = (record.generation, record.sequence);
        if let Some(&(generation, sequence)) = self.newest.get(&record.origin) {
            if record.generation < generation {
                return Err(Veto::Stale);
            }
            if record.generation == generation && record.sequence > sequence + SEQUENCE_STEP_MAX {
                return Err(Veto::Invalid);
            }
        }
        if let Some(held) = self.held.get(&slot) {
            let held_version = (held.record.generation, held.record.sequence);
            if version == held_version {
                // An origin never seals two records with one sequence.
                return Err(if held.bytes == bytes { Veto::Known } else { Veto::Invalid });
            }
            if version < held_version {
                return Err(Veto::Stale);
            }
        }
        let newest = self.newest.entry(record.origin).or_insert(version);
        *newest = (*newest).max(version);
        let key = RecordKey { slot, generation: record.generation, sequence: record.sequence };
        self.held.insert(slot, Held { record, bytes: bytes.to_vec(), received_ms: self.now_ms });
        Ok(key)
    }
}

/// foca's broadcast handler: the record book, shared with the host's
/// gossip state (foca gives no access to its handler).
#[derive(Debug, Clone)]
pub struct RecordStore(pub std::sync::Arc<std::sync::Mutex<RecordBook>>);

/// The veto, as foca needs an error type it never sees (every failure is a
/// veto, `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("never raised")]
pub struct Never;

impl<T> foca::BroadcastHandler<T> for RecordStore {
    type Key = RecordKey;
    type Error = Never;

    /// `sender` is `None` for a record this host adds itself.
    fn receive_item(&mut self, data: &[u8], sender: Option<&T>) -> Result<Option<RecordKey>, Never> {
        let mut book = self.0.lock().expect("the record book is never poisoned");
        Ok(book.receive(data, sender.is_none()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GossipKey;

    const NOW: u64 = 1_800_000_000_000;

    fn ring() -> Keyring {
        Keyring::new(vec![GossipKey::new(1, [4; 32])]).unwrap()
    }

    pub(crate) fn device(free: u64) -> DeviceHealth {
        DeviceHealth {
            state: DeviceState::Open,
            health: DeviceHealthState::Healthy,
            capacity_bytes: 1 << 40,
            free_bytes: free,
            used_bytes: 1 << 30,
            shards: 1000,
            io_errors: 0,
            checksum_errors: 1,
            read_p50_us: 100,
            read_p99_us: 900,
            commit_p50_us: 200,
            commit_p99_us: 2000,
            scrub_oldest_unverified_s: Some(3600),
            scrub_deadline_s: 14 * 86400,
            damaged_shards: 0,
        }
    }

    fn record(seq: u64, body: Body) -> Record {
        Record { origin: 2, generation: NOW / 1000 - 100, sequence: seq, published_ms: NOW - 10, body }
    }

    fn store() -> Book {
        let mut s = RecordBook::new(ring(), 1, [1, 2, 3]);
        s.now_ms = NOW;
        Book(s)
    }

    /// The book, receiving as from a peer.
    struct Book(RecordBook);

    impl Book {
        fn receive(&mut self, bytes: &[u8]) -> Result<RecordKey, Veto> {
            self.0.receive(bytes, false)
        }
        fn of(&self, origin: u32) -> impl Iterator<Item = &Held> {
            self.0.of(origin)
        }
    }

    #[test]
    fn records_round_trip_and_newer_replaces_older() {
        let host = Body::Host(HostHealth {
            roster_epoch: 3,
            uptime_s: 99,
            accepting_reads: true,
            accepting_writes: false,
            maintenance: true,
            devices: 3,
            version: "0.1.0".into(),
            gossip_rejected: vec![1, 2, 3],
        });
        let mut s = store();
        for (seq, body) in [(1, host.clone()), (2, Body::Device { slot: 4, device: device(5) })] {
            let r = record(seq, body);
            let bytes = seal(&ring(), &r);
            assert_eq!(open(&ring(), &bytes).unwrap(), r);
            s.receive(&bytes).unwrap();
            assert_eq!(s.receive(&bytes), Err(Veto::Known), "the same record twice");
        }
        s.receive(&seal(&ring(), &record(3, Body::Device { slot: 4, device: device(6) }))).unwrap();
        assert_eq!(
            s.receive(&seal(&ring(), &record(2, Body::Device { slot: 4, device: device(7) }))),
            Err(Veto::Stale)
        );
        assert_eq!(s.of(2).count(), 2);
    }

    #[test]
    fn every_bit_flip_in_a_record_is_vetoed() {
        let bytes = seal(&ring(), &record(1, Body::Device { slot: 0, device: device(5) }));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(store().receive(&bad), Err(Veto::Corrupt), "bit {bit}");
        }
        // A record re-sealed under the right CRC but another key: auth.
        let other = Keyring::new(vec![GossipKey::new(1, [5; 32])]).unwrap();
        let forged = seal(&other, &record(1, Body::Device { slot: 0, device: device(5) }));
        assert_eq!(store().receive(&forged), Err(Veto::Auth));
    }

    #[test]
    fn records_that_cannot_be_true_are_vetoed() {
        let mut lies = vec![];
        let mut d = device(5);
        d.free_bytes = d.capacity_bytes + 1;
        lies.push(record(1, Body::Device { slot: 0, device: d }));
        let mut d = device(5);
        d.read_p50_us = d.read_p99_us + 1;
        lies.push(record(1, Body::Device { slot: 0, device: d }));
        let mut d = device(5);
        d.damaged_shards = d.shards + 1;
        lies.push(record(1, Body::Device { slot: 0, device: d }));
        let mut future = record(1, Body::Device { slot: 0, device: device(5) });
        future.published_ms = NOW + CLOCK_SKEW_MS_MAX + 1;
        lies.push(future);
        for r in lies {
            assert_eq!(store().receive(&seal(&ring(), &r)), Err(Veto::Invalid), "{r:?}");
        }
        let mut old = record(1, Body::Device { slot: 0, device: device(5) });
        old.published_ms = NOW - RECORD_AGE_MS_MAX - 1;
        assert_eq!(store().receive(&seal(&ring(), &old)), Err(Veto::Stale));
        let mut stranger = record(1, Body::Device { slot: 0, device: device(5) });
        stranger.origin = 9;
        assert_eq!(store().receive(&seal(&ring(), &stranger)), Err(Veto::UnknownOrigin));
        let mut mine = record(1, Body::Device { slot: 0, device: device(5) });
        mine.origin = 1;
        assert_eq!(store().receive(&seal(&ring(), &mine)), Err(Veto::Known));
        // A sequence leap beyond the bound.
        let mut s = store();
        s.receive(&seal(&ring(), &record(1, Body::Device { slot: 0, device: device(5) }))).unwrap();
        let leap = record(2 + SEQUENCE_STEP_MAX, Body::Device { slot: 1, device: device(5) });
        assert_eq!(s.receive(&seal(&ring(), &leap)), Err(Veto::Invalid));
    }
}
