//! The instance firewall: SSH from one admin range only, PostgreSQL from inside the VPC (plus
//! explicitly listed ranges), and from members of the same group (replication).
//!
//! PostgreSQL is never opened to the internet: a `/0` in `extra_pg_cidrs` is a `Permanent`
//! error before any API call, not a warning.

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroup, UserIdGroupPair};

use super::Ec2;
use super::config::Cidr;
use super::error::{AwsError, fail};
use super::tags::{RunTags, TAG_RUN, filter, tag_value};
use super::wait::{ignore_not_found, retry_codes, retry_not_found};

pub const SSH_PORT: i32 = 22;
pub const PG_PORT: i32 = 5432;
const NODE_EXPORTER_PORT: i32 = crate::register::NODE_EXPORTER_PORT as i32;
const POSTGRES_EXPORTER_PORT: i32 = crate::register::POSTGRES_EXPORTER_PORT as i32;

/// What `ensure_security_group` built; stored in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityGroupOut {
    pub group_id: String,
    pub group_name: String,
    pub vpc_id: String,
}

/// One TCP ingress rule dbctl wants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    port: i32,
    source: Source,
    description: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Cidr(String),
    /// The group itself: members of the cluster reach each other.
    SameGroup,
}

/// The rules for `settings`, validated. Pure, so the "never 0.0.0.0/0 on 5432" rule is unit
/// tested without EC2.
fn desired_rules(
    vpc_cidr: &str,
    ssh_cidr: Option<&str>,
    extra_pg: &[String],
    cluster: bool,
    label: &str,
) -> Result<Vec<Rule>, AwsError> {
    let op = "AuthorizeSecurityGroupIngress";
    let parse = |c: &str| Cidr::parse(c).map_err(|m| AwsError::invalid(op, label, m));
    let mut rules = Vec::new();
    if let Some(ssh) = ssh_cidr {
        let cidr = parse(ssh)?;
        if cidr.is_everything() {
            // Allowed (key-only auth), but worth a loud line in the log.
            tracing::warn!("ssh_cidr {cidr} opens port 22 to the whole internet");
        }
        rules.push(Rule {
            port: SSH_PORT,
            source: Source::Cidr(cidr.to_string()),
            description: "dbctl: ssh from admin range",
        });
    }
    rules.push(Rule {
        port: PG_PORT,
        source: Source::Cidr(parse(vpc_cidr)?.to_string()),
        description: "dbctl: postgres from VPC",
    });
    // Prometheus scrapes the exporters from inside the VPC (register.monitoring).
    for (port, description) in [
        (NODE_EXPORTER_PORT, "dbctl: node exporter from VPC"),
        (POSTGRES_EXPORTER_PORT, "dbctl: postgres exporter from VPC"),
    ] {
        rules.push(Rule {
            port,
            source: Source::Cidr(parse(vpc_cidr)?.to_string()),
            description,
        });
    }
    for extra in extra_pg {
        let cidr = parse(extra)?;
        if cidr.is_everything() {
            return Err(AwsError::invalid(
                op,
                label,
                format!("refusing to open PostgreSQL ({PG_PORT}) to {cidr}: list narrower ranges"),
            ));
        }
        rules.push(Rule {
            port: PG_PORT,
            source: Source::Cidr(cidr.to_string()),
            description: "dbctl: postgres from extra range",
        });
    }
    rules.push(Rule {
        port: PG_PORT,
        source: Source::SameGroup,
        description: "dbctl: postgres between cluster members",
    });
    if cluster {
        // An HA cluster's members reach each other's etcd (clients and peers) and Patroni's
        // REST API (leader checks, switchover); nobody else does.
        use crate::postgres::patroni::config::{
            ETCD_CLIENT_PORT, ETCD_PEER_PORT, PATRONI_API_PORT,
        };
        for (port, description) in [
            (
                ETCD_CLIENT_PORT,
                "dbctl: etcd clients between cluster members",
            ),
            (ETCD_PEER_PORT, "dbctl: etcd peers between cluster members"),
            (
                PATRONI_API_PORT,
                "dbctl: patroni api between cluster members",
            ),
        ] {
            rules.push(Rule {
                port: i32::from(port),
                source: Source::SameGroup,
                description,
            });
        }
    }
    Ok(rules)
}

/// True when `group` already has `rule` (as one of possibly several sources of a permission).
fn has_rule(group: &SecurityGroup, rule: &Rule) -> bool {
    let group_id = group.group_id().unwrap_or_default();
    group.ip_permissions().iter().any(|p| {
        p.ip_protocol() == Some("tcp")
            && p.from_port() == Some(rule.port)
            && p.to_port() == Some(rule.port)
            && match &rule.source {
                Source::Cidr(c) => p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(c)),
                Source::SameGroup => p
                    .user_id_group_pairs()
                    .iter()
                    .any(|g| g.group_id() == Some(group_id)),
            }
    })
}

fn permission(rule: &Rule, group_id: &str) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(rule.port)
        .to_port(rule.port);
    match &rule.source {
        Source::Cidr(c) => b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .description(rule.description)
                .build(),
        ),
        Source::SameGroup => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(group_id)
                .description(rule.description)
                .build(),
        ),
    }
    .build()
}

impl Ec2 {
    /// Ensures the run's security group in `vpc_id` with exactly dbctl's ingress rules added:
    /// 22 from `settings.ssh_cidr` only (no SSH rule when unset), 5432 from `vpc_cidr`, from each
    /// `settings.extra_pg_cidrs` entry and from the group itself; for a `cluster` (HA) also
    /// etcd's and Patroni's ports from the group itself.
    ///
    /// Guarantees: validation happens before any call (`Permanent` on a malformed CIDR or a `/0`
    /// for 5432); idempotent by run+step tags, and rules are only added where missing (existing
    /// extra rules are left alone: dbctl never widens, it also does not police manual edits).
    pub async fn ensure_security_group(
        &self,
        tags: &RunTags,
        step: &str,
        vpc_id: &str,
        vpc_cidr: &str,
        cluster: bool,
    ) -> Result<SecurityGroupOut, AwsError> {
        let label = tags.label("security group", step);
        let s = &self.settings;
        let rules = desired_rules(
            vpc_cidr,
            s.ssh_cidr.as_deref(),
            &s.extra_pg_cidrs,
            cluster,
            &label,
        )?;
        let group_name = tags.name_for(step);

        let mut filters = tags.step_filters(step);
        filters.push(filter("vpc-id", &[vpc_id]));
        let group = match self.find_groups(filters, &label).await?.into_iter().next() {
            Some(g) => g,
            None => {
                self.create_group(tags, step, vpc_id, &group_name, &label)
                    .await?
            }
        };
        let group_id = group.group_id().unwrap_or_default().to_string();

        for rule in rules.iter().filter(|r| !has_rule(&group, r)) {
            let r = retry_not_found(|| async {
                self.client
                    .authorize_security_group_ingress()
                    .group_id(&group_id)
                    .ip_permissions(permission(rule, &group_id))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("AuthorizeSecurityGroupIngress", &group_id))
            })
            .await;
            match r {
                // Added by an earlier attempt that the describe above did not see yet.
                Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
                other => other?,
            }
        }
        Ok(SecurityGroupOut {
            group_id,
            group_name: group.group_name().unwrap_or(&group_name).to_string(),
            vpc_id: vpc_id.to_string(),
        })
    }

    async fn create_group(
        &self,
        tags: &RunTags,
        step: &str,
        vpc_id: &str,
        group_name: &str,
        label: &str,
    ) -> Result<SecurityGroup, AwsError> {
        let created = self
            .client
            .create_security_group()
            .group_name(group_name)
            .description(format!("dbctl {} ({})", tags.instance, tags.project))
            .vpc_id(vpc_id)
            .tag_specifications(tags.spec(ResourceType::SecurityGroup, step))
            .send()
            .await;
        let group_id = match created {
            Ok(out) => out.group_id().unwrap_or_default().to_string(),
            Err(e) => {
                let e = fail("CreateSecurityGroup", label)(e);
                if e.code() != Some("InvalidGroup.Duplicate") {
                    return Err(e);
                }
                // Same name in the same VPC: adopt it only if it is this run's.
                let filters = vec![
                    filter("vpc-id", &[vpc_id]),
                    filter("group-name", &[group_name]),
                ];
                let existing = self.find_groups(filters, label).await?;
                let ours = existing
                    .into_iter()
                    .find(|g| tag_value(g.tags(), TAG_RUN) == Some(tags.run_id.as_str()));
                return ours.ok_or(e);
            }
        };
        tracing::info!(group = group_id, step, "created security group");
        // Fresh group: describe it so the rule check sees the default egress rule shape.
        retry_not_found(|| async {
            let out = self
                .client
                .describe_security_groups()
                .group_ids(&group_id)
                .send()
                .await
                .map_err(fail("DescribeSecurityGroups", &group_id))?;
            out.security_groups()
                .first()
                .cloned()
                .ok_or_else(|| AwsError::Transient {
                    op: "DescribeSecurityGroups".into(),
                    resource: group_id.clone(),
                    message: "not visible yet".into(),
                    code: Some("InvalidGroup.NotFound".into()),
                })
        })
        .await
    }

    /// Deletes the run's security group (by `out`, else by run+step tags).
    ///
    /// Guarantees: waits for instances using the group to finish terminating and refuses
    /// (`Permanent`, `DependencyViolation`) while one is still live; gone = success.
    pub async fn delete_security_group(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&SecurityGroupOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("security group", step);
        let mut ids: Vec<String> = self
            .find_groups(tags.step_filters(step), &label)
            .await?
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        if let Some(o) = out
            && !ids.contains(&o.group_id)
        {
            ids.push(o.group_id.clone());
        }
        for id in ids {
            self.delete_group_by_id(&id).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete_group_by_id(&self, group_id: &str) -> Result<(), AwsError> {
        self.wait_no_instances(
            filter("instance.group-id", &[group_id]),
            "DeleteSecurityGroup",
            group_id,
        )
        .await?;
        // DependencyViolation: the terminated instance's interface lingers for a while.
        ignore_not_found(
            retry_codes(&["DependencyViolation"], || async {
                self.client
                    .delete_security_group()
                    .group_id(group_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("DeleteSecurityGroup", group_id))
            })
            .await,
        )?;
        tracing::info!(group = group_id, "deleted security group");
        Ok(())
    }

    pub(crate) async fn find_groups(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
        label: &str,
    ) -> Result<Vec<SecurityGroup>, AwsError> {
        let out = self
            .client
            .describe_security_groups()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(fail("DescribeSecurityGroups", label))?;
        Ok(out.security_groups().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_opens_postgres_to_the_world() {
        let e =
            desired_rules("10.42.0.0/16", None, &["0.0.0.0/0".into()], false, "sg").unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("5432"), "{e}");
    }

    #[test]
    fn a_cluster_opens_etcd_and_patroni_to_its_own_members_only() {
        let single = desired_rules("10.42.0.0/16", None, &[], false, "sg").unwrap();
        let cluster = desired_rules("10.42.0.0/16", None, &[], true, "sg").unwrap();
        for port in [2379, 2380, 8008] {
            assert!(
                single.iter().all(|r| r.port != port),
                "{port} on a single node"
            );
            let rules: Vec<_> = cluster.iter().filter(|r| r.port == port).collect();
            assert_eq!(rules.len(), 1, "{port}: {rules:?}");
            assert_eq!(rules[0].source, Source::SameGroup, "{port}");
        }
        assert_eq!(cluster.len(), single.len() + 3);
    }

    #[test]
    fn ssh_only_when_configured() {
        let rules = desired_rules("10.42.0.0/16", None, &[], false, "sg").unwrap();
        assert!(rules.iter().all(|r| r.port != SSH_PORT));
        let rules =
            desired_rules("10.42.0.0/16", Some("203.0.113.7/32"), &[], false, "sg").unwrap();
        let ssh: Vec<_> = rules.iter().filter(|r| r.port == SSH_PORT).collect();
        assert_eq!(ssh.len(), 1);
        assert_eq!(ssh[0].source, Source::Cidr("203.0.113.7/32".into()));
    }

    #[test]
    fn malformed_cidr_is_permanent() {
        assert!(desired_rules("10.42.0.0/16", Some("nope"), &[], false, "sg").is_err());
    }
}
