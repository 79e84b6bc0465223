//! Driving a run under its lease: forward to success, or back to nothing.
//!
//! These functions own the run's and instance's state transitions; the saga engine owns the
//! steps'. A Ctrl-C or a lost lease stops the run where it is (steps in flight stay `running`
//! in the journal, exactly like a crash) and `dbctl resume` picks it up.

use std::sync::Arc;

use crate::error::CliError;
use crate::flow::Action;
use crate::journal::{InstanceState, Journal, RunRow, RunState};
use crate::provider::RunInfo;
use crate::saga::{BoundStep, FaultPlan, Outcome, Reporter, RollbackOutcome, Saga};
use crate::spec::ValidationError;

use super::App;
use super::lease_keeper::LeaseKeeper;

/// Binds the run's journaled steps to the provider's implementations. A day-2 run's steps are
/// bound against the instance's create run (its VMs and outputs).
pub(super) fn saga_for(
    app: &App,
    journal: &Arc<Journal>,
    run: &RunRow,
    reporter: Arc<dyn Reporter>,
    purge_backups: bool,
) -> Result<Saga, CliError> {
    let day2 = super::day2::is_day2(&run.operation);
    let target = if day2 {
        super::day2::target_run(journal, run)?
    } else {
        run.clone()
    };
    let base = Arc::new(if day2 {
        super::day2::outputs(journal, &target)?
    } else {
        Default::default()
    });
    let spec = super::run_spec(&target)?;
    // Bound with the settings the instance was made with, not today's config.
    let config = app.config.for_run(target.settings_json.as_deref())?;
    let provider = app.provider_with(&spec.provider, &config)?;
    let placement = super::run_placement(&target)?;
    let info = RunInfo {
        run_id: &target.id,
        instance_id: &run.instance_id,
        spec: &spec,
        placement: &placement,
        purge_backups,
    };
    let mut bound = Vec::new();
    for row in journal.steps(&run.id)? {
        let action: Action = serde_json::from_str(&row.action_json).map_err(|e| {
            anyhow::anyhow!("run {} step {}: unreadable action: {e}", run.id, row.name)
        })?;
        let mut imp = provider.bind(&info, &row.name, &action);
        if day2 {
            imp = Arc::new(super::day2::WithBase {
                inner: imp,
                base: base.clone(),
            });
        }
        bound.push(BoundStep {
            imp,
            name: row.name,
            deps: row.deps,
        });
    }
    let faults = FaultPlan::from_env().map_err(|e| ValidationError::new("DBCTL_FAULTS", e))?;
    Ok(Saga::new(
        journal.clone(),
        &run.id,
        bound,
        faults,
        app.config.retry,
        reporter,
    )?)
}

pub(super) enum Stopped {
    Interrupted,
    LeaseLost,
    /// The journal could not record the run's progress (the message says why).
    Journal(String),
}

/// Awaits `fut` unless Ctrl-C arrives or the lease is lost first.
pub(super) async fn unless_stopped<T>(
    keeper: &mut LeaseKeeper,
    fut: impl Future<Output = T>,
) -> Result<T, Stopped> {
    tokio::select! {
        out = fut => Ok(out),
        _ = tokio::signal::ctrl_c() => Err(Stopped::Interrupted),
        _ = keeper.lost() => Err(Stopped::LeaseLost),
    }
}

pub(super) fn stopped(
    journal: &Journal,
    run_id: &str,
    keeper: LeaseKeeper,
    why: Stopped,
    rolling_back: bool,
) -> CliError {
    let msg = match &why {
        Stopped::Interrupted => "interrupted by the user".to_string(),
        Stopped::LeaseLost => "lease lost to another process".to_string(),
        Stopped::Journal(e) => format!("the journal could not record the run: {e}"),
    };
    // Both writes are fenced: after a lost lease they change nothing (the new holder's state
    // stands). A rollback that stops stays `rolling_back`, so resume finishes the rollback.
    let _ = journal.event(run_id, "warn", None, &msg);
    if !rolling_back {
        let _ = journal.set_run_state(run_id, RunState::Interrupted, Some(&msg));
    }
    if !matches!(why, Stopped::LeaseLost) {
        keeper.release();
    }
    CliError::Interrupted {
        run: run_id.to_string(),
        why: msg,
    }
}

/// Takes the run's lease, then reads the run again: what another process did before we got
/// the lease (finished it, rolled it back) is what we act on, not what we read before.
pub(super) fn lease_and_reread(
    journal: &Arc<Journal>,
    run_id: &str,
) -> Result<(LeaseKeeper, RunRow), CliError> {
    let keeper = LeaseKeeper::acquire(journal.clone(), run_id)?;
    match super::find_run(journal, run_id) {
        Ok(run) => Ok((keeper, run)),
        Err(e) => {
            keeper.release();
            Err(e)
        }
    }
}

/// Maps a saga result that is a journal error to a stop (resumable), never a failure.
pub(super) fn or_stop<T>(
    res: Result<T, crate::saga::EngineError>,
) -> Result<Result<T, Stopped>, CliError> {
    match res {
        Ok(v) => Ok(Ok(v)),
        Err(crate::saga::EngineError::Journal(e)) => Ok(Err(Stopped::Journal(e.to_string()))),
        Err(e) => Err(e.into()),
    }
}

/// Runs a run forward from wherever the journal says it is. On failure it rolls back (or keeps
/// everything when the run says `on_failure = keep`).
pub async fn drive_forward(
    app: &App,
    journal: Arc<Journal>,
    run_id: &str,
    reporter: Arc<dyn Reporter>,
) -> Result<RunRow, CliError> {
    let run = super::find_run(&journal, run_id)?;
    if super::day2::is_day2(&run.operation) {
        return super::day2::drive(app, journal, run_id, reporter).await;
    }
    let (mut keeper, run) = lease_and_reread(&journal, run_id)?;
    if !run.state.is_resumable() {
        keeper.release();
        return match run.state {
            RunState::Succeeded => Ok(run),
            _ => Err(ValidationError::new(
                "run",
                format!(
                    "{} is {} (another process got there first); nothing to run forward",
                    run.id, run.state
                ),
            )
            .into()),
        };
    }
    // A create that fails is rolled back with this saga: it never ran, its backups go too.
    let saga = saga_for(app, &journal, &run, reporter, true)?;
    journal.transition(&run, RunState::Running, None, InstanceState::Creating)?;
    saga.log()
        .message("info", &format!("run {run_id}: executing"));
    let outcome = match unless_stopped(&mut keeper, saga.forward()).await {
        Ok(o) => match or_stop(o)? {
            Ok(o) => o,
            Err(why) => return Err(stopped(&journal, run_id, keeper, why, false)),
        },
        Err(why) => return Err(stopped(&journal, run_id, keeper, why, false)),
    };
    match outcome {
        Outcome::Stopped { step, error } => Err(stopped(
            &journal,
            run_id,
            keeper,
            Stopped::Journal(format!("{step}: {error}")),
            false,
        )),
        Outcome::Succeeded => {
            journal.transition(&run, RunState::Succeeded, None, InstanceState::Running)?;
            saga.log()
                .message("info", &format!("run {run_id}: succeeded"));
            keeper.release();
            super::find_run(&journal, run_id)
        }
        Outcome::Failed { step, error } if run.on_failure == "keep" => {
            journal.transition(
                &run,
                RunState::Failed,
                Some(&format!("{step}: {error}")),
                InstanceState::Failed,
            )?;
            saga.log().message(
                "error",
                &format!("run {run_id}: failed at {step}; keeping resources"),
            );
            keeper.release();
            Err(CliError::Kept {
                run: run_id.into(),
                step,
                error,
            })
        }
        Outcome::Failed { step, error } => {
            saga.log().message(
                "error",
                &format!("run {run_id}: failed at {step}; rolling back"),
            );
            let cause = format!("{step}: {error}");
            journal.decide_purge(run_id, true, "the create failed before RUNNING")?;
            roll_back(&journal, &run, &saga, keeper, &cause).await?;
            Err(CliError::RolledBack {
                run: run_id.into(),
                step,
                error,
            })
        }
    }
}

/// Undoes a run (any state but rolled back), e.g. `dbctl rollback` or `dbctl destroy`.
/// The backups of an instance that reached RUNNING are kept unless `purge_backups`; those of a
/// run that never got there are always removed (nothing of a failed create is left behind).
pub async fn drive_rollback(
    app: &App,
    journal: Arc<Journal>,
    run_id: &str,
    reporter: Arc<dyn Reporter>,
    purge_backups: bool,
) -> Result<RunRow, CliError> {
    let run = super::find_run(&journal, run_id)?;
    if run.state == RunState::RolledBack {
        return Ok(run);
    }
    if super::day2::is_day2(&run.operation) {
        return Err(ValidationError::new(
            "run",
            format!(
                "{} is a {} run: it has nothing to undo (run the opposite operation instead, e.g. another switchover)",
                run.id, run.operation
            ),
        )
        .into());
    }
    let (keeper, run) = lease_and_reread(&journal, run_id)?;
    if run.state == RunState::RolledBack {
        keeper.release();
        return Ok(run);
    }
    // Decided once, when the first rollback starts, and recorded: a retried `destroy` finds
    // the run `rolling_back` and must keep what the first one was told to keep.
    let (purge, reason) = match (purge_backups, run.state) {
        (true, _) => (true, "requested (--purge-backups)"),
        (false, RunState::Succeeded) => (false, "the instance reached RUNNING; backups kept"),
        (false, _) if run.purge_backups.is_some() => (false, "decided by the first rollback"),
        (false, _) => (true, "the create never reached RUNNING"),
    };
    let purge = journal.decide_purge(run_id, purge, reason)?;
    let saga = saga_for(app, &journal, &run, reporter, purge)?;
    let cause = run
        .error
        .clone()
        .unwrap_or_else(|| "rollback requested".into());
    roll_back(&journal, &run, &saga, keeper, &cause).await?;
    super::find_run(&journal, run_id)
}

async fn roll_back(
    journal: &Arc<Journal>,
    run: &RunRow,
    saga: &Saga,
    mut keeper: LeaseKeeper,
    cause: &str,
) -> Result<(), CliError> {
    let run_id = run.id.as_str();
    journal.transition(
        run,
        RunState::RollingBack,
        Some(cause),
        InstanceState::Destroying,
    )?;
    let outcome = match unless_stopped(&mut keeper, saga.rollback()).await {
        Ok(o) => match or_stop(o)? {
            Ok(o) => o,
            Err(why) => return Err(stopped(journal, run_id, keeper, why, true)),
        },
        Err(why) => return Err(stopped(journal, run_id, keeper, why, true)),
    };
    let result = match outcome {
        RollbackOutcome::Stopped { step, error } => {
            let why = Stopped::Journal(format!("{step}: {error}"));
            return Err(stopped(journal, run_id, keeper, why, true));
        }
        RollbackOutcome::RolledBack => {
            journal.transition(
                run,
                RunState::RolledBack,
                Some(cause),
                InstanceState::Destroyed,
            )?;
            saga.log()
                .message("info", &format!("run {run_id}: rolled back"));
            Ok(())
        }
        RollbackOutcome::Failed { steps } => {
            let list = steps
                .iter()
                .map(|(s, e)| format!("{s} ({e})"))
                .collect::<Vec<_>>()
                .join(", ");
            journal.transition(
                run,
                RunState::RollbackFailed,
                Some(&list),
                InstanceState::Failed,
            )?;
            saga.log()
                .message("error", &format!("run {run_id}: rollback failed"));
            Err(CliError::RollbackFailed {
                run: run_id.into(),
                steps: list,
            })
        }
    };
    keeper.release();
    result
}
