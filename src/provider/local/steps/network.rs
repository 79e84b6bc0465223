//! `provision.network`: the VPC's private segment (a hub process).

use async_trait::async_trait;
use serde_json::{Value, json};

use super::io_err;
use crate::provider::local::{RunPaths, hub};
use crate::saga::{Step, StepCtx, StepError};

pub struct NetworkStep {
    pub paths: RunPaths,
}

pub const SUBNET: &str = "10.77.0.0/24";

#[async_trait]
impl Step for NetworkStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let net = self.paths.net();
        ctx.resource_intent("network", "vpc", None)?;
        std::fs::create_dir_all(&net).map_err(io_err(net.display()))?;
        let pid = hub::ensure(&self.paths.hub_socket(), &self.paths.hub_pid(), None)
            .map_err(io_err("network hub"))?;
        ctx.resource_created("network", "vpc", &format!("hub pid {pid}"))?;
        Ok(json!({ "subnet": SUBNET, "hub_socket": self.paths.hub_socket(), "hub_pid": pid }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        hub::stop(&self.paths.hub_socket(), &self.paths.hub_pid()).await;
        let net = self.paths.net();
        if net.exists() {
            std::fs::remove_dir_all(&net).map_err(io_err(net.display()))?;
        }
        // The run directory goes with its last resource (the network is undone last).
        let _ = std::fs::remove_dir(self.paths.root.join("vms"));
        let _ = std::fs::remove_dir(self.paths.root.join("disks"));
        let _ = std::fs::remove_dir(&self.paths.root);
        ctx.resource_deleted("network", "vpc")
    }
}
