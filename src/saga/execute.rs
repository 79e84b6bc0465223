//! Driving a run forward: ready steps run concurrently, each with journaled intent and retries.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;

use super::log::{Phase, RunLog, StepEvent};
use super::{
    BoundStep, EngineError, FaultPoint, Outcome, RetryPolicy, Saga, StepCtx, StepError,
    client_token,
};
use crate::journal::{StepState, steps::StepRow};

impl Saga {
    /// Runs every step that is not `done`, dependencies first, independent steps at once.
    /// Steps left `running` by a crash are executed again. After the first failure no new
    /// step starts; steps already in flight finish (and are journaled) before this returns.
    pub async fn forward(&self) -> Result<Outcome, EngineError> {
        let rows = self.journal.steps(&self.run_id)?;
        for r in &rows {
            self.bound(&r.name)?;
        }
        let mut done: BTreeMap<String, Value> = rows
            .iter()
            .filter(|r| r.state == StepState::Done)
            .map(|r| (r.name.clone(), r.outputs.clone().unwrap_or(Value::Null)))
            .collect();
        let mut waiting: Vec<&StepRow> =
            rows.iter().filter(|r| r.state != StepState::Done).collect();
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        let mut failure: Option<(String, String)> = None;
        let mut stop: Option<(String, String)> = None;
        loop {
            if failure.is_none() && stop.is_none() {
                let (ready, rest): (Vec<&StepRow>, Vec<&StepRow>) = waiting
                    .into_iter()
                    .partition(|r| r.deps.iter().all(|d| done.contains_key(d)));
                waiting = rest;
                for row in ready {
                    let fut = self.execute_step(
                        self.bound(&row.name)?.clone(),
                        row.generation,
                        done.clone(),
                    );
                    let handle = tasks.spawn(fut);
                    names.insert(handle.id(), row.name.clone());
                }
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            match joined {
                Ok((id, Ok(out))) => {
                    done.insert(names[&id].clone(), out);
                }
                Ok((id, Err(e))) if e.is_stop() => {
                    stop.get_or_insert((names[&id].clone(), e.to_string()));
                }
                Ok((id, Err(e))) => {
                    failure.get_or_insert((names[&id].clone(), e.to_string()));
                }
                Err(join_err) => {
                    // A panicking step is a bug; record it as that step's permanent failure.
                    let name = names[&join_err.id()].clone();
                    let msg = format!("step panicked: {join_err}");
                    self.journal
                        .step_error(&self.run_id, &name, StepState::Failed, &msg)?;
                    failure.get_or_insert((name, msg));
                }
            }
        }
        // A stop wins over a failure: a journal that cannot record steps cannot be trusted to
        // record a rollback either.
        Ok(match (stop, failure) {
            (Some((step, error)), _) => Outcome::Stopped { step, error },
            (None, Some((step, error))) => Outcome::Failed { step, error },
            (None, None) => Outcome::Succeeded,
        })
    }

    /// One step to completion or permanent failure; returns a `'static` future for spawning.
    fn execute_step(
        &self,
        bound: BoundStep,
        generation: u32,
        inputs: BTreeMap<String, Value>,
    ) -> impl Future<Output = Result<Value, StepError>> + Send + 'static {
        let journal = self.journal.clone();
        let run_id = self.run_id.clone();
        let faults = self.faults.clone();
        let log = self.log.clone();
        let policy = bound.imp.retry_policy().unwrap_or(self.retry);
        async move {
            let name = bound.name.as_str();
            let token = client_token(&run_id, name, generation);
            let started = Instant::now();
            let result = with_retries(&policy, &log, Phase::Execute, name, || {
                let ctx_base = (
                    journal.clone(),
                    run_id.clone(),
                    inputs.clone(),
                    token.clone(),
                );
                let (faults, imp, log) = (faults.clone(), bound.imp.clone(), log.clone());
                async move {
                    let (journal, run_id, inputs, token) = ctx_base;
                    // Intent first: from here on the step may have touched the outside world.
                    let attempt = match journal.step_begin(&run_id, name, &token) {
                        Ok(a) => a,
                        Err(e) => return (0, Err(e.into())),
                    };
                    log.step(Phase::Execute, name, StepEvent::Started { attempt });
                    let ctx = StepCtx {
                        run_id,
                        step: name.to_string(),
                        attempt,
                        generation,
                        client_token: token,
                        inputs,
                        outputs: None,
                        journal,
                        faults: faults.clone(),
                    };
                    let res = async {
                        faults.fire(name, &FaultPoint::Before, attempt)?;
                        let mut out = timed(policy, imp.execute(&ctx)).await?;
                        if faults.repeats(name, &FaultPoint::After, attempt) {
                            // The step executed twice (a reply lost, the call retried): the
                            // second execution must find and adopt what the first made.
                            out = timed(policy, imp.execute(&ctx)).await?;
                        }
                        faults.fire(name, &FaultPoint::After, attempt)?;
                        Ok(out)
                    }
                    .await;
                    (attempt, res)
                }
            })
            .await;
            match result {
                Ok(out) => {
                    journal.step_done(&run_id, name, &out)?;
                    log.step(
                        Phase::Execute,
                        name,
                        StepEvent::Done {
                            elapsed: started.elapsed(),
                        },
                    );
                    Ok(out)
                }
                // Not recorded: the step stays `running`, exactly as after a crash.
                Err(e) if e.is_stop() => Err(e),
                Err(e) => {
                    journal.step_error(&run_id, name, StepState::Failed, &e.to_string())?;
                    log.step(
                        Phase::Execute,
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

/// Applies the policy's per-attempt time limit; running out of time is transient.
pub(super) async fn timed<T>(
    policy: RetryPolicy,
    fut: impl Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    match policy.attempt_timeout() {
        Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(StepError::Transient(format!(
                "attempt timed out after {} s",
                limit.as_secs()
            )))
        }),
        None => fut.await,
    }
}

/// Calls `attempt` until it succeeds, fails permanently, or the policy's attempts run out.
/// `attempt` returns the journaled attempt number with its result, for the event log.
pub(super) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    log: &RunLog,
    phase: Phase,
    step: &str,
    mut attempt: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (u32, Result<T, StepError>)>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let (n, res) = attempt().await;
        match res {
            Err(e) if e.is_transient() && tries < policy.max_attempts.max(1) => {
                let delay = policy.backoff(tries);
                log.step(
                    phase,
                    step,
                    StepEvent::Retrying {
                        attempt: n,
                        error: e.to_string(),
                        delay,
                    },
                );
                tokio::time::sleep(delay).await;
            }
            Err(StepError::Transient(msg)) => {
                return Err(StepError::Transient(format!(
                    "gave up after {tries} attempts: {msg}"
                )));
            }
            other => return other,
        }
    }
}

/// Re-exported for the rollback module.
pub(super) use with_retries as retry_loop;
