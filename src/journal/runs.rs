//! Runs: one execution of an operation (create, destroy) on an instance, and its steps.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::steps::{self, NewStep};
use super::{Journal, Result, now_ms};

text_enum!(
    /// Where a run stands. `Failed` means "failed and kept as is" (`--on-failure keep`).
    RunState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Interrupted => "interrupted",
        RollingBack => "rolling_back",
        RolledBack => "rolled_back",
        RollbackFailed => "rollback_failed",
    }
);

impl RunState {
    /// A run that `resume` can carry forward.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            RunState::Pending | RunState::Running | RunState::Failed | RunState::Interrupted
        )
    }

    /// A run whose rollback was started (and must be finished, not resumed forward).
    pub fn is_rolling_back(self) -> bool {
        matches!(self, RunState::RollingBack | RunState::RollbackFailed)
    }
}

pub struct NewRun<'a> {
    pub id: &'a str,
    pub instance_id: &'a str,
    pub operation: &'a str,
    pub idempotency_key: &'a str,
    pub spec_hash: &'a str,
    pub spec_json: &'a str,
    pub placement_json: &'a str,
    pub on_failure: &'a str,
    /// The provider settings resolved at admission (JSON), which rollback undoes from.
    pub settings_json: Option<&'a str>,
    pub steps: &'a [NewStep],
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub id: String,
    pub instance_id: String,
    pub operation: String,
    /// The state as the journal records it (what resume and rollback act on).
    #[serde(rename = "journal_state")]
    pub state: RunState,
    /// The state as the user should see it: a run recorded `running` (or `pending`) whose
    /// process is gone is `interrupted`; see [`RunRow::stalled`].
    #[serde(rename = "state")]
    pub shown_state: RunState,
    /// True when the run is recorded as in progress but nothing drives it: no lease, an
    /// expired one, or a holder on this host whose process is gone (kill -9, power loss).
    pub stalled: bool,
    /// What to run about a stalled run (`dbctl resume RUN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Who drives the run now (pid, host, lease expiry), if anyone holds its lease.
    pub holder: Option<super::LeaseHolder>,
    pub idempotency_key: String,
    pub spec_hash: String,
    #[serde(skip)]
    pub spec_json: String,
    #[serde(skip)]
    pub placement_json: String,
    pub on_failure: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// Whether rolling this run back deletes its backups, decided once when its first
    /// rollback started (`None`: no rollback yet), and why.
    pub purge_backups: Option<bool>,
    pub purge_reason: Option<String>,
    #[serde(skip)]
    pub settings_json: Option<String>,
}

const COLUMNS: &str = "id, instance_id, operation, state, idempotency_key, spec_hash, spec, \
                       placement, on_failure, error, created_at, updated_at, finished_at, \
                       purge_backups, purge_reason, settings, lease_pid, lease_host, \
                       lease_expires_at";

/// The lease holder recorded in columns `at`, `at + 1`, `at + 2` (pid, host, expiry).
fn holder_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<super::LeaseHolder>> {
    Ok(match (r.get(at)?, r.get(at + 1)?, r.get(at + 2)?) {
        (Some(pid), Some(host), Some(expires_at)) => Some(super::LeaseHolder {
            pid,
            host,
            expires_at,
        }),
        _ => None,
    })
}

/// Whether a run recorded in `state` with `holder` is stalled (nothing drives it), and the
/// state to show for it.
/// What to run about a stalled run (`RunRow::next`, `RunBrief::next`).
fn resume_hint(stalled: bool, id: &str) -> Option<String> {
    stalled.then(|| format!("dbctl resume {id}"))
}

fn liveness(state: RunState, holder: Option<&super::LeaseHolder>) -> (bool, RunState) {
    let stalled = in_progress(state) && !holder.is_some_and(super::lease::is_live);
    let shown_state = match state {
        RunState::Running | RunState::Pending if stalled => RunState::Interrupted,
        s => s,
    };
    (stalled, shown_state)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    let id: String = r.get(0)?;
    let state: RunState = r.get(3)?;
    let holder = holder_at(r, 16)?;
    let (stalled, shown_state) = liveness(state, holder.as_ref());
    Ok(RunRow {
        next: resume_hint(stalled, &id),
        id,
        instance_id: r.get(1)?,
        operation: r.get(2)?,
        state,
        shown_state,
        stalled,
        holder,
        idempotency_key: r.get(4)?,
        spec_hash: r.get(5)?,
        spec_json: r.get(6)?,
        placement_json: r.get(7)?,
        on_failure: r.get(8)?,
        error: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        finished_at: r.get(12)?,
        purge_backups: r.get(13)?,
        purge_reason: r.get(14)?,
        settings_json: r.get(15)?,
    })
}

/// What `list` needs of a run: no spec, placement or settings (kilobytes each, times every
/// run of a long history).
#[derive(Debug, Clone)]
pub struct RunBrief {
    pub id: String,
    pub instance_id: String,
    pub operation: String,
    pub state: RunState,
    pub stalled: bool,
    /// Who holds its lease, if anyone.
    pub holder: Option<super::LeaseHolder>,
}

impl RunBrief {
    /// What to run about a stalled run.
    pub fn next(&self) -> Option<String> {
        resume_hint(self.stalled, &self.id)
    }
}

/// Runs of the instances `list` shows (every instance with `all`, else the live ones), newest
/// first, in one query.
pub fn briefs(conn: &Connection, all: bool) -> Result<Vec<RunBrief>> {
    let filter = if all {
        ""
    } else {
        "WHERE r.instance_id IN (SELECT id FROM instances WHERE state <> 'destroyed')"
    };
    let mut st = conn.prepare(&format!(
        "SELECT r.id, r.instance_id, r.operation, r.state, r.lease_pid, r.lease_host,
                r.lease_expires_at
         FROM runs r {filter} ORDER BY r.created_at DESC, r.rowid DESC"
    ))?;
    let rows = st
        .query_map([], |r| {
            let state: RunState = r.get(3)?;
            let holder = holder_at(r, 4)?;
            Ok(RunBrief {
                id: r.get(0)?,
                instance_id: r.get(1)?,
                operation: r.get(2)?,
                state,
                stalled: liveness(state, holder.as_ref()).0,
                holder,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// States in which a run must have a live process driving it.
fn in_progress(state: RunState) -> bool {
    matches!(
        state,
        RunState::Pending | RunState::Running | RunState::RollingBack
    )
}

/// Inserts a run and all its steps (state `pending`); part of the caller's transaction.
pub fn insert(conn: &Connection, run: &NewRun<'_>) -> Result<()> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO runs (id, instance_id, operation, state, idempotency_key, spec_hash, spec,
                           placement, on_failure, created_at, updated_at, settings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
        params![
            run.id,
            run.instance_id,
            run.operation,
            RunState::Pending,
            run.idempotency_key,
            run.spec_hash,
            run.spec_json,
            run.placement_json,
            run.on_failure,
            now,
            run.settings_json
        ],
    )?;
    for (position, step) in run.steps.iter().enumerate() {
        steps::insert(conn, run.id, position, step)?;
    }
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<RunRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The newest run that used this idempotency key.
pub fn by_idempotency_key(conn: &Connection, key: &str) -> Result<Option<RunRow>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM runs WHERE idempotency_key = ?1
                 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ),
            [key],
            from_row,
        )
        .optional()?)
}

/// Moves a run to `state`, if the transition table allows it from where the run is.
pub fn set_state(conn: &Connection, id: &str, state: RunState, error: Option<&str>) -> Result<()> {
    super::transitions::guard_run(conn, id, state)?;
    let now = now_ms();
    let finished = matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::RolledBack | RunState::RollbackFailed
    )
    .then_some(now);
    conn.execute(
        "UPDATE runs SET state = ?2, error = ?3, updated_at = ?4, finished_at = ?5 WHERE id = ?1",
        params![id, state, error, now, finished],
    )?;
    Ok(())
}

/// Placements (JSON) of the create runs of live instances of one provider and region: where
/// existing nodes are, for the scheduler's spread.
pub fn live_placements(conn: &Connection, provider: &str, region: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT r.placement FROM runs r JOIN instances i ON r.instance_id = i.id
         WHERE i.state <> 'destroyed' AND i.provider = ?1 AND i.region = ?2
           AND r.operation = 'create' AND r.state <> 'rolled_back'",
    )?;
    let rows = st
        .query_map(params![provider, region], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

impl Journal {
    pub fn live_placements(&self, provider: &str, region: &str) -> Result<Vec<String>> {
        self.read(|c| live_placements(c, provider, region))
    }

    /// Runs of the instances `list` shows, newest first, without their large columns.
    pub fn run_briefs(&self, all: bool) -> Result<Vec<RunBrief>> {
        self.read(|c| briefs(c, all))
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRow>> {
        self.read(|c| get(c, id))
    }

    /// Runs of one instance, newest first.
    pub fn runs_of_instance(&self, instance_id: &str) -> Result<Vec<RunRow>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM runs WHERE instance_id = ?1 ORDER BY created_at DESC, rowid DESC"
            ))?;
            let rows = st
                .query_map([instance_id], from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    /// Moves a run and its instance to new states in one transaction (they never disagree).
    pub fn transition(
        &self,
        run: &RunRow,
        state: RunState,
        error: Option<&str>,
        instance: super::InstanceState,
    ) -> Result<()> {
        self.write_run(&run.id, |tx| {
            set_state(tx, &run.id, state, error)?;
            super::instances::set_state(tx, &run.instance_id, instance)
        })
    }

    pub fn set_run_state(&self, id: &str, state: RunState, error: Option<&str>) -> Result<()> {
        self.write_run(id, |tx| set_state(tx, id, state, error))
    }

    /// Records, once, whether rolling the run back deletes its backups. A decision already
    /// recorded stands (a retried `destroy` must not purge what the first one kept), except
    /// that an explicit request to purge may turn "keep" into "purge". Returns the decision.
    pub fn decide_purge(&self, id: &str, purge: bool, reason: &str) -> Result<bool> {
        self.write_run(id, |tx| {
            let recorded: Option<bool> =
                tx.query_row("SELECT purge_backups FROM runs WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
            if recorded == Some(true) || (recorded == Some(false) && !purge) {
                return Ok(recorded == Some(true));
            }
            tx.execute(
                "UPDATE runs SET purge_backups = ?2, purge_reason = ?3 WHERE id = ?1",
                params![id, purge, reason],
            )?;
            Ok(purge)
        })
    }
}
