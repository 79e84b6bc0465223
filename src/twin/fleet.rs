//! The twin's machines as a whole: which moto instance has which VM and loopback address, kept
//! in `<state>/fleet.json` so a restarted twin (or `ec2-twin stop`) knows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::loopback::{self, Rewrites};
use super::machine::{Layout, Machine};
use super::proxy::Upstream;
use super::security;
use super::volume;
use super::xml::InstanceFacts;
use super::{imds, profile};
use crate::provider::local::image::Image;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Loopback addresses and MAC indexes handed out so far (never reused in one state dir).
    next: u32,
    rewrites: Rewrites,
    machines: BTreeMap<String, Machine>,
}

/// A lifecycle call on instances, as the twin carries it out on their VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Stop,
    Start,
    Reboot,
    Terminate,
}

impl Lifecycle {
    pub fn of_action(action: &str) -> Option<Lifecycle> {
        Some(match action {
            "StopInstances" => Lifecycle::Stop,
            "StartInstances" => Lifecycle::Start,
            "RebootInstances" => Lifecycle::Reboot,
            "TerminateInstances" => Lifecycle::Terminate,
            _ => return None,
        })
    }
}

pub struct Fleet {
    pub layout: Layout,
    /// The twin AMIs registered in moto and the images behind them: instances of these get
    /// VMs, others stay API-only.
    images: BTreeMap<String, Image>,
    upstream: Upstream,
    /// moto itself, typed, for the reads security groups need (`security::read`).
    ec2: aws_sdk_ec2::Client,
    /// This twin's loopback block, for public addresses (`loopback`).
    block: loopback::Block,
    state: Mutex<State>,
}

impl Fleet {
    pub fn new(
        layout: Layout,
        images: BTreeMap<String, Image>,
        upstream: Upstream,
        ec2: aws_sdk_ec2::Client,
        block: loopback::Block,
    ) -> Fleet {
        let state = std::fs::read_to_string(layout.root.join("fleet.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Fleet {
            layout,
            images,
            upstream,
            ec2,
            block,
            state: Mutex::new(state),
        }
    }

    /// The image behind `machine`'s AMI (machines recorded before there were two: the first).
    fn image_of(&self, machine: &Machine) -> &Image {
        self.images
            .get(&machine.ami)
            .or_else(|| self.images.values().next())
            .expect("the twin serves at least one AMI")
    }

    fn save(&self, state: &State) {
        let text = serde_json::to_string_pretty(state).expect("state serializes");
        if let Err(e) =
            crate::atomic_file::write(&self.layout.root.join("fleet.json"), text.as_bytes(), 0o644)
        {
            tracing::warn!("fleet.json: {e}");
        }
    }

    /// RunInstances went through: boots a VM for every new instance of the twin AMI, behind
    /// its groups (the policies and its forwards are in place before it starts), with its
    /// metadata service serving `profile`'s credentials when the request named one.
    pub async fn launched(
        &self,
        user_data: &str,
        profile: Option<&str>,
        instances: &[InstanceFacts],
    ) {
        let mut state = self.state.lock().await;
        let mut new = Vec::new();
        for facts in instances {
            let Some(ami) = facts
                .image_id
                .as_ref()
                .filter(|ami| self.images.contains_key(*ami))
            else {
                continue;
            };
            if state.machines.contains_key(&facts.instance_id) {
                continue;
            }
            let n = state.next;
            state.next += 1;
            let public_ip = facts.public_ip.as_ref().map(|moto| {
                let lo = self.block.address(n);
                state.rewrites.insert(moto, &lo);
                lo
            });
            let machine = Machine {
                instance_id: facts.instance_id.clone(),
                ami: ami.clone(),
                vpc_id: facts.vpc_id.clone().unwrap_or_else(|| "default".into()),
                private_ip: facts.private_ip.clone().unwrap_or_default(),
                public_ip,
                index: (n % 250 + 2) as u8,
                vcpus: 1,
                memory_mib: 1024,
                volumes: Vec::new(),
                forwarded: Vec::new(),
            };
            let metadata = self.metadata(&machine, facts, profile).await;
            new.push((machine.instance_id.clone(), metadata));
            state.machines.insert(machine.instance_id.clone(), machine);
        }
        self.enforce_locked(&mut state).await;
        for (id, metadata) in new {
            let machine = &state.machines[&id];
            match machine.create(&self.layout, self.image_of(machine), user_data, &metadata) {
                Ok(pid) => tracing::info!(
                    instance = machine.instance_id,
                    pid,
                    public = machine.public_ip.as_deref().unwrap_or("-"),
                    private = machine.private_ip,
                    "VM booting"
                ),
                Err(e) => tracing::error!(instance = machine.instance_id, "VM did not start: {e}"),
            }
        }
        self.save(&state);
    }

    /// What the instance's metadata service serves; without the profile's credentials (and a
    /// logged error) when moto cannot produce them.
    async fn metadata(
        &self,
        machine: &Machine,
        facts: &InstanceFacts,
        profile: Option<&str>,
    ) -> imds::Facts {
        let profile = match profile {
            None => None,
            Some(p) => match profile::credentials(&self.upstream, p, &machine.instance_id).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(instance = machine.instance_id, "instance profile: {e}");
                    None
                }
            },
        };
        imds::Facts {
            instance_id: machine.instance_id.clone(),
            instance_type: facts.instance_type.clone().unwrap_or_default(),
            ami_id: machine.ami.clone(),
            region: super::proxy::REGION.to_string(),
            zone: facts.zone.clone().unwrap_or_default(),
            private_ip: machine.private_ip.clone(),
            public_ip: machine.public_ip.clone(),
            profile,
        }
    }

    /// Groups or memberships may have changed: every VPC's policy and every machine's forwards
    /// follow moto's state now.
    pub async fn enforce(&self) {
        let mut state = self.state.lock().await;
        self.enforce_locked(&mut state).await;
        self.save(&state);
    }

    async fn enforce_locked(&self, state: &mut State) {
        let enforced = match security::read(&self.ec2).await {
            Ok(e) => e,
            Err(e) => {
                // The last policies stay (a hub without any admits nothing).
                tracing::error!("security groups not enforced anew: {e}");
                return;
            }
        };
        for (vpc, policy) in &enforced.policies {
            let path = self.layout.policy(vpc);
            let text = serde_json::to_string_pretty(policy).expect("policy serializes");
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| crate::atomic_file::write(&path, text.as_bytes(), 0o644));
            if let Err(e) = written {
                tracing::error!("{}: {e}", path.display());
            }
        }
        for (id, machine) in state.machines.iter_mut() {
            let want: Vec<u16> = enforced
                .host_ports
                .get(id)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default();
            if let Err(e) = machine.set_forwards(&self.layout, &want).await {
                tracing::error!(instance = id, "public ports: {e}");
            } else {
                tracing::debug!(instance = id, ports = ?machine.forwarded, "public ports");
            }
        }
    }

    /// A public address moto shows for one of the twin's instances that it has not shown before
    /// (moto may hand out a new one when a stopped instance starts) maps to the same loopback.
    pub async fn learn(&self, instances: &[InstanceFacts]) {
        let mut state = self.state.lock().await;
        let mut changed = false;
        for facts in instances {
            let (Some(moto), Some(lo)) = (
                facts.public_ip.as_deref(),
                state
                    .machines
                    .get(&facts.instance_id)
                    .and_then(|m| m.public_ip.clone()),
            ) else {
                continue;
            };
            if state.rewrites.get(moto).is_none() && !moto.starts_with("127.") {
                state.rewrites.insert(moto, &lo);
                changed = true;
            }
        }
        if changed {
            self.save(&state);
        }
    }

    /// Carries out `what` on the VMs of `ids` (instances without a VM are left to moto alone).
    pub async fn lifecycle(&self, what: Lifecycle, ids: &[&str]) {
        let mut state = self.state.lock().await;
        for id in ids {
            let Some(machine) = state.machines.get(*id).cloned() else {
                continue;
            };
            let result = match what {
                Lifecycle::Stop => {
                    machine.stop(&self.layout).await;
                    Ok(())
                }
                Lifecycle::Start => match machine.start(&self.layout, self.image_of(&machine)) {
                    Ok(_) => machine.plug_volumes(&self.layout).await,
                    Err(e) => Err(e),
                },
                Lifecycle::Reboot => machine.reboot(&self.layout).await,
                Lifecycle::Terminate => {
                    let r = machine.terminate(&self.layout).await;
                    if r.is_ok() {
                        state.machines.remove(*id);
                        self.forget_deleted_volumes(&machine.volumes).await;
                    }
                    r
                }
            };
            match result {
                Ok(()) => tracing::info!(instance = id, "{what:?} done"),
                Err(e) => tracing::error!(instance = id, "{what:?} failed: {e}"),
            }
        }
        self.save(&state);
    }

    /// CreateVolume went through: the volume's file.
    pub fn volume_created(&self, volume_id: &str, size_gib: u64) {
        match volume::create(&self.layout, volume_id, size_gib) {
            Ok(()) => tracing::info!(volume = volume_id, size_gib, "volume created"),
            Err(e) => tracing::error!(volume = volume_id, "volume file: {e}"),
        }
    }

    /// AttachVolume went through: the volume is plugged into the instance's VM, if it has one.
    pub async fn volume_attached(&self, volume_id: &str, instance_id: &str) {
        let mut state = self.state.lock().await;
        let Some(machine) = state.machines.get_mut(instance_id) else {
            return;
        };
        let qmp = self.layout.vm(instance_id).qmp();
        match volume::attach(&qmp, &self.layout, volume_id).await {
            Ok(()) => {
                tracing::info!(
                    volume = volume_id,
                    instance = instance_id,
                    "volume plugged in"
                );
                if !machine.volumes.iter().any(|v| v == volume_id) {
                    machine.volumes.push(volume_id.to_string());
                }
            }
            Err(e) => tracing::error!(volume = volume_id, instance = instance_id, "attach: {e}"),
        }
        self.save(&state);
    }

    /// DetachVolume went through: the volume is unplugged from whichever VM holds it.
    pub async fn volume_detached(&self, volume_id: &str) {
        let mut state = self.state.lock().await;
        for (id, machine) in state.machines.iter_mut() {
            if !machine.volumes.iter().any(|v| v == volume_id) {
                continue;
            }
            match volume::detach(&self.layout.vm(id).qmp(), volume_id).await {
                Ok(()) => tracing::info!(volume = volume_id, instance = id, "volume unplugged"),
                // A stopped VM has nothing plugged in: only the record changes.
                Err(e) => tracing::warn!(volume = volume_id, instance = id, "detach: {e}"),
            }
            machine.volumes.retain(|v| v != volume_id);
        }
        self.save(&state);
    }

    /// DeleteVolume went through: the volume's file is gone.
    pub fn volume_deleted(&self, volume_id: &str) {
        volume::delete(&self.layout, volume_id);
        tracing::info!(volume = volume_id, "volume deleted");
    }

    /// Removes the files of `volumes` that moto no longer knows: DeleteOnTermination deleted
    /// them with their instance, and no DeleteVolume will come.
    async fn forget_deleted_volumes(&self, volumes: &[String]) {
        for v in volumes {
            let r = self
                .upstream
                .call(&[("Action", "DescribeVolumes"), ("VolumeId.1", v)])
                .await;
            if let Err(e) = r
                && e.contains("InvalidVolume.NotFound")
            {
                self.volume_deleted(v);
            }
        }
    }

    /// The base64 console of `id`'s VM, or `None` when `id` has no VM.
    pub async fn console(&self, id: &str) -> Option<String> {
        let state = self.state.lock().await;
        let machine = state.machines.get(id)?;
        Some(machine.console_base64(&self.layout))
    }

    /// `xml` with moto's public addresses replaced by the loopback ones.
    pub async fn rewrite(&self, xml: &str) -> String {
        self.state.lock().await.rewrites.apply(xml)
    }

    /// Instance ids that have a VM record.
    pub async fn machines(&self) -> Vec<String> {
        self.state.lock().await.machines.keys().cloned().collect()
    }
}
