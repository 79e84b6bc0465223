//! Steps of a run: the saga's unit of work, with attempts, outputs and rollback state.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::transitions::guard_step;
use super::{Journal, JournalError, Result, now_ms};

text_enum!(
    /// A step's state. `Running` after a crash means "may have had its side effect": resume
    /// executes it again (steps are idempotent) and rollback undoes it.
    StepState {
        Pending => "pending",
        Running => "running",
        Done => "done",
        Failed => "failed",
        RollingBack => "rolling_back",
        RolledBack => "rolled_back",
        RollbackFailed => "rollback_failed",
        Skipped => "skipped",
    }
);

/// A step as planned, before it first runs.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub name: String,
    pub stage: String,
    pub action_json: String,
    pub deps: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRow {
    pub name: String,
    pub position: u32,
    pub stage: String,
    #[serde(skip)]
    pub action_json: String,
    pub deps: Vec<String>,
    pub state: StepState,
    pub attempts: u32,
    pub rollback_attempts: u32,
    pub generation: u32,
    pub client_token: Option<String>,
    pub outputs: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl StepRow {
    /// Whether execute was ever entered, i.e. the step may have touched the outside world.
    pub fn ever_started(&self) -> bool {
        self.attempts > 0
    }
}

const COLUMNS: &str = "name, position, stage, action, deps, state, attempts, rollback_attempts, \
                       generation, client_token, outputs, error, started_at, finished_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<StepRow> {
    let deps: String = r.get(4)?;
    let outputs: Option<String> = r.get(10)?;
    let bad = |e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    };
    Ok(StepRow {
        name: r.get(0)?,
        position: r.get(1)?,
        stage: r.get(2)?,
        action_json: r.get(3)?,
        deps: serde_json::from_str(&deps).map_err(bad)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        rollback_attempts: r.get(7)?,
        generation: r.get(8)?,
        client_token: r.get(9)?,
        outputs: outputs
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(bad)?,
        error: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

pub fn insert(conn: &Connection, run_id: &str, position: usize, s: &NewStep) -> Result<()> {
    let deps = serde_json::to_string(&s.deps).map_err(|e| JournalError::Corrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO steps (run_id, name, position, stage, action, deps, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run_id,
            s.name,
            position as i64,
            s.stage,
            s.action_json,
            deps,
            StepState::Pending
        ],
    )?;
    Ok(())
}

pub fn list(conn: &Connection, run_id: &str) -> Result<Vec<StepRow>> {
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY position"
    ))?;
    let rows = st
        .query_map([run_id], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn update_one(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<()> {
    match conn.execute(sql, params)? {
        1 => Ok(()),
        n => Err(JournalError::Corrupt(format!(
            "step update touched {n} rows"
        ))),
    }
}

/// The recorded outputs of step `name` among a run's `steps` (none until it finished).
pub fn outputs_of<'a>(steps: &'a [StepRow], name: &str) -> Option<&'a serde_json::Value> {
    steps
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.outputs.as_ref())
}

/// The recorded outputs of one step (a primary-key lookup: no other step is read).
pub fn output(conn: &Connection, run_id: &str, name: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<Option<String>> = conn
        .query_row(
            "SELECT outputs FROM steps WHERE run_id = ?1 AND name = ?2",
            params![run_id, name],
            |r| r.get(0),
        )
        .optional()?;
    text.flatten()
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| JournalError::Corrupt(format!("outputs of {name} in {run_id}: {e}")))
}

impl Journal {
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRow>> {
        self.read(|c| list(c, run_id))
    }

    /// The outputs of step `name` of a run, without reading its other steps.
    pub fn step_output(&self, run_id: &str, name: &str) -> Result<Option<serde_json::Value>> {
        self.read(|c| output(c, run_id, name))
    }

    /// Records the intent to execute: state `running`, attempt counter bumped, the client
    /// token the step will hand to the provider. Returns the attempt number (1-based).
    /// Committed before the step touches anything outside.
    pub fn step_begin(&self, run_id: &str, step: &str, client_token: &str) -> Result<u32> {
        self.write_run(run_id, |tx| {
            guard_step(tx, run_id, step, StepState::Running)?;
            let now = now_ms();
            update_one(
                tx,
                "UPDATE steps SET state = 'running', attempts = attempts + 1, client_token = ?3,
                        error = NULL, started_at = COALESCE(started_at, ?4), finished_at = NULL
                 WHERE run_id = ?1 AND name = ?2",
                params![run_id, step, client_token, now],
            )?;
            Ok(tx.query_row(
                "SELECT attempts FROM steps WHERE run_id = ?1 AND name = ?2",
                params![run_id, step],
                |r| r.get(0),
            )?)
        })
    }

    /// Records a finished execute with its outputs (what rollback and later steps need).
    pub fn step_done(&self, run_id: &str, step: &str, outputs: &serde_json::Value) -> Result<()> {
        let outputs = outputs.to_string();
        self.write_run(run_id, |tx| {
            guard_step(tx, run_id, step, StepState::Done)?;
            update_one(
                tx,
                "UPDATE steps SET state = 'done', outputs = ?3, error = NULL, finished_at = ?4
                 WHERE run_id = ?1 AND name = ?2",
                params![run_id, step, outputs, now_ms()],
            )
        })
    }

    /// Records a failed attempt. `state` is `Running` while retries remain (the step may still
    /// have had its side effect), `Failed` when the engine gives up.
    pub fn step_error(
        &self,
        run_id: &str,
        step: &str,
        state: StepState,
        error: &str,
    ) -> Result<()> {
        self.write_run(run_id, |tx| {
            guard_step(tx, run_id, step, state)?;
            update_one(
                tx,
                "UPDATE steps SET state = ?3, error = ?4, finished_at = ?5
                 WHERE run_id = ?1 AND name = ?2",
                params![run_id, step, state, error, now_ms()],
            )
        })
    }

    /// Records the intent to roll a step back; returns the rollback attempt number.
    pub fn rollback_begin(&self, run_id: &str, step: &str) -> Result<u32> {
        self.write_run(run_id, |tx| {
            guard_step(tx, run_id, step, StepState::RollingBack)?;
            update_one(
                tx,
                "UPDATE steps SET state = 'rolling_back', rollback_attempts = rollback_attempts + 1
                 WHERE run_id = ?1 AND name = ?2",
                params![run_id, step],
            )?;
            Ok(tx.query_row(
                "SELECT rollback_attempts FROM steps WHERE run_id = ?1 AND name = ?2",
                params![run_id, step],
                |r| r.get(0),
            )?)
        })
    }

    /// A step fully undone. Its generation moves on so that a later re-execution derives new
    /// client tokens instead of being answered with the deleted resource.
    pub fn rollback_done(&self, run_id: &str, step: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            guard_step(tx, run_id, step, StepState::RolledBack)?;
            update_one(
                tx,
                "UPDATE steps SET state = 'rolled_back', generation = generation + 1, error = NULL,
                        finished_at = ?3
                 WHERE run_id = ?1 AND name = ?2",
                params![run_id, step, now_ms()],
            )
        })
    }

    /// Marks steps that never started as skipped once their run is rolled back.
    pub fn skip_unstarted(&self, run_id: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            tx.execute(
                "UPDATE steps SET state = 'skipped'
                 WHERE run_id = ?1 AND attempts = 0 AND state = 'pending'",
                [run_id],
            )?;
            Ok(())
        })
    }
}
