//! `register.monitoring`: node exporter and postgres exporter on every node, the postgres
//! exporter connecting as a least-privilege `prometheus` role (member of `pg_monitor`, peer
//! authentication over the local socket, so no password exists to leak), checked to report
//! `pg_up 1`, and one Prometheus `file_sd_configs` file per instance listing the targets.
//!
//! The targets carry no role label: an HA cluster's leader changes without dbctl watching, and
//! a label written at create would go on naming a dead primary. The role is a metric instead:
//! the postgres exporter's `pg_replication_is_replica` (0 on the leader) is live.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};
use crate::scheduler::Role;

/// Guest ports of the exporters (the Debian packages' defaults).
pub const NODE_EXPORTER_PORT: u16 = 9100;
pub const POSTGRES_EXPORTER_PORT: u16 = 9187;

pub struct RegisterMonitoring {
    pub pg: Arc<Pg>,
    pub primary: String,
    /// Every node with its role.
    pub nodes: Vec<(String, Role)>,
}

/// Creates the monitoring role on the primary (replicas receive it by replication).
fn role_sql() -> String {
    let r = crate::postgres::roles::MONITOR;
    format!(
        "\\set ON_ERROR_STOP on
SELECT 'CREATE ROLE {r} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') \\gexec
GRANT pg_monitor TO {r};
"
    )
}

/// Configures and starts both exporters, then waits (with backoff) for `pg_up 1`.
const EXPORTERS: &str = include_str!("../../templates/node/exporters.sh");

const STOP_EXPORTERS: &str =
    "sudo systemctl disable --now prometheus-node-exporter prometheus-postgres-exporter";

impl RegisterMonitoring {
    fn file_sd_path(&self) -> PathBuf {
        let spec = &self.pg.spec;
        self.pg
            .register
            .file_sd_dir
            .join(format!("{}.{}.json", spec.project, spec.name))
    }

    async fn start_exporters(&self, ctx: &StepCtx, node: &str) -> Result<(), StepError> {
        self.pg
            .run_script(
                ctx,
                node,
                "configure and start exporters",
                &crate::postgres::as_root(&[]),
                Some(EXPORTERS.as_bytes()),
                Duration::from_secs(120),
            )
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Step for RegisterMonitoring {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let spec = &pg.spec;
        let names: Vec<String> = self.nodes.iter().map(|(n, _)| n.clone()).collect();
        let leader = pg.current_leader(ctx, &names, &self.primary).await?;
        pg.run_script(
            ctx,
            &leader,
            "create monitoring role",
            "sudo -u postgres psql -X -q -d postgres",
            Some(role_sql().as_bytes()),
            Duration::from_secs(60),
        )
        .await?;
        let started = self
            .nodes
            .iter()
            .map(|(node, _)| self.start_exporters(ctx, node));
        for r in futures::future::join_all(started).await {
            r?;
        }

        let mut groups = Vec::new();
        for (node, _) in &self.nodes {
            let zone = ctx
                .input(&format!("provision.vm.{node}"))
                .and_then(|v| v["zone"].as_str())
                .unwrap_or("")
                .to_string();
            for (exporter, port) in [
                ("node", NODE_EXPORTER_PORT),
                ("postgres", POSTGRES_EXPORTER_PORT),
            ] {
                let (host, port) = pg.access.metrics_target(ctx, node, port)?;
                groups.push(json!({
                    "targets": [format!("{host}:{port}")],
                    "labels": {
                        "project": spec.project,
                        "instance_name": spec.name,
                        "dbctl_instance_id": pg.instance_id,
                        "node": node,
                        "zone": zone,
                        "exporter": exporter,
                    }
                }));
            }
        }
        let path = self.file_sd_path();
        ctx.resource_intent("monitoring-targets", &path.display().to_string(), None)?;
        let text = serde_json::to_string_pretty(&Value::Array(groups.clone())).expect("json");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StepError::Transient(format!("{}: {e}", dir.display())))?;
        }
        crate::atomic_file::write(&path, format!("{text}\n").as_bytes(), 0o644)
            .map_err(|e| StepError::Transient(format!("{}: {e}", path.display())))?;
        ctx.resource_created("monitoring-targets", &path.display().to_string(), "file_sd")?;
        Ok(json!({ "file_sd": path, "targets": groups }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let path = ctx
            .outputs
            .as_ref()
            .and_then(|o| o["file_sd"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.file_sd_path());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StepError::Transient(format!("{}: {e}", path.display()))),
        }
        for (node, _) in &self.nodes {
            if ctx.input(&format!("provision.vm.{node}")).is_none() {
                continue;
            }
            // Best effort: the VM and its disk are removed right after.
            if let Err(e) = self
                .pg
                .run_script(
                    ctx,
                    node,
                    "stop exporters",
                    STOP_EXPORTERS,
                    None,
                    Duration::from_secs(60),
                )
                .await
            {
                ctx.log(&format!(
                    "{node}: exporters not stopped ({e}); the VM goes next"
                ));
            }
        }
        ctx.resource_deleted("monitoring-targets", &path.display().to_string())
    }
}
