//! `deploy.<primary>` of a restored instance (`dbctl restore`): the data disk is mounted as for
//! any primary, but the data directory comes from the source instance's pgBackRest backups —
//! the newest backup replayed to the end of the archived WAL, or to a point in time — instead
//! of initdb. The restored cluster then gets this instance's own TLS, config and (in setup)
//! passwords; its own backups start at register under its own stanza.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Pg;
use super::deploy::as_root;
use crate::saga::{Step, StepCtx, StepError};

const RESTORE: &str = include_str!("../../templates/node/restore.sh");
/// The source stanza's config, kept apart from the instance's own pgbackrest.conf: recovery
/// reads WAL through it (restore_command) until promotion.
const RESTORE_CONF: &str = "/etc/pgbackrest/restore.conf";

pub struct RestorePrimary {
    pub pg: Arc<Pg>,
    pub node: String,
}

impl RestorePrimary {
    /// Whether PostgreSQL stopped because the archived WAL ended before the recovery target
    /// (its log says so; the server does not start again with that target).
    async fn ended_before_target(&self, ctx: &StepCtx) -> bool {
        let log = format!(
            "/var/log/postgresql/postgresql-{}-main.log",
            self.pg.spec.version
        );
        let check = format!(
            "sudo grep -q 'recovery ended before configured recovery target was reached' {}",
            crate::ssh::shell_quote(&log)
        );
        self.pg
            .run_script(
                ctx,
                &self.node,
                "did recovery end early",
                &check,
                None,
                Duration::from_secs(30),
            )
            .await
            .is_ok()
    }

    /// Waits (with backoff) until recovery has ended and the server accepts writes.
    async fn wait_promoted(&self, ctx: &StepCtx, limit: Duration) -> Result<(), StepError> {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(500);
        loop {
            let out = self
                .pg
                .run_script(
                    ctx,
                    &self.node,
                    "is recovery over",
                    "sudo -u postgres psql -X -Atq -c 'SELECT pg_is_in_recovery()'",
                    None,
                    Duration::from_secs(30),
                )
                .await;
            if matches!(&out, Ok(o) if o.trim() == "f") {
                return Ok(());
            }
            if out.is_err() && self.ended_before_target(ctx).await {
                // PostgreSQL shut down for good: waiting or retrying cannot reach the target.
                return Err(StepError::Permanent(format!(
                    "{}: recovery ended before the target time was reached: it is past the end of the source's archived WAL (choose an earlier --to)",
                    self.node
                )));
            }
            if Instant::now() > deadline {
                return Err(StepError::Transient(format!(
                    "{}: still in recovery after {} s",
                    self.node,
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[async_trait]
impl Step for RestorePrimary {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let pg = &self.pg;
        let node = self.node.as_str();
        let from = pg.spec.restore.clone().ok_or_else(|| {
            StepError::Permanent("restore step without a restore source in the spec".into())
        })?;
        pg.prepare(ctx, node, "replica").await?;
        crate::register::install_config(pg, ctx, node, &from.stanza, RESTORE_CONF).await?;
        let major = pg.spec.version.to_string();
        let target = from.target_time.clone().unwrap_or_default();
        pg.run_script(
            ctx,
            node,
            &format!("restore {} ({})", from.instance, from.stanza),
            &as_root(&[&major, &from.stanza, RESTORE_CONF, &target]),
            Some(RESTORE.as_bytes()),
            Duration::from_secs(3600),
        )
        .await?;
        pg.install_tls(ctx, node).await?;
        let t = pg.install_config(ctx, node, "").await?;
        pg.start(ctx, node).await?;
        self.wait_promoted(ctx, Duration::from_secs(1800)).await?;
        ctx.log(&format!(
            "restored from {}{}; recovery finished",
            from.instance,
            from.target_time
                .as_deref()
                .map(|t| format!(" to {t}"))
                .unwrap_or_default()
        ));
        Ok(json!({
            "node": node, "major": major, "tuning": t,
            "data": format!("/pgdata/{major}/main"),
            "restored_from": from,
        }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.pg.undeploy(ctx, &self.node).await
    }
}
