//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Migrations are append-only: never edit a shipped one, add the next.

use rusqlite::Connection;

use super::{JournalError, Result};

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE instances (
        id          TEXT PRIMARY KEY,
        project     TEXT NOT NULL,
        name        TEXT NOT NULL,
        provider    TEXT NOT NULL,
        region      TEXT NOT NULL,
        state       TEXT NOT NULL,
        spec        TEXT NOT NULL,
        vcpus       INTEGER NOT NULL,
        memory_gib  INTEGER NOT NULL,
        disk_gib    INTEGER NOT NULL,
        nodes       INTEGER NOT NULL,
        expires_at  INTEGER,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    -- One live instance per (project, name); destroyed ones keep their history.
    CREATE UNIQUE INDEX instances_live_name ON instances(project, name) WHERE state <> 'destroyed';

    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        instance_id      TEXT NOT NULL REFERENCES instances(id),
        operation        TEXT NOT NULL,
        state            TEXT NOT NULL,
        idempotency_key  TEXT NOT NULL,
        spec_hash        TEXT NOT NULL,
        spec             TEXT NOT NULL,
        placement        TEXT NOT NULL,
        on_failure       TEXT NOT NULL,
        error            TEXT,
        lease_token      TEXT,
        lease_pid        INTEGER,
        lease_host       TEXT,
        lease_expires_at INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        finished_at      INTEGER
    );
    CREATE INDEX runs_idempotency_key ON runs(idempotency_key);
    CREATE INDEX runs_instance ON runs(instance_id);

    CREATE TABLE steps (
        run_id            TEXT NOT NULL REFERENCES runs(id),
        name              TEXT NOT NULL,
        position          INTEGER NOT NULL,
        stage             TEXT NOT NULL,
        action            TEXT NOT NULL,
        deps              TEXT NOT NULL,
        state             TEXT NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        rollback_attempts INTEGER NOT NULL DEFAULT 0,
        generation        INTEGER NOT NULL DEFAULT 0,
        client_token      TEXT,
        outputs           TEXT,
        error             TEXT,
        started_at        INTEGER,
        finished_at       INTEGER,
        PRIMARY KEY (run_id, name)
    );

    CREATE TABLE resources (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs(id),
        step        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        provider_id TEXT,
        region      TEXT,
        zone        TEXT,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        UNIQUE (run_id, step, kind, name)
    );

    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        run_id  TEXT NOT NULL REFERENCES runs(id),
        ts      INTEGER NOT NULL,
        level   TEXT NOT NULL,
        step    TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX events_run ON events(run_id, id);
    "#,
    // 2: what a run decided once and must not re-derive later. `purge_backups` is set when
    // the run's first rollback starts (NULL: not decided yet) with the reason beside it;
    // `settings` is the provider configuration resolved at admission (JSON; NULL for runs
    // admitted before this migration), which rollback undoes from instead of today's config.
    r#"
    ALTER TABLE runs ADD COLUMN purge_backups INTEGER;
    ALTER TABLE runs ADD COLUMN purge_reason TEXT;
    ALTER TABLE runs ADD COLUMN settings TEXT;
    "#,
    // 3: what `gc` and a journal of thousands of throwaway instances need. Partial indexes
    // keep the live set's lookups (admission's spread, gc's TTL scan) independent of how many
    // destroyed instances the history holds; `instances_destroyed_at` finds the history old
    // enough to prune without reading the rest.
    r#"
    CREATE INDEX instances_live_expiry ON instances(expires_at)
        WHERE state <> 'destroyed' AND expires_at IS NOT NULL;
    CREATE INDEX instances_live_where ON instances(provider, region) WHERE state <> 'destroyed';
    CREATE INDEX instances_destroyed_at ON instances(updated_at) WHERE state = 'destroyed';
    CREATE INDEX instances_created ON instances(created_at DESC, id);
    "#,
];

/// Whether `conn` is a dbctl journal, or an empty file that may become one: refuses a file
/// that is not SQLite, and a database of another application (tables, but not dbctl's).
pub fn check_is_journal(conn: &Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tables = table_names(conn).map_err(|e| format!("not a dbctl journal ({e})"))?;
    if tables.is_empty() || tables.iter().any(|t| t == "runs") {
        return Ok(());
    }
    Err(format!(
        "not a dbctl journal: a SQLite database of another application (tables {}); \
         point --journal or DBCTL_JOURNAL at dbctl's journal",
        tables.join(", ")
    )
    .into())
}

pub(super) fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// Brings the schema up to date, each migration in its own transaction.
pub fn migrate(conn: &Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > known {
        return Err(JournalError::TooNew {
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        // IMMEDIATE so two processes opening a fresh journal at once do not both migrate.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if applied >= version {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        let res = conn
            .execute_batch(sql)
            .and_then(|_| conn.execute_batch(&format!("PRAGMA user_version = {version}")));
        match res {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    Ok(())
}
