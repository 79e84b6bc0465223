//! Finding runs and instances by what users type.

use crate::error::CliError;
use crate::journal::{InstanceRow, Journal, RunRow};

pub fn find_run(journal: &Journal, run_id: &str) -> Result<RunRow, CliError> {
    journal.run(run_id)?.ok_or_else(|| {
        CliError::NotFound(format!(
            "run {run_id} not found in {}",
            journal.path().display()
        ))
    })
}

/// The live instance `name` in `project`.
pub fn find_instance(
    journal: &Journal,
    project: &str,
    name: &str,
) -> Result<InstanceRow, CliError> {
    journal.live_instance(project, name)?.ok_or_else(|| {
        CliError::NotFound(format!(
            "instance {name:?} not found in project {project:?}"
        ))
    })
}

/// The create run of an instance (the one whose rollback destroys it).
pub fn latest_create_run(journal: &Journal, instance: &InstanceRow) -> Result<RunRow, CliError> {
    journal
        .runs_of_instance(&instance.id)?
        .into_iter()
        .find(|r| r.operation == "create")
        .ok_or_else(|| CliError::NotFound(format!("instance {} has no create run", instance.name)))
}

/// The live instance `name` (in `project`, or the config's default project) with its journal
/// and the run that created it: what `connect`, `ssh`, `destroy` and `status NAME` start from.
pub fn instance_with_run(
    app: &super::App,
    name: &str,
    project: Option<&str>,
) -> Result<(std::sync::Arc<Journal>, InstanceRow, RunRow), CliError> {
    let journal = app.journal_for(&format!("instance {name:?}"))?;
    let project = project.unwrap_or(&app.config.defaults.project);
    let instance = find_instance(&journal, project, name)?;
    let run = latest_create_run(&journal, &instance)?;
    Ok((journal, instance, run))
}

/// The spec a run was admitted with, as journaled.
pub fn run_spec(run: &RunRow) -> Result<crate::spec::InstanceSpec, CliError> {
    serde_json::from_str(&run.spec_json)
        .map_err(|e| anyhow::anyhow!("run {}: unreadable spec in journal: {e}", run.id).into())
}

/// Refuses (exit 2, naming `name`) a backup or restore of an instance created with
/// `--throwaway`: it was built without backups, so there is nothing to list, take or restore.
pub fn require_backups(run: &RunRow, name: &str) -> Result<(), CliError> {
    if run_spec(run)?.throwaway {
        return Err(crate::spec::ValidationError::new(
            "name",
            format!("{name} is a throwaway instance (created with --throwaway): it has no backups"),
        )
        .into());
    }
    Ok(())
}

/// Where a run placed its nodes, as journaled.
pub fn run_placement(run: &RunRow) -> Result<crate::scheduler::Placement, CliError> {
    serde_json::from_str(&run.placement_json)
        .map_err(|e| anyhow::anyhow!("run {}: unreadable placement in journal: {e}", run.id).into())
}
