//! `deploy.<primary>`: data disk mounted by UUID, `initdb --data-checksums` on it, tuned
//! postgresql.conf, TLS + SCRAM-only pg_hba.conf, server certificate from dbctl's CA, started as
//! a systemd service that survives reboot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::config::{ConfInput, pg_hba_conf, postgresql_conf};
use super::{Pg, tuning};
use crate::saga::{Step, StepCtx, StepError};
use crate::ssh::shell_quote;

const PREPARE: &str = include_str!("../../templates/node/prepare.sh");
const START: &str = include_str!("../../templates/node/start.sh");
const UNDEPLOY: &str = include_str!("../../templates/node/undeploy.sh");
const TLS_DIR: &str = "/etc/dbctl/tls";

pub struct DeployPrimary {
    pub pg: Arc<Pg>,
    pub node: String,
}

/// `sudo bash -s -- ARGS` with the script on stdin.
fn as_root(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!("sudo bash -s -- {}", quoted.join(" "))
}

#[async_trait]
impl Step for DeployPrimary {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let spec = &pg.spec;
        let major = spec.version.to_string();
        let node = self.node.as_str();
        pg.run_script(
            ctx,
            node,
            "prepare data disk and cluster",
            &as_root(&[&major, &pg.access.data_device(ctx, node)?]),
            Some(PREPARE.as_bytes()),
            Duration::from_secs(600),
        )
        .await?;

        let memory_mib = spec.resources.memory_gib as u64 * 1024;
        let t = tuning::tune(memory_mib, spec.resources.vcpus, spec.disk_gib);
        let conf = postgresql_conf(&ConfInput {
            instance: &spec.name,
            node,
            memory_mib,
            vcpus: spec.resources.vcpus,
            tuning: &t,
            tls_dir: TLS_DIR,
            extensions: &spec.extensions,
        });
        let hba = pg_hba_conf(&pg.access.vpc_cidr(), &pg.access.client_cidrs());
        let ca = pg.ca()?;
        let (cert, key) = ca
            .issue_server(&pg.access.cert_names(ctx, node)?)
            .map_err(|e| StepError::Permanent(e.to_string()))?;
        let etc = format!("/etc/postgresql/{major}/main");
        pg.upload(
            ctx,
            node,
            &format!("{etc}/conf.d/dbctl.conf"),
            conf.as_bytes(),
            "postgres",
            "0644",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            &format!("{etc}/pg_hba.conf"),
            hba.as_bytes(),
            "postgres",
            "0640",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/server.crt"),
            cert.as_bytes(),
            "postgres",
            "0644",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/server.key"),
            key.as_bytes(),
            "postgres",
            "0600",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/ca.crt"),
            ca.cert_pem().as_bytes(),
            "postgres",
            "0644",
        )
        .await?;
        pg.run_script(
            ctx,
            node,
            "start postgresql",
            &as_root(&[&major]),
            Some(START.as_bytes()),
            Duration::from_secs(180),
        )
        .await?;
        Ok(
            json!({ "node": node, "major": spec.version, "tuning": t, "data": format!("/pgdata/{major}/main") }),
        )
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        // Without a recorded VM there is no node to undo anything on.
        if ctx.input(&format!("provision.vm.{}", self.node)).is_none() {
            return Ok(());
        }
        // A node that cannot be reached has nothing we could undo; its VM goes next anyway.
        if let Err(e) = self.pg.access.session(ctx, &self.node).await {
            ctx.log(&format!(
                "{}: not reachable ({e}); nothing to undo on the node",
                self.node
            ));
            return Ok(());
        }
        let major = self.pg.spec.version.to_string();
        self.pg
            .run_script(
                ctx,
                &self.node,
                "remove cluster, unmount data disk",
                &as_root(&[&major]),
                Some(UNDEPLOY.as_bytes()),
                Duration::from_secs(120),
            )
            .await
            .map(|_| ())
    }
}
