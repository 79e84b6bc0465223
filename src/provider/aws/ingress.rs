//! Who may reach the nodes, decided before anything is created: `dbctl create` refuses (exit 2,
//! naming the field) a request whose firewall would open SSH or PostgreSQL to the whole
//! internet, or that leaves dbctl itself no way to reach the nodes.
//!
//! The firewall step checks its rules again ([`super::security_group`]), but that runs after the
//! VPC exists and the run is journaled; refusing here is what keeps a bad setting from creating
//! anything. Ranges are judged as a set: `0.0.0.0/1` + `128.0.0.0/1` is the internet too.

use super::config::{Cidr, covers_everything};
use crate::config::AwsSection;
use crate::spec::{InstanceSpec, ValidationError};

/// Checks the SSH source, the PostgreSQL sources and the route dbctl needs to the nodes.
pub(crate) fn check(config: &AwsSection, spec: &InstanceSpec) -> Result<(), ValidationError> {
    // The flag (or spec file) wins over the config file; the message names the one used.
    let (field, ssh) = match (&spec.ssh_cidr, &config.ssh_cidr) {
        (Some(c), _) => ("ssh_cidr", c),
        (None, Some(c)) => ("aws.ssh_cidr", c),
        // Without an SSH rule the instance sits in a VPC made for this run that nothing else
        // can reach, so deploy would only wait out ssh_wait_secs and roll back. dbctl has no
        // bastion or VPN setting that could be the route instead.
        (None, None) => {
            return Err(ValidationError::new(
                "ssh_cidr",
                "aws: dbctl must reach the nodes over SSH: set --ssh-cidr or aws.ssh_cidr to the \
                 range dbctl runs from (the run's VPC has no other way in)",
            ));
        }
    };
    let ssh = Cidr::parse(ssh).map_err(|m| ValidationError::new(field, m))?;
    if covers_everything(&[ssh]) {
        return Err(ValidationError::new(
            field,
            "must not open SSH (22) to the whole internet; give your own address range",
        ));
    }
    existing_vpc_ids(config)?;
    // In the account's own VPC (`aws.vpc_id`), private addresses are a way in when dbctl runs
    // inside it or is routed into it (VPN, peering, a bastion's tunnel).
    if !config.public && config.vpc_id.is_none() {
        return Err(ValidationError::new(
            "aws.public",
            "false gives the nodes no public address, and dbctl (outside the run's new VPC) \
             could not reach them over SSH; keep it true",
        ));
    }

    let mut pg =
        vec![Cidr::parse(&config.vpc_cidr).map_err(|m| ValidationError::new("aws.vpc_cidr", m))?];
    for (i, c) in config.extra_pg_cidrs.iter().enumerate() {
        pg.push(
            Cidr::parse(c)
                .map_err(|m| ValidationError::new(format!("aws.extra_pg_cidrs[{i}]"), m))?,
        );
    }
    if covers_everything(&pg) {
        return Err(ValidationError::new(
            "aws.extra_pg_cidrs",
            "together with aws.vpc_cidr these ranges cover the whole internet; PostgreSQL (5432) \
             is never opened to it",
        ));
    }
    Ok(())
}

/// `aws.vpc_id` and `aws.subnet_ids` as EC2 spells them, and subnets only with a VPC: a typo
/// is refused here (exit 2, before anything is created), not by EC2 half-way through a run.
fn existing_vpc_ids(config: &AwsSection) -> Result<(), ValidationError> {
    let well_formed = |id: &str, prefix: &str| {
        id.strip_prefix(prefix)
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if let Some(vpc) = &config.vpc_id
        && !well_formed(vpc, "vpc-")
    {
        return Err(ValidationError::new(
            "aws.vpc_id",
            format!("{vpc:?} is not a VPC id (vpc- and hex digits, as in vpc-0a1b2c3d)"),
        ));
    }
    for (i, id) in config.subnet_ids.iter().enumerate() {
        if !well_formed(id, "subnet-") {
            return Err(ValidationError::new(
                format!("aws.subnet_ids[{i}]"),
                format!("{id:?} is not a subnet id (subnet- and hex digits)"),
            ));
        }
    }
    if !config.subnet_ids.is_empty() && config.vpc_id.is_none() {
        return Err(ValidationError::new(
            "aws.subnet_ids",
            "subnets are used only in the account's own VPC: set aws.vpc_id too (without it \
             dbctl makes the run's VPC and its subnets)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ssh_cidr: Option<&str>) -> InstanceSpec {
        let input = crate::spec::SpecInput {
            name: Some("db".into()),
            provider: Some("aws".into()),
            region: Some("us-east-1".into()),
            ssh_cidr: ssh_cidr.map(String::from),
            ..Default::default()
        };
        crate::spec::validate::validate(input, &crate::spec::validate::Defaults::for_tests())
            .unwrap()
    }

    fn config(ssh: Option<&str>, extra: &[&str]) -> AwsSection {
        AwsSection {
            ssh_cidr: ssh.map(String::from),
            extra_pg_cidrs: extra.iter().map(|s| s.to_string()).collect(),
            ..AwsSection::default()
        }
    }

    fn field(r: Result<(), ValidationError>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn a_narrow_ssh_range_from_flag_or_config_passes() {
        check(&config(Some("203.0.113.0/24"), &[]), &spec(None)).unwrap();
        check(
            &config(None, &["198.51.100.0/24"]),
            &spec(Some("203.0.113.7/32")),
        )
        .unwrap();
    }

    #[test]
    fn the_whole_internet_is_refused_on_22_and_5432() {
        let narrow = Some("203.0.113.0/24");
        assert_eq!(
            field(check(&config(Some("0.0.0.0/0"), &[]), &spec(None))),
            "aws.ssh_cidr"
        );
        assert_eq!(
            field(check(&config(Some("::/0"), &[]), &spec(None))),
            "aws.ssh_cidr"
        );
        let halves = config(narrow, &["0.0.0.0/1", "128.0.0.0/1"]);
        assert_eq!(field(check(&halves, &spec(None))), "aws.extra_pg_cidrs");
        let one = config(narrow, &["0.0.0.0/0"]);
        assert_eq!(field(check(&one, &spec(None))), "aws.extra_pg_cidrs");
        let v6 = config(narrow, &["10.0.0.0/8", "::/0"]);
        assert_eq!(field(check(&v6, &spec(None))), "aws.extra_pg_cidrs[1]");
    }

    #[test]
    fn no_route_to_the_nodes_is_refused() {
        assert_eq!(field(check(&config(None, &[]), &spec(None))), "ssh_cidr");
        let private = AwsSection {
            public: false,
            ..config(Some("203.0.113.0/24"), &[])
        };
        assert_eq!(field(check(&private, &spec(None))), "aws.public");
        // In the account's own VPC the private addresses are the way in (VPN, peering, dbctl
        // running inside it).
        let inside = AwsSection {
            vpc_id: Some("vpc-0a1b2c3d".into()),
            ..private
        };
        assert!(check(&inside, &spec(None)).is_ok());
    }

    #[test]
    fn existing_vpc_ids_are_checked_before_anything_is_made() {
        let base = config(Some("203.0.113.0/24"), &[]);
        let with = |vpc: Option<&str>, subnets: &[&str]| AwsSection {
            vpc_id: vpc.map(String::from),
            subnet_ids: subnets.iter().map(|s| s.to_string()).collect(),
            ..base.clone()
        };
        assert!(check(&with(Some("vpc-0a1b2c3d"), &["subnet-12ab"]), &spec(None)).is_ok());
        assert_eq!(
            field(check(&with(Some("my-vpc"), &[]), &spec(None))),
            "aws.vpc_id"
        );
        assert_eq!(
            field(check(
                &with(Some("vpc-0a1b"), &["subnet-1", "sn-2"]),
                &spec(None)
            )),
            "aws.subnet_ids[1]"
        );
        assert_eq!(
            field(check(&with(None, &["subnet-12ab"]), &spec(None))),
            "aws.subnet_ids"
        );
    }
}
