//! `dbctl create`: validate, admit (idempotency, quotas), then drive the run.

use clap::{Args, ValueEnum};
use serde::Serialize;

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

    /// With --output json: put the password in `connection` (otherwise use `connection.passfile`
    /// or run `dbctl connect`)
    #[arg(long)]
    pub show_secrets: bool,
}

/// What `create --output json` prints: the run with its steps (the shape every run command
/// has) and, added for pipelines, the instance, its endpoints and how to connect.
#[derive(Serialize)]
struct CreateView {
    #[serde(flatten)]
    run: RunView,
    instance: Option<crate::journal::InstanceRow>,
    /// As registered (`register.endpoints`), like `dbctl list`; empty until register ran.
    endpoints: Vec<serde_json::Value>,
    /// `null` until the instance serves (no endpoint recorded).
    connection: Option<ConnectionView>,
    /// The command that prints the URI with the password.
    connect: String,
}

#[derive(Serialize)]
struct ConnectionView {
    /// Without the password.
    uri: String,
    host: String,
    port: u16,
    database: String,
    user: String,
    sslrootcert: std::path::PathBuf,
    /// A libpq password file (0600) for `uri`: `PGPASSFILE=… psql "$uri"` needs no password.
    passfile: Option<std::path::PathBuf>,
    /// Only with --show-secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

fn create_view(
    app: &App,
    journal: &crate::journal::Journal,
    run: crate::journal::RunRow,
    show_secrets: bool,
) -> Result<CreateView, CliError> {
    let steps = journal.steps(&run.id)?;
    let instance = journal.instance(&run.instance_id)?;
    let endpoints = super::list::endpoints(journal, Some(&run.id))?;
    let connection = instance
        .as_ref()
        .filter(|_| run.state == RunState::Succeeded)
        .and_then(|i| {
            let t = super::connect::target(app, i, &run, &steps, None, false).ok()?;
            Some((t.write_passfile(app, &i.id).ok(), t))
        })
        .map(|(passfile, t)| ConnectionView {
            passfile,
            uri: t.uri(false),
            host: t.hosts[0].host.clone(),
            port: t.hosts[0].port,
            database: t.database.clone(),
            user: t.user.clone(),
            sslrootcert: t.ca_file.clone(),
            password: show_secrets.then(|| t.password.clone()),
        });
    let connect = instance
        .as_ref()
        .map(|i| format!("dbctl connect {} --project {}", i.name, i.project))
        .unwrap_or_default();
    Ok(CreateView {
        run: RunView { run, steps },
        instance,
        endpoints,
        connection,
        connect,
    })
}

pub async fn run(app: &App, args: CreateArgs) -> Result<(), CliError> {
    let spec = args.spec.resolve(&app.config)?;
    create_spec(
        app,
        spec,
        args.idempotency_key,
        args.on_failure,
        args.show_secrets,
    )
    .await
}

/// Admits and drives the creation of `spec` (also how `restore` creates its instance).
pub async fn create_spec(
    app: &App,
    spec: crate::spec::InstanceSpec,
    idempotency_key: Option<String>,
    on_failure: OnFailure,
    show_secrets: bool,
) -> Result<(), CliError> {
    // Everything that can reject the request happens before the journal is opened, so bad
    // input leaves no trace.
    let provider = app.provider(&spec.provider)?;
    crate::register::Settings::new(&app.config, &app.state_dir())
        .validate(provider.node_credentials())?;
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
            let view = create_view(app, &journal, *run, show_secrets)?;
            emit(app, &view, || render_run(&view.run));
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
    let view = create_view(app, &journal, run, show_secrets)?;
    emit(app, &view, || render_run(&view.run));
    Ok(())
}
