//! What `dbctl gc` asks of the journal: which runs may still own something outside (their
//! resources are never swept), and pruning the history of instances destroyed long ago.
//!
//! Safety rests on one order, kept by the caller: providers are scanned *first* and the
//! journal read *after*. Every run is recorded before it creates anything (intent before
//! effect), so a resource the scan saw belongs to a run the later read sees, however recent.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::{Journal, JournalError, Result, now_ms};

/// Rows `prune_history` removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub instances: u64,
    pub runs: u64,
    pub steps: u64,
    pub events: u64,
    pub resources: u64,
    /// Destroyed long enough ago but kept: its backups were kept in an S3 repository, and
    /// `dbctl restore` reads the source's history.
    pub kept_restorable: u64,
}

/// Instances pruned per transaction: pruning years of history must not hold the journal's
/// write lock for seconds while a `create` waits for it.
const BATCH: i64 = 500;

/// Destroyed before `?1`, of provider `?3` (NULL: any), no run of it leased (`?2` = now), its
/// create run rolled back.
const OLD_ENOUGH: &str = "i.state = 'destroyed' AND i.updated_at < ?1
    AND (?3 IS NULL OR i.provider = ?3)
    AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.instance_id = i.id
        AND (r.lease_expires_at > ?2 OR (r.operation = 'create' AND r.state <> 'rolled_back')))";

/// The instance's backups outlive it: kept (not purged) in an S3 repository.
const RESTORABLE: &str = "EXISTS (SELECT 1 FROM runs r
        JOIN steps s ON s.run_id = r.id AND s.name = 'register.backups'
        WHERE r.instance_id = i.id AND r.operation = 'create'
          AND COALESCE(r.purge_backups, 0) = 0 AND json_extract(s.outputs, '$.repo') = 's3')";

/// The rows hanging off the instances selected by `ids` (a subquery), as (table, condition).
fn dependents(ids: &str) -> [(&'static str, String); 4] {
    let runs = format!("SELECT id FROM runs WHERE instance_id IN ({ids})");
    [
        ("events", format!("run_id IN ({runs})")),
        ("steps", format!("run_id IN ({runs})")),
        ("resources", format!("run_id IN ({runs})")),
        ("runs", format!("instance_id IN ({ids})")),
    ]
}

fn set_count(p: &mut Pruned, table: &str, n: u64) {
    match table {
        "events" => p.events += n,
        "steps" => p.steps += n,
        "resources" => p.resources += n,
        "runs" => p.runs += n,
        _ => p.instances += n,
    }
}

impl Journal {
    /// Ids of the runs that may own something outside: every run not rolled back (pending,
    /// running, kept failures, interrupted, failed rollbacks) and any run whose lease is held.
    pub fn owning_runs(&self) -> Result<HashSet<String>> {
        self.read(owning_runs_in)
    }

    /// Removes the history (instance, runs, steps, events, resources rows) of instances
    /// destroyed before `cutoff_ms`; with `dry_run` only counts it. Never touches a live
    /// instance, a leased run, or a destroyed instance whose kept S3 backups `restore` may
    /// still need. `provider` limits it to that provider's instances.
    pub fn prune_history(
        &self,
        cutoff_ms: i64,
        provider: Option<&str>,
        dry_run: bool,
    ) -> Result<Pruned> {
        let now = now_ms();
        let mut out = Pruned::default();
        let kept = format!("SELECT COUNT(*) FROM instances i WHERE {OLD_ENOUGH} AND {RESTORABLE}");
        out.kept_restorable = self.read(|c| {
            Ok(c.query_row(&kept, params![cutoff_ms, now, provider], |r| {
                r.get::<_, i64>(0)
            })? as u64)
        })?;
        let chosen =
            format!("SELECT i.id FROM instances i WHERE {OLD_ENOUGH} AND NOT {RESTORABLE}");
        if dry_run {
            return self.read(move |c| {
                for (table, cond) in dependents(&chosen) {
                    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {cond}");
                    let n: i64 =
                        c.query_row(&sql, params![cutoff_ms, now, provider], |r| r.get(0))?;
                    set_count(&mut out, table, n as u64);
                }
                let n: i64 = c.query_row(
                    &format!("SELECT COUNT(*) FROM ({chosen})"),
                    params![cutoff_ms, now, provider],
                    |r| r.get(0),
                )?;
                out.instances = n as u64;
                Ok(out)
            });
        }
        loop {
            let n = self.write(|tx| {
                tx.execute_batch(
                    "CREATE TEMP TABLE IF NOT EXISTS gc_batch (id TEXT PRIMARY KEY);
                     DELETE FROM gc_batch;",
                )?;
                tx.execute(
                    &format!("INSERT INTO gc_batch {chosen} LIMIT {BATCH}"),
                    params![cutoff_ms, now, provider],
                )?;
                for (table, cond) in dependents("SELECT id FROM gc_batch") {
                    let n = tx.execute(&format!("DELETE FROM {table} WHERE {cond}"), [])?;
                    set_count(&mut out, table, n as u64);
                }
                let n = tx.execute(
                    "DELETE FROM instances WHERE id IN (SELECT id FROM gc_batch)",
                    [],
                )?;
                out.instances += n as u64;
                Ok::<_, JournalError>(n)
            })?;
            if n == 0 {
                return Ok(out);
            }
        }
    }
}

fn owning_runs_in(c: &Connection) -> Result<HashSet<String>> {
    let mut st =
        c.prepare("SELECT id FROM runs WHERE state <> 'rolled_back' OR lease_expires_at > ?1")?;
    let ids = st
        .query_map([now_ms()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// An instance as the register stage names what it publishes: (id, project, name).
pub type InstanceKey = (String, String, String);

/// Instances that may still own what the register stage published for them: not destroyed,
/// or with a run whose lease is held.
fn owning_instances_in(c: &Connection) -> Result<HashSet<InstanceKey>> {
    let mut st = c.prepare(
        "SELECT i.id, i.project, i.name FROM instances i WHERE i.state <> 'destroyed'
            OR EXISTS (SELECT 1 FROM runs r WHERE r.instance_id = i.id AND r.lease_expires_at > ?1)",
    )?;
    let keys = st
        .query_map([now_ms()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(keys)
}

impl Journal {
    /// See [`owning_instances_in`].
    pub fn owning_instances(&self) -> Result<HashSet<InstanceKey>> {
        self.read(owning_instances_in)
    }
}

/// The owning runs of every *other* dbctl journal in `journal`'s directory. Journals in one
/// directory share it as their state directory (the local provider's run directories, the
/// owner tag on aws), so a resource of a run recorded in a sibling journal is not a leak —
/// whichever of them `gc` was pointed at, and even when `journal` itself was deleted.
///
/// Guarantees: a file that starts like a SQLite database but cannot be read is an error, never
/// "no runs": a sweep must not start from a guess.
pub fn owning_runs_beside(journal: &Path) -> Result<HashSet<String>> {
    Ok(beside(journal, owning_runs_in)?
        .into_iter()
        .flatten()
        .collect())
}

/// [`owning_instances_in`] of every other journal beside `journal` (they share the hosts
/// file and the file_sd directory too).
pub fn owning_instances_beside(journal: &Path) -> Result<HashSet<InstanceKey>> {
    Ok(beside(journal, owning_instances_in)?
        .into_iter()
        .flatten()
        .collect())
}

/// `read` of every other dbctl journal in `journal`'s directory.
fn beside<T>(journal: &Path, read: impl Fn(&Connection) -> Result<T>) -> Result<Vec<T>> {
    let mut all = Vec::new();
    let Some(dir) = journal.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(all);
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(all);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == journal || !entry.file_type().is_ok_and(|t| t.is_file()) || !is_sqlite(&path) {
            continue;
        }
        let open_err = |e: rusqlite::Error| {
            JournalError::Open {
            path: path.clone(),
            source: format!("a journal beside this one cannot be read, so gc cannot tell its runs' resources apart: {e}").into(),
        }
        };
        let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(open_err)?;
        let tables = super::schema::table_names(&c).map_err(open_err)?;
        if tables.iter().any(|t| t == "runs") {
            all.push(read(&c)?);
        }
    }
    Ok(all)
}

/// Whether the file starts with SQLite's header (WAL and shm files do not).
fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == b"SQLite format 3\0")
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
