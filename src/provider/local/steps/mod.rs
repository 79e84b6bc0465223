//! The local provider's implementations of the flow's provisioning actions.

mod attach;
mod disk;
mod firewall;
mod keypair;
mod network;
mod restart;
mod vm;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use attach::SERIAL as DATA_SERIAL;
pub use network::SUBNET;
pub use vm::VmOut;

/// Guest ports open to the host by default (SSH, PostgreSQL, node and postgres exporters).
pub const INGRESS_PORTS: &[u16] = &[22, 5432, 9100, 9187];

use super::access::LocalAccess;
use super::image::{self, Image};
use super::{LocalEnv, RunPaths};
use crate::flow::Action;
use crate::postgres::Pg;
use crate::provider::RunInfo;
use crate::saga::{Step, StepCtx, StepError};

/// The image a spec boots: the current recipe's, or a built one named by `--image`.
pub fn resolve_image(env: &LocalEnv, name: Option<&str>) -> Result<Image, String> {
    match name {
        None => image::current(&env.cache_dir).map_err(|e| e.to_string()),
        Some(n) => image::list(&env.cache_dir)
            .into_iter()
            .find(|i| i.manifest.name == n)
            .ok_or_else(|| format!("local: no built image named {n:?} (see dbctl image list)")),
    }
}

/// A stage this build cannot run on the local provider yet: fails clearly instead of
/// pretending. Its rollback has nothing to undo.
struct NotYet(String);

#[async_trait]
impl Step for NotYet {
    async fn execute(&self, _ctx: &StepCtx) -> Result<Value, StepError> {
        Err(StepError::Permanent(format!(
            "{} is not implemented for the local provider yet",
            self.0
        )))
    }
    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

pub fn bind(env: &Arc<LocalEnv>, run: &RunInfo<'_>, step: &str, action: &Action) -> Arc<dyn Step> {
    let paths = RunPaths::new(&env.state_dir, run.run_id);
    let pg = || {
        let nodes: Vec<String> = run.placement.nodes.iter().map(|n| n.node.clone()).collect();
        let dns_names = env.register.all_names(run.spec, &nodes);
        Arc::new(Pg {
            access: Arc::new(LocalAccess {
                env: env.clone(),
                dns_names,
            }),
            spec: run.spec.clone(),
            instance_id: run.instance_id.to_string(),
            state_dir: env.state_dir.clone(),
            register: env.register.clone(),
            purge_backups: run.purge_backups,
        })
    };
    if let Some(step) = crate::postgres::bind(action, pg(), run.placement) {
        return step;
    }
    let vm_step = |node: &str, zone: &str| vm::VmStep {
        env: env.clone(),
        paths: paths.clone(),
        run_id: run.run_id.to_string(),
        instance: run.spec.name.clone(),
        node: node.to_string(),
        zone: zone.to_string(),
        vcpus: run.spec.resources.vcpus,
        memory_gib: run.spec.resources.memory_gib,
        image: run.spec.image.clone(),
    };
    match action {
        Action::Network => Arc::new(network::NetworkStep { paths }),
        Action::Firewall => Arc::new(firewall::FirewallStep { paths }),
        Action::KeyPair => Arc::new(keypair::KeyPairStep { env: env.clone() }),
        Action::Vm { node, zone } => Arc::new(vm_step(node, zone)),
        Action::StartNode { node } => {
            let zone = run.placement.zone_of(node).unwrap_or_default().to_string();
            Arc::new(restart::RestartStep {
                vm: vm_step(node, &zone),
            })
        }
        Action::Disk { node, size_gib, .. } => Arc::new(disk::DiskStep {
            paths,
            node: node.clone(),
            size_gib: *size_gib,
        }),
        Action::AttachDisk { node } => Arc::new(attach::AttachStep {
            env: env.clone(),
            paths,
            node: node.clone(),
        }),
        _ => Arc::new(NotYet(step.to_string())),
    }
}

/// Maps an I/O error to a transient step error naming what failed.
pub(super) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StepError {
    move |e| StepError::Transient(format!("{what}: {e}"))
}

/// The recorded outputs of the VM step of `node`.
pub(crate) fn vm_of(ctx: &StepCtx, node: &str) -> Result<VmOut, StepError> {
    let v = ctx
        .input(&format!("provision.vm.{node}"))
        .ok_or_else(|| StepError::Permanent(format!("no outputs of provision.vm.{node}")))?;
    serde_json::from_value(v.clone())
        .map_err(|e| StepError::Permanent(format!("provision.vm.{node} outputs: {e}")))
}
