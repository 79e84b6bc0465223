//! Security groups on a VPC network: the ingress filter a hub applies to every IPv4 frame when
//! it is given a policy (the EC2 twin's hubs; the local provider's hubs have none and pass all).
//!
//! The policy names, for each private address on the network, the ingress rules of its
//! instance's security groups, with group references already resolved to member addresses (the
//! twin writes it from moto's state, `twin::security`). A frame to an address passes when one
//! of its rules allows the source address, protocol and destination port, or when it answers a
//! flow that was allowed the other way: groups are stateful, as on EC2, so replies need no rule
//! and a revoked rule does not cut a connection already made. Egress is not filtered (dbctl
//! never narrows it). Frames that are not IPv4 (ARP, IPv6 neighbour discovery) pass: nothing
//! dbctl runs listens on IPv6 there, and ARP must work for anything to.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// What may reach each address of one VPC network (`<vpc>/policy.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub instances: BTreeMap<Ipv4Addr, Vec<Rule>>,
}

/// One ingress permission: a protocol, a port range and the sources it admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub protocol: Protocol,
    /// Inclusive; ignored for ICMP and `All`.
    pub from_port: u16,
    pub to_port: u16,
    /// CIDRs (`a.b.c.d/n`), a member of a referenced group as its `/32`.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    /// EC2's `-1`: every protocol, every port.
    All,
}

impl Protocol {
    /// EC2's `IpProtocol` (a name or an IANA number); `None` for protocols the filter has no
    /// use for (they are dropped, as nothing opens them).
    pub fn from_ec2(text: &str) -> Option<Protocol> {
        Some(match text.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "-1" | "all" => Protocol::All,
            _ => return None,
        })
    }

    fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
            Protocol::All => None,
        }
    }
}

/// True when `addr` is inside `cidr` (`a.b.c.d/n`; an unparsable range admits nothing).
pub fn cidr_contains(cidr: &str, addr: Ipv4Addr) -> bool {
    let Some((net, prefix)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(prefix)) = (net.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return false;
    };
    if prefix > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(net) & mask == u32::from(addr) & mask
}

impl Rule {
    fn admits(&self, p: &Packet) -> bool {
        let protocol = match self.protocol.number() {
            None => true,
            Some(n) => n == p.protocol,
        };
        let port = match self.protocol {
            Protocol::Tcp | Protocol::Udp => (self.from_port..=self.to_port).contains(&p.dst_port),
            Protocol::Icmp | Protocol::All => true,
        };
        protocol && port && self.sources.iter().any(|c| cidr_contains(c, p.src))
    }
}

/// The IPv4 facts of one Ethernet frame the filter decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// 0 for protocols without ports (ICMP) and for fragments after the first.
    pub src_port: u16,
    pub dst_port: u16,
}

impl Packet {
    /// The IPv4 packet in an Ethernet frame, or `None` for anything else.
    pub fn parse(frame: &[u8]) -> Option<Packet> {
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            return None;
        }
        let ip = &frame[14..];
        let header = usize::from(ip[0] & 0x0f) * 4;
        let protocol = ip[9];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        let l4 = ip.get(header..).unwrap_or_default();
        let (src_port, dst_port) = match protocol {
            6 | 17 if fragment_offset == 0 && l4.len() >= 4 => (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ),
            _ => (0, 0),
        };
        Some(Packet {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        })
    }

    fn reversed(&self) -> Packet {
        Packet {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// Flows remembered as allowed; past this many the table starts again (connections then
/// need their rule once more, which only matters for one that lost it meanwhile).
const FLOW_LIMIT: usize = 65_536;

/// How often the policy file is looked at: a changed group applies within this, as EC2's do
/// within seconds.
const RELOAD_EVERY: Duration = Duration::from_millis(250);

/// The hub's filter: the policy (reloaded when its file changes) and the flows it allowed.
pub struct Firewall {
    path: PathBuf,
    policy: Policy,
    modified: Option<SystemTime>,
    checked: Instant,
    flows: HashSet<Packet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A new flow a rule admitted.
    Allowed,
    Denied,
}

impl Firewall {
    /// A filter over the policy at `path`. A missing or unreadable file admits no IPv4 at all
    /// (fail closed) until a readable one appears.
    pub fn open(path: &Path) -> Firewall {
        let mut fw = Firewall {
            path: path.to_path_buf(),
            policy: Policy::default(),
            modified: None,
            checked: Instant::now(),
            flows: HashSet::new(),
        };
        fw.reload();
        fw
    }

    fn reload(&mut self) {
        self.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == self.modified {
            return;
        }
        match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Policy>(&t).map_err(|e| e.to_string()))
        {
            Ok(p) => {
                eprintln!(
                    "policy {}: {} address(es)",
                    self.path.display(),
                    p.instances.len()
                );
                self.policy = p;
                self.modified = modified;
            }
            // Half-written files never happen (the twin renames a complete one into place);
            // anything else keeps the last good policy and is retried at the next check.
            Err(e) => eprintln!("policy {}: {e}", self.path.display()),
        }
    }

    /// Decides on one frame (reloading the policy first when it is due).
    pub fn check(&mut self, frame: &[u8]) -> Verdict {
        if self.checked.elapsed() >= RELOAD_EVERY {
            self.reload();
        }
        let Some(p) = Packet::parse(frame) else {
            return Verdict::Pass;
        };
        self.decide(&p)
    }

    fn decide(&mut self, p: &Packet) -> Verdict {
        if self.flows.contains(&p.reversed()) || self.flows.contains(p) {
            return Verdict::Pass;
        }
        let admitted = self
            .policy
            .instances
            .get(&p.dst)
            .is_some_and(|rules| rules.iter().any(|r| r.admits(p)));
        if !admitted {
            return Verdict::Denied;
        }
        if self.flows.len() >= FLOW_LIMIT {
            self.flows.clear();
        }
        self.flows.insert(*p);
        Verdict::Allowed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Ethernet frame carrying an IPv4 packet of `protocol` from `src:sport` to `dst:dport`.
    pub(crate) fn frame(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        protocol: u8,
    ) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn tcp(port: u16, sources: &[&str]) -> Rule {
        Rule {
            protocol: Protocol::Tcp,
            from_port: port,
            to_port: port,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn firewall(policy: Policy) -> Firewall {
        Firewall {
            path: PathBuf::from("/nonexistent"),
            policy,
            modified: None,
            checked: Instant::now(),
            flows: HashSet::new(),
        }
    }

    fn one(rules: Vec<Rule>) -> Firewall {
        firewall(Policy {
            instances: [(Ipv4Addr::new(10, 0, 0, 5), rules)].into(),
        })
    }

    const A: [u8; 4] = [10, 0, 0, 5];
    const B: [u8; 4] = [10, 0, 0, 6];

    #[test]
    fn a_rule_admits_its_source_protocol_and_port_only() {
        let mut fw = one(vec![tcp(5432, &["10.0.0.6/32"])]);
        assert_eq!(fw.check(&frame(B, 40000, A, 5432, 6)), Verdict::Allowed);
        assert_eq!(
            fw.check(&frame(B, 40001, A, 5433, 6)),
            Verdict::Denied,
            "port"
        );
        assert_eq!(
            fw.check(&frame(B, 40002, A, 5432, 17)),
            Verdict::Denied,
            "udp"
        );
        assert_eq!(
            fw.check(&frame([10, 0, 0, 7], 40003, A, 5432, 6)),
            Verdict::Denied,
            "source"
        );
    }

    #[test]
    fn replies_to_an_allowed_flow_pass_and_outlive_a_revoked_rule() {
        let mut fw = one(vec![tcp(22, &["10.0.0.0/16"])]);
        assert_eq!(fw.check(&frame(B, 50000, A, 22, 6)), Verdict::Allowed);
        // B has no rules at all: only the reply of the flow reaches it.
        assert_eq!(fw.check(&frame(A, 22, B, 50000, 6)), Verdict::Pass);
        assert_eq!(fw.check(&frame(A, 22, B, 50001, 6)), Verdict::Denied);
        // Stateful, as on EC2: the connection made survives the rule's removal, a new one not.
        fw.policy = Policy::default();
        assert_eq!(fw.check(&frame(B, 50000, A, 22, 6)), Verdict::Pass);
        assert_eq!(fw.check(&frame(B, 50002, A, 22, 6)), Verdict::Denied);
    }

    #[test]
    fn all_traffic_and_icmp_rules_ignore_ports_and_unknown_addresses_get_nothing() {
        let mut fw = one(vec![Rule {
            protocol: Protocol::All,
            from_port: 0,
            to_port: 0,
            sources: vec!["10.0.0.6/32".into()],
        }]);
        assert_eq!(fw.check(&frame(B, 1, A, 9, 17)), Verdict::Allowed);
        assert_eq!(fw.check(&frame(B, 0, A, 0, 1)), Verdict::Allowed);
        assert_eq!(
            fw.check(&frame(A, 1, B, 2, 6)),
            Verdict::Denied,
            "B is in no policy"
        );
        let mut fw = one(vec![Rule {
            protocol: Protocol::Icmp,
            from_port: 0,
            to_port: 0,
            sources: vec!["0.0.0.0/0".into()],
        }]);
        assert_eq!(fw.check(&frame(B, 0, A, 0, 1)), Verdict::Allowed);
        assert_eq!(fw.check(&frame(B, 1, A, 2, 6)), Verdict::Denied);
    }

    #[test]
    fn frames_that_are_not_ipv4_pass() {
        let mut fw = firewall(Policy::default());
        let mut arp = frame(B, 0, A, 0, 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(fw.check(&arp), Verdict::Pass);
        assert_eq!(fw.check(&[0u8; 20]), Verdict::Pass);
        assert_eq!(fw.check(&frame(B, 1, A, 2, 6)), Verdict::Denied);
    }

    #[test]
    fn cidrs_match_by_prefix() {
        let a = Ipv4Addr::new(127, 0, 0, 1);
        assert!(cidr_contains("127.0.0.1/32", a));
        assert!(cidr_contains("127.0.0.0/8", a));
        assert!(cidr_contains("0.0.0.0/0", a));
        assert!(!cidr_contains("127.0.0.2/32", a));
        assert!(!cidr_contains("10.0.0.0/8", a));
        assert!(!cidr_contains("127.0.0.1", a), "no prefix");
        assert!(!cidr_contains("127.0.0.1/33", a));
    }

    #[test]
    fn the_policy_file_is_reloaded_when_it_changes_and_a_missing_one_admits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let mut fw = Firewall::open(&path);
        assert_eq!(fw.check(&frame(B, 1, A, 22, 6)), Verdict::Denied, "no file");
        let policy = Policy {
            instances: [(Ipv4Addr::from(A), vec![tcp(22, &["10.0.0.6/32"])])].into(),
        };
        std::fs::write(&path, serde_json::to_string(&policy).unwrap()).unwrap();
        fw.checked -= RELOAD_EVERY;
        assert_eq!(fw.check(&frame(B, 2, A, 22, 6)), Verdict::Allowed);
        std::fs::write(&path, "{ not json").unwrap();
        fw.checked -= RELOAD_EVERY;
        assert_eq!(
            fw.check(&frame(B, 3, A, 22, 6)),
            Verdict::Allowed,
            "last good kept"
        );
    }
}
