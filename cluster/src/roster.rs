//! The roster: the operator's signed map of the cluster (docs/cluster.md,
//! "The roster file").
//!
//! A roster is a TOML document; the signed file is that document followed
//! by one trailer line, `# shardnode-roster-signature ed25519 <hex>`, whose
//! signature covers every byte before the line. The signed file is still a
//! valid TOML roster (the trailer is a comment), and nothing is
//! canonicalised: what was signed is exactly what is read.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::{decode_hex, encode_hex};
use crate::Error;

/// The trailer line's prefix.
pub const SIGNATURE_PREFIX: &str = "# shardnode-roster-signature ed25519 ";
/// Hosts a roster lists at most.
pub const HOSTS_MAX: usize = 4096;
/// Longest cluster name, failure domain or host name, bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterHost {
    /// Stable number of the host (1..2^32-1), never reused for another.
    pub id: u32,
    /// A name for people (defaults to `h<id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// UDP address its gossip listens on.
    pub gossip: SocketAddr,
    /// Address of its HTTP API.
    pub http: SocketAddr,
    /// Failure domain (rack, room, ...): no two shards of a stripe share one.
    pub domain: String,
    /// Capacity weight for placement (> 0).
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

impl RosterHost {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("h{}", self.id))
    }
}

/// The cluster map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    /// The cluster's name; its 64-bit id (`cluster_id`) is in every
    /// datagram.
    pub cluster: String,
    /// Version of this map: an agent adopts a validly signed roster only
    /// with a higher epoch than its own.
    pub epoch: u64,
    /// The erasure code objects are stored with (issue 13); a roster
    /// without one carries membership and health only.
    #[serde(default)]
    pub code: Option<Code>,
    #[serde(rename = "host", default)]
    pub hosts: Vec<RosterHost>,
}

/// Most data shards, and parity shards, a code may have.
pub const DATA_SHARDS_MAX: u8 = 32;
pub const PARITY_SHARDS_MAX: u8 = 16;
/// Most stripe groups a roster may ask for.
pub const GROUPS_MAX: u32 = 1 << 16;

/// The erasure code and the stripe groups (`placement.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    /// Data shards, k.
    pub data: u8,
    /// Parity shards, m: an object survives the loss of any m holders.
    pub parity: u8,
    /// Hosts a stripe group keeps in reserve beyond its k + m.
    #[serde(default = "default_spares")]
    pub spares: u8,
    /// Stripe groups; default about 20 per host (`20 x hosts / (k + m)`).
    #[serde(default)]
    pub groups: Option<u32>,
}

fn default_spares() -> u8 {
    2
}

impl Code {
    pub fn width(&self) -> usize {
        usize::from(self.data) + usize::from(self.parity)
    }
}

impl Roster {
    /// Parses and checks a roster document (unsigned).
    pub fn parse(text: &str) -> Result<Roster, Error> {
        let roster: Roster = toml::from_str(text).map_err(|e| Error::Roster(format!("not a valid roster: {e}")))?;
        roster.validate()?;
        Ok(roster)
    }

    /// Every rule a roster must follow, each failure naming what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Roster(why));
        check_name("cluster", &self.cluster)?;
        if self.epoch == 0 {
            return bad("epoch must be at least 1".into());
        }
        if self.hosts.is_empty() {
            return bad("the roster lists no host".into());
        }
        if self.hosts.len() > HOSTS_MAX {
            return bad(format!("{} hosts; a roster lists at most {HOSTS_MAX}", self.hosts.len()));
        }
        let (mut ids, mut gossip, mut http) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for h in &self.hosts {
            if h.id == 0 {
                return bad("host id 0 is reserved; ids start at 1".into());
            }
            if !ids.insert(h.id) {
                return bad(format!("host id {} appears twice", h.id));
            }
            if !gossip.insert(h.gossip) {
                return bad(format!("gossip address {} is given to two hosts", h.gossip));
            }
            if !http.insert(h.http) {
                return bad(format!("http address {} is given to two hosts", h.http));
            }
            if h.gossip.port() == 0 || h.http.port() == 0 {
                return bad(format!("host {}: port 0 is not an address peers can reach", h.id));
            }
            check_name(&format!("host {} domain", h.id), &h.domain)?;
            if let Some(name) = &h.name {
                check_name(&format!("host {} name", h.id), name)?;
            }
            if !(h.weight.is_finite() && h.weight > 0.0 && h.weight <= 1e6) {
                return bad(format!("host {}: weight {} is not a number in (0, 1e6]", h.id, h.weight));
            }
        }
        if let Some(code) = &self.code {
            if code.data == 0 || code.data > DATA_SHARDS_MAX {
                return bad(format!("code: data = {} must be from 1 to {DATA_SHARDS_MAX}", code.data));
            }
            if code.parity == 0 || code.parity > PARITY_SHARDS_MAX {
                return bad(format!("code: parity = {} must be from 1 to {PARITY_SHARDS_MAX}", code.parity));
            }
            // A write stands on k + 1 shards and a read waits for all but
            // m holders: the two meet only if m < k + 1.
            if code.parity > code.data {
                return bad(format!(
                    "code {}+{}: parity must not exceed data (a write acknowledged on k + 1 holders must be seen \
                     by a read that hears from all but m)",
                    code.data, code.parity
                ));
            }
            let domains = self.domains().len();
            if domains < code.width() {
                return bad(format!(
                    "code {}+{} puts each stripe's {} shards in distinct failure domains, but the roster has only {domains} ({})",
                    code.data,
                    code.parity,
                    code.width(),
                    self.domains().into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            if let Some(g) = code.groups {
                if g == 0 || g > GROUPS_MAX {
                    return bad(format!("code: groups = {g} must be from 1 to {GROUPS_MAX}"));
                }
            }
        }
        Ok(())
    }

    /// Stripe groups of this roster's code: as given, or about 20 per host.
    pub fn group_count(&self) -> Option<u32> {
        let code = self.code?;
        Some(
            code.groups
                .unwrap_or_else(|| ((20 * self.hosts.len()) / code.width()).clamp(1, GROUPS_MAX as usize) as u32),
        )
    }

    /// The 64-bit id of the cluster, carried in every datagram.
    pub fn cluster_id(&self) -> u64 {
        cluster_id(&self.cluster)
    }

    pub fn host(&self, id: u32) -> Option<&RosterHost> {
        self.hosts.iter().find(|h| h.id == id)
    }

    /// Failure domains, each once.
    pub fn domains(&self) -> BTreeSet<&str> {
        self.hosts.iter().map(|h| h.domain.as_str()).collect()
    }
}

/// The 64-bit id of a cluster name.
pub fn cluster_id(name: &str) -> u64 {
    let h = blake3::Hasher::new_derive_key("shardnode cluster id v1").update(name.as_bytes()).finalize();
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn check_name(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() || s.len() > NAME_BYTES_MAX {
        return Err(Error::Roster(format!("{what} {s:?} must be 1 to {NAME_BYTES_MAX} bytes")));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(Error::Roster(format!("{what} {s:?} may hold only letters, digits and - _ . :")));
    }
    Ok(())
}

/// A roster whose signature was verified, with the exact bytes signed.
#[derive(Debug, Clone)]
pub struct SignedRoster {
    pub roster: Roster,
    /// The whole signed file (document and trailer), as gossiped or served.
    pub bytes: Vec<u8>,
}

impl SignedRoster {
    /// Signs a roster document's text (checked first) with the operator's
    /// key: the signed file's bytes.
    pub fn sign(text: &str, key: &SigningKey) -> Result<SignedRoster, Error> {
        if text.lines().any(|l| l.starts_with(SIGNATURE_PREFIX)) {
            return Err(Error::Roster("the roster is signed already; sign the document without its trailer".into()));
        }
        let roster = Roster::parse(text)?;
        let mut body = text.as_bytes().to_vec();
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        let sig = key.sign(&body);
        body.extend_from_slice(format!("{SIGNATURE_PREFIX}{}\n", encode_hex(&sig.to_bytes())).as_bytes());
        Ok(SignedRoster { roster, bytes: body })
    }

    /// Verifies a signed roster file's bytes against the operator's public
    /// key, then parses and checks the document.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<SignedRoster, Error> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Roster("the roster file is not UTF-8".into()))?;
        let trailer_at = text
            .rfind(SIGNATURE_PREFIX)
            .filter(|&at| at == 0 || text.as_bytes()[at - 1] == b'\n')
            .ok_or_else(|| Error::Roster("the roster is not signed (no signature trailer line)".into()))?;
        let trailer = text[trailer_at + SIGNATURE_PREFIX.len()..].trim_end_matches('\n');
        if trailer.contains('\n') {
            return Err(Error::Roster("text follows the signature trailer line".into()));
        }
        let sig = decode_hex::<64>(trailer).map_err(|e| Error::Roster(format!("signature: {e}")))?;
        let body = &bytes[..trailer_at];
        key.verify(body, &Signature::from_bytes(&sig)).map_err(|_| {
            Error::Roster("the roster's signature does not verify with the operator's public key".into())
        })?;
        let roster = Roster::parse(&text[..trailer_at])?;
        Ok(SignedRoster { roster, bytes: bytes.to_vec() })
    }

    pub fn load(path: &Path, key: &VerifyingKey) -> Result<SignedRoster, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Roster(format!("reading {}: {e}", path.display())))?;
        SignedRoster::verify(&bytes, key).map_err(|e| Error::Roster(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DOC: &str = r#"
cluster = "test"
epoch = 3

[[host]]
id = 1
gossip = "127.0.0.2:7946"
http = "127.0.0.2:8080"
domain = "rack-a"

[[host]]
id = 2
name = "second"
gossip = "127.0.0.3:7946"
http = "127.0.0.3:8080"
domain = "rack-b"
weight = 2.0
"#;

    #[test]
    fn a_signed_roster_verifies_and_any_change_is_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let signed = SignedRoster::sign(DOC, &key).unwrap();
        let back = SignedRoster::verify(&signed.bytes, &key.verifying_key()).unwrap();
        assert_eq!(back.roster, signed.roster);
        assert_eq!(back.roster.hosts[1].display_name(), "second");
        assert!((back.roster.hosts[0].weight - 1.0).abs() < f64::EPSILON, "the default weight is 1");
        // A byte changed anywhere in the document, or a bit in the
        // signature, fails verification.
        for i in 0..signed.bytes.len() {
            let mut b = signed.bytes.clone();
            b[i] ^= 0x01;
            assert!(SignedRoster::verify(&b, &key.verifying_key()).is_err(), "byte {i} changed and still verified");
        }
        let other = SigningKey::from_bytes(&[6; 32]);
        let err = SignedRoster::verify(&signed.bytes, &other.verifying_key()).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        let err = SignedRoster::verify(DOC.as_bytes(), &key.verifying_key()).unwrap_err().to_string();
        assert!(err.contains("not signed"), "{err}");
        assert!(SignedRoster::sign(std::str::from_utf8(&signed.bytes).unwrap(), &key).is_err());
    }

    #[test]
    fn bad_rosters_are_refused_with_the_reason() {
        let cases = [
            (DOC.replace("epoch = 3", "epoch = 0"), "epoch"),
            (DOC.replace("id = 2", "id = 1"), "appears twice"),
            (DOC.replace("127.0.0.3:7946", "127.0.0.2:7946"), "two hosts"),
            (DOC.replace("weight = 2.0", "weight = -1.0"), "weight"),
            (DOC.replace("rack-b", "rack b"), "domain"),
            (DOC.replace("id = 1\n", "id = 0\n"), "reserved"),
            (DOC.replace("domain = \"rack-a\"", "domain = \"rack-a\"\ncolour = 1"), "unknown field"),
            ("cluster = \"x\"\nepoch = 1\n".to_string(), "no host"),
        ];
        for (doc, want) in cases {
            let err = Roster::parse(&doc).unwrap_err().to_string();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
    }

    #[test]
    fn cluster_ids_differ_by_name() {
        assert_ne!(cluster_id("a"), cluster_id("b"));
        assert_eq!(cluster_id("a"), cluster_id("a"));
    }
}
