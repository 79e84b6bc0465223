//! A test-only provider (feature `testbed`): every step "creates" a marker file and appends one
//! line per real side effect to `effects.log`, so tests can check that each effect happened
//! exactly once and was undone. It behaves like a well-made cloud step: before creating it looks
//! for what an earlier, interrupted attempt left (the marker) and adopts it.
//!
//! `DBCTL_TESTBED_DIR` names its directory; `DBCTL_TESTBED_DELAY_MS` makes each execute take
//! that long (to hold a lease, or to see steps overlap).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Provider, RunInfo};
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

    fn bind(&self, run: &RunInfo<'_>, step: &str, _action: &Action) -> Arc<dyn Step> {
        Arc::new(MarkerStep {
            marker: self.dir.join("markers").join(run.run_id).join(step),
            log: self.dir.join("effects.log"),
            delay: self.delay,
        })
    }
}

struct MarkerStep {
    marker: PathBuf,
    log: PathBuf,
    delay: Duration,
}

impl MarkerStep {
    fn effect(&self, verb: &str, ctx: &StepCtx) -> Result<(), StepError> {
        let io = |e: std::io::Error| StepError::Transient(format!("testbed: {e}"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io)?;
        // One write per line: O_APPEND keeps concurrent steps' lines whole.
        f.write_all(format!("{verb} {} {}\n", ctx.run_id, ctx.step).as_bytes())
            .map_err(io)
    }
}

#[async_trait]
impl Step for MarkerStep {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        tokio::time::sleep(self.delay).await;
        ctx.resource_intent("marker", &ctx.step, None)?;
        if !self.marker.exists() {
            let io = |e: std::io::Error| StepError::Transient(format!("testbed: {e}"));
            std::fs::create_dir_all(self.marker.parent().expect("marker has a parent"))
                .map_err(io)?;
            std::fs::write(&self.marker, &ctx.client_token).map_err(io)?;
            self.effect("create", ctx)?;
        }
        let id = self.marker.display().to_string();
        ctx.resource_created("marker", &ctx.step, &id)?;
        Ok(json!({ "marker": id }))
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        if self.marker.exists() {
            std::fs::remove_file(&self.marker)
                .map_err(|e| StepError::Transient(format!("testbed: {e}")))?;
            self.effect("delete", ctx)?;
        }
        ctx.resource_deleted("marker", &ctx.step)?;
        Ok(())
    }
}
