//! `dbctl destroy NAME`: roll back the run that created an instance (its DNS names and
//! Prometheus targets go; its backups stay unless `--purge-backups`).

use clap::Args;

use super::output::{RunView, emit, render_run};
use crate::error::CliError;
use crate::operations::{self, App};
use crate::progress;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl destroy orders --project payments\n  dbctl destroy scratch --purge-backups"
)]
pub struct DestroyArgs {
    /// Instance name
    pub name: String,

    /// Project of the instance [default: from config]
    #[arg(long)]
    pub project: Option<String>,

    /// Also delete the instance's backups and archived WAL (kept by default, so a destroyed
    /// instance can still be restored with `dbctl restore`)
    #[arg(long)]
    pub purge_backups: bool,
}

pub async fn run(app: &App, args: DestroyArgs) -> Result<(), CliError> {
    let (journal, _, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    let reporter = progress::reporter(!app.json);
    let run =
        operations::drive_rollback(app, journal.clone(), &run.id, reporter, args.purge_backups)
            .await?;
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
