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
    let journal = app.journal_for(&format!("instance {:?}", args.name))?;
    let project = args
        .project
        .unwrap_or_else(|| app.config.defaults.project.clone());
    let instance = operations::find_instance(&journal, &project, &args.name)?;
    let run = operations::latest_create_run(&journal, &instance)?;
    let reporter = progress::reporter(!app.json);
    let run = operations::drive_rollback(app, journal.clone(), &run.id, reporter).await?;
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
