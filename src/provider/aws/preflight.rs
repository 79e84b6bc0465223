//! `dbctl plan/create --provider aws` preflight: credentials, zones that offer the instance type,
//! and permission for the costly create calls (RunInstances, CreateVolume), asked with `DryRun`
//! (EC2 answers `DryRunOperation` when the call would be allowed, `UnauthorizedOperation` when
//! not). Only calls whose DryRun is known to be honoured are asked — moto, for one, performs
//! CreateVpc despite DryRun — and anything an API creates anyway is deleted at once.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{InstanceType, VolumeType};

use super::steps::AwsEnv;
use crate::provider::{Check, Preflight};
use crate::spec::InstanceSpec;

const TRANSIENT: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
    "Unavailable",
];

fn dry_run_check<T, E: ProvideErrorMetadata>(name: &str, r: Result<T, E>) -> Check {
    let (ok, detail) = match r {
        Err(e) if e.code() == Some("DryRunOperation") => (true, "allowed".to_string()),
        Err(e) if e.code() == Some("UnauthorizedOperation") => {
            (false, "not permitted for these credentials".to_string())
        }
        // A throttled or failing API says nothing about permissions; the run will find out.
        Err(e) if TRANSIENT.contains(&e.code().unwrap_or("")) => (
            true,
            format!("not verified: {} (transient)", e.code().unwrap_or("")),
        ),
        Err(e) => (
            false,
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            ),
        ),
        Ok(_) => (
            false,
            "the API ignored DryRun and performed the call".to_string(),
        ),
    };
    Check {
        name: format!("permission {name}"),
        ok,
        detail,
    }
}

/// Zones always; with `permissions`, the DryRun checks too (what `plan` shows).
pub async fn run(env: &AwsEnv, spec: &InstanceSpec, permissions: bool) -> Preflight {
    let mut p = Preflight::default();
    let ec2 = match env.ec2().await {
        Ok(c) => c,
        Err(e) => {
            p.checks.push(Check {
                name: "credentials".into(),
                ok: false,
                detail: e.to_string(),
            });
            return p;
        }
    };
    let s = &env.settings;
    match ec2.available_zones(&s.instance_type).await {
        Ok(zones) => {
            p.checks.push(Check {
                name: "zones".into(),
                ok: true,
                detail: format!("{} offered in {}", s.instance_type, zones.join(", ")),
            });
            p.zones = Some(zones);
        }
        Err(e) => p.checks.push(Check {
            name: "zones".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    // The account's VPC (`aws.vpc_id`): refused before anything is created when it or its
    // subnets will not do; nodes are placed only in zones where it has a subnet to use.
    if s.vpc_id.is_some() {
        match ec2.existing_network().await {
            Ok(net) => {
                p.checks.push(Check {
                    name: "network".into(),
                    ok: true,
                    detail: format!(
                        "{} ({}), subnets in {}",
                        net.vpc_id,
                        net.vpc_cidr,
                        net.zones().join(", ")
                    ),
                });
                let usable = net.zones();
                p.zones = Some(match p.zones.take() {
                    Some(offered) => offered.into_iter().filter(|z| usable.contains(z)).collect(),
                    None => usable,
                });
            }
            Err(e) => p.checks.push(Check {
                name: "network".into(),
                ok: false,
                detail: e.to_string(),
            }),
        }
    }
    if !permissions {
        return p;
    }
    let sdk = ec2.sdk();
    let zone = p
        .zones
        .as_ref()
        .and_then(|z| z.first().cloned())
        .unwrap_or_else(|| format!("{}a", spec.region));
    let volume = sdk
        .create_volume()
        .availability_zone(&zone)
        .size(spec.disk_gib as i32)
        .volume_type(VolumeType::Gp3)
        .encrypted(true)
        .dry_run(true)
        .send()
        .await;
    if let Ok(v) = &volume
        && let Some(id) = v.volume_id()
    {
        let _ = sdk.delete_volume().volume_id(id).send().await;
    }
    p.checks.push(dry_run_check("ec2:CreateVolume", volume));
    match ec2.resolve_ami(s.ami.as_deref(), &s.instance_type).await {
        Ok(ami) => {
            let run = sdk
                .run_instances()
                .image_id(&ami)
                .instance_type(InstanceType::from(s.instance_type.as_str()))
                .min_count(1)
                .max_count(1)
                .dry_run(true)
                .send()
                .await;
            if let Ok(r) = &run {
                let ids: Vec<String> = r
                    .instances()
                    .iter()
                    .filter_map(|i| i.instance_id().map(String::from))
                    .collect();
                let _ = sdk
                    .terminate_instances()
                    .set_instance_ids(Some(ids))
                    .send()
                    .await;
            }
            p.checks.push(dry_run_check("ec2:RunInstances", run));
        }
        Err(e) => p.checks.push(Check {
            name: "image".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    let nodes = spec.nodes();
    let network = match &s.vpc_id {
        Some(vpc) => format!("nothing of {vpc} (aws.vpc_id): its subnets are used as they are"),
        None => format!(
            "VPC {} with one subnet per zone used{}",
            s.vpc_cidr,
            if s.public {
                ", internet gateway and route table"
            } else {
                ""
            }
        ),
    };
    p.creates = vec![
        network,
        format!(
            "security group: 5432 from the VPC{}; 9100/9187 (exporters) from the VPC; 22 from {}",
            if s.extra_pg_cidrs.is_empty() {
                String::new()
            } else {
                format!(" and {}", s.extra_pg_cidrs.join(", "))
            },
            s.ssh_cidr.as_deref().unwrap_or("nowhere (private-only)")
        ),
        "key pair (dbctl's ed25519 key)".into(),
        format!(
            "{nodes} × instance {} (IMDSv2 required), AMI {}",
            s.instance_type,
            s.ami.as_deref().unwrap_or("newest Debian 12")
        ),
        format!(
            "{nodes} × gp3 volume, encrypted, {} GiB, attached, deleted with the instance",
            spec.disk_gib
        ),
    ];
    p
}
