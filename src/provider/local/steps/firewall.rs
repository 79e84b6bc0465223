//! `provision.firewall`: the security group. Locally it is the list of guest ports the host may
//! reach; the VM step forwards exactly these to 127.0.0.1 and nothing else is reachable.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::io_err;
use crate::provider::local::RunPaths;
use crate::saga::{Step, StepCtx, StepError};

pub struct FirewallStep {
    pub paths: RunPaths,
}

/// Guest ports open to the host: SSH for dbctl, PostgreSQL for clients, the exporters for
/// Prometheus. Between the nodes of the VPC, the private segment carries replication.
pub const INGRESS: &[(u16, &str)] = &[
    (22, "ssh"),
    (5432, "postgres"),
    (9100, "node-exporter"),
    (9187, "postgres-exporter"),
];

#[async_trait]
impl Step for FirewallStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        ctx.resource_intent("security-group", "db", None)?;
        let rules: Vec<Value> = INGRESS
            .iter()
            .map(|(port, name)| json!({ "port": port, "name": name, "from": "127.0.0.1" }))
            .collect();
        let out = json!({ "ingress": rules });
        let path = self.paths.firewall();
        std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json"))
            .map_err(io_err(path.display()))?;
        ctx.resource_created("security-group", "db", &path.display().to_string())?;
        Ok(out)
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let _ = std::fs::remove_file(self.paths.firewall());
        ctx.resource_deleted("security-group", "db")
    }
}
