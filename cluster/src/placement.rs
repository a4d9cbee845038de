//! Where an object's shards live, computed from the signed roster and the
//! key alone: no index, the same answer on every host.
//!
//! - **Stripe groups** (bounded copysets): G groups, each k + m hosts in
//!   distinct failure domains plus spares, chosen for group g by weighted
//!   rendezvous hashing: every host scores `weight / -ln(u)`, u uniform in
//!   (0, 1) from a hash of (cluster, g, host); hosts are taken in score
//!   order, at most one per failure domain for the k + m holders, then the
//!   spares (preferring domains the group does not use yet). A host's
//!   share of groups follows its weight; adding or removing a host moves
//!   only the group slots it wins or held.
//! - **Object → groups**: two candidate groups from a hash of (cluster,
//!   key); a PUT uses the emptier (power of two choices), a GET tries the
//!   first, then the second.
//!
//! The scores use `f64::ln`: hosts of one cluster run one build, and two
//! hosts' scores would have to agree to the last bit for a platform's
//! rounding to reorder them.

use std::collections::BTreeSet;

use crate::roster::{Code, Roster};
use crate::Error;

/// One stripe group: the holders of shard 0, 1, ..., k + m - 1 of every
/// object placed in it, then its spares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeGroup {
    pub id: u32,
    pub hosts: Vec<u32>,
}

impl StripeGroup {
    /// The holders of the stripe's shards, in shard order.
    pub fn holders(&self, code: &Code) -> &[u32] {
        &self.hosts[..code.width()]
    }

    /// Its spares (rebuild targets when a holder is taken out).
    pub fn spares(&self, code: &Code) -> &[u32] {
        &self.hosts[code.width()..]
    }
}

/// The stripe groups of one roster epoch.
#[derive(Debug, Clone)]
pub struct Placement {
    pub code: Code,
    pub epoch: u64,
    cluster: String,
    groups: Vec<StripeGroup>,
}

/// A uniform number in (0, 1) from the hash of `parts`.
fn uniform(parts: &[&[u8]]) -> f64 {
    let mut h = blake3::Hasher::new_derive_key("shardnode placement v1");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let bytes = h.finalize();
    let x = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl Placement {
    /// The groups of `roster`, which must carry a code.
    pub fn new(roster: &Roster) -> Result<Placement, Error> {
        let code =
            roster.code.ok_or_else(|| Error::Roster("the roster has no [code]: objects cannot be placed".into()))?;
        let count = roster.group_count().expect("a code");
        let groups = (0..count).map(|g| Placement::group_of(roster, &code, g)).collect();
        Ok(Placement { code, epoch: roster.epoch, cluster: roster.cluster.clone(), groups })
    }

    fn group_of(roster: &Roster, code: &Code, g: u32) -> StripeGroup {
        let mut scored: Vec<(f64, u32, &str)> = roster
            .hosts
            .iter()
            .map(|h| {
                let u = uniform(&[roster.cluster.as_bytes(), b"group", &g.to_le_bytes(), &h.id.to_le_bytes()]);
                (h.weight / -u.ln(), h.id, h.domain.as_str())
            })
            .collect();
        // Highest score first; host id breaks an exact tie.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let mut hosts = Vec::with_capacity(code.width() + usize::from(code.spares));
        for &(_, id, domain) in &scored {
            if hosts.len() == code.width() {
                break;
            }
            if used.insert(domain) {
                hosts.push(id);
            }
        }
        assert_eq!(hosts.len(), code.width(), "a validated roster has k + m failure domains");
        // Spares: new domains first, then any host not in the group.
        let want = code.width() + usize::from(code.spares);
        for pass in 0..2 {
            for &(_, id, domain) in &scored {
                if hosts.len() == want {
                    break;
                }
                if hosts.contains(&id) {
                    continue;
                }
                if pass == 1 || used.insert(domain) {
                    hosts.push(id);
                }
            }
        }
        StripeGroup { id: g, hosts }
    }

    pub fn groups(&self) -> &[StripeGroup] {
        &self.groups
    }

    pub fn group(&self, id: u32) -> Option<&StripeGroup> {
        self.groups.get(id as usize)
    }

    /// The two candidate groups of an object (distinct when there are
    /// two or more groups), in the order a reader tries them.
    pub fn candidates(&self, key: &[u8]) -> [u32; 2] {
        let n = self.groups.len() as u64;
        let a = (uniform(&[self.cluster.as_bytes(), b"object", key]) * n as f64) as u64 % n;
        if n == 1 {
            return [0, 0];
        }
        let step = 1 + (uniform(&[self.cluster.as_bytes(), b"object-2", key]) * (n - 1) as f64) as u64 % (n - 1);
        [a as u32, ((a + step) % n) as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::RosterHost;
    use std::collections::HashMap;

    fn roster(hosts: u32, domains: u32, code: Code) -> Roster {
        Roster {
            cluster: "placement-test".into(),
            epoch: 1,
            code: Some(code),
            hosts: (1..=hosts)
                .map(|id| RosterHost {
                    id,
                    name: None,
                    gossip: format!("127.0.0.{}:7946", id % 250 + 2)
                        .parse::<std::net::SocketAddr>()
                        .map(|mut a| {
                            a.set_port(7000 + id as u16);
                            a
                        })
                        .unwrap(),
                    http: format!("127.0.0.{}:{}", id % 250 + 2, 9000 + id).parse().unwrap(),
                    domain: format!("rack-{}", id % domains),
                    weight: 1.0,
                })
                .collect(),
        }
    }

    fn code(k: u8, m: u8) -> Code {
        Code { data: k, parity: m, spares: 2, groups: None }
    }

    #[test]
    fn groups_hold_k_plus_m_domains_and_spares_and_are_deterministic() {
        let r = roster(12, 12, code(4, 2));
        let p = Placement::new(&r).unwrap();
        assert_eq!(p.groups().len(), 40, "20 per host: 20 x 12 / 6");
        let domain = |id: u32| r.host(id).unwrap().domain.clone();
        for g in p.groups() {
            assert_eq!(g.hosts.len(), 8);
            let holders: BTreeSet<String> = g.holders(&p.code).iter().map(|&h| domain(h)).collect();
            assert_eq!(holders.len(), 6, "distinct failure domains");
            let all: BTreeSet<u32> = g.hosts.iter().copied().collect();
            assert_eq!(all.len(), 8, "no host twice");
        }
        let again = Placement::new(&r).unwrap();
        assert_eq!(p.groups(), again.groups(), "the same roster, the same groups");
        let c = p.candidates(b"photos/cat.jpg");
        assert_ne!(c[0], c[1]);
        assert_eq!(c, again.candidates(b"photos/cat.jpg"));
    }

    #[test]
    fn weight_sets_a_hosts_share_and_a_new_host_moves_little() {
        let mut r = roster(30, 30, Code { data: 4, parity: 2, spares: 0, groups: Some(3000) });
        r.hosts[0].weight = 3.0;
        let p = Placement::new(&r).unwrap();
        let mut share: HashMap<u32, usize> = HashMap::new();
        for g in p.groups() {
            for &h in g.holders(&p.code) {
                *share.entry(h).or_default() += 1;
            }
        }
        let heavy = share[&1] as f64;
        let mean_other = (1..30).map(|i| share[&(i + 1)] as f64).sum::<f64>() / 29.0;
        // Rendezvous over 6 picks per group saturates a little: well above
        // 2x, below 3x.
        assert!(heavy > 2.0 * mean_other && heavy < 3.2 * mean_other, "weight 3 got {heavy} vs {mean_other}");
        // A 31st host: only group slots it wins move.
        let before = p.groups().to_vec();
        let mut r2 = r.clone();
        let mut extra = r.hosts[1].clone();
        extra.id = 31;
        extra.domain = "rack-new".into();
        extra.gossip.set_port(7999);
        extra.http.set_port(9999);
        r2.hosts.push(extra);
        let after = Placement::new(&r2).unwrap();
        let moved: usize = before
            .iter()
            .zip(after.groups())
            .map(|(a, b)| a.hosts.iter().zip(&b.hosts).filter(|(x, y)| x != y).count())
            .sum();
        let slots = before.len() * 6;
        assert!(moved < slots / 5, "{moved} of {slots} slots moved for one new host of 31");
    }

    #[test]
    fn objects_spread_over_groups() {
        let p = Placement::new(&roster(7, 7, code(4, 2))).unwrap();
        let mut count = vec![0usize; p.groups().len()];
        for i in 0..20_000 {
            let [a, b] = p.candidates(format!("key-{i}").as_bytes());
            count[a as usize] += 1;
            assert_ne!(a, b);
        }
        let mean = 20_000.0 / p.groups().len() as f64;
        assert!(count.iter().all(|&c| (c as f64) > 0.7 * mean && (c as f64) < 1.3 * mean), "{count:?}");
    }

    #[test]
    fn a_code_wider_than_the_failure_domains_is_refused() {
        let r = roster(8, 5, code(4, 2));
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("only 5"), "{err}");
        assert!(Placement::new(&Roster { code: None, ..roster(8, 8, code(4, 2)) }).is_err());
        // More parity than data: a read hearing from all but m holders
        // could miss every shard of a write acknowledged on k + 1.
        let err = roster(8, 8, code(2, 3)).validate().unwrap_err().to_string();
        assert!(err.contains("parity must not exceed data"), "{err}");
        roster(8, 8, code(3, 3)).validate().unwrap();
    }
}
