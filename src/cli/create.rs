//! `dbctl create`: validate, admit (idempotency, quotas), then drive the run.

use clap::{Args, ValueEnum};

use super::output::{RunView, emit, render_run};
use super::spec_args::SpecArgs;
use crate::error::CliError;
use crate::flow;
use crate::journal::RunState;
use crate::operations::{self, Admission, App};
use crate::progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    /// Undo every step that ran (default)
    Rollback,
    /// Leave everything as it is for debugging; resume or roll back later
    Keep,
}

#[derive(Debug, Args)]
#[command(after_long_help = "Examples:\n  \
    dbctl create orders --engine postgres\n  \
    dbctl create orders --ha --size medium --disk-gib 100 --tag team=payments\n  \
    dbctl create -f orders.toml --idempotency-key deploy-4711 --output json\n  \
    dbctl create scratch --ttl 2h --on-failure keep")]
pub struct CreateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,

    /// Names this request: repeating it returns (and finishes) the same run instead of
    /// creating a second instance [default: derived from project, name and spec]
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// What to do when a step fails for good
    #[arg(long, value_enum, default_value_t = OnFailure::Rollback)]
    pub on_failure: OnFailure,
}

pub async fn run(app: &App, args: CreateArgs) -> Result<(), CliError> {
    let spec = args.spec.resolve(&app.config)?;
    create_spec(app, spec, args.idempotency_key, args.on_failure).await
}

/// Admits and drives the creation of `spec` (also how `restore` creates its instance).
pub async fn create_spec(
    app: &App,
    spec: crate::spec::InstanceSpec,
    idempotency_key: Option<String>,
    on_failure: OnFailure,
) -> Result<(), CliError> {
    // Everything that can reject the request happens before the journal is opened, so bad
    // input leaves no trace.
    crate::register::Settings::new(&app.config, &app.state_dir()).validate()?;
    let provider = app.provider(&spec.provider)?;
    provider.preflight(&spec)?;
    let online = provider.preflight_online(&spec, false).await;
    if let Some(failed) = online.failures() {
        return Err(crate::spec::ValidationError::new(
            "provider",
            format!("{} preflight failed: {failed}", spec.provider),
        )
        .into());
    }
    let spec = provider.materialize(spec, &|line| {
        if !app.json {
            eprintln!("image: {line}")
        }
    })?;
    let key = idempotency_key.unwrap_or_else(|| spec.default_idempotency_key());
    if key.is_empty() || key.len() > 128 {
        return Err(crate::spec::ValidationError::new(
            "idempotency_key",
            "must be 1-128 characters",
        )
        .into());
    }
    let existing = app.existing_journal()?;
    let placement = operations::place(
        &app.config,
        existing.as_deref(),
        &spec,
        online.zones.as_deref(),
    )?;
    let steps = flow::plan(&spec, &placement);

    let journal = app.journal()?;
    let on_failure = match on_failure {
        OnFailure::Rollback => "rollback",
        OnFailure::Keep => "keep",
    };
    let req = crate::operations::admit::Request {
        spec: &spec,
        key: &key,
        placement: &placement,
        steps: &steps,
        on_failure,
    };
    let run_id = match operations::admit(&journal, &app.config, &req)? {
        Admission::New { run_id } => run_id,
        Admission::Existing(run) if run.state == RunState::Succeeded => {
            eprintln!(
                "dbctl: idempotency key {key:?} already names run {} (succeeded)",
                run.id
            );
            let steps = journal.steps(&run.id)?;
            let view = RunView { run: *run, steps };
            emit(app, &view, || render_run(&view));
            return Ok(());
        }
        Admission::Existing(run) if run.state.is_rolling_back() => {
            eprintln!(
                "dbctl: idempotency key {key:?} names run {}, which is being rolled back; finishing the rollback",
                run.id
            );
            let reporter = progress::reporter(!app.json);
            let run =
                operations::drive_rollback(app, journal.clone(), &run.id, reporter, false).await?;
            return Err(CliError::RolledBack {
                run: run.id,
                step: "(earlier failure)".into(),
                error: run.error.unwrap_or_default(),
            });
        }
        Admission::Existing(run) => {
            eprintln!(
                "dbctl: idempotency key {key:?} names unfinished run {}; resuming it",
                run.id
            );
            run.id
        }
    };
    eprintln!(
        "dbctl: run {run_id}: creating {}/{} ({} node(s), provider {})",
        spec.project,
        spec.name,
        spec.nodes(),
        spec.provider
    );
    let reporter = progress::reporter(!app.json);
    let run = operations::drive_forward(app, journal.clone(), &run_id, reporter).await?;
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
