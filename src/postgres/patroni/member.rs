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
        pg.upload(
            ctx,
            node,
            "/usr/local/sbin/dbctl-patroni",
            HELPER.as_bytes(),
            "root",
            "0755",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            "/usr/local/lib/dbctl/on-role-change",
            ON_ROLE_CHANGE.as_bytes(),
            "root",
            "0755",
        )
        .await?;
        pg.upload(
            ctx,
            node,
            "/etc/sudoers.d/dbctl-patroni",
            SUDOERS.as_bytes(),
            "root",
            "0440",
        )
        .await?;
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
