//! `deploy.packages.<node>`: the packages the later steps use are on the node — PostgreSQL of
//! the spec's major, pgBackRest, the Prometheus exporters, and for HA Patroni and etcd.
//!
//! dbctl's own image carries them (one quick check over the session the VM step opened). A
//! stock cloud image — an imported local image, the official Debian AMI — gets them from its
//! own package sources here, on first boot. Runs beside the data disk's attachment, so a
//! built image pays nothing on the critical path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Pg, as_root};
use crate::saga::{Step, StepCtx, StepError};

const PACKAGES: &str = include_str!("../../templates/node/packages.sh");

/// Exit status of `packages.sh` when the sources lack the requested major.
const NOT_AVAILABLE: u32 = 3;

pub struct InstallPackages {
    pub pg: Arc<Pg>,
    pub node: String,
}

#[async_trait]
impl Step for InstallPackages {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        let routes = pg.access.package_routes(ctx, node)?;
        if !routes.is_empty() {
            // The mirrors' names → their relay addresses, before apt resolves them.
            let lines: Vec<String> = routes.iter().map(|(h, a)| format!("{a} {h}")).collect();
            crate::register::hosts::set_node_block(pg, ctx, node, "packages", &lines).await?;
        }
        let major = pg.spec.version.to_string();
        let s = pg.access.session(ctx, node).await?;
        ctx.log(&format!("{node}: packages for PostgreSQL {major}"));
        let out = s
            .exec(
                &as_root(&[&major, if pg.spec.ha { "ha" } else { "" }]),
                Some(PACKAGES.as_bytes()),
                // A first install under software emulation takes minutes.
                Duration::from_secs(1200),
            )
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
        match out.status {
            Some(0) => {}
            Some(NOT_AVAILABLE) => {
                return Err(StepError::Permanent(format!("{node}: {}", out.tail(1))));
            }
            _ => {
                return Err(StepError::Transient(format!(
                    "{node}: installing packages failed (exit {:?}): {}",
                    out.status,
                    out.tail(4)
                )));
            }
        }
        let report = out.stdout_str();
        let installed = report.lines().any(|l| l.starts_with("installed "));
        if installed {
            ctx.log(&format!(
                "{node}: installed from the image's package sources"
            ));
        }
        Ok(json!({ "node": node, "major": pg.spec.version, "installed": installed }))
    }

    /// Nothing to undo on the node: installed packages go with the VM.
    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
