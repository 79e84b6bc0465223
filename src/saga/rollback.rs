//! Undoing a run: steps are rolled back in reverse dependency order, independent ones at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;

use super::execute::{retry_loop, timed};
use super::log::{Phase, StepEvent};
use super::{BoundStep, EngineError, FaultPoint, RollbackOutcome, Saga, StepCtx, StepError};
use crate::journal::{StepState, steps::StepRow};

impl Saga {
    /// Rolls back every step whose execute ever started (done, failed, or left running by a
    /// crash), each only after all steps that depend on it are rolled back. Steps that never
    /// started are skipped. A step whose rollback fails keeps its dependencies in place: they
    /// may still be in use by what could not be removed.
    pub async fn rollback(&self) -> Result<RollbackOutcome, EngineError> {
        let rows = self.journal.steps(&self.run_id)?;
        for r in &rows {
            self.bound(&r.name)?;
        }
        let outputs: BTreeMap<String, Value> = rows
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.outputs.clone()?)))
            .collect();
        let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in &rows {
            for d in &r.deps {
                dependents.entry(d.as_str()).or_default().push(&r.name);
            }
        }
        let mut remaining: Vec<&StepRow> = rows
            .iter()
            .filter(|r| r.ever_started() && r.state != StepState::RolledBack)
            .collect();
        let mut pending: HashSet<&str> = remaining.iter().map(|r| r.name.as_str()).collect();
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        let mut failed = Vec::new();
        let mut stop: Option<(String, String)> = None;
        loop {
            // Ready: no dependent is still waiting for (or failed) its rollback.
            let (ready, rest): (Vec<&StepRow>, Vec<&StepRow>) =
                remaining.into_iter().partition(|r| {
                    dependents
                        .get(r.name.as_str())
                        .is_none_or(|ds| ds.iter().all(|d| !pending.contains(d)))
                });
            remaining = rest;
            for row in ready.into_iter().rev().filter(|_| stop.is_none()) {
                let fut = self.rollback_step(self.bound(&row.name)?.clone(), row, outputs.clone());
                let handle = tasks.spawn(fut);
                names.insert(handle.id(), row.name.as_str());
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            match joined {
                Ok((id, Ok(()))) => {
                    pending.remove(names[&id]);
                }
                Ok((id, Err(e))) if e.is_stop() => {
                    stop.get_or_insert((names[&id].to_string(), e.to_string()));
                }
                Ok((id, Err(e))) => failed.push((names[&id].to_string(), e.to_string())),
                Err(join_err) => {
                    let name = names[&join_err.id()];
                    let msg = format!("rollback panicked: {join_err}");
                    self.journal
                        .step_error(&self.run_id, name, StepState::RollbackFailed, &msg)?;
                    failed.push((name.to_string(), msg));
                }
            }
        }
        if let Some((step, error)) = stop {
            return Ok(RollbackOutcome::Stopped { step, error });
        }
        self.journal.skip_unstarted(&self.run_id)?;
        Ok(if failed.is_empty() {
            RollbackOutcome::RolledBack
        } else {
            RollbackOutcome::Failed { steps: failed }
        })
    }

    fn rollback_step(
        &self,
        bound: BoundStep,
        row: &StepRow,
        inputs: BTreeMap<String, Value>,
    ) -> impl Future<Output = Result<(), StepError>> + Send + 'static {
        let journal = self.journal.clone();
        let run_id = self.run_id.clone();
        let faults = self.faults.clone();
        let log = self.log.clone();
        let policy = bound.imp.retry_policy().unwrap_or(self.retry);
        let (generation, own_outputs) = (row.generation, row.outputs.clone());
        let token = row.client_token.clone().unwrap_or_default();
        async move {
            let name = bound.name.as_str();
            let started = Instant::now();
            let result = retry_loop(&policy, &log, Phase::Rollback, name, || {
                let (journal, run_id, inputs) = (journal.clone(), run_id.clone(), inputs.clone());
                let (faults, imp, log) = (faults.clone(), bound.imp.clone(), log.clone());
                let (outputs, token) = (own_outputs.clone(), token.clone());
                async move {
                    let attempt = match journal.rollback_begin(&run_id, name) {
                        Ok(a) => a,
                        Err(e) => return (0, Err(e.into())),
                    };
                    log.step(Phase::Rollback, name, StepEvent::Started { attempt });
                    let ctx = StepCtx {
                        run_id,
                        step: name.to_string(),
                        attempt,
                        generation,
                        client_token: token,
                        inputs,
                        outputs,
                        journal,
                        faults: faults.clone(),
                    };
                    let res = async {
                        faults.fire(name, &FaultPoint::UndoBefore, attempt)?;
                        timed(policy, imp.rollback(&ctx)).await?;
                        if faults.repeats(name, &FaultPoint::UndoAfter, attempt) {
                            // The undo executed twice: the second finds nothing left to remove.
                            timed(policy, imp.rollback(&ctx)).await?;
                        }
                        faults.fire(name, &FaultPoint::UndoAfter, attempt)
                    }
                    .await;
                    (attempt, res)
                }
            })
            .await;
            match result {
                Ok(()) => {
                    journal.rollback_done(&run_id, name)?;
                    log.step(
                        Phase::Rollback,
                        name,
                        StepEvent::Done {
                            elapsed: started.elapsed(),
                        },
                    );
                    Ok(())
                }
                Err(e) if e.is_stop() => Err(e),
                Err(e) => {
                    journal.step_error(&run_id, name, StepState::RollbackFailed, &e.to_string())?;
                    log.step(
                        Phase::Rollback,
                        name,
                        StepEvent::Failed {
                            error: e.to_string(),
                        },
                    );
                    Err(e)
                }
            }
        }
    }
}
