//! `register.dns`: the instance's stable names, published in dbctl's hosts-format file
//! (addresses as the operator reaches the nodes) and in every node's /etc/hosts (private
//! addresses, so applications and members inside the network use the same names).
//!
//! A single node is `<name>.<project>.<suffix>`. An HA cluster's names say nothing about
//! roles, because roles change with every failover and no process of dbctl's watches the
//! cluster to rewrite them (nor should nodes hold DNS credentials): `<name>.<project>.<suffix>`
//! stands for every member, and libpq finds the leader among them with
//! `target_session_attrs=read-write` (what `dbctl connect` prints); `<node>.<name>.…` names
//! one member. (Instances built before Patroni keep their `-ro` name for the replicas.)

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::hosts::replace_block;
use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};
use crate::scheduler::Role;

pub struct RegisterDns {
    pub pg: Arc<Pg>,
    pub nodes: Vec<(String, Role)>,
}

impl RegisterDns {
    /// The names `node` answers to.
    fn names_of(&self, node: &str, role: Role) -> Vec<String> {
        let (s, spec) = (&self.pg.register, &self.pg.spec);
        let legacy = node.starts_with("replica-") || node == "primary";
        match role {
            _ if spec.ha && !legacy => vec![s.primary_name(spec), s.node_name(spec, node)],
            Role::Primary => vec![s.primary_name(spec)],
            Role::Replica => vec![s.replica_name(spec)],
        }
    }

    fn edit_hosts_file(&self, path: &std::path::Path, lines: &[String]) -> Result<(), StepError> {
        let id = &self.pg.instance_id;
        crate::atomic_file::edit(path, 0o644, |t| replace_block(t, id, lines))
            .map_err(|e| StepError::Transient(format!("hosts file {}: {e}", path.display())))
    }
}

#[async_trait]
impl Step for RegisterDns {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let endpoints = ctx
            .input("register.endpoints")
            .and_then(|v| v["endpoints"].as_array())
            .cloned()
            .ok_or_else(|| StepError::Permanent("no outputs of register.endpoints".into()))?;
        let mut host_lines = Vec::new();
        let mut node_lines = Vec::new();
        let mut records = Vec::new();
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        for (node, role) in &self.nodes {
            let host = endpoints
                .iter()
                .find(|e| e["node"] == node.as_str())
                .and_then(|e| e["host"].as_str())
                .ok_or_else(|| StepError::Permanent(format!("no endpoint for {node}")))?;
            let private = pg.access.private_address(ctx, node)?;
            for name in self.names_of(node, *role) {
                host_lines.push(format!("{host} {name}"));
                node_lines.push(format!("{private} {name}"));
                match by_name.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, ips)) => ips.push(private.clone()),
                    None => by_name.push((name.clone(), vec![private.clone()])),
                }
                records.push(
                    json!({ "node": node, "name": name, "address": host, "private_address": private }),
                );
            }
        }
        let hosts_file = pg.register.hosts_file.clone();
        ctx.resource_intent("dns", &pg.register.primary_name(&pg.spec), None)?;
        self.edit_hosts_file(&hosts_file, &host_lines)?;
        let edits = self.nodes.iter().map(|(node, _)| {
            super::hosts::set_node_block(pg, ctx, node, &pg.instance_id, &node_lines)
        });
        for r in futures::future::join_all(edits).await {
            r?;
        }
        // The provider's own DNS (Route53 on aws, when configured): the VPC's view.
        let published = pg.access.publish_dns(ctx, &by_name).await?;
        ctx.resource_created(
            "dns",
            &pg.register.primary_name(&pg.spec),
            &hosts_file.display().to_string(),
        )?;
        Ok(json!({ "hosts_file": hosts_file, "records": records, "provider_dns": published }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let pg = &self.pg;
        let hosts_file = ctx
            .outputs
            .as_ref()
            .and_then(|o| o["hosts_file"].as_str())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| pg.register.hosts_file.clone());
        let nodes: Vec<String> = self.nodes.iter().map(|(n, _)| n.clone()).collect();
        let names = pg.register.all_names(&pg.spec, &nodes);
        pg.access.unpublish_dns(ctx, &names).await?;
        self.edit_hosts_file(&hosts_file, &[])?;
        // The nodes' copies go with their VMs, which roll back next; clean them when they
        // answer (a destroy of a live instance), and do not block on a node that is gone.
        for (node, _) in &self.nodes {
            if ctx.input(&format!("provision.vm.{node}")).is_none() {
                continue;
            }
            if let Err(e) = super::hosts::set_node_block(pg, ctx, node, &pg.instance_id, &[]).await
            {
                ctx.log(&format!(
                    "{node}: /etc/hosts not cleaned ({e}); the VM goes next"
                ));
            }
        }
        ctx.resource_deleted("dns", &pg.register.primary_name(&pg.spec))
    }
}
