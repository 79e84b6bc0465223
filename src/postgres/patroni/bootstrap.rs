//! `setup.patroni.<node>`: Patroni on a node. On the first leader ([`BootstrapCluster`]) it
//! creates the cluster — `initdb --data-checksums` with dbctl's tuning, TLS and SCRAM-only
//! rules, or the adoption of a restored data directory — and leads it; on every other node
//! ([`JoinCluster`]) it clones the leader with pg_basebackup and streams from it on a slot it
//! manages. Both are idempotent: a Patroni already running is left to finish what it started.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::config::{Credentials, PATRONI_CONF, PatroniInput, patroni_config_text};
use super::{API, PATRONI_START, PATRONI_STOP, REPLICATOR, REWIND, etcd};
use crate::postgres::{Endpoint, Pg, as_root};
use crate::saga::{Step, StepCtx, StepError};

impl Pg {
    /// Writes this node's Patroni config and starts Patroni.
    async fn start_patroni(
        &self,
        ctx: &StepCtx,
        node: &str,
        nodes: &[String],
    ) -> Result<(), StepError> {
        let spec = &self.spec;
        let members = self.members(ctx, nodes)?;
        let me = members
            .iter()
            .find(|m| m.name == node)
            .ok_or_else(|| StepError::Permanent(format!("{node} is not a member")))?;
        let (conf, _) = self.rendered_conf(node);
        let hba = self.rendered_hba();
        let (api, rep, rew) = (
            self.cluster_password(API)?,
            self.cluster_password(REPLICATOR)?,
            self.cluster_password(REWIND)?,
        );
        let text = patroni_config_text(&PatroniInput {
            scope: &self.instance_id,
            me,
            members: &members,
            major: spec.version,
            postgresql_conf: &conf,
            pg_hba_conf: &hba,
            replication: spec.replication.unwrap_or(crate::spec::Replication::Sync),
            credentials: Credentials {
                api_password: &api,
                replicator_password: &rep,
                rewind_password: &rew,
            },
        });
        self.upload(ctx, node, PATRONI_CONF, text.as_bytes(), "postgres", "0600")
            .await?;
        let major = spec.version.to_string();
        self.run_script(
            ctx,
            node,
            "start patroni",
            &as_root(&[&major]),
            Some(PATRONI_START.as_bytes()),
            Duration::from_secs(120),
        )
        .await
        .map(|_| ())
    }

    async fn stop_patroni(&self, ctx: &StepCtx, node: &str) -> Result<(), StepError> {
        let major = self.spec.version.to_string();
        self.undo_on_node(
            ctx,
            node,
            "stop patroni, remove data directory",
            PATRONI_STOP,
            &[&major],
        )
        .await
    }

    /// The host's way to this node's PostgreSQL (what `register.endpoints` records).
    fn endpoint(&self, ctx: &StepCtx, node: &str) -> Result<Value, StepError> {
        let (host, port) = self.access.pg_endpoint(ctx, node)?;
        let ep = Endpoint {
            host,
            port,
            database: self.spec.database.clone(),
            user: self.spec.users[0].clone(),
            ca_file: self.ca()?.cert_path,
        };
        Ok(serde_json::to_value(ep).expect("json"))
    }
}

pub struct BootstrapCluster {
    pub pg: Arc<Pg>,
    pub node: String,
    pub nodes: Vec<String>,
}

#[async_trait]
impl Step for BootstrapCluster {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        etcd::wait_healthy(pg, ctx, node, self.nodes.len(), Duration::from_secs(300)).await?;
        pg.start_patroni(ctx, node, &self.nodes).await?;
        // Patroni bootstraps on its own from here: a crash of dbctl now leaves it working.
        ctx.fault_point("patroni-started")?;
        // initdb under software emulation takes about half a minute, a restore much longer.
        let limit = if pg.spec.restore.is_some() { 3600 } else { 900 };
        let leader = pg
            .wait_topology(
                ctx,
                &self.nodes,
                Duration::from_secs(limit),
                "bootstrap",
                |t| t.leader().map(|l| (l.name.clone(), l.timeline)),
            )
            .await?;
        if leader.0 != node {
            return Err(StepError::Permanent(format!(
                "{} leads the new cluster, not {node} (was another Patroni started on this scope?)",
                leader.0
            )));
        }
        // The lock is not enough: the server must take writes.
        let mut delay = Duration::from_millis(500);
        for _ in 0..30 {
            if pg.in_recovery(ctx, node).await == Some(false) {
                ctx.log(&format!(
                    "{node} leads cluster {} (timeline {:?})",
                    pg.instance_id, leader.1
                ));
                return Ok(json!({ "node": node, "leader": node, "timeline": leader.1 }));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
        Err(StepError::Transient(format!(
            "{node} holds the leader lock but does not accept writes yet"
        )))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg.stop_patroni(ctx, &self.node).await
    }
}

pub struct JoinCluster {
    pub pg: Arc<Pg>,
    pub node: String,
    pub nodes: Vec<String>,
}

#[async_trait]
impl Step for JoinCluster {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        pg.start_patroni(ctx, node, &self.nodes).await?;
        ctx.fault_point("patroni-started")?;
        // pg_basebackup of the leader: a fresh cluster is small, a restored one need not be.
        pg.wait_topology(
            ctx,
            &self.nodes,
            Duration::from_secs(3600),
            &format!("{node} streaming"),
            |t| t.streaming(node).map(|_| ()),
        )
        .await?;
        ctx.log(&format!("{node} streams from the leader"));
        pg.endpoint(ctx, node)
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg.stop_patroni(ctx, &self.node).await
    }
}
