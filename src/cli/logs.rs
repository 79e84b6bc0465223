//! `dbctl logs RUN`: the run's event log, optionally followed live.

use std::time::Duration;

use clap::Args;

use super::output::emit;
use crate::error::CliError;
use crate::journal::format_ms;
use crate::operations::{self, App};

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl logs run-3f9a0c1b2d\n  dbctl logs run-3f9a0c1b2d --follow"
)]
pub struct LogsArgs {
    /// Run id (run-…)
    pub run: String,

    /// Keep printing new events until the run stops being driven
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn run(app: &App, args: LogsArgs) -> Result<(), CliError> {
    let journal = app.journal_for(&args.run)?;
    operations::find_run(&journal, &args.run)?;
    let mut last = 0;
    let mut idle = Duration::from_millis(100);
    loop {
        let events = journal.events(&args.run, last)?;
        last = events.last().map_or(last, |e| e.id);
        if app.json {
            for e in &events {
                // JSON Lines: one event per line, so `--follow` output can be streamed.
                println!("{}", serde_json::to_string(e).expect("event serializes"));
            }
        } else if !events.is_empty() {
            emit(app, &events, || {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {:<5} {}{}\n",
                            format_ms(e.ts),
                            e.level,
                            e.step
                                .as_deref()
                                .map(|s| format!("{s}: "))
                                .unwrap_or_default(),
                            e.message
                        )
                    })
                    .collect()
            });
        }
        if !args.follow {
            return Ok(());
        }
        let run = operations::find_run(&journal, &args.run)?;
        // A stalled run (its process is gone) will write nothing more until someone resumes it.
        if (run.stalled || !matches!(run.state.as_str(), "pending" | "running" | "rolling_back"))
            && events.is_empty()
        {
            return Ok(());
        }
        // Poll with backoff while nothing happens; reset as soon as events flow.
        idle = if events.is_empty() {
            (idle * 2).min(Duration::from_secs(2))
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(idle).await;
    }
}
