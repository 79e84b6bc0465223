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
pub(crate) fn as_root(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!("sudo bash -s -- {}", quoted.join(" "))
}

impl Pg {
    /// Formats and mounts the data disk; on a primary also creates the cluster on it.
    pub(super) async fn prepare(
        &self,
        ctx: &StepCtx,
        node: &str,
        role: &str,
    ) -> Result<(), StepError> {
        let major = self.spec.version.to_string();
        let dev = self.access.data_device(ctx, node)?;
        self.run_script(
            ctx,
            node,
            "prepare data disk",
            &as_root(&[&major, &dev, role]),
            Some(PREPARE.as_bytes()),
            Duration::from_secs(600),
        )
        .await
        .map(|_| ())
    }

    /// The node's server certificate (from dbctl's CA, naming the node) and the CA itself.
    pub(super) async fn install_tls(&self, ctx: &StepCtx, node: &str) -> Result<(), StepError> {
        let ca = self.ca()?;
        let (cert, key) = ca
            .issue_server(&self.access.cert_names(ctx, node)?)
            .map_err(|e| StepError::Permanent(e.to_string()))?;
        self.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/server.crt"),
            cert.as_bytes(),
            "postgres",
            "0644",
        )
        .await?;
        self.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/server.key"),
            key.as_bytes(),
            "postgres",
            "0600",
        )
        .await?;
        self.upload(
            ctx,
            node,
            &format!("{TLS_DIR}/ca.crt"),
            ca.cert_pem().as_bytes(),
            "postgres",
            "0644",
        )
        .await
    }

    /// This instance's postgresql.conf for `node` (tuned for its size) and the tuning itself.
    pub(crate) fn rendered_conf(&self, node: &str) -> (String, tuning::Tuning) {
        let spec = &self.spec;
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
            archive: !spec.throwaway,
        });
        (conf, t)
    }

    /// This instance's pg_hba.conf: TLS + SCRAM from the network and the operator only.
    pub(crate) fn rendered_hba(&self) -> String {
        pg_hba_conf(&self.access.vpc_cidr(), &self.access.client_cidrs())
    }

    /// Tuned postgresql.conf (plus `extra`, e.g. a standby's settings) and pg_hba.conf.
    pub(super) async fn install_config(
        &self,
        ctx: &StepCtx,
        node: &str,
        extra: &str,
    ) -> Result<tuning::Tuning, StepError> {
        let spec = &self.spec;
        let (conf, t) = self.rendered_conf(node);
        let conf = conf + extra;
        let hba = self.rendered_hba();
        let etc = format!("/etc/postgresql/{}/main", spec.version);
        self.upload(
            ctx,
            node,
            &format!("{etc}/conf.d/dbctl.conf"),
            conf.as_bytes(),
            "postgres",
            "0644",
        )
        .await?;
        self.upload(
            ctx,
            node,
            &format!("{etc}/pg_hba.conf"),
            hba.as_bytes(),
            "postgres",
            "0640",
        )
        .await?;
        Ok(t)
    }

    /// Enables and (re)starts the cluster's service, waiting until it accepts connections.
    pub(super) async fn start(&self, ctx: &StepCtx, node: &str) -> Result<(), StepError> {
        let major = self.spec.version.to_string();
        self.run_script(
            ctx,
            node,
            "start postgresql",
            &as_root(&[&major]),
            Some(START.as_bytes()),
            Duration::from_secs(180),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Step for DeployPrimary {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let node = self.node.as_str();
        pg.prepare(ctx, node, "primary").await?;
        pg.install_tls(ctx, node).await?;
        let t = pg.install_config(ctx, node, "").await?;
        pg.start(ctx, node).await?;
        let major = pg.spec.version;
        Ok(
            json!({ "node": node, "major": major, "tuning": t, "data": format!("/pgdata/{major}/main") }),
        )
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg.undeploy(ctx, &self.node).await
    }
}

impl Pg {
    /// Stops and removes the cluster and unmounts the data disk (the rollback of a deploy).
    pub(super) async fn undeploy(&self, ctx: &StepCtx, node: &str) -> Result<(), StepError> {
        let major = self.spec.version.to_string();
        self.undo_on_node(
            ctx,
            node,
            "remove cluster, unmount data disk",
            UNDEPLOY,
            &[&major],
        )
        .await
    }
}
