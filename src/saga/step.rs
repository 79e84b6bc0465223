//! What a step is to the engine: an idempotent `execute` and an idempotent `rollback`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::journal::Journal;
use crate::journal::resources::{ResourceKey, ResourceState};

/// Why a step attempt failed. The engine retries `Transient` (with backoff, up to the policy's
/// bound) and fails the step at once on `Permanent`. `Stopped` is not the step's failure: the
/// journal could not record it (locked, failing, or this process lost the run's lease), so the
/// run stops where it is, as after a crash, and `dbctl resume` carries it on. Rolling a
/// healthy instance back because SQLite was busy would be the worst answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Stopped(String),
}

impl StepError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StepError::Transient(_))
    }

    pub fn is_stop(&self) -> bool {
        matches!(self, StepError::Stopped(_))
    }
}

impl From<crate::journal::JournalError> for StepError {
    fn from(e: crate::journal::JournalError) -> Self {
        StepError::Stopped(e.to_string())
    }
}

/// One unit of the saga. Both methods must be idempotent: `execute` may run again after a crash
/// that happened after its side effect, and `rollback` may run for a step whose `execute` was
/// interrupted at any point (so it must tolerate "nothing to undo").
#[async_trait]
pub trait Step: Send + Sync {
    /// Does the work and returns outputs (JSON) for later steps and for rollback.
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError>;

    /// Undoes the work. `ctx.outputs` holds what execute returned, or `None` when execute never
    /// got to record them: the step must then find what it created by other means (tags, the
    /// run's directory).
    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError>;

    /// A policy for this step instead of the run's default.
    fn retry_policy(&self) -> Option<super::RetryPolicy> {
        None
    }
}

/// What a step sees while it runs.
pub struct StepCtx {
    pub run_id: String,
    pub step: String,
    /// 1-based attempt number as recorded in the journal (counts across resumes).
    pub attempt: u32,
    /// Bumped each time the step is rolled back, so tokens of a re-execution are new.
    pub generation: u32,
    /// Stable for retries of the same step and generation: pass it to APIs that deduplicate.
    pub client_token: String,
    /// Outputs of the run's completed steps, by step name.
    pub inputs: BTreeMap<String, Value>,
    /// This step's own recorded outputs (set for rollback).
    pub outputs: Option<Value>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) faults: Arc<super::FaultPlan>,
}

impl StepCtx {
    /// A context for running one action outside a saga (`dbctl backup now`): `inputs` are the
    /// run's recorded outputs; log lines go to the run's events under `step`.
    pub fn detached(
        journal: Arc<Journal>,
        run_id: &str,
        step: &str,
        inputs: BTreeMap<String, Value>,
    ) -> StepCtx {
        StepCtx {
            run_id: run_id.to_string(),
            step: step.to_string(),
            attempt: 1,
            generation: 0,
            client_token: String::new(),
            inputs,
            outputs: None,
            journal,
            faults: Arc::new(super::FaultPlan::default()),
        }
    }

    /// The same context with `base` added under the run's own inputs (a day-2 run sees the
    /// outputs of the run that built the instance: VM addresses, host keys).
    pub fn with_base_inputs(&self, base: &BTreeMap<String, Value>) -> StepCtx {
        let mut inputs = base.clone();
        inputs.extend(self.inputs.clone());
        StepCtx {
            run_id: self.run_id.clone(),
            step: self.step.clone(),
            attempt: self.attempt,
            generation: self.generation,
            client_token: self.client_token.clone(),
            inputs,
            outputs: self.outputs.clone(),
            journal: self.journal.clone(),
            faults: self.faults.clone(),
        }
    }

    pub fn input(&self, step: &str) -> Option<&Value> {
        self.inputs.get(step)
    }

    fn key<'a>(&'a self, kind: &'a str, name: &'a str) -> ResourceKey<'a> {
        ResourceKey {
            run_id: &self.run_id,
            step: &self.step,
            kind,
            name,
        }
    }

    /// Journals the intent to create a resource; call before the external call.
    pub fn resource_intent(
        &self,
        kind: &str,
        name: &str,
        zone: Option<&str>,
    ) -> Result<(), StepError> {
        Ok(self
            .journal
            .resource_intent(&self.key(kind, name), None, zone)?)
    }

    /// Journals the provider id of a resource that now exists.
    pub fn resource_created(
        &self,
        kind: &str,
        name: &str,
        provider_id: &str,
    ) -> Result<(), StepError> {
        Ok(self
            .journal
            .resource_created(&self.key(kind, name), provider_id)?)
    }

    /// Journals that a resource is gone.
    pub fn resource_deleted(&self, kind: &str, name: &str) -> Result<(), StepError> {
        Ok(self
            .journal
            .resource_state(&self.key(kind, name), ResourceState::Deleted)?)
    }

    /// A fault-injection point inside the step (`STEP@NAME=ACTION` in `DBCTL_FAULTS`).
    pub fn fault_point(&self, name: &str) -> Result<(), StepError> {
        self.faults.fire(
            &self.step,
            &super::FaultPoint::Custom(name.to_string()),
            self.attempt,
        )
    }

    /// Adds a line to the run's event log. Never pass secrets.
    pub fn log(&self, message: &str) {
        let _ = self
            .journal
            .event(&self.run_id, "info", Some(&self.step), message);
    }
}

/// The idempotency token for one step generation: 64 characters at most, ASCII, derived only
/// from the run, step and generation so that every retry and resume reuses it.
pub fn client_token(run_id: &str, step: &str, generation: u32) -> String {
    let digest = Sha256::digest(format!("{run_id}\0{step}\0{generation}"));
    format!("dbctl-{}", &hex::encode(digest)[..40])
}
