//! The aws provider's provisioning steps: each flow action mapped to the idempotent
//! `ensure_*` / `delete_*` calls of [`super::Ec2`]. Every create is tagged with the run and step,
//! and every `delete_*` finds its resource by those tags when the journal lost the outputs.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::capacity;
use super::{
    AwsError, AwsSettings, Ec2, InstanceOut, InstanceRequest, KeyPairOut, NetworkOut, RunTags,
    SecurityGroupOut, VolumeOut, VolumeRequest,
};
use crate::config::AwsSection;
use crate::flow::Action;
use crate::saga::{Step, StepCtx, StepError};
use crate::spec::InstanceSpec;

/// One run's AWS settings and its lazily connected client.
pub struct AwsEnv {
    pub settings: AwsSettings,
    pub ssh_wait: std::time::Duration,
    pub state_dir: PathBuf,
    project: String,
    instance: String,
    /// The user's `--tag`s, put on every resource.
    user_tags: std::collections::BTreeMap<String, String>,
    /// The journal's instance id, whose TTL becomes the `dbctl:expires-at` tag.
    instance_id: Option<String>,
    /// The zones the spec allows (`zones`; empty: any): a node moved for capacity stays in them.
    pub allowed_zones: Vec<String>,
    ec2: OnceCell<Ec2>,
}

pub fn step_err(e: AwsError) -> StepError {
    if e.is_transient() {
        StepError::Transient(e.to_string())
    } else {
        StepError::Permanent(e.to_string())
    }
}

impl AwsEnv {
    pub fn new(config: &AwsSection, spec: &InstanceSpec, state_dir: PathBuf) -> AwsEnv {
        let settings = AwsSettings {
            region: Some(spec.region.clone()),
            ami: spec.image.clone().or_else(|| config.ami.clone()),
            instance_type: spec
                .instance_type
                .clone()
                .or_else(|| config.instance_type.clone())
                .unwrap_or_else(|| super::provider::instance_type_for(spec)),
            ssh_cidr: spec.ssh_cidr.clone().or_else(|| config.ssh_cidr.clone()),
            extra_pg_cidrs: config.extra_pg_cidrs.clone(),
            vpc_cidr: config.vpc_cidr.clone(),
            vpc_id: config.vpc_id.clone(),
            subnet_ids: config.subnet_ids.clone(),
            instance_profile: config.instance_profile.clone(),
            public: config.public,
        };
        AwsEnv {
            settings,
            ssh_wait: std::time::Duration::from_secs(config.ssh_wait_secs),
            state_dir,
            project: spec.project.clone(),
            instance: spec.name.clone(),
            user_tags: spec.tags.clone(),
            instance_id: None,
            allowed_zones: spec.zones.clone(),
            ec2: OnceCell::new(),
        }
    }

    /// The same environment for the journal's instance `id` (a run's steps, not a preflight).
    pub fn for_instance(mut self, id: &str) -> AwsEnv {
        self.instance_id = Some(id.to_string());
        self
    }

    pub async fn ec2(&self) -> Result<&Ec2, StepError> {
        self.ec2
            .get_or_try_init(|| Ec2::connect(&self.settings))
            .await
            .map_err(step_err)
    }

    /// The tags of this run; the generation moves on after a rollback of the step.
    pub fn tags(&self, ctx: &StepCtx) -> Result<RunTags, StepError> {
        let mut extra = self.user_tags.clone();
        extra.insert(
            super::tags::TAG_OWNER.to_string(),
            crate::provider::leftovers::owner_id(&self.state_dir),
        );
        if let Some(at) = self.expires_at(ctx)? {
            extra.insert(super::tags::TAG_EXPIRES_AT.to_string(), at);
        }
        Ok(RunTags {
            run_id: ctx.run_id.clone(),
            project: self.project.clone(),
            instance: self.instance.clone(),
            generation: ctx.generation,
            extra,
        })
    }

    /// The instance's expiry as RFC 3339 (UTC), read from the journal: admission fixed it, so
    /// every step and every resume tags the same instant.
    fn expires_at(&self, ctx: &StepCtx) -> Result<Option<String>, StepError> {
        let Some(id) = &self.instance_id else {
            return Ok(None);
        };
        let row = ctx
            .journal
            .instance(id)
            .map_err(|e| StepError::Transient(format!("journal: {e}")))?;
        Ok(row.and_then(|r| r.expires_at).map(|ms| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_seconds(at).to_string()
        }))
    }
}

pub struct AwsStep {
    pub env: std::sync::Arc<AwsEnv>,
    pub step: String,
    pub action: Action,
    /// Zones the run's nodes were placed in (the network gets a subnet in each).
    pub zones: Vec<String>,
}

/// The recorded outputs of another step, typed.
pub fn input<T: DeserializeOwned>(ctx: &StepCtx, step: &str) -> Result<T, StepError> {
    let v = ctx
        .input(step)
        .ok_or_else(|| StepError::Permanent(format!("no outputs of {step}")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| StepError::Permanent(format!("{step} outputs: {e}")))
}

fn own<T: DeserializeOwned>(ctx: &StepCtx) -> Option<T> {
    ctx.outputs
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
}

fn json<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("outputs serialize")
}

impl AwsStep {
    /// The planned zone has no capacity for the type (`capacity` says why this moves the
    /// node): launches it in the first other zone that does, creating the run's subnet there.
    async fn launch_elsewhere(
        &self,
        ctx: &StepCtx,
        ec2: &Ec2,
        tags: &RunTags,
        node: &str,
        planned: InstanceRequest,
        first: AwsError,
    ) -> Result<InstanceOut, StepError> {
        let instance_type = self.env.settings.instance_type.clone();
        let mut offered = ec2
            .available_zones(&instance_type)
            .await
            .map_err(step_err)?;
        if self.env.settings.vpc_id.is_some() {
            // The account's VPC: only zones where it has a subnet dbctl may use.
            let usable = ec2.existing_network().await.map_err(step_err)?.zones();
            offered.retain(|z| usable.contains(z));
        }
        // Anti-affinity: no zone planned for a sibling, nor one a sibling moved to.
        let mut placed = self.zones.clone();
        placed.extend(
            ec2.sibling_zones(tags, &self.step)
                .await
                .map_err(step_err)?,
        );
        let candidates = capacity::fallback_zones(
            &offered,
            &self.env.allowed_zones,
            &placed,
            usize::from(crate::scheduler::node_index(node)),
        );
        let mut last = first;
        for zone in &candidates {
            ctx.log(&format!(
                "{node}: no {instance_type} capacity in {}; trying {zone}",
                planned.zone
            ));
            let mut zones = self.zones.clone();
            zones.push(zone.clone());
            zones.sort();
            zones.dedup();
            let net = ec2
                .network_for(tags, "provision.network", &zones)
                .await
                .map_err(step_err)?;
            let subnet = net
                .subnet_in(zone)
                .ok_or_else(|| StepError::Permanent(format!("no subnet in zone {zone}")))?;
            let req = InstanceRequest {
                zone: zone.clone(),
                subnet_id: subnet.subnet_id.clone(),
                ..planned.clone()
            };
            let token = capacity::token_in(&ctx.client_token, zone);
            match ec2.ensure_instance(tags, &self.step, &req, &token).await {
                Ok(i) => {
                    ctx.log(&format!(
                        "{node}: placed in {zone} instead of {}",
                        planned.zone
                    ));
                    return Ok(i);
                }
                Err(e) if capacity::is_capacity(&e) => last = e,
                Err(e) => return Err(step_err(e)),
            }
        }
        Err(StepError::Transient(format!(
            "{node}: no {instance_type} capacity in {} nor in {} (the other zones offering it \
             that hold none of the cluster's nodes): {last}",
            planned.zone,
            if candidates.is_empty() {
                "any other zone".to_string()
            } else {
                candidates.join(", ")
            }
        )))
    }
}

#[async_trait]
impl Step for AwsStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let ec2 = self.env.ec2().await?;
        let tags = self.env.tags(ctx)?;
        let step = self.step.as_str();
        if matches!(self.action, Action::Network) && self.env.settings.vpc_id.is_some() {
            // The account's VPC: read, never made or journaled as the run's (`existing_vpc`).
            let mut zones = self.zones.clone();
            zones.sort();
            zones.dedup();
            let net = ec2
                .existing_network()
                .await
                .and_then(|n| n.for_zones(&zones))
                .map_err(step_err)?;
            ctx.log(&format!(
                "using the account's {} (aws.vpc_id): {}",
                net.vpc_id,
                net.subnets
                    .iter()
                    .map(|s| format!("{} in {}", s.subnet_id, s.zone))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return Ok(json(net));
        }
        let kind = match &self.action {
            Action::Network => "vpc",
            Action::Firewall => "security-group",
            Action::KeyPair => "key-pair",
            Action::Vm { .. } => "instance",
            Action::Disk { .. } => "volume",
            _ => "attachment",
        };
        ctx.resource_intent(kind, step, None)?;
        let (id, out) = match &self.action {
            Action::Network => {
                let mut zones = self.zones.clone();
                zones.sort();
                zones.dedup();
                let n = ec2
                    .ensure_network(&tags, step, &zones)
                    .await
                    .map_err(step_err)?;
                (n.vpc_id.clone(), json(n))
            }
            Action::Firewall => {
                let net: NetworkOut = input(ctx, "provision.network")?;
                let sg = ec2
                    .ensure_security_group(
                        &tags,
                        step,
                        &net.vpc_id,
                        &net.vpc_cidr,
                        self.zones.len() > 1,
                    )
                    .await
                    .map_err(step_err)?;
                (sg.group_id.clone(), json(sg))
            }
            Action::KeyPair => {
                let key = crate::ssh::ClientKey::load_or_create(&self.env.state_dir.join("ssh"))
                    .map_err(|e| StepError::Permanent(format!("dbctl SSH key: {e}")))?;
                let kp = ec2
                    .ensure_key_pair(&tags, step, &key.public_openssh())
                    .await
                    .map_err(step_err)?;
                (kp.key_name.clone(), json(kp))
            }
            Action::Vm { node, zone } => {
                let net: NetworkOut = input(ctx, "provision.network")?;
                let sg: SecurityGroupOut = input(ctx, "provision.firewall")?;
                let kp: KeyPairOut = input(ctx, "provision.keypair")?;
                let subnet = net
                    .subnets
                    .iter()
                    .find(|s| &s.zone == zone)
                    .ok_or_else(|| StepError::Permanent(format!("no subnet in zone {zone}")))?;
                let key = crate::ssh::ClientKey::load_or_create(&self.env.state_dir.join("ssh"))
                    .map_err(|e| StepError::Permanent(format!("dbctl SSH key: {e}")))?;
                let user_data = crate::cloud_init::user_data(&crate::cloud_init::NodeIdentity {
                    hostname: &format!("{}-{node}", self.env.instance),
                    run_id: &ctx.run_id,
                    instance: &self.env.instance,
                    node,
                    role: if node == "primary" {
                        "primary"
                    } else {
                        "replica"
                    },
                    private_ip: "dhcp",
                    ssh_public_key: &key.public_openssh(),
                    // The AMI's own login (`admin` on Debian) must survive for the operator.
                    keep_default_user: true,
                })
                .map_err(|e| StepError::Permanent(format!("user-data template: {e}")))?;
                let req = InstanceRequest {
                    zone: zone.clone(),
                    subnet_id: subnet.subnet_id.clone(),
                    security_group_id: sg.group_id.clone(),
                    key_name: kp.key_name.clone(),
                    user_data: Some(user_data),
                    ami: self.env.settings.ami.clone(),
                    instance_type: Some(self.env.settings.instance_type.clone()),
                };
                let i = match ec2
                    .ensure_instance(&tags, step, &req, &ctx.client_token)
                    .await
                {
                    Err(e) if capacity::is_capacity(&e) => {
                        self.launch_elsewhere(ctx, ec2, &tags, node, req, e).await?
                    }
                    r => r.map_err(step_err)?,
                };
                (i.instance_id.clone(), json(i))
            }
            Action::Disk {
                node,
                zone,
                size_gib,
            } => {
                // Where the instance actually runs (another zone when the planned one had
                // no capacity: `capacity`); the plan runs this step after the vm's.
                let zone = input::<InstanceOut>(ctx, &format!("provision.vm.{node}"))
                    .map(|vm| vm.zone)
                    .unwrap_or_else(|_| zone.clone());
                let req = VolumeRequest {
                    zone,
                    size_gib: *size_gib as i32,
                    iops: None,
                    throughput: None,
                };
                let v = ec2
                    .ensure_volume(&tags, step, &req, &ctx.client_token)
                    .await
                    .map_err(step_err)?;
                (v.volume_id.clone(), json(v))
            }
            Action::AttachDisk { node } => {
                let vm: InstanceOut = input(ctx, &format!("provision.vm.{node}"))?;
                let vol: VolumeOut = input(ctx, &format!("provision.disk.{node}"))?;
                ec2.attach_volume(&tags, step, &vol.volume_id, &vm.instance_id, DEVICE)
                    .await
                    .map_err(step_err)?;
                (
                    vol.volume_id.clone(),
                    serde_json::json!({ "volume_id": vol.volume_id, "instance_id": vm.instance_id, "device": DEVICE }),
                )
            }
            other => {
                return Err(StepError::Permanent(format!(
                    "{step}: action {other:?} is not a provisioning action"
                )));
            }
        };
        ctx.resource_created(kind, step, &id)?;
        Ok(out)
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let ec2 = self.env.ec2().await?;
        let tags = self.env.tags(ctx)?;
        let step = self.step.as_str();
        if matches!(self.action, Action::Network)
            && (self.env.settings.vpc_id.is_some()
                || own::<NetworkOut>(ctx).is_some_and(|n| n.existing))
        {
            // Not the run's: nothing of the account's VPC is ever deleted.
            return Ok(());
        }
        let (kind, res) = match &self.action {
            Action::Network => (
                "vpc",
                ec2.delete_network(&tags, step, own::<NetworkOut>(ctx).as_ref())
                    .await,
            ),
            Action::Firewall => (
                "security-group",
                ec2.delete_security_group(&tags, step, own::<SecurityGroupOut>(ctx).as_ref())
                    .await,
            ),
            Action::KeyPair => (
                "key-pair",
                ec2.delete_key_pair(&tags, step, own::<KeyPairOut>(ctx).as_ref())
                    .await,
            ),
            Action::Vm { .. } => (
                "instance",
                ec2.delete_instance(&tags, step, own::<InstanceOut>(ctx).as_ref())
                    .await,
            ),
            Action::Disk { node, .. } => (
                "volume",
                release_and_delete_volume(ec2, ctx, &tags, step, node).await,
            ),
            // Nothing to call: the attachment ends with the instance, which the disk step's
            // undo (next in the rollback) terminates before it deletes the volume
            // (DeleteOnTermination mostly does it first). Detaching a mounted data volume from
            // a live instance hangs on EC2 and races the database's last writes.
            Action::AttachDisk { .. } => ("attachment", Ok(())),
            _ => return Ok(()),
        };
        res.map_err(step_err)?;
        ctx.resource_deleted(kind, step)
    }
}

/// The disk step's undo. The plan makes the data volume after its instance (it follows the
/// instance's zone: `capacity`), so a rollback undoes it first, while the instance still holds
/// it, and dbctl never detaches a data volume from a live instance (`Ec2::delete_volume`).
/// The holder is this run's own instance, the vm step's, whose undo comes next in the same
/// rollback: it is ended here (found by its run and step tags, as that undo would), which
/// releases the volume or deletes it outright (DeleteOnTermination). The vm undo then finds
/// nothing left to do.
async fn release_and_delete_volume(
    ec2: &Ec2,
    ctx: &StepCtx,
    tags: &RunTags,
    step: &str,
    node: &str,
) -> Result<(), AwsError> {
    let vm_step = format!("provision.vm.{node}");
    let vm = input::<InstanceOut>(ctx, &vm_step).ok();
    ec2.delete_instance(tags, &vm_step, vm.as_ref()).await?;
    ec2.delete_volume(tags, step, own::<VolumeOut>(ctx).as_ref())
        .await
}

/// Where the data volume is attached (shows up as an NVMe device on Nitro instances).
pub const DEVICE: &str = "/dev/xvdf";
