//! `dbctl plan`: what a create would do, without doing it.

use clap::Args;
use serde::Serialize;

use super::output::{emit, table};
use super::spec_args::SpecArgs;
use crate::error::CliError;
use crate::flow::{self, PlannedStep};
use crate::operations::{self, App};
use crate::provider::Preflight;
use crate::scheduler::Placement;
use crate::spec::{InstanceSpec, ValidationError};

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl plan orders --ha\n  dbctl plan -f orders.toml --output json"
)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Do not ask the provider's API (no credential, permission or zone checks)
    #[arg(long)]
    pub offline: bool,
}

#[derive(Serialize)]
struct PlanView<'a> {
    spec: &'a InstanceSpec,
    idempotency_key: String,
    placement: &'a Placement,
    steps: &'a [PlannedStep],
    /// Whether this build can execute the plan with the chosen provider.
    executable: bool,
    /// The provider's answers: credentials, permissions (DryRun), zones; what it will create.
    preflight: Preflight,
}

pub async fn run(app: &App, args: PlanArgs) -> Result<(), CliError> {
    let spec = args.spec.resolve(&app.config)?;
    let provider = app.provider(&spec.provider);
    let preflight = match &provider {
        Ok(p) if !args.offline => p.preflight_online(&spec, true).await,
        _ => Preflight::default(),
    };
    let journal = app.existing_journal()?;
    let placement = operations::place(
        &app.config,
        journal.as_deref(),
        &spec,
        preflight.zones.as_deref(),
    )?;
    let steps = flow::plan(&spec, &placement);
    let view = PlanView {
        spec: &spec,
        idempotency_key: spec.default_idempotency_key(),
        placement: &placement,
        steps: &steps,
        executable: provider.is_ok(),
        preflight,
    };
    // One JSON document on stdout: with failed checks that is the error (stderr has the why).
    let failed = view.preflight.failures();
    if app.json && failed.is_some() {
        return Err(ValidationError::new(
            "provider",
            format!(
                "{} preflight failed: {}",
                spec.provider,
                failed.unwrap_or_default()
            ),
        )
        .into());
    }
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
        for c in &view.preflight.checks {
            out += &format!(
                "  check {:<24} {}  {}\n",
                c.name,
                if c.ok { "ok  " } else { "FAIL" },
                c.detail
            );
        }
        if !view.preflight.creates.is_empty() {
            out += "creates:\n";
            for c in &view.preflight.creates {
                out += &format!("  - {c}\n");
            }
        }
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| vec![s.name.clone(), s.stage.as_str().into(), s.deps.join(", ")])
            .collect();
        out + "\n" + &table(&["STEP", "STAGE", "AFTER"], &rows)
    });
    // The plan is shown either way; failed checks make it a failed preflight for scripts.
    match failed {
        Some(failed) => Err(ValidationError::new(
            "provider",
            format!("{} preflight failed: {failed}", spec.provider),
        )
        .into()),
        None => Ok(()),
    }
}
