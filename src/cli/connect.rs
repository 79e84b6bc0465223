//! `dbctl connect NAME`: the connection URI of an instance (TLS verify-full against dbctl's
//! CA), or a psql session with it.

use std::os::unix::process::CommandExt;

use clap::Args;
use serde::Serialize;

use super::output::emit;
use crate::error::CliError;
use crate::operations::{self, App};
use crate::postgres::Endpoint;
use crate::postgres::secrets::SecretStore;

#[derive(Debug, Args)]
#[command(
    after_long_help = "The URI holds the generated password: treat the output as a secret.\n\n\
    Examples:\n  psql \"$(dbctl connect orders)\"\n  dbctl connect orders --psql\n  dbctl connect orders --output json | jq -r .uri"
)]
pub struct ConnectArgs {
    /// Instance name
    pub name: String,

    #[arg(long)]
    pub project: Option<String>,

    /// Application role to connect as [default: the first one]
    #[arg(long)]
    pub user: Option<String>,

    /// Connect to a streaming replica (read-only) instead of the primary
    #[arg(long)]
    pub replica: bool,

    /// Run psql instead of printing the URI (the password goes through PGPASSWORD, not argv)
    #[arg(long)]
    pub psql: bool,
}

#[derive(Serialize)]
struct ConnectView {
    uri: String,
    host: String,
    port: u16,
    database: String,
    user: String,
    sslmode: &'static str,
    sslrootcert: std::path::PathBuf,
}

pub fn run(app: &App, args: ConnectArgs) -> Result<(), CliError> {
    let (journal, instance, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    // The primary's endpoint comes from its setup, a replica's from its clone step.
    let wanted = |name: &str| {
        if args.replica {
            name.starts_with("setup.clone.")
        } else {
            name == "setup.primary"
        }
    };
    let ep: Endpoint = journal
        .steps(&run.id)?
        .into_iter()
        .find(|s| wanted(&s.name) && s.outputs.is_some())
        .and_then(|s| s.outputs)
        .and_then(|o| serde_json::from_value(o).ok())
        .ok_or_else(|| {
            CliError::NotFound(format!(
                "{}: not ready yet (no endpoint recorded; see dbctl status {})",
                args.name, args.name
            ))
        })?;
    let user = args.user.unwrap_or(ep.user.clone());
    let password = SecretStore::new(&app.state_dir())
        .existing(&instance.id, &user)
        .ok_or_else(|| {
            CliError::NotFound(format!("{}: no password stored for role {user}", args.name))
        })?;
    let query = format!("sslmode=verify-full&sslrootcert={}", ep.ca_file.display());
    if args.psql {
        let err = std::process::Command::new("psql")
            .arg(format!(
                "postgresql://{user}@{}:{}/{}?{query}",
                ep.host, ep.port, ep.database
            ))
            .env("PGPASSWORD", &password)
            .exec();
        return Err(anyhow::anyhow!("cannot run psql: {err}").into());
    }
    let view = ConnectView {
        uri: format!(
            "postgresql://{user}:{password}@{}:{}/{}?{query}",
            ep.host, ep.port, ep.database
        ),
        host: ep.host,
        port: ep.port,
        database: ep.database,
        user,
        sslmode: "verify-full",
        sslrootcert: ep.ca_file,
    };
    emit(app, &view, || view.uri.clone());
    Ok(())
}
