//! `register.backups`: pgBackRest on the primary — repository config, continuous WAL archiving
//! (`archive_mode` is on from deploy, so setting `archive_command` needs only a reload and no
//! WAL is lost before it), stanza created, `pgbackrest check` passing, a first full backup, and
//! systemd timers for the full and differential schedules.
//!
//! Rolling back stops the schedule and archiving; the backups themselves are kept (a destroyed
//! instance can still be restored) unless the run is purged: a create that failed, or
//! `destroy --purge-backups`.

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
}

pub const CONF_PATH: &str = "/etc/pgbackrest/pgbackrest.conf";

const ENABLE: &str = include_str!("../../templates/node/backups-enable.sh");

const DISABLE: &str = include_str!("../../templates/node/backups-disable.sh");

impl RegisterBackups {
    fn major(&self) -> String {
        self.pg.spec.version.to_string()
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
        install_config(pg, ctx, &self.primary, &stanza, CONF_PATH).await?;
        let repo = match s.backup.repo {
            RepoKind::Node => "node",
            RepoKind::S3 => "s3",
        };
        let script = as_root(&[
            &stanza,
            &self.major(),
            &s.backup.full_schedule,
            &s.backup.diff_schedule,
            repo,
        ]);
        let out = pg
            .run_script(
                ctx,
                &self.primary,
                "archiving, stanza, check, first full backup, schedule",
                &script,
                Some(ENABLE.as_bytes()),
                Duration::from_secs(1800),
            )
            .await?;
        ctx.resource_created("backup-stanza", &stanza, &pgbackrest::describe(s))?;
        let backups = super::backup_info::parse(&out).unwrap_or_default();
        Ok(json!({
            "stanza": stanza,
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
        let script = as_root(&[&stanza, &self.major(), purge]);
        let r = pg
            .run_script(
                ctx,
                &self.primary,
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
                "{}: backup schedule not stopped ({e}); the VM goes next",
                self.primary
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
