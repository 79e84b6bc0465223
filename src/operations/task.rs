//! Running one action of an instance outside a run (`dbctl backup now`): bound by the
//! instance's provider like a flow step, with the create run's recorded outputs as inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::App;
use crate::error::CliError;
use crate::flow::Action;
use crate::journal::{Journal, RunRow};
use crate::provider::RunInfo;
use crate::saga::StepCtx;

pub async fn run_task(
    app: &App,
    journal: &Arc<Journal>,
    run: &RunRow,
    label: &str,
    action: &Action,
) -> Result<Value, CliError> {
    let spec = super::run_spec(run)?;
    let placement = super::run_placement(run)?;
    let provider = app.provider(&spec.provider)?;
    let info = RunInfo {
        run_id: &run.id,
        instance_id: &run.instance_id,
        spec: &spec,
        placement: &placement,
        purge_backups: false,
    };
    let step = provider.bind(&info, label, action);
    let inputs: BTreeMap<String, Value> = journal
        .steps(&run.id)?
        .into_iter()
        .filter_map(|s| Some((s.name, s.outputs?)))
        .collect();
    let ctx = StepCtx::detached(journal.clone(), &run.id, label, inputs);
    step.execute(&ctx)
        .await
        .map_err(|e| anyhow::anyhow!("{label}: {e}").into())
}
