//! Resources: every external thing a step creates, recorded as intent before the call.
//!
//! A row in state `creating` whose step then crashed says "this may exist": the provider finds it
//! by the run's tags (cloud) or the run's directory (local) and adopts or removes it.

use rusqlite::{Row, params};

use super::{Journal, Result, now_ms};

text_enum!(
    ResourceState {
        Creating => "creating",
        Created => "created",
        Deleting => "deleting",
        Deleted => "deleted",
    }
);

#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourceRow {
    pub run_id: String,
    pub step: String,
    pub kind: String,
    pub name: String,
    pub provider_id: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub state: ResourceState,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Identifies one resource of a step.
#[derive(Debug, Clone)]
pub struct ResourceKey<'a> {
    pub run_id: &'a str,
    pub step: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        run_id: r.get(0)?,
        step: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        provider_id: r.get(4)?,
        region: r.get(5)?,
        zone: r.get(6)?,
        state: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

impl Journal {
    /// Records that a step is about to create (or adopt) a resource. Idempotent: a retry of
    /// the same step keeps one row and moves it back to `creating`.
    pub fn resource_intent(
        &self,
        key: &ResourceKey<'_>,
        region: Option<&str>,
        zone: Option<&str>,
    ) -> Result<()> {
        self.write_run(key.run_id, |tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO resources (run_id, step, kind, name, region, zone, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'creating', ?7, ?7)
                 ON CONFLICT (run_id, step, kind, name)
                 DO UPDATE SET state = 'creating', updated_at = ?7",
                params![key.run_id, key.step, key.kind, key.name, region, zone, now],
            )?;
            Ok(())
        })
    }

    /// Records the provider's id for a resource that now exists.
    pub fn resource_created(&self, key: &ResourceKey<'_>, provider_id: &str) -> Result<()> {
        self.resource_update(key, ResourceState::Created, Some(provider_id))
    }

    pub fn resource_state(&self, key: &ResourceKey<'_>, state: ResourceState) -> Result<()> {
        self.resource_update(key, state, None)
    }

    fn resource_update(
        &self,
        key: &ResourceKey<'_>,
        state: ResourceState,
        provider_id: Option<&str>,
    ) -> Result<()> {
        self.write_run(key.run_id, |tx| {
            tx.execute(
                "UPDATE resources SET state = ?5, provider_id = COALESCE(?6, provider_id), updated_at = ?7
                 WHERE run_id = ?1 AND step = ?2 AND kind = ?3 AND name = ?4",
                params![key.run_id, key.step, key.kind, key.name, state, provider_id, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Resources of a run, in creation order.
    pub fn resources(&self, run_id: &str) -> Result<Vec<ResourceRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT run_id, step, kind, name, provider_id, region, zone, state, created_at, updated_at
                 FROM resources WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([run_id], from_row)?.collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }
}
