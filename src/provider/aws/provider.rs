//! The `aws` provider: binds the flow's actions to EC2 calls (provision) and to the shared
//! PostgreSQL steps over SSH (deploy, setup), with one EC2 client per run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::access::AwsAccess;
use super::steps::{AwsEnv, AwsStep};
use crate::config::AwsSection;
use crate::flow::Action;
use crate::postgres::Pg;
use crate::provider::{Leftover, Provider, RunInfo};
use crate::saga::Step;
use crate::scheduler::ZoneInfo;
use crate::spec::{InstanceSpec, ValidationError};

pub struct Aws {
    config: AwsSection,
    register: Arc<crate::register::Settings>,
    state_dir: PathBuf,
    /// One environment (settings + lazily connected client) per run.
    envs: Mutex<HashMap<String, Arc<AwsEnv>>>,
}

impl Aws {
    pub fn new(
        config: &AwsSection,
        register: Arc<crate::register::Settings>,
        state_dir: PathBuf,
    ) -> Aws {
        Aws {
            config: config.clone(),
            register,
            state_dir,
            envs: Mutex::new(HashMap::new()),
        }
    }

    /// A client for sweeping: the configured region (else aws-config's chain), nothing else.
    async fn sweeper(&self) -> Result<super::Ec2, String> {
        let settings = super::AwsSettings {
            region: self.config.region.clone(),
            ..Default::default()
        };
        super::Ec2::connect(&settings)
            .await
            .map_err(|e| e.to_string())
    }

    /// The configured Route53 zone (`register.route53_zone`), for sweeping the names runs
    /// left there; `None` when none is configured.
    async fn route53(
        &self,
    ) -> Result<Option<(super::Dns, super::route53::ZoneId, String)>, String> {
        let Some(zone_name) = self.register.route53_zone.clone() else {
            return Ok(None);
        };
        let settings = super::AwsSettings {
            region: self.config.region.clone(),
            ..Default::default()
        };
        let dns = super::Dns::connect(&settings)
            .await
            .map_err(|e| e.to_string())?;
        let zone = dns
            .find_private_zone(&zone_name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some((dns, zone, zone_name)))
    }

    fn env(&self, run: &RunInfo<'_>) -> Arc<AwsEnv> {
        let mut envs = self.envs.lock().unwrap_or_else(|p| p.into_inner());
        envs.entry(run.run_id.to_string())
            .or_insert_with(|| {
                Arc::new(
                    AwsEnv::new(&self.config, run.spec, self.state_dir.clone())
                        .for_instance(run.instance_id),
                )
            })
            .clone()
    }
}

/// The smallest current-generation type that holds the spec's vCPUs and memory.
pub fn instance_type_for(spec: &InstanceSpec) -> String {
    const TYPES: &[(&str, u32, u32)] = &[
        ("t3.micro", 2, 1),
        ("t3.small", 2, 2),
        ("t3.medium", 2, 4),
        ("m6i.large", 2, 8),
        ("r6i.large", 2, 16),
        ("m6i.xlarge", 4, 16),
        ("r6i.xlarge", 4, 32),
        ("m6i.2xlarge", 8, 32),
        ("r6i.2xlarge", 8, 64),
        ("m6i.4xlarge", 16, 64),
        ("r6i.4xlarge", 16, 128),
        ("m6i.8xlarge", 32, 128),
        ("r6i.8xlarge", 32, 256),
        ("m6i.16xlarge", 64, 256),
        ("r6i.16xlarge", 64, 512),
    ];
    let r = spec.resources;
    TYPES
        .iter()
        .find(|(_, cpu, mem)| *cpu >= r.vcpus && *mem >= r.memory_gib)
        .map(|(t, _, _)| t.to_string())
        .unwrap_or_else(|| "r6i.16xlarge".into())
}

#[async_trait::async_trait]
impl Provider for Aws {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn zones(&self, region: &str) -> Vec<ZoneInfo> {
        crate::provider::configured_zones(
            &crate::config::Config {
                aws: self.config.clone(),
                ..Default::default()
            },
            "aws",
            region,
        )
        .into_iter()
        .map(|name| ZoneInfo {
            name,
            free_nodes: None,
            live_nodes: 0,
        })
        .collect()
    }

    fn node_credentials(&self) -> bool {
        self.config.instance_profile.is_some()
    }

    fn preflight(&self, spec: &InstanceSpec) -> Result<(), ValidationError> {
        super::ingress::check(&self.config, spec)?;
        let s3_backups = self.register.backup.repo == crate::config::RepoKind::S3;
        super::instance_profile::check(&self.config, s3_backups)
    }

    async fn preflight_online(
        &self,
        spec: &InstanceSpec,
        permissions: bool,
    ) -> crate::provider::Preflight {
        let env = AwsEnv::new(&self.config, spec, self.state_dir.clone());
        super::preflight::run(&env, spec, permissions).await
    }

    async fn leftovers(&self) -> Result<Vec<Leftover>, String> {
        let ec2 = self.sweeper().await?;
        let owner = crate::provider::leftovers::owner_id(&self.state_dir);
        let found = ec2
            .owned_resources(&owner)
            .await
            .map_err(|e| e.to_string())?;
        let mut leftovers: Vec<Leftover> = found
            .into_iter()
            .filter_map(|r| {
                let state = r.state.map(|s| format!(" ({s})")).unwrap_or_default();
                Some(Leftover {
                    what: format!("{:?} {} in {}{state}", r.kind, r.id, ec2.region()),
                    run_id: r.run?,
                })
            })
            .collect();
        if let Some((dns, zone, zone_name)) = self.route53().await? {
            for (name, run_id) in dns
                .owned_names(&zone, &owner)
                .await
                .map_err(|e| e.to_string())?
            {
                leftovers.push(Leftover {
                    what: format!("Route53 name {name} in {zone_name}"),
                    run_id,
                });
            }
        }
        Ok(leftovers)
    }

    async fn remove_leftovers(&self, run_id: &str) -> Result<(), String> {
        let ec2 = self.sweeper().await?;
        ec2.sweep_run(run_id).await.map_err(|e| e.to_string())?;
        if let Some((dns, zone, _)) = self.route53().await? {
            let owner = crate::provider::leftovers::owner_id(&self.state_dir);
            let names: Vec<String> = dns
                .owned_names(&zone, &owner)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(_, run)| run == run_id)
                .map(|(name, _)| name)
                .collect();
            // The names, then the markers that say whose they are (`route53_owner`).
            dns.delete_records(&zone, &names)
                .await
                .map_err(|e| e.to_string())?;
            dns.release(&zone, &names)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn bind(&self, run: &RunInfo<'_>, step: &str, action: &Action) -> Arc<dyn Step> {
        let env = self.env(run);
        let pg = || {
            Arc::new(Pg {
                access: Arc::new(AwsAccess {
                    env: env.clone(),
                    dns_names: self.register.all_names(
                        run.spec,
                        &run.placement
                            .nodes
                            .iter()
                            .map(|n| n.node.clone())
                            .collect::<Vec<_>>(),
                    ),
                    route53_zone: self.register.route53_zone.clone(),
                }),
                spec: run.spec.clone(),
                instance_id: run.instance_id.to_string(),
                state_dir: self.state_dir.clone(),
                register: self.register.clone(),
                purge_backups: run.purge_backups,
            })
        };
        if let Some(step) = crate::postgres::bind(action, pg(), run.placement) {
            return step;
        }
        // Everything else is provisioning, done against EC2.
        Arc::new(AwsStep {
            env,
            step: step.to_string(),
            action: action.clone(),
            zones: run.placement.nodes.iter().map(|n| n.zone.clone()).collect(),
        })
    }
}
