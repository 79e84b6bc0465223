//! `dbctl list`: instances in the journal.

use std::collections::HashMap;

use clap::Args;
use serde::Serialize;

use super::output::{emit, table};
use crate::error::CliError;
use crate::journal::{InstanceRow, RunBrief, format_ms, now_ms};
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
    /// Any run of the instance is recorded in progress but its process is gone.
    stalled: bool,
    /// What to run about it (`dbctl resume RUN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    /// Its endpoints as registered (`register.endpoints`), each with its DNS name: empty until
    /// the register stage ran.
    endpoints: Vec<serde_json::Value>,
}

/// The create run's endpoints, each joined with the DNS name `register.dns` gave its node.
pub(super) fn endpoints(
    journal: &crate::journal::Journal,
    run: Option<&str>,
) -> Result<Vec<serde_json::Value>, CliError> {
    let Some(run) = run else {
        return Ok(Vec::new());
    };
    // Two primary-key lookups, not the run's every step: `list --all` does this for every
    // instance of a long history.
    let outputs = |name: &str| -> Result<serde_json::Value, CliError> {
        Ok(journal.step_output(run, name)?.unwrap_or_default())
    };
    let dns = outputs("register.dns")?;
    let mut eps: Vec<serde_json::Value> = outputs("register.endpoints")?["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for ep in &mut eps {
        let name = dns["records"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["node"] == ep["node"])
            .map(|r| r["name"].clone())
            .unwrap_or_default();
        ep["dns_name"] = name;
    }
    Ok(eps)
}

pub fn run(app: &App, args: ListArgs) -> Result<(), CliError> {
    let Some(journal) = app.existing_journal()? else {
        emit(app, &Vec::<Item>::new(), String::new);
        return Ok(());
    };
    let now = now_ms();
    let mut runs_of: HashMap<String, Vec<RunBrief>> = HashMap::new();
    for r in journal.run_briefs(args.all)? {
        runs_of.entry(r.instance_id.clone()).or_default().push(r);
    }
    let mut items = Vec::new();
    for instance in journal.instances(args.all)? {
        let runs = runs_of.remove(&instance.id).unwrap_or_default();
        // Day-2 runs (switchover, …) act on the instance; the create run is what built it.
        let run = runs
            .iter()
            .find(|r| !crate::operations::day2::is_day2(&r.operation))
            .map(|r| r.id.clone());
        let stalled = runs.iter().find(|r| r.stalled);
        let endpoints = endpoints(&journal, run.as_deref())?;
        let expired =
            instance.expires_at.is_some_and(|e| e <= now) && instance.state.as_str() != "destroyed";
        items.push(Item {
            instance,
            expired,
            run,
            stalled: stalled.is_some(),
            next: stalled.and_then(RunBrief::next),
            endpoints,
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
                    if i.stalled {
                        format!("{} (interrupted)", x.state)
                    } else {
                        x.state.to_string()
                    },
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
        ) + &items
            .iter()
            .filter_map(|i| {
                i.next
                    .as_ref()
                    .map(|n| format!("{} was interrupted: {n}\n", i.instance.name))
            })
            .collect::<String>()
    });
    Ok(())
}
