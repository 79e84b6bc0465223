//! Admission of a create request (the seed's API layer after validation): idempotency key,
//! name uniqueness and quotas, checked and recorded in one write transaction so two concurrent
//! `dbctl create` commands cannot both pass the same check.

use crate::config::Config;
use crate::error::CliError;
use crate::flow::PlannedStep;
use crate::journal::instances::{self, NewInstance};
use crate::journal::runs::{self, NewRun, RunRow, RunState};
use crate::journal::steps::NewStep;
use crate::journal::{Journal, now_ms};
use crate::scheduler::Placement;
use crate::spec::{InstanceSpec, ValidationError};

pub enum Admission {
    /// A new run was recorded (state `pending`).
    New { run_id: String },
    /// The idempotency key already names this run; nothing new was recorded.
    Existing(Box<RunRow>),
}

pub struct Request<'a> {
    pub spec: &'a InstanceSpec,
    pub key: &'a str,
    pub placement: &'a Placement,
    pub steps: &'a [PlannedStep],
    pub on_failure: &'a str,
}

pub fn admit(journal: &Journal, config: &Config, req: &Request<'_>) -> Result<Admission, CliError> {
    let spec = req.spec;
    let spec_json = spec.canonical_json();
    let spec_hash = spec.hash();
    let settings_json = config.run_settings_json();
    journal.write(|tx| {
        if let Some(run) = runs::by_idempotency_key(tx, req.key)? {
            if run.spec_hash != spec_hash {
                return Err(ValidationError::new(
                    "idempotency_key",
                    format!("{:?} was already used by run {} with a different spec", req.key, run.id),
                )
                .into());
            }
            // A rolled-back attempt left nothing behind: the same request may try again.
            if run.state != RunState::RolledBack {
                return Ok(Admission::Existing(Box::new(run)));
            }
        }
        if let Some(live) = instances::find_live(tx, &spec.project, &spec.name)? {
            return Err(ValidationError::new(
                "name",
                format!(
                    "instance {:?} already exists in project {:?} ({}, {}); destroy it first or choose another name",
                    spec.name, spec.project, live.state, live.id
                ),
            )
            .into());
        }
        check_quota(tx, config, spec)?;

        let instance_id = super::new_id("inst");
        let run_id = super::new_id("run");
        let r = spec.resources;
        instances::insert(
            tx,
            &NewInstance {
                id: &instance_id,
                project: &spec.project,
                name: &spec.name,
                provider: &spec.provider,
                region: &spec.region,
                spec_json: &spec_json,
                vcpus: r.vcpus,
                memory_gib: r.memory_gib,
                disk_gib: spec.disk_gib,
                nodes: spec.nodes(),
                expires_at: spec.ttl_secs.map(|t| now_ms() + t as i64 * 1000),
            },
        )?;
        let steps = journaled(req.steps);
        let placement_json = serde_json::to_string(req.placement).expect("placement serializes");
        runs::insert(
            tx,
            &NewRun {
                id: &run_id,
                instance_id: &instance_id,
                operation: "create",
                idempotency_key: req.key,
                spec_hash: &spec_hash,
                spec_json: &spec_json,
                placement_json: &placement_json,
                on_failure: req.on_failure,
                settings_json: Some(&settings_json),
                steps: &steps,
            },
        )?;
        Ok(Admission::New { run_id })
    })
}

/// Planned steps as the journal records them.
pub(super) fn journaled(steps: &[PlannedStep]) -> Vec<NewStep> {
    steps
        .iter()
        .map(|s| NewStep {
            name: s.name.clone(),
            stage: s.stage.as_str().to_string(),
            action_json: serde_json::to_string(&s.action).expect("action serializes"),
            deps: s.deps.clone(),
        })
        .collect()
}

fn check_quota(
    conn: &rusqlite::Connection,
    config: &Config,
    spec: &InstanceSpec,
) -> Result<(), CliError> {
    let quota = config.quotas.for_project(&spec.project);
    let used = instances::usage(conn, &spec.project)?;
    let nodes = spec.nodes();
    let asks = [
        ("instances", used.instances, 1, quota.instances),
        (
            "vcpus",
            used.vcpus,
            spec.resources.vcpus * nodes,
            quota.vcpus,
        ),
        (
            "disk_gib",
            used.disk_gib,
            spec.disk_gib * nodes,
            quota.disk_gib,
        ),
    ];
    for (what, in_use, needs, limit) in asks {
        if in_use + needs > limit {
            return Err(CliError::Quota {
                project: spec.project.clone(),
                detail: format!("{what}: {in_use} of {limit} in use, this instance needs {needs}"),
            });
        }
    }
    Ok(())
}
