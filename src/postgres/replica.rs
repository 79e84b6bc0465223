//! Streaming replicas (HA): `deploy.<replica>` prepares the replica's disk and TLS files,
//! `setup.clone.<replica>` copies the primary with pg_basebackup and starts a hot standby on its
//! own physical replication slot, `setup.verify-replication` proves it end to end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::deploy::as_root;
use super::setup::Endpoint;
use super::{Pg, secrets};
use crate::saga::{Step, StepCtx, StepError};

const CLONE: &str = include_str!("../../templates/node/clone.sh");
/// How far (bytes of WAL) a replica may trail the primary and still count as in sync.
const MAX_LAG_BYTES: i64 = 16 << 20;

/// The replication slot of a replica node (`replica-1` → `replica_1`).
pub fn slot_name(node: &str) -> String {
    node.replace('-', "_")
}

pub struct DeployReplica {
    pub pg: Arc<Pg>,
    pub node: String,
}

#[async_trait]
impl Step for DeployReplica {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        self.pg.prepare(ctx, &self.node, "replica").await?;
        self.pg.install_tls(ctx, &self.node).await?;
        Ok(json!({ "node": self.node }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        super::DeployPrimary {
            pg: self.pg.clone(),
            node: self.node.clone(),
        }
        .rollback(ctx)
        .await
    }
}

pub struct CloneReplica {
    pub pg: Arc<Pg>,
    pub node: String,
    pub primary: String,
}

impl CloneReplica {
    fn replicator_password(&self) -> Result<String, StepError> {
        secrets::SecretStore::new(&self.pg.state_dir)
            .password(&self.pg.instance_id, super::roles::REPLICATOR)
            .map_err(|e| StepError::Permanent(format!("secrets: {e}")))
    }
}

#[async_trait]
impl Step for CloneReplica {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let node = self.node.as_str();
        let primary_ip = pg.access.private_address(ctx, &self.primary)?;
        let slot = slot_name(node);
        // The replication password goes into ~postgres/.pgpass (0600) over SSH stdin; neither
        // pg_basebackup's arguments nor primary_conninfo ever hold it.
        let pgpass = format!(
            "{primary_ip}:5432:*:replicator:{}\n",
            self.replicator_password()?
        );
        pg.upload(
            ctx,
            node,
            "/var/lib/postgresql/.pgpass",
            pgpass.as_bytes(),
            "postgres",
            "0600",
        )
        .await?;
        let major = pg.spec.version.to_string();
        pg.run_script(
            ctx,
            node,
            "clone the primary (pg_basebackup)",
            &as_root(&[&major, &primary_ip, &slot]),
            Some(CLONE.as_bytes()),
            Duration::from_secs(1800),
        )
        .await?;
        let standby = format!(
            "\n# Standby of {primary} ({primary_ip}).\nprimary_conninfo = 'host={primary_ip} port=5432 user=replicator sslmode=verify-full sslrootcert=/etc/dbctl/tls/ca.crt application_name={slot}'\nprimary_slot_name = '{slot}'\n",
            primary = self.primary
        );
        pg.install_config(ctx, node, &standby).await?;
        pg.start(ctx, node).await?;
        let (host, port) = pg.access.pg_endpoint(ctx, node)?;
        let ca = pg.ca()?;
        let ep = Endpoint {
            host,
            port,
            database: pg.spec.database.clone(),
            user: pg.spec.users[0].clone(),
            ca_file: ca.cert_path,
        };
        Ok(serde_json::to_value(ep).expect("json"))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let pg = &self.pg;
        // Stop the standby so its slot is released, then drop the slot on the primary: no
        // orphan slot may keep WAL on the primary forever.
        if pg.access.session(ctx, &self.node).await.is_ok() {
            let major = pg.spec.version.to_string();
            pg.run_script(
                ctx,
                &self.node,
                "stop standby",
                &format!("sudo systemctl stop postgresql@{major}-main || true"),
                None,
                Duration::from_secs(120),
            )
            .await?;
        }
        if pg.access.session(ctx, &self.primary).await.is_ok() {
            let slot = slot_name(&self.node);
            let sql = format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active;\n\
                 SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots WHERE slot_name = '{slot}';\n"
            );
            pg.run_script(
                ctx,
                &self.primary,
                &format!("drop slot {slot}"),
                "sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres",
                Some(sql.as_bytes()),
                Duration::from_secs(60),
            )
            .await?;
        }
        Ok(())
    }
}

pub struct VerifyReplication {
    pub pg: Arc<Pg>,
    pub primary: String,
    pub replicas: Vec<String>,
}

impl VerifyReplication {
    async fn psql(&self, ctx: &StepCtx, node: &str, sql: &str) -> Result<String, StepError> {
        self.pg
            .run_script(
                ctx,
                node,
                "query replication",
                "sudo -u postgres psql -X -A -t -q -v ON_ERROR_STOP=1 -d postgres",
                Some(sql.as_bytes()),
                Duration::from_secs(60),
            )
            .await
    }
}

#[async_trait]
impl Step for VerifyReplication {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let token = ctx.client_token.clone();
        self.psql(ctx, &self.primary, &format!(
            "CREATE TABLE IF NOT EXISTS dbctl_replication_check (token text PRIMARY KEY, at timestamptz DEFAULT now());\n\
             INSERT INTO dbctl_replication_check (token) VALUES ('{token}') ON CONFLICT DO NOTHING;\n"
        ))
        .await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut delay = Duration::from_millis(500);
        // Every replica streaming, with bounded lag.
        let rows = loop {
            let out = self
                .psql(ctx, &self.primary, "SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint FROM pg_stat_replication ORDER BY 1;\n")
                .await?;
            let rows: Vec<(String, String, i64)> = out
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('|');
                    Some((
                        f.next()?.to_string(),
                        f.next()?.to_string(),
                        f.next()?.trim().parse().unwrap_or(i64::MAX),
                    ))
                })
                .collect();
            let ok = self.replicas.iter().all(|r| {
                rows.iter().any(|(app, state, lag)| {
                    *app == slot_name(r) && state == "streaming" && *lag <= MAX_LAG_BYTES
                })
            });
            if ok {
                break rows;
            }
            if Instant::now() >= deadline {
                return Err(StepError::Permanent(format!(
                    "replicas not streaming within 300 s: {rows:?}"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        };
        // A row written on the primary is readable on each replica.
        for r in &self.replicas {
            let mut delay = Duration::from_millis(200);
            loop {
                let out = self.psql(ctx, r, &format!("SELECT count(*) FROM dbctl_replication_check WHERE token = '{token}';\n")).await.unwrap_or_default();
                if out.trim() == "1" {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Permanent(format!(
                        "{r}: the check row written on the primary did not arrive"
                    )));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
        }
        let replicas: Vec<Value> = rows
            .iter()
            .map(|(app, state, lag)| json!({ "slot": app, "state": state, "lag_bytes": lag }))
            .collect();
        ctx.log(&format!(
            "replication verified: {}",
            rows.iter()
                .map(|(a, s, l)| format!("{a} {s} lag {l} B"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(json!({ "replicas": replicas }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(()) // The check table goes with the cluster.
    }
}
