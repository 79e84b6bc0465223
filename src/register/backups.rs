//! `register.backups`: pgBackRest on the primary — repository config, continuous WAL archiving
//! (`archive_mode` is on from deploy, so setting `archive_command` needs only a reload and no
//! WAL is lost before it), stanza created, `pgbackrest check` passing, a first full backup, and
//! systemd timers for the full and differential schedules.
//!
//! Rolling back stops the schedule and archiving; the backups themselves are kept (a destroyed
//! instance can still be restored) unless the run is purged: a create that failed, or
//! `destroy --purge-backups`.
//!
//! An HA cluster backs up from whichever node leads: `archive_command` is set cluster-wide
//! through Patroni (every node archives once it leads), every node carries the pgBackRest
//! config and the timers (each backup unit runs only on the leader), and a node that becomes
//! the leader takes a full backup at once (Patroni's `on_role_change` callback). With the
//! default `repo = "node"` each node keeps its own repository on its own disk: a new leader
//! starts its own stanza with that full backup, and the old leader's backups die with it —
//! an HA instance that must survive losing a node needs `repo = "s3"`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::pgbackrest::{self, CA_PATH, NODE_REPO_PATH};
use super::settings::{s3_credentials, stanza};
use crate::config::RepoKind;
use crate::postgres::Pg;
use crate::postgres::as_root;
use crate::saga::{Step, StepCtx, StepError};

pub struct RegisterBackups {
    pub pg: Arc<Pg>,
    pub primary: String,
    /// Every node (one for a single node).
    pub nodes: Vec<String>,
}

pub const CONF_PATH: &str = "/etc/pgbackrest/pgbackrest.conf";

const ENABLE: &str = include_str!("../../templates/node/backups-enable.sh");

const DISABLE: &str = include_str!("../../templates/node/backups-disable.sh");

impl RegisterBackups {
    fn major(&self) -> String {
        self.pg.spec.version.to_string()
    }

    /// A Patroni cluster (HA instances built before Patroni archive like a single node).
    fn patroni(&self) -> bool {
        self.pg.spec.ha && self.primary != "primary"
    }

    fn archive_command(stanza: &str) -> String {
        format!("pgbackrest --stanza={stanza} archive-push %p")
    }

    /// Sets (or with `None` clears) `archive_command` cluster-wide through Patroni, then waits
    /// until the leader runs with it.
    async fn set_cluster_archiving(
        &self,
        ctx: &StepCtx,
        leader: &str,
        command: Option<&str>,
    ) -> Result<(), StepError> {
        let pg = &self.pg;
        let body = json!({ "postgresql": { "parameters": { "archive_command": command } } });
        pg.patroni_api(
            ctx,
            leader,
            "set archive_command through Patroni",
            &["patch-config", "-"],
            Some(body.to_string().as_bytes()),
        )
        .await?;
        let want = command.unwrap_or("");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut delay = Duration::from_millis(500);
        loop {
            let s = pg.access.session(ctx, leader).await?;
            let o = s
                .exec(
                    "sudo -u postgres psql -X -Atq -h /var/run/postgresql -d postgres -c 'SHOW archive_command'",
                    None,
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| StepError::Transient(e.to_string()))?;
            let have = o.stdout_str().trim().to_string();
            if have == want || (want.is_empty() && have == "(disabled)") {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(StepError::Transient(format!(
                    "{leader}: archive_command is {have:?}, Patroni has not applied {want:?} within 120 s"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
    }
}

/// Uploads the node's pgBackRest config for `stanza` (and the S3 CA, if any) to `path`.
pub async fn install_config(
    pg: &Pg,
    ctx: &StepCtx,
    node: &str,
    stanza: &str,
    path: &str,
) -> Result<(), StepError> {
    let s = &pg.register;
    let creds = match s.backup.repo {
        RepoKind::Node => None,
        // The node's instance profile (pgBackRest reads it through IMDSv2): no key of ours.
        RepoKind::S3 if pg.access.instance_credentials() => None,
        RepoKind::S3 => Some(
            s3_credentials().map_err(|why| StepError::Permanent(format!("backup.s3: {why}")))?,
        ),
    };
    if let Some(ca) = &s.backup.s3.ca_file
        && s.backup.repo == RepoKind::S3
    {
        let pem = std::fs::read(ca).map_err(|e| {
            StepError::Permanent(format!("backup.s3.ca_file {}: {e}", ca.display()))
        })?;
        pg.upload(ctx, node, CA_PATH, &pem, "postgres", "0644")
            .await?;
    }
    let route = pg.access.s3_route();
    // A named endpoint resolves to the relay through the node's /etc/hosts (see `render`).
    if let Some(via) = &route
        && s.backup.repo == RepoKind::S3
        && !s.s3_endpoint_is_ip()
    {
        let (host, _) = s.s3_host_port();
        super::hosts::set_node_block(pg, ctx, node, "s3-relay", &[format!("{via} {host}")]).await?;
    }
    let data = format!("/pgdata/{}/main", pg.spec.version);
    let conf = pgbackrest::render(s, stanza, &data, creds.as_ref(), route.as_deref());
    // 0600 postgres: it may hold the S3 secret key.
    pg.upload(ctx, node, path, conf.as_bytes(), "postgres", "0600")
        .await
}

#[async_trait]
impl Step for RegisterBackups {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let s = &pg.register;
        let stanza = stanza(&pg.instance_id);
        ctx.resource_intent("backup-stanza", &stanza, None)?;
        let leader = pg.current_leader(ctx, &self.nodes, &self.primary).await?;
        for node in &self.nodes {
            install_config(pg, ctx, node, &stanza, CONF_PATH).await?;
        }
        let repo = match s.backup.repo {
            RepoKind::Node => "node",
            RepoKind::S3 => "s3",
        };
        let script = |mode: &str| {
            as_root(&[
                &stanza,
                &self.major(),
                &s.backup.full_schedule,
                &s.backup.diff_schedule,
                repo,
                mode,
            ])
        };
        if self.patroni() {
            self.set_cluster_archiving(ctx, &leader, Some(&Self::archive_command(&stanza)))
                .await?;
            let member_script = script("member");
            let members = self.nodes.iter().filter(|n| **n != leader).map(|n| {
                pg.run_script(
                    ctx,
                    n,
                    "backup schedule (runs only while leading)",
                    &member_script,
                    Some(ENABLE.as_bytes()),
                    Duration::from_secs(300),
                )
            });
            for r in futures::future::join_all(members).await {
                r?;
            }
        }
        let mode = if self.patroni() { "leader" } else { "single" };
        let out = pg
            .run_script(
                ctx,
                &leader,
                "archiving, stanza, check, first full backup, schedule",
                &script(mode),
                Some(ENABLE.as_bytes()),
                Duration::from_secs(1800),
            )
            .await?;
        ctx.resource_created("backup-stanza", &stanza, &pgbackrest::describe(s))?;
        let backups = super::backup_info::parse(&out).unwrap_or_default();
        Ok(json!({
            "stanza": stanza,
            "leader": leader,
            "repo": repo,
            "repository": pgbackrest::describe(s),
            "node_repo_path": (s.backup.repo == RepoKind::Node).then_some(NODE_REPO_PATH),
            "full_schedule": s.backup.full_schedule,
            "diff_schedule": s.backup.diff_schedule,
            "retention_full": s.backup.retention_full,
            "backups": backups,
        }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let pg = &self.pg;
        let stanza = stanza(&pg.instance_id);
        if ctx
            .input(&format!("provision.vm.{}", self.primary))
            .is_none()
        {
            return ctx.resource_deleted("backup-stanza", &stanza);
        }
        let purge = if pg.purge_backups { "purge" } else { "keep" };
        // The node that leads now archives and holds the stanza (a single node: the primary).
        let leader = if self.patroni() {
            match pg.topology(ctx, &self.nodes).await {
                Ok(t) => t.leader().map(|l| l.name.clone()),
                Err(e) => {
                    ctx.log(&format!("no leader known ({e})"));
                    None
                }
            }
        } else {
            Some(self.primary.clone())
        };
        if self.patroni() {
            if let Some(l) = &leader
                && let Err(e) = self.set_cluster_archiving(ctx, l, None).await
            {
                ctx.log(&format!(
                    "archive_command not cleared ({e}); the cluster goes next"
                ));
            }
            for n in self.nodes.iter().filter(|n| Some(*n) != leader.as_ref()) {
                if ctx.input(&format!("provision.vm.{n}")).is_none()
                    || pg.access.session(ctx, n).await.is_err()
                {
                    continue;
                }
                let script = as_root(&[&stanza, &self.major(), "keep", "member"]);
                if let Err(e) = pg
                    .run_script(
                        ctx,
                        n,
                        "stop backup schedule",
                        &script,
                        Some(DISABLE.as_bytes()),
                        Duration::from_secs(300),
                    )
                    .await
                {
                    ctx.log(&format!(
                        "{n}: backup schedule not stopped ({e}); the VM goes next"
                    ));
                }
            }
        }
        let mode = if self.patroni() { "leader" } else { "single" };
        let script = as_root(&[&stanza, &self.major(), purge, mode]);
        // Without a leader, any node that answers can delete the stanza from a shared bucket.
        let target = leader.clone().unwrap_or_else(|| self.primary.clone());
        let r = pg
            .run_script(
                ctx,
                &target,
                &format!("stop backup schedule and archiving ({purge} backups)"),
                &script,
                Some(DISABLE.as_bytes()),
                Duration::from_secs(300),
            )
            .await;
        match r {
            Ok(_) => {}
            // An S3 repository outlives the node: purging it must not be skipped silently.
            Err(e) if pg.purge_backups && pg.register.backup.repo == RepoKind::S3 => return Err(e),
            Err(e) => ctx.log(&format!(
                "{target}: backup schedule not stopped ({e}); the VM goes next"
            )),
        }
        if !pg.purge_backups {
            ctx.log(&format!(
                "backups of stanza {stanza} kept in {}",
                pgbackrest::describe(&pg.register)
            ));
        }
        ctx.resource_deleted("backup-stanza", &stanza)
    }
}
