//! Key material: the operator's Ed25519 key pair (signs rosters) and the
//! cluster's gossip keyring (MACs every datagram and every health record).
//!
//! Files, all text, one value per line, `#` starts a comment:
//! - `operator.key`: the 32-byte Ed25519 secret key in hex (mode 0600; it
//!   stays with the operator, never on the hosts);
//! - `operator.pub`: the 32-byte public key in hex (on every host);
//! - `gossip.keys`: lines `<key id> <32-byte key in hex>`; the first line
//!   is the primary key (what this host seals with), every line is
//!   accepted. Rotation: add the new key as a second line everywhere, then
//!   make it the first everywhere, then drop the old one.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::Error;

/// Length of a gossip key, bytes.
pub const GOSSIP_KEY_BYTES: usize = 32;
/// Keys a keyring holds at most.
pub const KEYRING_KEYS_MAX: usize = 8;

/// One gossip key: keyed BLAKE3 under it is the MAC.
#[derive(Clone)]
pub struct GossipKey {
    pub id: u16,
    key: [u8; GOSSIP_KEY_BYTES],
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes: debug output ends up in logs.
        f.debug_struct("GossipKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl GossipKey {
    pub fn new(id: u16, key: [u8; GOSSIP_KEY_BYTES]) -> GossipKey {
        GossipKey { id, key }
    }

    /// The 128-bit MAC of `parts` (concatenated) under this key.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            h.update(p);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }
}

/// The keys a host accepts, the first of which it seals with.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<GossipKey>,
}

impl Keyring {
    pub fn new(keys: Vec<GossipKey>) -> Result<Keyring, Error> {
        if keys.is_empty() {
            return Err(Error::Keys("a keyring needs at least one key".into()));
        }
        if keys.len() > KEYRING_KEYS_MAX {
            return Err(Error::Keys(format!("{} keys; a keyring holds at most {KEYRING_KEYS_MAX}", keys.len())));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(Error::Keys(format!("key id {} appears twice", k.id)));
            }
        }
        Ok(Keyring { keys })
    }

    /// The key this host seals with.
    pub fn primary(&self) -> &GossipKey {
        &self.keys[0]
    }

    pub fn get(&self, id: u16) -> Option<&GossipKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Parses a `gossip.keys` file's text.
    pub fn parse(text: &str) -> Result<Keyring, Error> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| Error::Keys(format!("gossip key file line {}: {why}", n + 1));
            let mut words = line.split_whitespace();
            let (Some(id), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected `<key id> <64 hex digits>`"));
            };
            let id: u16 = id.parse().map_err(|_| bad(&format!("key id {id:?} is not a number from 0 to 65535")))?;
            let key = decode_hex::<GOSSIP_KEY_BYTES>(hex).map_err(|e| bad(&e))?;
            keys.push(GossipKey::new(id, key));
        }
        Keyring::new(keys)
    }

    pub fn load(path: &Path) -> Result<Keyring, Error> {
        let text = read_text(path)?;
        Keyring::parse(&text).map_err(|e| Error::Keys(format!("{}: {e}", path.display())))
    }

    /// The file text for these keys (primary first).
    pub fn to_text(&self) -> String {
        let mut s =
            String::from("# shardnode gossip keyring: <key id> <key>; the first key seals, every key is accepted\n");
        for k in &self.keys {
            s.push_str(&k.id.to_string());
            s.push(' ');
            s.push_str(&encode_hex(&k.key));
            s.push('\n');
        }
        s
    }
}

/// Reads an operator's public key file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, Error> {
    let text = read_text(path)?;
    let bytes = decode_hex::<32>(first_value(&text))
        .map_err(|e| Error::Keys(format!("{}: operator public key: {e}", path.display())))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| Error::Keys(format!("{}: not an Ed25519 public key: {e}", path.display())))
}

/// Reads an operator's secret key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = read_text(path)?;
    let bytes = decode_hex::<32>(first_value(&text))
        .map_err(|e| Error::Keys(format!("{}: operator secret key: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// `n` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .map_err(|e| Error::Keys(format!("reading /dev/urandom: {e}")))?;
    Ok(out)
}

fn first_value(text: &str) -> &str {
    text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).find(|l| !l.is_empty()).unwrap_or("")
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Keys(format!("reading {}: {e}", path.display())))
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[(b >> 4) as usize] as char, DIGITS[(b & 15) as usize] as char]).collect()
}

pub fn decode_hex<const N: usize>(hex: &str) -> Result<[u8; N], String> {
    if hex.len() != 2 * N {
        return Err(format!("expected {} hex digits, found {}", 2 * N, hex.len()));
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| format!("{text:?} is not a hex byte"))?;
    }
    Ok(out)
}

/// Compares two MACs in time independent of where they differ.
pub fn macs_equal(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_files_round_trip_and_bad_lines_are_named() {
        let ring = Keyring::new(vec![GossipKey::new(2, [7; 32]), GossipKey::new(1, [9; 32])]).unwrap();
        let back = Keyring::parse(&ring.to_text()).unwrap();
        assert_eq!(back.primary().id, 2);
        assert!(back.get(1).is_some() && back.get(3).is_none());
        assert_eq!(back.get(1).unwrap().mac(&[b"x"]), ring.get(1).unwrap().mac(&[b"x"]));
        let err = Keyring::parse("1 abcd\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("64 hex digits"), "{err}");
        let err = Keyring::parse(&format!("1 {}\n1 {}\n", "00".repeat(32), "11".repeat(32))).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(Keyring::parse("# only a comment\n").is_err());
    }

    #[test]
    fn macs_differ_by_key_and_by_message() {
        let (a, b) = (GossipKey::new(1, [1; 32]), GossipKey::new(1, [2; 32]));
        assert_ne!(a.mac(&[b"hello"]), b.mac(&[b"hello"]));
        assert_ne!(a.mac(&[b"hello"]), a.mac(&[b"hellp"]));
        assert_eq!(a.mac(&[b"he", b"llo"]), a.mac(&[b"hello"]));
        assert!(macs_equal(&a.mac(&[b"x"]), &a.mac(&[b"x"])));
        assert!(!macs_equal(&a.mac(&[b"x"]), &a.mac(&[b"y"])));
    }
}
