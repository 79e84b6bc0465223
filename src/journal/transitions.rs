//! The only state changes the journal accepts, for runs and for steps.
//!
//! Every state write checks the row's current state against these tables in the same
//! transaction, so a stale writer (a process that lost its lease, a retry racing its original)
//! cannot move a run or step somewhere its history does not allow, e.g. mark a rolled-back
//! run `interrupted` or a done step `failed`.

use rusqlite::{Connection, OptionalExtension, params};

use super::{JournalError, Result, RunState, StepState};

impl RunState {
    /// Every run state, for exhaustive tests.
    pub const ALL: [RunState; 8] = [
        RunState::Pending,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Interrupted,
        RunState::RollingBack,
        RunState::RolledBack,
        RunState::RollbackFailed,
    ];

    /// Whether a run in state `self` may be written as `to`.
    pub fn may_become(self, to: RunState) -> bool {
        use RunState::*;
        match self {
            Pending => matches!(to, Running | Interrupted | RollingBack),
            // Running → Running: a resume of a run whose process died.
            Running => matches!(to, Running | Succeeded | Failed | Interrupted | RollingBack),
            Interrupted => matches!(to, Running | Interrupted | RollingBack),
            // A kept failure is resumed (after the cause is fixed) or rolled back.
            Failed => matches!(to, Running | RollingBack),
            // `destroy` of an instance that reached RUNNING.
            Succeeded => matches!(to, RollingBack),
            // A rollback that stopped half-way is finished by the next one.
            RollingBack => matches!(to, RollingBack | RolledBack | RollbackFailed),
            RollbackFailed => matches!(to, RollingBack),
            RolledBack => false,
        }
    }
}

impl StepState {
    /// Every step state, for exhaustive tests.
    pub const ALL: [StepState; 8] = [
        StepState::Pending,
        StepState::Running,
        StepState::Done,
        StepState::Failed,
        StepState::RollingBack,
        StepState::RolledBack,
        StepState::RollbackFailed,
        StepState::Skipped,
    ];

    /// Whether a step in state `self` may be written as `to`.
    pub fn may_become(self, to: StepState) -> bool {
        use StepState::*;
        match self {
            Pending => matches!(to, Running | Skipped),
            // Running → Running: the next attempt (a retry, or a resume after a crash).
            Running => matches!(to, Running | Done | Failed | RollingBack),
            Failed => matches!(to, Running | RollingBack),
            Done => matches!(to, RollingBack),
            RollingBack => matches!(to, RollingBack | RolledBack | RollbackFailed),
            RollbackFailed => matches!(to, RollingBack),
            // Executed again after its rollback (with a new generation of client tokens).
            RolledBack => matches!(to, Running),
            Skipped => false,
        }
    }
}

/// Refuses the write unless run `id` may go to `to` (an unknown run is corrupt).
pub(super) fn guard_run(conn: &Connection, id: &str, to: RunState) -> Result<()> {
    let from = conn
        .query_row("SELECT state FROM runs WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    allowed(format!("run {id}"), from, to, RunState::may_become)
}

/// Refuses the write unless step `step` of run `run_id` may go to `to`.
pub(super) fn guard_step(conn: &Connection, run_id: &str, step: &str, to: StepState) -> Result<()> {
    let from = conn
        .query_row(
            "SELECT state FROM steps WHERE run_id = ?1 AND name = ?2",
            params![run_id, step],
            |r| r.get(0),
        )
        .optional()?;
    allowed(
        format!("step {step} of {run_id}"),
        from,
        to,
        StepState::may_become,
    )
}

/// The verdict of a state table on `what` going from its recorded state (`None`: no such row,
/// which is corrupt) to `to`.
fn allowed<S: Copy + std::fmt::Display>(
    what: String,
    from: Option<S>,
    to: S,
    may_become: fn(S, S) -> bool,
) -> Result<()> {
    let from = from.ok_or_else(|| JournalError::Corrupt(format!("no {what}")))?;
    if may_become(from, to) {
        Ok(())
    } else {
        Err(JournalError::IllegalTransition {
            what,
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_runs_only_move_towards_rollback() {
        for to in RunState::ALL {
            assert!(!RunState::RolledBack.may_become(to), "rolled_back → {to}");
            assert_eq!(
                RunState::Succeeded.may_become(to),
                to == RunState::RollingBack,
                "succeeded → {to}"
            );
            // Once a rollback started, only finishing it is allowed: never forward again.
            for from in [RunState::RollingBack, RunState::RollbackFailed] {
                assert!(
                    !from.may_become(to)
                        || matches!(
                            to,
                            RunState::RollingBack | RunState::RolledBack | RunState::RollbackFailed
                        ),
                    "{from} → {to}"
                );
            }
        }
    }
}
