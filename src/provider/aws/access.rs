//! How the PostgreSQL steps reach an EC2 node: SSH to its public (or private) address with the
//! host key read from the instance's console output (GetConsoleOutput), never trusted on first
//! use. Waits are bounded (`aws.ssh_wait_secs`): a node that never shows its key fails the run,
//! which then rolls back.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::InstanceOut;
use super::steps::{AwsEnv, input, step_err};
use crate::postgres::NodeAccess;
use crate::saga::{StepCtx, StepError};
use crate::ssh::{ClientKey, SshSession, SshTarget, host_key_from_console};

pub struct AwsAccess {
    pub env: Arc<AwsEnv>,
    /// The instance's DNS names (primary and read-only): the certificate carries them all.
    pub dns_names: Vec<String>,
    /// The Route53 private hosted zone names are published in (`register.route53_zone`).
    pub route53_zone: Option<String>,
}

/// Sessions by instance id, shared by the run's steps in this process.
fn sessions() -> &'static Mutex<HashMap<String, Arc<SshSession>>> {
    static S: OnceLock<Mutex<HashMap<String, Arc<SshSession>>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

fn vm(ctx: &StepCtx, node: &str) -> Result<InstanceOut, StepError> {
    input(ctx, &format!("provision.vm.{node}"))
}

/// The node's host key, read from its console output (polled until `deadline`).
async fn host_key(
    env: &AwsEnv,
    vm: &InstanceOut,
    deadline: Instant,
) -> Result<russh::keys::PublicKey, StepError> {
    let ec2 = env.ec2().await?;
    let mut delay = Duration::from_secs(2);
    loop {
        let out = ec2
            .sdk()
            .get_console_output()
            .instance_id(&vm.instance_id)
            .latest(true)
            .send()
            .await;
        let text = match out {
            Ok(o) => o
                .output()
                .and_then(|b| aws_smithy_types::base64::decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                return Err(step_err(super::error::classify(
                    "GetConsoleOutput",
                    &vm.instance_id,
                    e,
                )));
            }
        };
        if let Some(key) = text.as_deref().and_then(host_key_from_console) {
            return Ok(key);
        }
        if Instant::now() >= deadline {
            return Err(StepError::Permanent(format!(
                "{}: no SSH host key in its console output after {} s; cannot verify the host, refusing to connect",
                vm.instance_id,
                env.ssh_wait.as_secs()
            )));
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(15));
    }
}

/// The host key of the EC2 node `vm`, from its console output within `aws.ssh_wait_secs`;
/// refused at once for an instance that is gone.
pub async fn verified_host_key(
    env: &AwsEnv,
    vm: &InstanceOut,
    node: &str,
) -> Result<russh::keys::PublicKey, StepError> {
    // A node that is gone never answers: say so at once instead of waiting out ssh_wait
    // (every rollback step that undoes something on the node would wait again).
    let ec2 = env.ec2().await?;
    if let Some(state) = ec2.instance_gone(&vm.instance_id).await.map_err(step_err)? {
        return Err(StepError::Permanent(format!(
            "{node}: instance {} is {state}; it cannot be reached",
            vm.instance_id
        )));
    }
    host_key(env, vm, Instant::now() + env.ssh_wait).await
}

/// A new verified SSH session to the EC2 node `vm` (`node` names it in errors): refused at
/// once for an instance that is gone, else as soon as its console shows the host key and sshd
/// answers, within `aws.ssh_wait_secs`.
pub async fn connect_node(
    env: &AwsEnv,
    vm: &InstanceOut,
    node: &str,
) -> Result<SshSession, StepError> {
    let deadline = Instant::now() + env.ssh_wait;
    let host_key = verified_host_key(env, vm, node).await?;
    let host = vm
        .public_ip
        .clone()
        .or(vm.private_ip.clone())
        .ok_or_else(|| StepError::Permanent(format!("{}: no IP address", vm.instance_id)))?;
    let key = ClientKey::load_or_create(&env.state_dir.join("ssh"))
        .map_err(|e| StepError::Permanent(format!("dbctl SSH key: {e}")))?;
    // Debian's cloud images log in as `admin`; dbctl's user-data adds `dbctl` as well.
    let target = SshTarget {
        host,
        port: 22,
        user: "dbctl".into(),
        host_key,
    };
    let mut delay = Duration::from_secs(1);
    loop {
        match SshSession::connect(&target, &key, Duration::from_secs(20)).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(StepError::Permanent(format!("{node}: {e}"))),
        }
    }
}

#[async_trait]
impl NodeAccess for AwsAccess {
    fn instance_credentials(&self) -> bool {
        self.env.settings.instance_profile.is_some()
    }

    async fn session(&self, ctx: &StepCtx, node: &str) -> Result<Arc<SshSession>, StepError> {
        let vm = vm(ctx, node)?;
        let mut all = sessions().lock().await;
        if let Some(s) = all.get(&vm.instance_id).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let s = Arc::new(connect_node(&self.env, &vm, node).await?);
        all.insert(vm.instance_id.clone(), s.clone());
        Ok(s)
    }

    fn pg_endpoint(&self, ctx: &StepCtx, node: &str) -> Result<(String, u16), StepError> {
        let vm = vm(ctx, node)?;
        let host = vm
            .public_ip
            .or(vm.private_ip)
            .ok_or_else(|| StepError::Permanent(format!("{node}: no IP address")))?;
        Ok((host, 5432))
    }

    fn pg_through_ssh(&self) -> bool {
        // 5432 is open to the VPC (and to `aws.extra_pg_cidrs`), never implicitly to the
        // operator's machine: the host's own check goes the way SSH already goes.
        true
    }

    fn vpc_cidr(&self) -> String {
        self.env.settings.vpc_cidr.clone()
    }

    fn client_cidrs(&self) -> Vec<String> {
        let mut c = vec![self.env.settings.vpc_cidr.clone()];
        c.extend(self.env.settings.extra_pg_cidrs.iter().cloned());
        c
    }

    fn cert_names(&self, ctx: &StepCtx, node: &str) -> Result<Vec<String>, StepError> {
        let vm = vm(ctx, node)?;
        let mut names = self.dns_names.clone();
        names.extend(vm.public_ip);
        names.extend(vm.private_ip);
        // The node's own clients connect over loopback: etcdctl and Patroni to the local etcd
        // member (an HA node), psql in scripts.
        names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        Ok(names)
    }

    fn private_address(&self, ctx: &StepCtx, node: &str) -> Result<String, StepError> {
        vm(ctx, node)?
            .private_ip
            .ok_or_else(|| StepError::Permanent(format!("{node}: no private IP")))
    }

    fn data_device(&self, ctx: &StepCtx, node: &str) -> Result<String, StepError> {
        // Nitro instances expose EBS volumes as NVMe devices named after the volume id.
        let vol: super::VolumeOut = input(ctx, &format!("provision.disk.{node}"))?;
        Ok(format!(
            "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
            vol.volume_id.replace('-', "")
        ))
    }

    async fn publish_dns(
        &self,
        ctx: &StepCtx,
        records: &[(String, Vec<String>)],
    ) -> Result<Option<serde_json::Value>, StepError> {
        let Some(zone_name) = &self.route53_zone else {
            return Ok(None);
        };
        let network: super::NetworkOut = input(ctx, "provision.network")?;
        let region = self.env.ec2().await?.region().to_string();
        let dns = super::Dns::connect(&self.env.settings)
            .await
            .map_err(step_err)?;
        let zone = dns.find_private_zone(zone_name).await.map_err(step_err)?;
        // The VPC must be associated for its instances to resolve the zone's names.
        let association = dns
            .associate_vpc(&zone, &network.vpc_id, &region)
            .await
            .map_err(step_err)?;
        // Who made the names, before the names: `gc` finds them by it if the journal is lost.
        let who = super::route53_owner::Ownership {
            owner: crate::provider::leftovers::owner_id(&self.env.state_dir),
            run_id: ctx.run_id.clone(),
        };
        let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
        dns.claim(&zone, &names, 60, &who).await.map_err(step_err)?;
        dns.upsert_a_records(&zone, records, 60)
            .await
            .map_err(step_err)?;
        Ok(Some(serde_json::json!({
            "route53_zone": zone_name,
            "zone_id": zone.as_str(),
            "vpc_id": network.vpc_id,
            // Whether this run made the association (the undo removes only that one).
            "associated": association == super::route53::Association::Added,
            "region": region,
            "names": names,
        })))
    }

    async fn unpublish_dns(&self, ctx: &StepCtx, names: &[String]) -> Result<(), StepError> {
        let Some(zone_name) = &self.route53_zone else {
            return Ok(());
        };
        let dns = super::Dns::connect(&self.env.settings)
            .await
            .map_err(step_err)?;
        let zone = dns.find_private_zone(zone_name).await.map_err(step_err)?;
        dns.delete_records(&zone, names).await.map_err(step_err)?;
        // After the names: a crash in between leaves the marker `gc` sweeps by.
        dns.release(&zone, names).await.map_err(step_err)?;
        // The account's VPC (`aws.vpc_id`) keeps the associations it had: the network team's,
        // or one this run made and whose record a crash lost (rare, and harmless to leave).
        let made_here = ctx
            .outputs
            .as_ref()
            .and_then(|o| o.pointer("/provider_dns/associated"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if let Ok(network) = input::<super::NetworkOut>(ctx, "provision.network")
            && (!network.existing || made_here)
        {
            let region = self.env.ec2().await?.region().to_string();
            dns.disassociate_vpc(&zone, &network.vpc_id, &region)
                .await
                .map_err(step_err)?;
        }
        Ok(())
    }

    fn metrics_target(
        &self,
        ctx: &StepCtx,
        node: &str,
        guest_port: u16,
    ) -> Result<(String, u16), StepError> {
        // Prometheus runs inside the VPC: it scrapes the private address.
        Ok((self.private_address(ctx, node)?, guest_port))
    }
}
