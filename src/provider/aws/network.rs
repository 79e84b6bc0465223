//! The run's VPC and one subnet per availability zone.
//!
//! Internet access (gateway + route table) lives in [`super::routing`]; this file composes it.

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, Subnet, Vpc, VpcState};

use super::Ec2;
use super::config::Cidr;
use super::error::{AwsError, fail};
use super::tags::{RunTags, filter};
use super::wait::{Backoff, ignore_not_found, poll_until, retry_codes, retry_not_found};

/// What `ensure_network` built; stored in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkOut {
    pub vpc_id: String,
    pub vpc_cidr: String,
    /// One per requested zone, in the order the zones were given.
    pub subnets: Vec<SubnetOut>,
    /// Set when the network is public.
    pub internet_gateway_id: Option<String>,
    pub route_table_id: Option<String>,
    /// The account's own VPC (`aws.vpc_id`), not made by dbctl: never changed nor deleted.
    #[serde(default)]
    pub existing: bool,
}

impl NetworkOut {
    /// The subnet in `zone`, if the network has one there.
    pub fn subnet_in(&self, zone: &str) -> Option<&SubnetOut> {
        self.subnets.iter().find(|s| s.zone == zone)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubnetOut {
    pub zone: String,
    pub subnet_id: String,
    pub cidr: String,
}

impl Ec2 {
    /// The run's network in `zones`: the account's VPC when `aws.vpc_id` names one (nothing
    /// made: `existing_vpc`), else the run's own (`ensure_network`).
    pub async fn network_for(
        &self,
        tags: &RunTags,
        step: &str,
        zones: &[String],
    ) -> Result<NetworkOut, AwsError> {
        if self.settings.vpc_id.is_some() {
            return self.existing_network().await?.for_zones(zones);
        }
        self.ensure_network(tags, step, zones).await
    }

    /// Ensures the run's VPC (`settings.vpc_cidr`, DNS hostnames on), one subnet per zone, and,
    /// when `settings.public`, an internet gateway with a default route for those subnets.
    ///
    /// Guarantees: idempotent by run+step tags (a second call adopts the VPC, the subnets per zone
    /// and the gateway); every resource is tagged on create; `Permanent` on an invalid CIDR, no
    /// zones, or more zones than the CIDR can hold.
    pub async fn ensure_network(
        &self,
        tags: &RunTags,
        step: &str,
        zones: &[String],
    ) -> Result<NetworkOut, AwsError> {
        let label = tags.label("network", step);
        let vpc_cidr = Cidr::parse(&self.settings.vpc_cidr)
            .map_err(|m| AwsError::invalid("CreateVpc", &label, m))?;
        if zones.is_empty() {
            return Err(AwsError::invalid("CreateSubnet", &label, "no zones given"));
        }

        let vpc_id = match self
            .find_vpcs(tags.step_filters(step), &label)
            .await?
            .first()
        {
            Some(id) => id.clone(),
            None => {
                let out = self
                    .client
                    .create_vpc()
                    .cidr_block(vpc_cidr.to_string())
                    .tag_specifications(tags.spec(ResourceType::Vpc, step))
                    .send()
                    .await
                    .map_err(fail("CreateVpc", &label))?;
                let id = out.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
                tracing::info!(vpc = id, step, "created VPC");
                id.to_string()
            }
        };
        let vpc = self.wait_vpc_available(&vpc_id).await?;
        // An adopted VPC keeps the CIDR it was created with, even if the setting changed since:
        // subnets must be carved from what exists.
        let vpc_cidr = match vpc.cidr_block().map(Cidr::parse) {
            Some(Ok(c)) => c,
            _ => vpc_cidr,
        };
        // Private DNS names for instances (EC2 defaults hostnames to off in non-default VPCs).
        // One attribute per call is an API rule.
        for hostnames in [false, true] {
            let on = AttributeBooleanValue::builder().value(true).build();
            retry_not_found(|| async {
                let call = self.client.modify_vpc_attribute().vpc_id(&vpc_id);
                let call = if hostnames {
                    call.enable_dns_hostnames(on.clone())
                } else {
                    call.enable_dns_support(on.clone())
                };
                call.send()
                    .await
                    .map(|_| ())
                    .map_err(fail("ModifyVpcAttribute", &vpc_id))
            })
            .await?;
        }

        let subnets = self
            .ensure_subnets(tags, step, &vpc_id, vpc_cidr, zones, &label)
            .await?;
        let (internet_gateway_id, route_table_id) = if self.settings.public {
            let ids: Vec<&str> = subnets.iter().map(|s| s.subnet_id.as_str()).collect();
            let (igw, rt) = self
                .ensure_internet_route(tags, step, &vpc_id, &ids)
                .await?;
            (Some(igw), Some(rt))
        } else {
            (None, None)
        };
        Ok(NetworkOut {
            vpc_id,
            vpc_cidr: vpc_cidr.to_string(),
            subnets,
            internet_gateway_id,
            route_table_id,
            existing: false,
        })
    }

    /// One subnet per zone: adopts tagged subnets, creates the missing ones in free CIDR slots.
    async fn ensure_subnets(
        &self,
        tags: &RunTags,
        step: &str,
        vpc_id: &str,
        vpc_cidr: Cidr,
        zones: &[String],
        label: &str,
    ) -> Result<Vec<SubnetOut>, AwsError> {
        let mut existing = self.subnets_of(vpc_id, label).await?;
        let prefix = vpc_cidr.zone_subnet_prefix();
        let mut result = Vec::new();
        for zone in zones {
            if let Some(s) = existing
                .iter()
                .find(|s| s.availability_zone() == Some(zone))
            {
                result.push(subnet_out(s));
                continue;
            }
            // The lowest slot not used by any subnet of the VPC: stable across retries, and a
            // changed zone list cannot collide with a subnet that already exists.
            let used: Vec<&str> = existing.iter().filter_map(|s| s.cidr_block()).collect();
            let cidr = (0..)
                .map_while(|i| vpc_cidr.subnet(prefix, i))
                .find(|c| !used.contains(&c.to_string().as_str()))
                .ok_or_else(|| {
                    AwsError::invalid("CreateSubnet", label, format!("{vpc_cidr} is full"))
                })?;
            let created = self
                .client
                .create_subnet()
                .vpc_id(vpc_id)
                .cidr_block(cidr.to_string())
                .availability_zone(zone)
                .tag_specifications(tags.spec(ResourceType::Subnet, step))
                .send()
                .await
                .map_err(fail(
                    "CreateSubnet",
                    &format!("subnet in {zone} for {label}"),
                ))?;
            let subnet = created.subnet().cloned().ok_or_else(|| {
                AwsError::not_yet("CreateSubnet", label, "response had no subnet")
            })?;
            tracing::info!(subnet = subnet.subnet_id(), zone, "created subnet");
            result.push(subnet_out(&subnet));
            existing.push(subnet);
        }
        if self.settings.public {
            for s in &result {
                let on = AttributeBooleanValue::builder().value(true).build();
                retry_not_found(|| async {
                    self.client
                        .modify_subnet_attribute()
                        .subnet_id(&s.subnet_id)
                        .map_public_ip_on_launch(on.clone())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(fail("ModifySubnetAttribute", &s.subnet_id))
                })
                .await?;
            }
        }
        Ok(result)
    }

    /// Deletes the run's network: route table, internet gateway, subnets, VPC, in that order.
    ///
    /// Guarantees: with `out = None` the VPC is found by run+step tags; resources already gone
    /// count as deleted. Refuses (`Permanent`, code `DependencyViolation`) while the VPC still has
    /// a live instance or a non-default security group — the saga must delete those first — and
    /// waits for instances that are only shutting down.
    pub async fn delete_network(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&NetworkOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("network", step);
        let mut vpcs = self.find_vpcs(tags.step_filters(step), &label).await?;
        if let Some(o) = out
            && !vpcs.contains(&o.vpc_id)
        {
            vpcs.push(o.vpc_id.clone());
        }
        for vpc_id in &vpcs {
            self.check_vpc_unused(vpc_id).await?;
        }
        // Gateways and route tables of this step that may not be attached to the VPC (a crash
        // between create and attach) are found by tags too.
        self.delete_internet_routes(tags, step, out).await?;
        for vpc_id in vpcs {
            self.delete_vpc_tree(&vpc_id).await?;
        }
        Ok(())
    }

    /// `Ok` once no instance (waiting for shutting-down ones) and no non-default security group
    /// is left in `vpc_id`; `Permanent` `DependencyViolation` otherwise. Checked before anything
    /// is deleted, so a refused delete leaves the network whole.
    async fn check_vpc_unused(&self, vpc_id: &str) -> Result<(), AwsError> {
        self.wait_no_instances(filter("vpc-id", &[vpc_id]), "DeleteVpc", vpc_id)
            .await?;
        let groups = self
            .client
            .describe_security_groups()
            .filters(filter("vpc-id", &[vpc_id]))
            .send()
            .await
            .map_err(fail("DescribeSecurityGroups", vpc_id))?;
        let extra: Vec<&str> = groups
            .security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .filter_map(|g| g.group_id())
            .collect();
        if !extra.is_empty() {
            return Err(AwsError::Permanent {
                op: "DeleteVpc".into(),
                resource: vpc_id.into(),
                message: format!("security groups still in the VPC: {}", extra.join(", ")),
                code: Some("DependencyViolation".into()),
            });
        }
        Ok(())
    }

    /// Deletes one VPC and what is inside it that dbctl created (subnets, route tables,
    /// gateways), after checking that no instance or security group still depends on it.
    pub(crate) async fn delete_vpc_tree(&self, vpc_id: &str) -> Result<(), AwsError> {
        self.check_vpc_unused(vpc_id).await?;
        self.delete_routes_of_vpc(vpc_id).await?;
        for subnet in self.subnets_of(vpc_id, vpc_id).await? {
            let id = subnet.subnet_id().unwrap_or_default();
            self.delete_subnet(id).await?;
        }
        // Lingering interfaces of just-terminated instances show up as DependencyViolation.
        ignore_not_found(
            retry_codes(&["DependencyViolation"], || async {
                self.client
                    .delete_vpc()
                    .vpc_id(vpc_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("DeleteVpc", vpc_id))
            })
            .await,
        )?;
        tracing::info!(vpc = vpc_id, "deleted VPC");
        Ok(())
    }

    pub(crate) async fn delete_subnet(&self, subnet_id: &str) -> Result<(), AwsError> {
        ignore_not_found(
            retry_codes(&["DependencyViolation"], || async {
                self.client
                    .delete_subnet()
                    .subnet_id(subnet_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("DeleteSubnet", subnet_id))
            })
            .await,
        )
    }

    /// VPC ids matching `filters` (VPCs disappear when deleted, so no state filter is needed).
    pub(crate) async fn find_vpcs(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
        label: &str,
    ) -> Result<Vec<String>, AwsError> {
        let out = self
            .client
            .describe_vpcs()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(fail("DescribeVpcs", label))?;
        let mut ids: Vec<String> = out
            .vpcs()
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        // Deterministic adoption if a create ever raced a lookup.
        ids.sort();
        Ok(ids)
    }

    pub(crate) async fn subnets_of(
        &self,
        vpc_id: &str,
        label: &str,
    ) -> Result<Vec<Subnet>, AwsError> {
        let out = self
            .client
            .describe_subnets()
            .filters(filter("vpc-id", &[vpc_id]))
            .send()
            .await
            .map_err(fail("DescribeSubnets", label))?;
        Ok(out.subnets().to_vec())
    }

    async fn wait_vpc_available(&self, vpc_id: &str) -> Result<Vpc, AwsError> {
        poll_until("DescribeVpcs", vpc_id, Backoff::STATE, || async {
            let out = self
                .client
                .describe_vpcs()
                .vpc_ids(vpc_id)
                .send()
                .await
                .map_err(fail("DescribeVpcs", vpc_id));
            match out {
                Ok(o) => Ok(o
                    .vpcs()
                    .first()
                    .filter(|v| v.state() == Some(&VpcState::Available))
                    .cloned()),
                // Not visible yet right after CreateVpc.
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

pub(crate) fn subnet_out(s: &Subnet) -> SubnetOut {
    SubnetOut {
        zone: s.availability_zone().unwrap_or_default().to_string(),
        subnet_id: s.subnet_id().unwrap_or_default().to_string(),
        cidr: s.cidr_block().unwrap_or_default().to_string(),
    }
}
