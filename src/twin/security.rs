//! Security groups, enforced: moto keeps the groups and rules, the twin turns them into what
//! its machines' networks let through.
//!
//! After every call that can change who may reach whom (a rule authorized or revoked, an
//! instance launched, started, terminated or moved to other groups), the twin reads the groups
//! and instances back from moto and derives:
//! - per VPC, the [`Policy`] its hub filters the private network by (group references resolved
//!   to the members' private addresses), written to `<state>/vpcs/<vpc>/policy.json`;
//! - per instance, the TCP ports its public (loopback) address forwards: those a rule opens to
//!   the host (a source range holding 127.0.0.1), so a port no group opens is not there at all,
//!   as EC2 drops the packets before they reach the instance.
//!
//! moto is read through the AWS SDK itself, typed, rather than by picking its XML apart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{Instance, IpPermission, SecurityGroup};

use crate::provider::local::firewall::{self, Policy, Protocol, Rule};

/// The host, as a security group sees it: connections to a public address come from here.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A rule over at most this many ports is forwarded whole; a wider one (or "all traffic")
/// forwards only the ports dbctl uses from the host, [`super::machine::PUBLIC_PORTS`].
const FORWARD_RANGE_LIMIT: u16 = 64;

/// What the groups allow, derived from moto's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub policies: BTreeMap<String, Policy>,
    pub host_ports: BTreeMap<String, BTreeSet<u16>>,
}

/// The SDK's EC2 client for moto itself (the twin's own reads, never through the proxy).
pub fn moto_client(moto: &str) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(super::proxy::REGION))
        .credentials_provider(Credentials::new(
            "testing", "testing", None, None, "ec2-twin",
        ))
        .endpoint_url(moto)
        .http_client(crate::provider::aws::client::https_client())
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// Reads every live instance and every group from moto.
pub async fn read(ec2: &aws_sdk_ec2::Client) -> Result<Enforced, String> {
    let mut instances = Vec::new();
    let mut pages = ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("DescribeInstances: {}", DisplayErrorContext(&e)))?;
        for r in page.reservations() {
            instances.extend(r.instances().iter().cloned());
        }
    }
    let mut groups = Vec::new();
    let mut pages = ec2.describe_security_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| format!("DescribeSecurityGroups: {}", DisplayErrorContext(&e)))?;
        groups.extend(page.security_groups().iter().cloned());
    }
    Ok(derive(&instances, &groups))
}

fn live(i: &Instance) -> bool {
    let state = i
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str())
        .unwrap_or_default();
    !matches!(state, "terminated" | "shutting-down")
}

fn group_ids(i: &Instance) -> impl Iterator<Item = &str> {
    i.security_groups().iter().filter_map(|g| g.group_id())
}

/// The policies and forwarded ports `groups` give `instances` (pure: unit-tested below).
pub fn derive(instances: &[Instance], groups: &[SecurityGroup]) -> Enforced {
    let live: Vec<&Instance> = instances.iter().filter(|i| live(i)).collect();
    // Members of each group, as /32 sources.
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in &live {
        if let Some(ip) = i.private_ip_address() {
            for g in group_ids(i) {
                members.entry(g).or_default().push(format!("{ip}/32"));
            }
        }
    }
    let by_id: BTreeMap<&str, &SecurityGroup> = groups
        .iter()
        .filter_map(|g| Some((g.group_id()?, g)))
        .collect();
    let mut out = Enforced::default();
    for i in &live {
        let (Some(id), Some(ip)) = (
            i.instance_id(),
            i.private_ip_address()
                .and_then(|a| a.parse::<Ipv4Addr>().ok()),
        ) else {
            continue;
        };
        let rules: Vec<Rule> = group_ids(i)
            .filter_map(|g| by_id.get(g))
            .flat_map(|g| g.ip_permissions())
            .filter_map(|p| rule(p, &members))
            .collect();
        out.host_ports
            .insert(id.to_string(), host_ports(&rules).collect());
        let vpc = i.vpc_id().unwrap_or("default").to_string();
        out.policies
            .entry(vpc)
            .or_default()
            .instances
            .insert(ip, rules);
    }
    out
}

/// One EC2 permission as a filter rule, its group references resolved to member addresses.
fn rule(p: &IpPermission, members: &BTreeMap<&str, Vec<String>>) -> Option<Rule> {
    let protocol = Protocol::from_ec2(p.ip_protocol()?)?;
    let port =
        |v: Option<i32>, default: u16| v.and_then(|v| u16::try_from(v).ok()).unwrap_or(default);
    let mut sources: Vec<String> = p
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip().map(str::to_string))
        .collect();
    for pair in p.user_id_group_pairs() {
        if let Some(g) = pair.group_id() {
            sources.extend(members.get(g).into_iter().flatten().cloned());
        }
    }
    Some(Rule {
        protocol,
        from_port: port(p.from_port(), 0),
        to_port: port(p.to_port(), u16::MAX),
        sources,
    })
}

/// The TCP ports `rules` open to the host.
fn host_ports(rules: &[Rule]) -> impl Iterator<Item = u16> + '_ {
    rules
        .iter()
        .filter(|r| matches!(r.protocol, Protocol::Tcp | Protocol::All))
        .filter(|r| r.sources.iter().any(|c| firewall::cidr_contains(c, HOST)))
        .flat_map(|r| {
            let (from, to) = match r.protocol {
                Protocol::All => (0, u16::MAX),
                _ => (r.from_port, r.to_port),
            };
            let ports: Vec<u16> = if to.saturating_sub(from) < FORWARD_RANGE_LIMIT {
                (from..=to).filter(|p| *p != 0).collect()
            } else {
                super::machine::PUBLIC_PORTS
                    .iter()
                    .copied()
                    .filter(|p| (from..=to).contains(p))
                    .collect()
            };
            ports
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        GroupIdentifier, InstanceState, InstanceStateName, IpRange, UserIdGroupPair,
    };

    fn instance(id: &str, ip: &str, groups: &[&str], state: InstanceStateName) -> Instance {
        let mut b = Instance::builder()
            .instance_id(id)
            .private_ip_address(ip)
            .vpc_id("vpc-1")
            .state(InstanceState::builder().name(state).build());
        for g in groups {
            b = b.security_groups(GroupIdentifier::builder().group_id(*g).build());
        }
        b.build()
    }

    fn tcp(port: i32) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
    }

    fn group(id: &str, permissions: Vec<IpPermission>) -> SecurityGroup {
        SecurityGroup::builder()
            .group_id(id)
            .vpc_id("vpc-1")
            .set_ip_permissions(Some(permissions))
            .build()
    }

    #[test]
    fn group_references_become_member_addresses_and_host_ranges_become_forwards() {
        let db = group(
            "sg-db",
            vec![
                tcp(22)
                    .ip_ranges(IpRange::builder().cidr_ip("127.0.0.1/32").build())
                    .build(),
                tcp(5432)
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-db").build())
                    .build(),
                tcp(9100)
                    .ip_ranges(IpRange::builder().cidr_ip("10.42.0.0/16").build())
                    .build(),
            ],
        );
        let running = InstanceStateName::Running;
        let instances = [
            instance("i-1", "10.42.0.5", &["sg-db"], running.clone()),
            instance("i-2", "10.42.1.5", &["sg-db"], running.clone()),
            instance(
                "i-3",
                "10.42.2.5",
                &["sg-db"],
                InstanceStateName::Terminated,
            ),
        ];
        let e = derive(&instances, &[db]);
        let policy = &e.policies["vpc-1"];
        assert_eq!(
            policy.instances.len(),
            2,
            "a terminated instance is no member"
        );
        let rules = &policy.instances[&"10.42.0.5".parse::<Ipv4Addr>().unwrap()];
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1].sources, ["10.42.0.5/32", "10.42.1.5/32"]);
        assert_eq!(e.host_ports["i-1"], BTreeSet::from([22]));
    }

    #[test]
    fn wide_ranges_forward_only_the_ports_dbctl_uses_and_unknown_groups_open_nothing() {
        let open = group(
            "sg-open",
            vec![
                IpPermission::builder()
                    .ip_protocol("-1")
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
                tcp(8000)
                    .to_port(8003)
                    .ip_ranges(IpRange::builder().cidr_ip("127.0.0.0/8").build())
                    .build(),
            ],
        );
        let running = InstanceStateName::Running;
        let e = derive(
            &[
                instance("i-1", "10.0.0.5", &["sg-open"], running.clone()),
                instance("i-2", "10.0.0.6", &["sg-gone"], running),
            ],
            &[open],
        );
        assert_eq!(
            e.host_ports["i-1"],
            BTreeSet::from([22, 5432, 8000, 8001, 8002, 8003])
        );
        assert!(e.host_ports["i-2"].is_empty());
        let rules = &e.policies["vpc-1"].instances[&"10.0.0.6".parse::<Ipv4Addr>().unwrap()];
        assert!(rules.is_empty());
    }
}
