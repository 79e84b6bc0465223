//! Events: the timestamped log of a run, read by `dbctl logs`.

use rusqlite::params;

use super::{Journal, Result, now_ms};

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub ts: i64,
    pub level: String,
    pub step: Option<String>,
    pub message: String,
}

impl Journal {
    /// Appends one event. Callers must never pass secrets here: events are shown verbatim.
    pub fn event(
        &self,
        run_id: &str,
        level: &str,
        step: Option<&str>,
        message: &str,
    ) -> Result<()> {
        self.write_run(run_id, |tx| {
            tx.execute(
                "INSERT INTO events (run_id, ts, level, step, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, now_ms(), level, step, message],
            )?;
            Ok(())
        })
    }

    /// Events of a run with id greater than `after` (0 for all), oldest first.
    pub fn events(&self, run_id: &str, after: i64) -> Result<Vec<EventRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, ts, level, step, message FROM events
                 WHERE run_id = ?1 AND id > ?2 ORDER BY id",
            )?;
            let rows = st
                .query_map(params![run_id, after], |r| {
                    Ok(EventRow {
                        id: r.get(0)?,
                        ts: r.get(1)?,
                        level: r.get(2)?,
                        step: r.get(3)?,
                        message: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }
}
