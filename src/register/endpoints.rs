//! `register.endpoints`: the instance's endpoints (host, port, role, zone) as one record that
//! `status`, `connect` and later DNS and monitoring read.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::saga::{Step, StepCtx, StepError};

pub struct RegisterEndpoints {
    /// (node, role, setup step whose outputs hold the endpoint)
    pub nodes: Vec<(String, String, String)>,
}

impl RegisterEndpoints {
    /// Every node of the placement: the first leader's endpoint comes from its setup, another
    /// HA member's from the step where it joined (a legacy replica's from its clone step).
    /// `role` is the role the node was built in; the live one is Patroni's (`dbctl status`).
    pub fn for_placement(p: &crate::scheduler::Placement) -> RegisterEndpoints {
        let nodes = p
            .nodes
            .iter()
            .map(|n| match n.role {
                crate::scheduler::Role::Primary => (
                    n.node.clone(),
                    "primary".to_string(),
                    format!("setup.{}", n.node),
                ),
                crate::scheduler::Role::Replica if n.node.starts_with("replica-") => (
                    n.node.clone(),
                    "replica".to_string(),
                    format!("setup.clone.{}", n.node),
                ),
                crate::scheduler::Role::Replica => (
                    n.node.clone(),
                    "replica".to_string(),
                    format!("setup.patroni.{}", n.node),
                ),
            })
            .collect();
        RegisterEndpoints { nodes }
    }
}

#[async_trait]
impl Step for RegisterEndpoints {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let mut endpoints = Vec::new();
        for (node, role, step) in &self.nodes {
            let ep = ctx
                .input(step)
                .ok_or_else(|| StepError::Permanent(format!("no outputs of {step}")))?;
            let zone = ctx
                .input(&format!("provision.vm.{node}"))
                .and_then(|v| v["zone"].as_str())
                .unwrap_or("");
            endpoints.push(json!({
                "node": node, "role": role, "zone": zone,
                "host": ep["host"], "port": ep["port"], "database": ep["database"], "user": ep["user"],
            }));
        }
        Ok(json!({ "endpoints": endpoints }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
