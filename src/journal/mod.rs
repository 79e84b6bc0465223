//! The local SQLite journal: the single source of truth for what dbctl intended, did and created.
//!
//! Every state change is one transaction. Intent is written before any external side effect, so
//! after a crash the journal says which steps might have touched the outside world (state
//! `running`) and must be re-executed idempotently or rolled back.

#[macro_use]
mod text_enum;
pub mod events;
pub mod gc;
pub mod instances;
pub mod lease;
pub mod resources;
pub mod runs;
mod schema;
pub mod steps;
pub mod transitions;

pub use events::EventRow;
pub use gc::Pruned;
pub use instances::{InstanceRow, InstanceState, NewInstance};
pub use lease::{Lease, LeaseHolder};
pub use resources::{ResourceRow, ResourceState};
pub use runs::{NewRun, RunBrief, RunRow, RunState};
pub use steps::{StepRow, StepState, outputs_of};

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Errors from the journal. `Busy` is kept apart because callers may retry it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("journal: corrupt record: {0}")]
    Corrupt(String),
    #[error("journal was written by a newer dbctl (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    /// This process held the run's lease and no longer does: another process drives the run
    /// now, and nothing more may be written for it from here.
    #[error("journal: run {0}: this process no longer holds its lease; nothing more was written")]
    LeaseLost(String),
    /// A write that the state tables do not allow (a bug, or two writers racing).
    #[error("journal: {what} cannot go from {from} to {to}")]
    IllegalTransition {
        what: String,
        from: String,
        to: String,
    },
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// A handle to the journal database. Cheap operations take a short-lived lock on one
/// connection; SQLite's own locking makes several processes safe.
pub struct Journal {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Lease tokens of the runs this process holds (run id → token). Every write for such a
    /// run checks, in its transaction, that the token is still the run's: a process that lost
    /// its lease can never write over the new holder's state.
    fences: Mutex<HashMap<String, String>>,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`: parent directory 0700, file 0600,
    /// WAL mode with `synchronous=FULL` so an acknowledged intent survives a power cut.
    pub fn open(path: &Path) -> Result<Journal> {
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| JournalError::Open {
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| open_err(e.into()))?;
        }
        // Create the file ourselves so it is 0600 from the first byte; SQLite gives the -wal and
        // -shm files the same mode as the database file. `create_new` never opens an existing
        // journal: closing a descriptor of a file drops every POSIX lock this process holds on
        // it, including those of journal connections already open here (SQLite's own file
        // handling avoids that; ours must not undo it).
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(e.into())),
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.into()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // Before anything writes to it (WAL mode is written into the file's header): a file
        // that is not SQLite, or another application's database, is refused untouched.
        schema::check_is_journal(&conn).map_err(open_err)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&conn)?;
        Ok(Journal {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            fences: Mutex::new(HashMap::new()),
        })
    }

    /// Opens an existing journal for reading; `None` when there is no journal file yet, so
    /// read-only commands never create one.
    pub fn open_existing(path: &Path) -> Result<Option<Journal>> {
        if !path.exists() {
            return Ok(None);
        }
        Journal::open(path).map(Some)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` inside `BEGIN IMMEDIATE`: the write lock is taken up front, so a transaction
    /// that reads and then writes never fails with SQLITE_BUSY half-way (see shared/crates.md).
    pub fn write<T, E: From<JournalError>>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(JournalError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(JournalError::from)?;
        Ok(out)
    }

    /// Like [`Journal::write`], for a write that belongs to run `run_id`: when this process
    /// holds that run's lease, the write happens only if the lease is still ours (the check
    /// and the write are one transaction), else [`JournalError::LeaseLost`] and nothing.
    pub fn write_run<T, E: From<JournalError>>(
        &self,
        run_id: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let token = self.fence_of(run_id);
        self.write(|tx| {
            if let Some(token) = token {
                let held: Option<String> = tx
                    .query_row(
                        "SELECT lease_token FROM runs WHERE id = ?1",
                        [run_id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(JournalError::from)?
                    .flatten();
                if held.as_deref() != Some(token.as_str()) {
                    return Err(JournalError::LeaseLost(run_id.to_string()).into());
                }
            }
            f(tx)
        })
    }

    fn fences(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.fences.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fence_of(&self, run_id: &str) -> Option<String> {
        self.fences().get(run_id).cloned()
    }

    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.lock();
        f(&conn)
    }

    /// `PRAGMA integrity_check`; `Ok(())` when SQLite reports "ok".
    pub fn integrity_check(&self) -> Result<()> {
        self.read(|c| {
            let res: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            if res == "ok" {
                Ok(())
            } else {
                Err(JournalError::Corrupt(res))
            }
        })
    }
}

/// Milliseconds since the Unix epoch: the journal's one time format.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Renders a journal timestamp as RFC 3339 (UTC, seconds).
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
