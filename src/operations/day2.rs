//! Day-2 operations on a running instance (switchover, failover, reinit), each journaled as a
//! run of its own — leased, resumable, with its events in `dbctl logs` — like a create.
//!
//! A day-2 run acts on what the instance's create run built: its steps are bound against that
//! run (its VMs, paths and recorded outputs) while their state is journaled under the day-2 run.
//! It never rolls the instance back: a step that fails for good leaves the run `failed` (kept),
//! for `dbctl resume` once the cause is fixed. Its steps undo nothing (a switchover is undone
//! by another switchover).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::App;
use crate::error::CliError;
use crate::flow::{Action, PlannedStep, Stage};
use crate::journal::runs::{self, NewRun, RunRow, RunState};
use crate::journal::{InstanceRow, InstanceState, Journal};
use crate::saga::{Outcome, Reporter, Step, StepCtx, StepError};
use crate::spec::ValidationError;

/// Operations journaled as day-2 runs.
pub const OPERATIONS: &[&str] = &["switchover", "failover", "reinit"];

pub fn is_day2(operation: &str) -> bool {
    OPERATIONS.contains(&operation)
}

/// The steps of a day-2 request.
pub enum Request {
    Switchover { from: String, to: String },
    Failover { to: String },
    Reinit { node: String, force: bool },
}

impl Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Switchover { .. } => "switchover",
            Request::Failover { .. } => "failover",
            Request::Reinit { .. } => "reinit",
        }
    }

    fn steps(&self) -> Vec<PlannedStep> {
        let step = |name: String, deps: Vec<String>, action: Action| PlannedStep {
            name,
            stage: Stage::Setup,
            deps,
            action,
        };
        match self {
            Request::Switchover { from, to } => vec![step(
                "switchover".into(),
                vec![],
                Action::Switchover {
                    from: from.clone(),
                    to: to.clone(),
                },
            )],
            Request::Failover { to } => vec![step(
                "failover".into(),
                vec![],
                Action::Failover { to: to.clone() },
            )],
            Request::Reinit { node, force } => {
                let vm = format!("reinit.vm.{node}");
                let attach = format!("reinit.attach.{node}");
                vec![
                    step(vm.clone(), vec![], Action::StartNode { node: node.clone() }),
                    step(
                        attach.clone(),
                        vec![vm],
                        Action::AttachDisk { node: node.clone() },
                    ),
                    step(
                        format!("reinit.rejoin.{node}"),
                        vec![attach],
                        Action::Rejoin {
                            node: node.clone(),
                            force: *force,
                        },
                    ),
                ]
            }
        }
    }
}

/// Records a day-2 run on a running instance; refuses while another run of the instance is
/// unfinished (one change to a cluster at a time). Returns the new run's id.
pub fn admit(
    journal: &Journal,
    instance: &InstanceRow,
    create: &RunRow,
    request: &Request,
) -> Result<String, CliError> {
    let run_id = super::new_id("run");
    let op = request.operation();
    let steps = super::admit::journaled(&request.steps());
    journal.write(|tx| {
        let current = crate::journal::instances::get(tx, &instance.id)?;
        if current.map(|i| i.state) != Some(InstanceState::Running) {
            return Err(ValidationError::new(
                "name",
                format!(
                    "{} is not running (state {})",
                    instance.name, instance.state
                ),
            )
            .into());
        }
        let busy: Option<String> = tx
            .query_row(
                "SELECT id FROM runs WHERE instance_id = ?1 AND id <> ?2
                   AND state IN ('pending', 'running', 'interrupted', 'rolling_back')
                 LIMIT 1",
                [&instance.id, &create.id],
                |r| r.get(0),
            )
            .ok();
        if let Some(other) = busy {
            return Err(ValidationError::new(
                "name",
                format!(
                    "{} has an unfinished run {other}: finish it first (dbctl resume {other})",
                    instance.name
                ),
            )
            .into());
        }
        runs::insert(
            tx,
            &NewRun {
                id: &run_id,
                instance_id: &instance.id,
                operation: op,
                // Day-2 requests are not deduplicated: each asks for a change now.
                idempotency_key: &run_id,
                spec_hash: &create.spec_hash,
                spec_json: &create.spec_json,
                placement_json: &create.placement_json,
                on_failure: "keep",
                // Undone (never) and bound from the create run's recorded settings.
                settings_json: None,
                steps: &steps,
            },
        )?;
        Ok(run_id.clone())
    })
}

/// The run that built the instance a day-2 run acts on.
pub fn target_run(journal: &Journal, run: &RunRow) -> Result<RunRow, CliError> {
    let instance = journal
        .instance(&run.instance_id)?
        .ok_or_else(|| anyhow::anyhow!("run {} names a missing instance", run.id))?;
    super::latest_create_run(journal, &instance)
}

/// The recorded outputs of a run's steps, by step name.
pub fn outputs(journal: &Journal, run: &RunRow) -> Result<BTreeMap<String, Value>, CliError> {
    Ok(journal
        .steps(&run.id)?
        .into_iter()
        .filter_map(|s| Some((s.name, s.outputs?)))
        .collect())
}

/// A day-2 step, seeing the create run's outputs beneath its own run's.
pub struct WithBase {
    pub inner: Arc<dyn Step>,
    pub base: Arc<BTreeMap<String, Value>>,
}

#[async_trait]
impl Step for WithBase {
    async fn execute(&self, ctx: &StepCtx) -> Result<Value, StepError> {
        self.inner.execute(&ctx.with_base_inputs(&self.base)).await
    }

    async fn rollback(&self, ctx: &StepCtx) -> Result<(), StepError> {
        self.inner.rollback(&ctx.with_base_inputs(&self.base)).await
    }

    fn retry_policy(&self) -> Option<crate::saga::RetryPolicy> {
        self.inner.retry_policy()
    }
}

/// Runs a day-2 run forward under its lease. The instance stays `running` throughout.
pub async fn drive(
    app: &App,
    journal: Arc<Journal>,
    run_id: &str,
    reporter: Arc<dyn Reporter>,
) -> Result<RunRow, CliError> {
    let (mut keeper, run) = super::drive::lease_and_reread(&journal, run_id)?;
    if !run.state.is_resumable() {
        keeper.release();
        return Ok(run);
    }
    let saga = super::drive::saga_for(app, &journal, &run, reporter, false)?;
    journal.set_run_state(run_id, RunState::Running, None)?;
    saga.log()
        .message("info", &format!("run {run_id}: {}", run.operation));
    let outcome = match super::drive::unless_stopped(&mut keeper, saga.forward()).await {
        Ok(o) => match super::drive::or_stop(o)? {
            Ok(o) => o,
            Err(why) => return Err(super::drive::stopped(&journal, run_id, keeper, why, false)),
        },
        Err(why) => return Err(super::drive::stopped(&journal, run_id, keeper, why, false)),
    };
    let result = match outcome {
        Outcome::Stopped { step, error } => {
            let why = super::drive::Stopped::Journal(format!("{step}: {error}"));
            return Err(super::drive::stopped(&journal, run_id, keeper, why, false));
        }
        Outcome::Succeeded => {
            journal.set_run_state(run_id, RunState::Succeeded, None)?;
            saga.log()
                .message("info", &format!("run {run_id}: succeeded"));
            super::find_run(&journal, run_id)
        }
        Outcome::Failed { step, error } => {
            journal.set_run_state(run_id, RunState::Failed, Some(&format!("{step}: {error}")))?;
            saga.log().message(
                "error",
                &format!(
                    "run {run_id}: failed at {step}; fix the cause, then dbctl resume {run_id}"
                ),
            );
            Err(CliError::Kept {
                run: run_id.into(),
                step,
                error,
            })
        }
    };
    keeper.release();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinit_starts_the_vm_then_attaches_then_rejoins() {
        let steps = Request::Reinit {
            node: "node-2".into(),
            force: true,
        }
        .steps();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "reinit.vm.node-2",
                "reinit.attach.node-2",
                "reinit.rejoin.node-2"
            ]
        );
        assert_eq!(steps[1].deps, ["reinit.vm.node-2"]);
        assert_eq!(steps[2].deps, ["reinit.attach.node-2"]);
        assert!(matches!(
            steps[2].action,
            Action::Rejoin { force: true, .. }
        ));
        // The step names never collide with a create run's (their outputs are merged).
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("provision.") && !n.starts_with("setup."))
        );
    }

    #[test]
    fn day2_operations_are_known_by_name() {
        for op in ["switchover", "failover", "reinit"] {
            assert!(is_day2(op));
        }
        assert!(!is_day2("create") && !is_day2("destroy"));
    }
}
