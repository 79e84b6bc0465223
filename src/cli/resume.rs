//! `dbctl resume RUN`: finish a run that stopped (crash, Ctrl-C, kept failure).

use clap::Args;

use super::output::{RunView, emit, render_run};
use crate::error::CliError;
use crate::journal::RunState;
use crate::operations::{self, App};
use crate::progress;
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Steps already done are skipped and their outputs reused; a step \
    left running by a crash is executed again (steps are idempotent). A run that was rolling \
    back finishes its rollback.\n\nExample:\n  dbctl resume run-3f9a0c1b2d"
)]
pub struct ResumeArgs {
    /// Run id (run-…)
    pub run: String,
}

pub async fn run(app: &App, args: ResumeArgs) -> Result<(), CliError> {
    let journal = app.journal_for(&args.run)?;
    let run = operations::find_run(&journal, &args.run)?;
    let reporter = progress::reporter(!app.json);
    let run = match run.state {
        RunState::Succeeded => run,
        RunState::RolledBack => {
            return Err(ValidationError::new(
                "run",
                format!("{} was rolled back; nothing to resume", run.id),
            )
            .into());
        }
        s if s.is_rolling_back() => {
            operations::drive_rollback(app, journal.clone(), &run.id, reporter, false).await?
        }
        _ => operations::drive_forward(app, journal.clone(), &run.id, reporter).await?,
    };
    let view = RunView {
        steps: journal.steps(&run.id)?,
        run,
    };
    emit(app, &view, || render_run(&view));
    Ok(())
}
