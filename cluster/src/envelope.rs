//! The gossip envelope: every datagram is checked in full before a single
//! byte of it reaches foca (foca applies member updates before it decodes
//! custom broadcasts, so a damaged datagram could be half applied).
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SNGS"
//!      4     1  version (1)
//!      5     1  flags (0)
//!      6     2  key id (which keyring key made the MAC)
//!      8     8  cluster id (roster::cluster_id of the cluster name)
//!     16     4  sender host id
//!     20     8  sender generation
//!     28     8  datagram sequence (per sender life, from 1)
//!     36     2  payload length n
//!     38     n  payload (a foca message)
//!   38+n    16  MAC: keyed BLAKE3 under the key, over bytes [0, 38+n)
//!   54+n     4  CRC32C over bytes [0, 54+n)
//! ```
//!
//! Checks, in this order: length, magic and version, key id, MAC
//! (constant time), CRC, cluster id, sender on the roster, generation (not
//! below the last seen for that host, not beyond now + a bound), sequence
//! not seen before (a window per sender). Any failure drops the whole
//! datagram and is counted by reason. The CRC, unlike the MAC, is also
//! computed over the MAC, so any damage in transit shows as `corrupt`
//! wherever it lands, and a datagram whose MAC fails with an intact CRC is
//! `auth` (a wrong key, or a forgery): the two call for different
//! operators.

use std::collections::HashMap;

use crate::keys::{macs_equal, Keyring};

pub const MAGIC: [u8; 4] = *b"SNGS";
pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 38;
pub const TRAILER_BYTES: usize = 16 + 4;
/// Largest datagram sent or accepted (fits an Ethernet MTU with IP/UDP).
pub const DATAGRAM_BYTES_MAX: usize = 1452;
/// Largest foca payload in a datagram.
pub const PAYLOAD_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - HEADER_BYTES - TRAILER_BYTES;
/// A generation further than this ahead of the receiver's clock (seconds)
/// is not believed: generations are wall-clock seconds, or one more than
/// the last after fast restarts.
pub const GENERATION_AHEAD_SECONDS_MAX: u64 = 24 * 3600;
/// Sequences behind the highest seen from a sender that are still
/// accepted once (reordering); older ones are refused as replays.
pub const REPLAY_WINDOW: u64 = 1024;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Shorter than an envelope, or its length field disagrees.
    Malformed,
    /// Damaged in transit: the CRC does not match.
    Corrupt,
    /// Not our magic or version.
    Foreign,
    /// A key id this host does not hold.
    UnknownKey,
    /// The MAC does not verify (and the CRC does): wrong key or forgery.
    Auth,
    /// Another cluster's datagram.
    WrongCluster,
    /// The sender is not on the roster.
    UnknownSender,
    /// An older life of the sender, or a generation too far ahead.
    StaleGeneration,
    /// A sequence already seen (or too old to tell).
    Replay,
    /// The payload is not a SWIM message from the sender it claims.
    Spoofed,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::Malformed,
        Reject::Corrupt,
        Reject::Foreign,
        Reject::UnknownKey,
        Reject::Auth,
        Reject::WrongCluster,
        Reject::UnknownSender,
        Reject::StaleGeneration,
        Reject::Replay,
        Reject::Spoofed,
    ];

    /// The reason label in metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Corrupt => "corrupt",
            Reject::Foreign => "foreign",
            Reject::UnknownKey => "unknown_key",
            Reject::Auth => "auth",
            Reject::WrongCluster => "wrong_cluster",
            Reject::UnknownSender => "unknown_sender",
            Reject::StaleGeneration => "stale_generation",
            Reject::Replay => "replay",
            Reject::Spoofed => "spoofed",
        }
    }

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

/// What an envelope says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub host: u32,
    pub generation: u64,
    pub sequence: u64,
}

/// Seals a payload into a datagram.
pub fn seal(keyring: &Keyring, cluster_id: u64, sender: Sender, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= PAYLOAD_BYTES_MAX, "foca's packet size is configured below the envelope's room");
    let key = keyring.primary();
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + TRAILER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&key.id.to_le_bytes());
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&sender.host.to_le_bytes());
    out.extend_from_slice(&sender.generation.to_le_bytes());
    out.extend_from_slice(&sender.sequence.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
    let mac = key.mac(&[&out]);
    out.extend_from_slice(&mac);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A sender's replay window: the highest sequence seen in its current
/// life and which of the `REPLAY_WINDOW` before it were seen.
#[derive(Debug, Clone)]
struct Window {
    generation: u64,
    highest: u64,
    seen: Vec<u64>,
}

impl Window {
    fn new(generation: u64) -> Window {
        Window { generation, highest: 0, seen: vec![0; (REPLAY_WINDOW / 64) as usize] }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % REPLAY_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    /// Whether `seq` is new; does not record it.
    fn is_new(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        if self.highest - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Window::bit(seq);
        self.seen[w] & b == 0
    }

    fn record(&mut self, seq: u64) {
        if seq > self.highest {
            // Clear the slots that leave the window.
            let advance = seq - self.highest;
            if advance >= REPLAY_WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.highest + 1..=seq {
                    let (w, b) = Window::bit(s);
                    self.seen[w] &= !b;
                }
            }
            self.highest = seq;
        }
        let (w, b) = Window::bit(seq);
        self.seen[w] |= b;
    }
}

/// The receiving side: the keys, who may send, and what each sender sent.
#[derive(Debug)]
pub struct Opener {
    pub keyring: Keyring,
    pub cluster_id: u64,
    windows: HashMap<u32, Window>,
}

impl Opener {
    pub fn new(keyring: Keyring, cluster_id: u64) -> Opener {
        Opener { keyring, cluster_id, windows: HashMap::new() }
    }

    /// The generation last accepted from a host.
    pub fn generation_of(&self, host: u32) -> Option<u64> {
        self.windows.get(&host).map(|w| w.generation)
    }

    /// Checks a datagram; on success returns its sender and payload and
    /// records its sequence. `on_roster` says whether a host id may send;
    /// `now_seconds` bounds generations.
    pub fn open<'a>(
        &mut self,
        datagram: &'a [u8],
        on_roster: impl Fn(u32) -> bool,
        now_seconds: u64,
    ) -> Result<(Sender, &'a [u8]), Reject> {
        let d = datagram;
        // Damage in transit is named as such whichever check it trips.
        let crc_ok = || d.len() >= 4 && crc32c::crc32c(&d[..d.len() - 4]) == le_u32(d, d.len() - 4);
        let refuse = |why: Reject| if crc_ok() { why } else { Reject::Corrupt };
        if d.len() < HEADER_BYTES + TRAILER_BYTES || d.len() > DATAGRAM_BYTES_MAX {
            return Err(refuse(Reject::Malformed));
        }
        let n = le_u16(d, 36) as usize;
        if d.len() != HEADER_BYTES + n + TRAILER_BYTES {
            return Err(refuse(Reject::Malformed));
        }
        if d[0..4] != MAGIC || d[4] != VERSION || d[5] != 0 {
            return Err(refuse(Reject::Foreign));
        }
        let Some(key) = self.keyring.get(le_u16(d, 6)) else {
            return Err(refuse(Reject::UnknownKey));
        };
        let body = &d[..HEADER_BYTES + n];
        let mac: [u8; 16] = d[HEADER_BYTES + n..HEADER_BYTES + n + 16].try_into().expect("16 bytes");
        if !macs_equal(&key.mac(&[body]), &mac) {
            return Err(refuse(Reject::Auth));
        }
        if !crc_ok() {
            // The MAC verified but the CRC did not: the sender's own
            // memory or NIC damaged it after sealing.
            return Err(Reject::Corrupt);
        }
        if le_u64(d, 8) != self.cluster_id {
            return Err(Reject::WrongCluster);
        }
        let sender = Sender { host: le_u32(d, 16), generation: le_u64(d, 20), sequence: le_u64(d, 28) };
        if !on_roster(sender.host) {
            return Err(Reject::UnknownSender);
        }
        if sender.generation > now_seconds + GENERATION_AHEAD_SECONDS_MAX {
            return Err(Reject::StaleGeneration);
        }
        match self.windows.get(&sender.host) {
            Some(w) if sender.generation < w.generation => return Err(Reject::StaleGeneration),
            Some(w) if sender.generation == w.generation && !w.is_new(sender.sequence) => {
                return Err(Reject::Replay);
            }
            _ => {}
        }
        if sender.sequence == 0 {
            return Err(Reject::Replay);
        }
        let w = self.windows.entry(sender.host).or_insert_with(|| Window::new(sender.generation));
        if sender.generation > w.generation {
            *w = Window::new(sender.generation);
        }
        w.record(sender.sequence);
        Ok((sender, &d[HEADER_BYTES..HEADER_BYTES + n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GossipKey;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(vec![GossipKey::new(1, [byte; 32])]).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    fn sender(seq: u64) -> Sender {
        Sender { host: 7, generation: NOW - 10, sequence: seq }
    }

    #[test]
    fn a_sealed_datagram_opens_once() {
        let mut opener = Opener::new(ring(1), 42);
        let d = seal(&ring(1), 42, sender(1), b"payload");
        let (s, p) = opener.open(&d, |h| h == 7, NOW).unwrap();
        assert_eq!((s, p), (sender(1), &b"payload"[..]));
        assert_eq!(opener.open(&d, |h| h == 7, NOW), Err(Reject::Replay));
    }

    #[test]
    fn every_single_bit_flip_is_rejected_as_corrupt() {
        let d = seal(&ring(1), 42, sender(1), b"some swim message bytes");
        for bit in 0..d.len() * 8 {
            let mut opener = Opener::new(ring(1), 42);
            let mut bad = d.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(opener.open(&bad, |h| h == 7, NOW), Err(Reject::Corrupt), "bit {bit}");
        }
        for cut in 0..d.len() {
            let mut opener = Opener::new(ring(1), 42);
            assert!(opener.open(&d[..cut], |h| h == 7, NOW).is_err(), "cut to {cut}");
        }
    }

    #[test]
    fn each_check_has_its_reason() {
        let check = |d: Vec<u8>, opener: &mut Opener| opener.open(&d, |h| h == 7, NOW).map(|_| ());
        // A wrong key, with an intact CRC: auth, not corrupt.
        assert_eq!(check(seal(&ring(2), 42, sender(1), b"x"), &mut Opener::new(ring(1), 42)), Err(Reject::Auth));
        let other_id = Keyring::new(vec![GossipKey::new(9, [1; 32])]).unwrap();
        assert_eq!(check(seal(&other_id, 42, sender(1), b"x"), &mut Opener::new(ring(1), 42)), Err(Reject::UnknownKey));
        assert_eq!(
            check(seal(&ring(1), 43, sender(1), b"x"), &mut Opener::new(ring(1), 42)),
            Err(Reject::WrongCluster)
        );
        let stranger = Sender { host: 8, ..sender(1) };
        assert_eq!(
            check(seal(&ring(1), 42, stranger, b"x"), &mut Opener::new(ring(1), 42)),
            Err(Reject::UnknownSender)
        );
        let future = Sender { generation: NOW + GENERATION_AHEAD_SECONDS_MAX + 1, ..sender(1) };
        assert_eq!(
            check(seal(&ring(1), 42, future, b"x"), &mut Opener::new(ring(1), 42)),
            Err(Reject::StaleGeneration)
        );
        // An older life after a newer one was heard.
        let mut opener = Opener::new(ring(1), 42);
        let newer = Sender { generation: NOW, ..sender(1) };
        check(seal(&ring(1), 42, newer, b"x"), &mut opener).unwrap();
        assert_eq!(check(seal(&ring(1), 42, sender(5), b"x"), &mut opener), Err(Reject::StaleGeneration));
        // A rotated keyring: the old key still accepted, the new one seals.
        let rotated = Keyring::new(vec![GossipKey::new(2, [3; 32]), GossipKey::new(1, [1; 32])]).unwrap();
        let mut opener = Opener::new(rotated.clone(), 42);
        check(seal(&ring(1), 42, sender(1), b"x"), &mut opener).unwrap();
        check(seal(&rotated, 42, sender(2), b"x"), &mut opener).unwrap();
    }

    #[test]
    fn the_replay_window_accepts_reordering_and_refuses_repeats() {
        let mut opener = Opener::new(ring(1), 42);
        let mut open = |seq| opener.open(&seal(&ring(1), 42, sender(seq), b"x"), |_| true, NOW).map(|_| ());
        open(10).unwrap();
        open(5).unwrap(); // late but new
        assert_eq!(open(5), Err(Reject::Replay));
        assert_eq!(open(10), Err(Reject::Replay));
        open(10 + REPLAY_WINDOW + 5).unwrap();
        assert_eq!(open(10), Err(Reject::Replay)); // fell out of the window: refused
        open(10 + REPLAY_WINDOW).unwrap(); // inside the window, never seen
        assert_eq!(open(0), Err(Reject::Replay));
    }
}
