//! `dbctl destroy NAME`: roll back the run that created an instance.

use clap::Args;

use super::output::{RunView, emit, render_run};
use crate::error::CliError;
use crate::operations::{self, App};
use crate::progress;

#[derive(Debug, Args)]
#[command(after_long_help = "Example:\n  dbctl destroy orders --project payments")]
pub struct DestroyArgs {
    /// Instance name
    pub name: String,

    /// Project of the instance [default: from config]
    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(app: &App, args: DestroyArgs) -> Result<(), CliError> {
    let (journal, _, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    let reporter = progress::reporter(!app.json);
    let run = operations::drive_rollback(app, journal.clone(), &run.id, reporter).await?;
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
