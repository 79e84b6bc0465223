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
    /// Created with `--throwaway`: a test database without backups or exporters.
    throwaway: bool,
    /// What the instance was built without, and why (`--throwaway`); empty otherwise.
    left_out: Vec<&'static str>,
    /// An HA cluster's live topology, read from Patroni now (leader, members, state, timeline,
    /// lag, streaming and sync standby); `null` for a single node. `{"error": …}` when no node
    /// answered.
    cluster: serde_json::Value,
    /// Day-2 runs of the instance (switchover, failover, reinit), newest first.
    operations: Vec<crate::journal::RunRow>,
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
    let live = instance.state.as_str() == "running" && super::cluster::is_patroni(&run);
    let cluster = if live {
        match operations::run_task(
            app,
            &journal,
            &run,
            "cluster.status",
            &crate::flow::Action::ClusterStatus,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    } else {
        serde_json::Value::Null
    };
    let day2_runs: Vec<crate::journal::RunRow> = journal
        .runs_of_instance(&instance.id)?
        .into_iter()
        .filter(|r| operations::day2::is_day2(&r.operation))
        .collect();
    let throwaway = operations::run_spec(&run).is_ok_and(|s| s.throwaway);
    let view = StatusView {
        throwaway,
        left_out: if throwaway {
            crate::flow::THROWAWAY_LEAVES_OUT.to_vec()
        } else {
            Vec::new()
        },
        cluster,
        operations: day2_runs,
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
            // An HA member's role is Patroni's, now; the registered one is what it started as.
            let live_role = view.cluster["members"].as_array().map(|ms| {
                ms.iter()
                    .find(|m| m["name"] == n.node.as_str())
                    .and_then(|m| m["role"].as_str())
                    .unwrap_or("absent")
            });
            let (role, zone, addr) = match ep {
                Some(e) => (
                    live_role.unwrap_or(e["role"].as_str().unwrap_or("")),
                    e["zone"].as_str().unwrap_or(""),
                    format!("{}:{}", e["host"].as_str().unwrap_or(""), e["port"]),
                ),
                None => ("", "", String::new()),
            };
            out += &format!(
                "  node {:<10} {:<8} {:<12} {:<8} {}\n",
                n.node, n.state, role, zone, addr
            );
        }
        if let Some(e) = view.cluster["error"].as_str() {
            out += &format!("  cluster  unavailable: {e}\n");
        } else if let Ok(t) =
            serde_json::from_value::<crate::postgres::patroni::Topology>(view.cluster.clone())
        {
            out += &render_cluster(&t, view.nodes.iter().map(|n| n.node.as_str()));
        }
        for r in view
            .replication
            .as_array()
            .into_iter()
            .flatten()
            .filter(|_| view.cluster.is_null())
        {
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
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(*n));
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
        if view.throwaway {
            out += &format!(
                "  throwaway (--throwaway): built without {}\n",
                view.left_out.join(", ")
            );
        }
        out += &render_run(&view.run);
        if !view.operations.is_empty() {
            out += "\n";
            let rows: Vec<Vec<String>> = view
                .operations
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.operation.clone(),
                        r.shown_state.to_string(),
                        crate::journal::format_ms(r.created_at),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out += &table(
                &["OPERATION RUN", "KIND", "STATE", "STARTED", "ERROR"],
                &rows,
            );
        }
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

/// The live topology as text: who leads, then one line per member.
fn render_cluster<'a>(
    t: &crate::postgres::patroni::Topology,
    nodes: impl Iterator<Item = &'a str>,
) -> String {
    let mut out = match t.leader() {
        Some(l) => format!(
            "  cluster  leader {} (timeline {}); sync standby {}\n",
            l.name,
            l.timeline
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into()),
            t.sync_standby()
                .map(|s| s.application_name.as_str())
                .unwrap_or("none")
        ),
        None => {
            "  cluster  NO HEALTHY LEADER (Patroni is electing one, or see dbctl failover)\n".into()
        }
    };
    for n in nodes.filter(|n| t.member(n).is_none()) {
        out +=
            &format!("  member {n:<8} absent: not in the cluster (its VM is down? dbctl reinit)\n");
    }
    for m in &t.members {
        let stream = t
            .replication
            .iter()
            .find(|s| s.application_name == m.name)
            .map(|s| format!("{} {}", s.state, s.sync_state))
            .unwrap_or_default();
        let lag = match &m.lag {
            Some(serde_json::Value::Number(n)) => format!("lag {n} B"),
            Some(serde_json::Value::String(s)) => format!("lag {s}"),
            _ => String::new(),
        };
        out += &format!(
            "  member {:<8} {:<12} {:<10} tl {:<3} {:<10} {}\n",
            m.name,
            m.role,
            m.state,
            m.timeline.map(|t| t.to_string()).unwrap_or_default(),
            lag,
            stream
        );
    }
    out
}
