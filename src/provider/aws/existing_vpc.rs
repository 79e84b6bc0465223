//! `aws.vpc_id`: instances in a VPC the account already has (the network team's, with its
//! routes, peerings and DNS) instead of one made for each instance. One VPC and internet
//! gateway per instance meets the default quota (5 VPCs per region) at the fifth instance;
//! an existing VPC has no such limit and is what most production accounts use.
//!
//! dbctl creates, changes, tags and deletes nothing of that VPC: no subnet, no route, no
//! attribute. It only reads which subnet to use in each zone and whether that subnet routes
//! to an internet gateway (dbctl reaches the nodes through their public addresses). What the
//! run makes inside it (security group, instances, volumes) is tagged with the run as always,
//! and only that is removed by a rollback.

use aws_sdk_ec2::types::{RouteTable, Subnet};

use super::Ec2;
use super::config::Cidr;
use super::error::{AwsError, fail};
use super::network::{NetworkOut, SubnetOut, subnet_out};

/// The existing VPC's subnets dbctl may use: at most one per zone, in zone order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingNetwork {
    pub vpc_id: String,
    pub vpc_cidr: String,
    pub subnets: Vec<SubnetOut>,
}

impl ExistingNetwork {
    pub fn zones(&self) -> Vec<String> {
        self.subnets.iter().map(|s| s.zone.clone()).collect()
    }

    /// The run's network for `zones`: `Permanent` when one of them has no subnet to use.
    pub fn for_zones(&self, zones: &[String]) -> Result<NetworkOut, AwsError> {
        let mut subnets = Vec::new();
        for zone in zones {
            let s = self
                .subnets
                .iter()
                .find(|s| &s.zone == zone)
                .ok_or_else(|| {
                    invalid(
                        &self.vpc_id,
                        format!(
                            "aws.vpc_id: {} has no subnet dbctl may use in {zone} (it has: {})",
                            self.vpc_id,
                            self.zones().join(", ")
                        ),
                    )
                })?;
            subnets.push(s.clone());
        }
        Ok(NetworkOut {
            vpc_id: self.vpc_id.clone(),
            vpc_cidr: self.vpc_cidr.clone(),
            subnets,
            internet_gateway_id: None,
            route_table_id: None,
            existing: true,
        })
    }
}

fn invalid(resource: &str, message: String) -> AwsError {
    AwsError::invalid("DescribeSubnets", resource, message)
}

impl Ec2 {
    /// Reads `settings.vpc_id` and picks its subnets: `settings.subnet_ids` when given (each
    /// must be in the VPC, one per zone), else every subnet of the VPC dbctl could use (refused
    /// when a zone has several: which one is the operator's choice). With `settings.public`, a
    /// usable subnet routes 0.0.0.0/0 to an internet gateway.
    ///
    /// Guarantees: reads only. `Permanent` with a message naming `aws.vpc_id` or
    /// `aws.subnet_ids` for a VPC that does not exist, a subnet outside it, two subnets in one
    /// zone, or a public run in a subnet without an internet route.
    pub async fn existing_network(&self) -> Result<ExistingNetwork, AwsError> {
        let Some(vpc_id) = self.settings.vpc_id.clone() else {
            return Err(invalid("aws.vpc_id", "aws.vpc_id is not set".into()));
        };
        let vpcs = self
            .client
            .describe_vpcs()
            .vpc_ids(&vpc_id)
            .send()
            .await
            .map_err(fail("DescribeVpcs", &vpc_id));
        let vpc = match vpcs {
            Ok(o) => o.vpcs().first().cloned(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        }
        .ok_or_else(|| {
            invalid(
                &vpc_id,
                format!(
                    "aws.vpc_id: no VPC {vpc_id} in {} (this account and region)",
                    self.region
                ),
            )
        })?;
        let vpc_cidr = vpc
            .cidr_block()
            .map(Cidr::parse)
            .and_then(Result::ok)
            .ok_or_else(|| invalid(&vpc_id, format!("aws.vpc_id: {vpc_id} has no IPv4 CIDR")))?;

        let all = self.subnets_of(&vpc_id, &vpc_id).await?;
        let tables = if self.settings.public {
            self.route_tables_of(&vpc_id).await?
        } else {
            Vec::new()
        };
        let reachable = |s: &Subnet| {
            !self.settings.public || routes_to_internet(&tables, s.subnet_id().unwrap_or_default())
        };
        let mut subnets: Vec<SubnetOut> = if self.settings.subnet_ids.is_empty() {
            // Every subnet dbctl could reach the nodes in: the public ones, for a public run.
            all.iter()
                .filter(|s| reachable(s))
                .map(subnet_out)
                .collect()
        } else {
            let mut picked = Vec::new();
            for id in &self.settings.subnet_ids {
                let s = all
                    .iter()
                    .find(|s| s.subnet_id() == Some(id))
                    .ok_or_else(|| {
                        invalid(
                            id,
                            format!("aws.subnet_ids: {id} is not a subnet of {vpc_id}"),
                        )
                    })?;
                if !reachable(s) {
                    return Err(invalid(
                        id,
                        format!(
                            "aws.subnet_ids: {id} has no route to an internet gateway, and dbctl \
                             reaches the nodes through their public addresses (aws.public); \
                             give public subnets"
                        ),
                    ));
                }
                picked.push(subnet_out(s));
            }
            picked
        };
        subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
        for pair in subnets.windows(2) {
            if pair[0].zone == pair[1].zone {
                return Err(invalid(
                    &vpc_id,
                    format!(
                        "aws.subnet_ids: {vpc_id} has {} and {} in {}; name one subnet per zone \
                         for dbctl to use",
                        pair[0].subnet_id, pair[1].subnet_id, pair[0].zone
                    ),
                ));
            }
        }
        if subnets.is_empty() {
            return Err(invalid(
                &vpc_id,
                format!(
                    "aws.vpc_id: {vpc_id} has no subnet{} dbctl could use",
                    if self.settings.public {
                        " with a route to an internet gateway (aws.public)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(ExistingNetwork {
            vpc_id,
            vpc_cidr: vpc_cidr.to_string(),
            subnets,
        })
    }
}

/// Whether `subnet`'s route table (its own association, else the VPC's main table, as EC2
/// routes) sends 0.0.0.0/0 to an internet gateway.
fn routes_to_internet(tables: &[RouteTable], subnet: &str) -> bool {
    let own = tables.iter().find(|t| {
        t.associations()
            .iter()
            .any(|a| a.subnet_id() == Some(subnet))
    });
    let main = || {
        tables
            .iter()
            .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
    };
    own.or_else(main).is_some_and(|t| {
        t.routes().iter().any(|r| {
            r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id().is_some_and(|g| g.starts_with("igw-"))
        })
    })
}
