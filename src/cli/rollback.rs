//! `dbctl rollback RUN`: remove everything a run created.

use clap::Args;

use super::output::{RunView, emit, render_run};
use crate::error::CliError;
use crate::operations::{self, App};
use crate::progress;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Works on failed, interrupted and completed runs. Steps are undone \
    in reverse dependency order; steps that never started are skipped.\n\nExample:\n  \
    dbctl rollback run-3f9a0c1b2d"
)]
pub struct RollbackArgs {
    /// Run id (run-…)
    pub run: String,

    /// Also delete the backups of an instance that reached RUNNING (a run that never did
    /// always loses them)
    #[arg(long)]
    pub purge_backups: bool,
}

pub async fn run(app: &App, args: RollbackArgs) -> Result<(), CliError> {
    let journal = app.journal_for(&args.run)?;
    let reporter = progress::reporter(!app.json);
    let run = operations::drive_rollback(
        app,
        journal.clone(),
        &args.run,
        reporter,
        args.purge_backups,
    )
    .await?;
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
