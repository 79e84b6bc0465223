//! `deploy.<node>` of an HA node: the data disk mounted (no initdb: Patroni creates or clones
//! the cluster), the node's certificate (PostgreSQL, etcd peer and client, Patroni's API), the
//! `dbctl-patroni` helper and Patroni's role-change callback.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{HELPER, MEMBER_UNDEPLOY, ON_ROLE_CHANGE};
use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};

/// Lets the callback (run by Patroni as postgres) start the backup a new leader takes, and
/// nothing else.
const SUDOERS: &str = "# Written by dbctl: Patroni's on_role_change callback starts the new leader's backup.\n\
postgres ALL=(root) NOPASSWD: /bin/systemctl start --no-block dbctl-backup-promoted.service\n";

pub struct DeployMember {
    pub pg: Arc<Pg>,
    pub node: String,
}

#[async_trait]
impl Step for DeployMember {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        pg.prepare(ctx, node, "replica").await?;
        pg.install_tls(ctx, node).await?;
        // What Patroni and its callback run on the node: (path, content, mode), all root's.
        let files: [(&str, &str, &str); 3] = [
            ("/usr/local/sbin/dbctl-patroni", HELPER, "0755"),
            (
                "/usr/local/lib/dbctl/on-role-change",
                ON_ROLE_CHANGE,
                "0755",
            ),
            ("/etc/sudoers.d/dbctl-patroni", SUDOERS, "0440"),
        ];
        for (path, content, mode) in files {
            pg.upload(ctx, node, path, content.as_bytes(), "root", mode)
                .await?;
        }
        Ok(
            json!({ "node": node, "major": pg.spec.version, "data": format!("/pgdata/{}/main", pg.spec.version) }),
        )
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg
            .undo_on_node(
                ctx,
                &self.node,
                "remove Patroni and etcd, unmount data disk",
                MEMBER_UNDEPLOY,
                &[],
            )
            .await?;
        // The sudoers file last: it is harmless without the unit it names.
        self.pg
            .undo_on_node(
                ctx,
                &self.node,
                "remove sudoers entry",
                "rm -f /etc/sudoers.d/dbctl-patroni\n",
                &[],
            )
            .await
    }
}
