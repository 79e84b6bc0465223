//! `setup.verify-replication` of an HA cluster: Patroni reports one leader and every other
//! member streaming from it — one as the synchronous standby in sync mode — and a row written
//! on the leader is read back on every member.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};
use crate::spec::Replication;

pub struct VerifyCluster {
    pub pg: Arc<Pg>,
    pub nodes: Vec<String>,
}

impl VerifyCluster {
    async fn psql(&self, ctx: &StepCtx, node: &str, sql: &str) -> Result<String, StepError> {
        self.pg
            .run_script(
                ctx,
                node,
                "check replication",
                "sudo -u postgres psql -X -A -t -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -d postgres",
                Some(sql.as_bytes()),
                Duration::from_secs(60),
            )
            .await
    }
}

#[async_trait]
impl Step for VerifyCluster {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let sync = pg.spec.replication != Some(Replication::Async);
        let t = pg
            .wait_topology(
                ctx,
                &self.nodes,
                Duration::from_secs(600),
                "every member streaming",
                |t| (t.all_streaming() && (!sync || t.sync_standby().is_some())).then(|| t.clone()),
            )
            .await?;
        let leader = t.leader().expect("checked").name.clone();
        let token = ctx.client_token.clone();
        self.psql(ctx, &leader, &format!(
            "CREATE TABLE IF NOT EXISTS dbctl_replication_check (token text PRIMARY KEY, at timestamptz DEFAULT now());\n\
             INSERT INTO dbctl_replication_check (token) VALUES ('{token}') ON CONFLICT DO NOTHING;\n"
        ))
        .await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        for m in t.members.iter().filter(|m| m.name != leader) {
            let mut delay = Duration::from_millis(200);
            loop {
                let seen = self
                    .psql(ctx, &m.name, &format!("SELECT count(*) FROM dbctl_replication_check WHERE token = '{token}';\n"))
                    .await
                    .unwrap_or_default();
                if seen.trim() == "1" {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Transient(format!(
                        "{}: the check row written on {leader} did not arrive",
                        m.name
                    )));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
        }
        ctx.log(&format!("cluster verified: {}", t.summary()));
        let replicas: Vec<Value> = t
            .replication
            .iter()
            .map(|s| json!({ "node": s.application_name, "slot": s.application_name.replace('-', "_"), "state": s.state, "sync_state": s.sync_state }))
            .collect();
        Ok(json!({
            "leader": leader,
            "replication": pg.spec.replication.map(|r| r.as_str()),
            "members": t.members,
            "replicas": replicas,
        }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(()) // The check table goes with the cluster.
    }
}
