//! Instances: what the user asked for, by project and name, and whether it is live.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Journal, Result, now_ms};

text_enum!(
    /// The lifecycle of an instance as the journal sees it.
    InstanceState {
        Creating => "creating",
        Running => "running",
        Failed => "failed",
        Destroying => "destroying",
        Destroyed => "destroyed",
    }
);

/// An instance as recorded when its create run is admitted.
pub struct NewInstance<'a> {
    pub id: &'a str,
    pub project: &'a str,
    pub name: &'a str,
    pub provider: &'a str,
    pub region: &'a str,
    pub spec_json: &'a str,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub disk_gib: u32,
    pub nodes: u32,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub project: String,
    pub name: String,
    pub provider: String,
    pub region: String,
    pub state: InstanceState,
    #[serde(skip)]
    pub spec_json: String,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub disk_gib: u32,
    pub nodes: u32,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a project's live instances consume, summed over all their nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub instances: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
}

const COLUMNS: &str = "id, project, name, provider, region, state, spec, vcpus, memory_gib, \
                       disk_gib, nodes, expires_at, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        project: r.get(1)?,
        name: r.get(2)?,
        provider: r.get(3)?,
        region: r.get(4)?,
        state: r.get(5)?,
        spec_json: r.get(6)?,
        vcpus: r.get(7)?,
        memory_gib: r.get(8)?,
        disk_gib: r.get(9)?,
        nodes: r.get(10)?,
        expires_at: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

pub fn insert(conn: &Connection, i: &NewInstance<'_>) -> Result<()> {
    let now = now_ms();
    conn.execute(
        &format!("INSERT INTO instances ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?13)"),
        params![
            i.id, i.project, i.name, i.provider, i.region, InstanceState::Creating, i.spec_json,
            i.vcpus, i.memory_gib, i.disk_gib, i.nodes, i.expires_at, now
        ],
    )?;
    Ok(())
}

/// The live (not destroyed) instance with this project and name, if any.
pub fn find_live(conn: &Connection, project: &str, name: &str) -> Result<Option<InstanceRow>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM instances WHERE project = ?1 AND name = ?2 AND state <> 'destroyed'"
            ),
            params![project, name],
            from_row,
        )
        .optional()?)
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<InstanceRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Everything a project's live instances hold. Failed instances count: until they are rolled
/// back or destroyed, their resources may still exist.
pub fn usage(conn: &Connection, project: &str) -> Result<Usage> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(vcpus * nodes), 0), COALESCE(SUM(disk_gib * nodes), 0)
         FROM instances WHERE project = ?1 AND state <> 'destroyed'",
        [project],
        |r| {
            Ok(Usage {
                instances: r.get(0)?,
                vcpus: r.get(1)?,
                disk_gib: r.get(2)?,
            })
        },
    )?)
}

pub fn set_state(conn: &Connection, id: &str, state: InstanceState) -> Result<()> {
    conn.execute(
        "UPDATE instances SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, state, now_ms()],
    )?;
    Ok(())
}

impl Journal {
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRow>> {
        self.read(|c| get(c, id))
    }

    pub fn live_instance(&self, project: &str, name: &str) -> Result<Option<InstanceRow>> {
        self.read(|c| find_live(c, project, name))
    }

    /// Instances, newest first; destroyed ones only when `all`.
    pub fn instances(&self, all: bool) -> Result<Vec<InstanceRow>> {
        self.read(|c| {
            let filter = if all {
                ""
            } else {
                "WHERE state <> 'destroyed'"
            };
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM instances {filter} ORDER BY created_at DESC, id"
            ))?;
            let rows = st
                .query_map([], from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    /// Every provider an instance of the journal (live or destroyed) was made with.
    pub fn providers(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT DISTINCT provider FROM instances ORDER BY provider")?;
            let rows = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    /// Live instances whose TTL ran out by `now`, the longest expired first.
    pub fn expired_instances(&self, now: i64) -> Result<Vec<InstanceRow>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM instances
                 WHERE state <> 'destroyed' AND expires_at IS NOT NULL AND expires_at <= ?1
                 ORDER BY expires_at, id"
            ))?;
            let rows = st
                .query_map([now], from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    pub fn set_instance_state(&self, id: &str, state: InstanceState) -> Result<()> {
        self.write(|tx| set_state(tx, id, state))
    }
}
