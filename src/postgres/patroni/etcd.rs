//! `setup.etcd.<node>`: this node's member of the instance's three-member etcd cluster, the
//! DCS Patroni elects leaders in. Peer and client traffic are TLS with certificates from
//! dbctl's CA and client certificates required, so only the nodes can read or write it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::config::{ETCD_ENV, etcd_env};
use super::{ETCD_START, ETCD_STOP};
use crate::postgres::{Pg, as_root};
use crate::saga::{Step, StepCtx, StepError};

pub struct StartEtcd {
    pub pg: Arc<Pg>,
    pub node: String,
    /// Every node of the instance (the initial cluster).
    pub nodes: Vec<String>,
}

#[async_trait]
impl Step for StartEtcd {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let (pg, node) = (&self.pg, self.node.as_str());
        let members = pg.members(ctx, &self.nodes)?;
        let me = members
            .iter()
            .find(|m| m.name == node)
            .ok_or_else(|| StepError::Permanent(format!("{node} is not a member")))?;
        let env = etcd_env(&pg.instance_id, me, &members);
        pg.upload(ctx, node, ETCD_ENV, env.as_bytes(), "root", "0644")
            .await?;
        pg.run_script(
            ctx,
            node,
            "configure and start etcd",
            &as_root(&[]),
            Some(ETCD_START.as_bytes()),
            Duration::from_secs(120),
        )
        .await?;
        Ok(
            json!({ "node": node, "member": me.name, "peer": format!("https://{}:{}", me.address, super::config::ETCD_PEER_PORT) }),
        )
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg
            .undo_on_node(
                ctx,
                &self.node,
                "stop etcd, remove its data",
                ETCD_STOP,
                &[],
            )
            .await
    }
}

/// `etcdctl endpoint health --cluster` on `node`, until every member answers healthy.
pub(super) async fn wait_healthy(
    pg: &Pg,
    ctx: &StepCtx,
    node: &str,
    members: usize,
    limit: Duration,
) -> Result<(), StepError> {
    let cmd = "sudo ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 \
               --cacert=/etc/dbctl/etcd/ca.crt --cert=/etc/dbctl/etcd/server.crt \
               --key=/etc/dbctl/etcd/server.key --command-timeout=5s \
               endpoint health --cluster -w json";
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(500);
    loop {
        let s = pg.access.session(ctx, node).await?;
        let last = match s.exec(cmd, None, Duration::from_secs(30)).await {
            Ok(o) => {
                let healthy = serde_json::from_str::<Vec<Value>>(o.stdout_str().trim())
                    .map(|v| v.iter().filter(|e| e["health"] == true).count())
                    .unwrap_or(0);
                if healthy >= members {
                    ctx.log(&format!("etcd: {healthy} of {members} members healthy"));
                    return Ok(());
                }
                format!("{healthy} of {members} healthy: {}", o.tail(2))
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(StepError::Transient(format!(
                "etcd cluster not healthy within {} s ({last})",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(5));
    }
}
