//! The saga engine: runs a run's steps as a DAG with journaled intent, retries, crash-safe
//! resume and reverse-order rollback.
//!
//! The engine knows nothing about clouds or PostgreSQL; it drives [`Step`] implementations that
//! the flow binds for a provider. What makes a run survive a crash is the order of writes:
//! intent (step `running`, attempt, client token) is committed before `execute` is called, and
//! outputs only after it returns, so a step found `running` may have had its effect and is run
//! again (steps are idempotent) or rolled back.

mod dag;
mod execute;
pub mod fault;
mod log;
mod retry;
mod rollback;
mod step;

pub use dag::{DagError, validate_dag};
pub use fault::{FaultPlan, FaultPoint};
pub use log::{Phase, Reporter, StepEvent};
pub use retry::RetryPolicy;
pub use step::{Step, StepCtx, StepError, client_token};

use std::collections::HashMap;
use std::sync::Arc;

use crate::journal::Journal;

/// A step bound to its implementation, as the engine schedules it.
#[derive(Clone)]
pub struct BoundStep {
    pub name: String,
    pub deps: Vec<String>,
    pub imp: Arc<dyn Step>,
}

/// The result of driving a run forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The first step that failed permanently (or ran out of retries) and why.
    Failed {
        step: String,
        error: String,
    },
    /// The journal could not record a step (see [`StepError::Stopped`]): nothing failed, the
    /// run stops where it is and is resumable.
    Stopped {
        step: String,
        error: String,
    },
}

/// The result of rolling a run back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackOutcome {
    RolledBack,
    /// Steps whose rollback failed; their dependencies were left in place on purpose.
    Failed {
        steps: Vec<(String, String)>,
    },
    /// The journal could not record a step's rollback: the rollback stops, resumable.
    Stopped {
        step: String,
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error("step {0} is in the journal but has no implementation bound")]
    Unbound(String),
}

/// One run's steps plus what the engine needs to drive them.
pub struct Saga {
    journal: Arc<Journal>,
    run_id: String,
    steps: HashMap<String, BoundStep>,
    faults: Arc<FaultPlan>,
    retry: RetryPolicy,
    log: Arc<log::RunLog>,
}

impl Saga {
    /// Binds a run. The DAG is checked (unknown dependencies, cycles) before anything runs.
    pub fn new(
        journal: Arc<Journal>,
        run_id: &str,
        steps: Vec<BoundStep>,
        faults: FaultPlan,
        retry: RetryPolicy,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Saga, EngineError> {
        validate_dag(steps.iter().map(|s| (s.name.as_str(), s.deps.as_slice())))?;
        let log = Arc::new(log::RunLog::new(journal.clone(), run_id, reporter));
        Ok(Saga {
            journal,
            run_id: run_id.to_string(),
            steps: steps.into_iter().map(|s| (s.name.clone(), s)).collect(),
            faults: Arc::new(faults),
            retry,
            log,
        })
    }

    fn bound(&self, name: &str) -> Result<&BoundStep, EngineError> {
        self.steps
            .get(name)
            .ok_or_else(|| EngineError::Unbound(name.to_string()))
    }

    pub fn log(&self) -> &log::RunLog {
        &self.log
    }
}

#[cfg(test)]
mod tests;
