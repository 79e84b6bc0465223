//! `dbctl list`: instances in the journal.

use clap::Args;
use serde::Serialize;

use super::output::{emit, table};
use crate::error::CliError;
use crate::journal::{InstanceRow, format_ms, now_ms};
use crate::operations::App;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include destroyed instances
    #[arg(long)]
    pub all: bool,
}

#[derive(Serialize)]
struct Item {
    #[serde(flatten)]
    instance: InstanceRow,
    expired: bool,
    /// The run that created it (latest create run).
    run: Option<String>,
}

pub fn run(app: &App, args: ListArgs) -> Result<(), CliError> {
    let Some(journal) = app.existing_journal()? else {
        emit(app, &Vec::<Item>::new(), String::new);
        return Ok(());
    };
    let now = now_ms();
    let mut items = Vec::new();
    for instance in journal.instances(args.all)? {
        let run = journal
            .runs_of_instance(&instance.id)?
            .into_iter()
            .next()
            .map(|r| r.id);
        let expired =
            instance.expires_at.is_some_and(|e| e <= now) && instance.state.as_str() != "destroyed";
        items.push(Item {
            instance,
            expired,
            run,
        });
    }
    emit(app, &items, || {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                let x = &i.instance;
                vec![
                    x.name.clone(),
                    x.project.clone(),
                    x.provider.clone(),
                    x.state.to_string(),
                    x.nodes.to_string(),
                    format_ms(x.created_at),
                    match (x.expires_at, i.expired) {
                        (Some(_), true) => "EXPIRED".into(),
                        (Some(e), false) => format_ms(e),
                        (None, _) => "-".into(),
                    },
                    i.run.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &[
                "NAME", "PROJECT", "PROVIDER", "STATE", "NODES", "CREATED", "EXPIRES", "RUN",
            ],
            &rows,
        )
    });
    Ok(())
}
