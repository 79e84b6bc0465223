//! `dbctl status NAME|RUN`: an instance with its latest run, or one run, with steps and
//! resources.

use clap::Args;
use serde::Serialize;

use super::output::{RunView, emit, render_run, table};
use crate::error::CliError;
use crate::journal::{InstanceRow, ResourceRow, outputs_of};
use crate::operations::{self, App};
use crate::provider::NodeState;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl status orders\n  dbctl status run-3f9a0c1b2d --output json"
)]
pub struct StatusArgs {
    /// Instance name or run id (run-…)
    pub target: String,

    /// Project of the instance [default: from config]
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Serialize)]
struct StatusView {
    instance: InstanceRow,
    #[serde(flatten)]
    run: RunView,
    resources: Vec<ResourceRow>,
    /// Live node state from the provider (e.g. QEMU's own status for local VMs).
    nodes: Vec<NodeState>,
    /// Where each node serves (role, zone, host, port), as registered.
    endpoints: serde_json::Value,
    /// Replication as verified when the run built it (slot, state, lag in bytes).
    replication: serde_json::Value,
    /// DNS records as published (`register.dns`).
    dns: serde_json::Value,
    /// The backup stanza, repository and schedules (`register.backups`).
    backups: serde_json::Value,
}

pub async fn run(app: &App, args: StatusArgs) -> Result<(), CliError> {
    let journal = app.journal_for(&args.target)?;
    let run = if args.target.starts_with("run-") {
        operations::find_run(&journal, &args.target)?
    } else {
        operations::instance_with_run(app, &args.target, args.project.as_deref())?.2
    };
    let instance = journal
        .instance(&run.instance_id)?
        .ok_or_else(|| anyhow::anyhow!("run {} names a missing instance", run.id))?;
    let nodes = match app.provider(&instance.provider) {
        Ok(p) if instance.state.as_str() != "destroyed" => {
            let placement = operations::run_placement(&run)?;
            let names: Vec<String> = placement.nodes.into_iter().map(|n| n.node).collect();
            p.node_states(&run.id, &names).await
        }
        _ => Vec::new(),
    };
    let steps = journal.steps(&run.id)?;
    let outputs = |name: &str, key: &str| {
        outputs_of(&steps, name)
            .map(|o| o[key].clone())
            .unwrap_or_else(|| serde_json::json!([]))
    };
    let endpoints = outputs("register.endpoints", "endpoints");
    let replication = outputs("setup.verify-replication", "replicas");
    let dns = outputs("register.dns", "records");
    let backups = outputs_of(&steps, "register.backups")
        .cloned()
        .unwrap_or_default();
    let view = StatusView {
        nodes,
        dns,
        backups,
        endpoints,
        replication,
        resources: journal.resources(&run.id)?,
        run: RunView { steps, run },
        instance,
    };
    emit(app, &view, || {
        let i = &view.instance;
        let mut out = format!(
            "instance {}/{} ({})  {}  provider {} region {}  {} node(s)\n",
            i.project, i.name, i.id, i.state, i.provider, i.region, i.nodes
        );
        for n in &view.nodes {
            let ep = view
                .endpoints
                .as_array()
                .and_then(|a| a.iter().find(|e| e["node"] == n.node.as_str()));
            let (role, zone, addr) = match ep {
                Some(e) => (
                    e["role"].as_str().unwrap_or(""),
                    e["zone"].as_str().unwrap_or(""),
                    format!("{}:{}", e["host"].as_str().unwrap_or(""), e["port"]),
                ),
                None => ("", "", String::new()),
            };
            out += &format!(
                "  node {:<10} {:<8} {:<8} {:<8} {}\n",
                n.node, n.state, role, zone, addr
            );
        }
        for r in view.replication.as_array().into_iter().flatten() {
            out += &format!(
                "  replication {} {} (lag {} bytes when verified)\n",
                r["slot"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["lag_bytes"]
            );
        }
        let mut names: Vec<&str> = view
            .dns
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        names.dedup();
        if !names.is_empty() {
            out += &format!("  dns {}\n", names.join(", "));
        }
        if let Some(repo) = view.backups["repository"].as_str() {
            out += &format!(
                "  backups stanza {} in {}; full {:?}, diff {:?}\n",
                view.backups["stanza"].as_str().unwrap_or(""),
                repo,
                view.backups["full_schedule"].as_str().unwrap_or(""),
                view.backups["diff_schedule"].as_str().unwrap_or(""),
            );
        }
        out += &render_run(&view.run);
        let rows: Vec<Vec<String>> = view
            .resources
            .iter()
            .map(|r| {
                vec![
                    r.kind.clone(),
                    r.name.clone(),
                    r.state.to_string(),
                    r.provider_id.clone().unwrap_or_default(),
                    r.zone.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out += "\n";
            out += &table(&["RESOURCE", "NAME", "STATE", "ID", "ZONE"], &rows);
        }
        out
    });
    Ok(())
}
