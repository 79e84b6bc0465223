//! A test-only provider (feature `testbed`): every step's side effect is one line appended to
//! `effects.log` (`create RUN STEP` / `delete RUN STEP`). A single small O_APPEND write is atomic,
//! so a crash can never separate an effect from its record, and tests can check that each effect
//! happened exactly once and was undone. It behaves like a well-made cloud step: before creating
//! it looks for what an earlier, interrupted attempt left (the log is its "tag lookup").
//!
//! `DBCTL_TESTBED_DIR` names its directory; `DBCTL_TESTBED_DELAY_MS` makes each execute take
//! that long (to hold a lease, or to see steps overlap).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Leftover, Provider, RunInfo};
use crate::flow::Action;
use crate::saga::{Step, StepCtx, StepError};
use crate::scheduler::ZoneInfo;
use crate::spec::ValidationError;

pub const ZONES: &[&str] = &["tb-a", "tb-b", "tb-c"];

pub struct Testbed {
    dir: PathBuf,
    delay: Duration,
}

impl Testbed {
    pub fn from_env() -> Result<Testbed, ValidationError> {
        let dir = std::env::var_os("DBCTL_TESTBED_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| ValidationError::new("provider", "testbed needs DBCTL_TESTBED_DIR"))?;
        let delay = std::env::var("DBCTL_TESTBED_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        Ok(Testbed { dir, delay })
    }
}

impl Testbed {
    /// (run, step) of every marker that exists: its last recorded effect is a create.
    fn markers_left(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.join("effects.log")).unwrap_or_default();
        let mut last = std::collections::BTreeMap::new();
        for l in text.lines() {
            let mut p = l.splitn(3, ' ');
            if let (Some(verb), Some(run), Some(step)) = (p.next(), p.next(), p.next()) {
                last.insert((run.to_string(), step.to_string()), verb == "create");
            }
        }
        last.into_iter()
            .filter(|(_, exists)| *exists)
            .map(|(key, _)| key)
            .collect()
    }
}

#[async_trait::async_trait]
impl Provider for Testbed {
    fn name(&self) -> &'static str {
        "testbed"
    }

    fn zones(&self, _region: &str) -> Vec<ZoneInfo> {
        ZONES
            .iter()
            .map(|z| ZoneInfo {
                name: z.to_string(),
                free_nodes: None,
                live_nodes: 0,
            })
            .collect()
    }

    /// Every marker whose last effect is a create, of any run: the testbed's "tag scan".
    async fn leftovers(&self) -> Result<Vec<Leftover>, String> {
        Ok(self
            .markers_left()
            .into_iter()
            .map(|(run_id, step)| Leftover {
                run_id,
                what: format!("marker {step}"),
            })
            .collect())
    }

    async fn remove_leftovers(&self, run_id: &str) -> Result<(), String> {
        let log = self.dir.join("effects.log");
        let lines: String = self
            .markers_left()
            .into_iter()
            .filter(|(run, _)| run == run_id)
            .map(|(run, step)| format!("delete {run} {step}\n"))
            .collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .map_err(|e| format!("testbed {}: {e}", log.display()))
    }

    fn bind(&self, run: &RunInfo<'_>, _step: &str, action: &Action) -> Arc<dyn Step> {
        if matches!(action, Action::ClusterStatus) {
            // A read (`dbctl status`): no effect, no resource. The testbed runs no Patroni, so
            // the live topology it reports has no members.
            return Arc::new(NoPatroni);
        }
        Arc::new(MarkerStep {
            log: self.dir.join("effects.log"),
            delay: self.delay,
            purge: run.purge_backups,
        })
    }
}

struct NoPatroni;

#[async_trait]
impl Step for NoPatroni {
    async fn execute(&self, _ctx: &StepCtx) -> Result<Value, StepError> {
        Ok(json!({ "members": [], "replication": [] }))
    }

    async fn rollback(&self, _ctx: &StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

struct MarkerStep {
    log: PathBuf,
    delay: Duration,
    /// What the run's rollback was told about backups; every undo records it in
    /// `backups.log` (`RUN STEP purge|keep`), as the real backup step would act on it.
    purge: bool,
}

impl MarkerStep {
    /// Whether the step's resource exists: its last recorded effect is a create.
    fn exists(&self, ctx: &StepCtx) -> bool {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let suffix = format!(" {} {}", ctx.run_id, ctx.step);
        text.lines()
            .rev()
            .find(|l| l.ends_with(&suffix))
            .is_some_and(|l| l.starts_with("create "))
    }

    fn effect(&self, verb: &str, ctx: &StepCtx) -> Result<(), StepError> {
        let io = |e: std::io::Error| StepError::Transient(format!("testbed: {e}"));
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io)?;
        f.write_all(format!("{verb} {} {}\n", ctx.run_id, ctx.step).as_bytes())
            .map_err(io)
    }
}

impl MarkerStep {
    fn record_backups(&self, ctx: &StepCtx) -> Result<(), StepError> {
        let io = |e: std::io::Error| StepError::Transient(format!("testbed: {e}"));
        let path = self.log.with_file_name("backups.log");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let verdict = if self.purge { "purge" } else { "keep" };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(format!("{} {} {verdict}\n", ctx.run_id, ctx.step).as_bytes())
            })
            .map_err(io)
    }
}

#[async_trait]
impl Step for MarkerStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        tokio::time::sleep(self.delay).await;
        ctx.resource_intent("marker", &ctx.step, None)?;
        if !self.exists(ctx) {
            self.effect("create", ctx)?;
        }
        ctx.resource_created("marker", &ctx.step, &ctx.step)?;
        Ok(json!({ "marker": ctx.step }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.record_backups(ctx)?;
        if self.exists(ctx) {
            self.effect("delete", ctx)?;
        }
        ctx.resource_deleted("marker", &ctx.step)?;
        Ok(())
    }
}
