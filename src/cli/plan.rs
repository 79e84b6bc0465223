//! `dbctl plan`: what a create would do, without doing it.

use clap::Args;
use serde::Serialize;

use super::output::{emit, table};
use super::spec_args::SpecArgs;
use crate::error::CliError;
use crate::flow::{self, PlannedStep};
use crate::operations::{self, App};
use crate::scheduler::Placement;
use crate::spec::InstanceSpec;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl plan orders --ha\n  dbctl plan -f orders.toml --output json"
)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Serialize)]
struct PlanView<'a> {
    spec: &'a InstanceSpec,
    idempotency_key: String,
    placement: &'a Placement,
    steps: &'a [PlannedStep],
    /// Whether this build can execute the plan with the chosen provider.
    executable: bool,
}

pub fn run(app: &App, args: PlanArgs) -> Result<(), CliError> {
    let spec = args.spec.resolve(&app.config)?;
    let journal = app.existing_journal()?;
    let placement = operations::place(&app.config, journal.as_deref(), &spec)?;
    let steps = flow::plan(&spec, &placement);
    let view = PlanView {
        spec: &spec,
        idempotency_key: spec.default_idempotency_key(),
        placement: &placement,
        steps: &steps,
        executable: app.provider(&spec.provider).is_ok(),
    };
    emit(app, &view, || {
        let r = spec.resources;
        let mut out = format!(
            "plan for {}/{}: postgres {}, {} node(s) of {} vCPU / {} GiB, {} GiB disk, provider {} region {}\n",
            spec.project,
            spec.name,
            spec.version,
            spec.nodes(),
            r.vcpus,
            r.memory_gib,
            spec.disk_gib,
            spec.provider,
            spec.region
        );
        for n in &placement.nodes {
            out += &format!("  {:<10} zone {}\n", n.node, n.zone);
        }
        if !view.executable {
            out += &format!("note: {}\n", crate::provider::unavailable(&spec.provider));
        }
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| vec![s.name.clone(), s.stage.as_str().into(), s.deps.join(", ")])
            .collect();
        out + "\n" + &table(&["STEP", "STAGE", "AFTER"], &rows)
    });
    Ok(())
}
