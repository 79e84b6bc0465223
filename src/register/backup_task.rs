//! `dbctl backup list` / `dbctl backup now`: pgBackRest on the node that leads now (an HA
//! cluster's leader, asked of Patroni), outside any run (bound like a step so it reaches the
//! node the same way the flow does).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::backup_info;
use super::settings::stanza;
use crate::postgres::Pg;
use crate::saga::{Step, StepCtx, StepError};
use crate::ssh::shell_quote;

pub struct BackupTask {
    pub pg: Arc<Pg>,
    pub primary: String,
    pub nodes: Vec<String>,
    /// `None`: only list; else the backup type to take first.
    pub kind: Option<String>,
}

#[async_trait]
impl Step for BackupTask {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        let stanza = ctx
            .input("register.backups")
            .and_then(|o| o["stanza"].as_str())
            .map(String::from)
            .unwrap_or_else(|| stanza(&self.pg.instance_id));
        let p = format!(
            "sudo -u postgres pgbackrest --stanza={}",
            shell_quote(&stanza)
        );
        let leader = self
            .pg
            .current_leader(ctx, &self.nodes, &self.primary)
            .await?;
        if let Some(kind) = &self.kind {
            self.pg
                .run_script(
                    ctx,
                    &leader,
                    &format!("{kind} backup"),
                    &format!("{p} --type={} backup", shell_quote(kind)),
                    None,
                    Duration::from_secs(6 * 3600),
                )
                .await?;
        }
        let out = self
            .pg
            .run_script(
                ctx,
                &leader,
                "pgbackrest info",
                &format!("{p} info --output=json"),
                None,
                Duration::from_secs(300),
            )
            .await?;
        let backups = backup_info::parse(&out)
            .ok_or_else(|| StepError::Permanent("unreadable pgbackrest info output".into()))?;
        Ok(json!({
            "stanza": stanza,
            "node": leader,
            "repository": super::pgbackrest::describe(&self.pg.register),
            "backups": backups,
        }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
