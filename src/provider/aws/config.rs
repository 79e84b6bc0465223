//! User-facing AWS settings and the small amount of IPv4 arithmetic they need.

use std::net::Ipv4Addr;

/// The `[aws]` settings of a dbctl project. Credentials are never here: they come from the
/// standard AWS chain (env, profile, SSO, IMDS) in [`super::client`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AwsSettings {
    /// Overrides the region from the environment/profile (`AWS_REGION`, `~/.aws/config`).
    pub region: Option<String>,
    /// An explicit AMI id; when unset, the newest official Debian 12 image is looked up.
    pub ami: Option<String>,
    pub instance_type: String,
    /// The only source allowed on port 22. `None` means no SSH rule at all (private-only: reach
    /// the instance through a bastion or VPN inside the VPC).
    pub ssh_cidr: Option<String>,
    /// Extra sources allowed on 5432 besides the VPC. A `/0` here is rejected.
    pub extra_pg_cidrs: Vec<String>,
    pub vpc_cidr: String,
    /// An existing VPC to use instead of creating one (`existing_vpc`).
    pub vpc_id: Option<String>,
    /// With `vpc_id`: its subnets to use, one per zone (empty: the VPC's own, one per zone).
    pub subnet_ids: Vec<String>,
    /// The instance profile (name or ARN) RunInstances names (`instance_profile`).
    pub instance_profile: Option<String>,
    /// Give the subnets an internet gateway route and instances a public IP.
    pub public: bool,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            ami: None,
            instance_type: "t3.medium".to_string(),
            ssh_cidr: None,
            extra_pg_cidrs: Vec::new(),
            vpc_cidr: "10.42.0.0/16".to_string(),
            vpc_id: None,
            subnet_ids: Vec::new(),
            instance_profile: None,
            public: true,
        }
    }
}

/// An IPv4 network, e.g. `10.42.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`. Host bits must be zero (EC2 rejects `10.42.0.1/16` too, but later and
    /// less clearly).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (expected a.b.c.d/n)"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            // Refused outright, `::/0` included: the firewall has no IPv6 rules.
            return Err(format!("{text:?}: IPv6 ranges are not supported"));
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text:?}: prefix must be 0..=32"))?;
        let cidr = Cidr { addr, prefix };
        if u32::from(addr) & !cidr.mask() != 0 {
            return Err(format!("{text:?} has host bits set"));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// True for `0.0.0.0/0`-style "the whole internet" ranges.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// The first and last address of the range, as numbers.
    fn bounds(&self) -> (u64, u64) {
        let first = u64::from(u32::from(self.addr));
        (first, first + (1u64 << (32 - self.prefix)) - 1)
    }

    /// The `index`-th subnet of `prefix` bits inside this network, or `None` when it does not fit.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let size = 1u64 << (32 - prefix);
        let base = u64::from(u32::from(self.addr)) + u64::from(index) * size;
        Some(Cidr {
            addr: Ipv4Addr::from(base as u32),
            prefix,
        })
    }

    /// The prefix used for per-zone subnets: 16 subnets per VPC (room for every AZ of any
    /// region), but never smaller than /28, the smallest subnet EC2 allows.
    pub fn zone_subnet_prefix(&self) -> u8 {
        (self.prefix + 4).min(28)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// True when `ranges` together cover every IPv4 address (`0.0.0.0/1` + `128.0.0.0/1` opens a
/// port to the internet just as `0.0.0.0/0` does, and a security group takes both).
pub fn covers_everything(ranges: &[Cidr]) -> bool {
    let mut bounds: Vec<(u64, u64)> = ranges.iter().map(Cidr::bounds).collect();
    bounds.sort();
    // `next` is the lowest address not yet covered by the ranges seen so far.
    let mut next = 0u64;
    for (first, last) in bounds {
        if first > next {
            return false;
        }
        next = next.max(last + 1);
    }
    next > u64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Cidr::parse("10.42.0.0/16").unwrap().prefix, 16);
        assert!(Cidr::parse("10.42.0.1/16").is_err());
        assert!(Cidr::parse("10.42.0.0").is_err());
        assert!(Cidr::parse("10.42.0.0/33").is_err());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().is_everything());
        assert!(Cidr::parse("::/0").is_err());
    }

    #[test]
    fn ranges_that_add_up_to_the_internet_are_everything() {
        let c =
            |list: &[&str]| -> Vec<Cidr> { list.iter().map(|s| Cidr::parse(s).unwrap()).collect() };
        assert!(covers_everything(&c(&["0.0.0.0/0"])));
        assert!(covers_everything(&c(&["128.0.0.0/1", "0.0.0.0/1"])));
        assert!(covers_everything(&c(&[
            "0.0.0.0/2",
            "64.0.0.0/2",
            "10.0.0.0/8",
            "128.0.0.0/1"
        ])));
        assert!(!covers_everything(&c(&["0.0.0.0/1", "128.0.0.0/2"])));
        assert!(!covers_everything(&c(&["0.0.0.0/1", "192.0.0.0/2"])));
        assert!(!covers_everything(&c(&["10.0.0.0/8"])));
        assert!(!covers_everything(&[]));
        assert!(Cidr::parse("::/0").unwrap_err().contains("IPv6"));
    }

    #[test]
    fn carves_zone_subnets() {
        let vpc = Cidr::parse("10.42.0.0/16").unwrap();
        let p = vpc.zone_subnet_prefix();
        assert_eq!(vpc.subnet(p, 0).unwrap().to_string(), "10.42.0.0/20");
        assert_eq!(vpc.subnet(p, 2).unwrap().to_string(), "10.42.32.0/20");
        assert!(vpc.subnet(p, 16).is_none());
    }
}
