//! What the HA commands share: finding an HA instance, asking Patroni for its live topology,
//! and running a day-2 request as a journaled run.

use crate::error::CliError;
use crate::flow::Action;
use crate::journal::{InstanceRow, Journal, RunRow};
use crate::operations::{self, App, day2};
use crate::postgres::patroni::Topology;
use crate::progress;
use crate::spec::ValidationError;

use super::output::{RunView, emit, render_run};

/// An HA instance run by Patroni, with its create run and node names.
pub struct Cluster {
    pub journal: std::sync::Arc<Journal>,
    pub instance: InstanceRow,
    pub run: RunRow,
    pub nodes: Vec<String>,
}

/// Whether a create run built a Patroni cluster (HA instances of older dbctl versions had a
/// fixed primary and are not).
pub fn is_patroni(run: &RunRow) -> bool {
    operations::run_placement(run)
        .map(|p| p.nodes.len() > 1 && p.nodes.iter().all(|n| n.node.starts_with("node-")))
        .unwrap_or(false)
}

/// The live HA instance `name`, or exit 2 naming `name` when it is not one.
pub fn find(app: &App, name: &str, project: Option<&str>, what: &str) -> Result<Cluster, CliError> {
    let (journal, instance, run) = operations::instance_with_run(app, name, project)?;
    if !is_patroni(&run) {
        return Err(ValidationError::new(
            "name",
            format!("{name} is not an HA instance (created without --ha): {what} needs a cluster"),
        )
        .into());
    }
    let nodes = operations::run_placement(&run)?
        .nodes
        .into_iter()
        .map(|n| n.node)
        .collect();
    Ok(Cluster {
        journal,
        instance,
        run,
        nodes,
    })
}

impl Cluster {
    /// Exit 2 naming `field` unless `node` is one of the cluster's nodes.
    pub fn check_node(&self, field: &str, node: &str) -> Result<(), CliError> {
        if self.nodes.iter().any(|n| n == node) {
            return Ok(());
        }
        Err(ValidationError::new(
            field,
            format!(
                "no node {node:?} in {} (nodes: {})",
                self.instance.name,
                self.nodes.join(", ")
            ),
        )
        .into())
    }

    /// Patroni's view of the cluster now (read-only: SSH to the nodes, first that answers).
    pub async fn topology(&self, app: &App) -> Result<Topology, String> {
        let v = operations::run_task(
            app,
            &self.journal,
            &self.run,
            "cluster.status",
            &Action::ClusterStatus,
        )
        .await
        .map_err(|e| e.to_string())?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// Journals `request` as a run and drives it; prints the run like `create` does.
    pub async fn run_request(&self, app: &App, request: day2::Request) -> Result<(), CliError> {
        let run_id = day2::admit(&self.journal, &self.instance, &self.run, &request)?;
        eprintln!(
            "dbctl: run {run_id}: {} on {}",
            request_name(&request),
            self.instance.name
        );
        let reporter = progress::reporter(!app.json);
        let run = operations::drive_forward(app, self.journal.clone(), &run_id, reporter).await?;
        let view = RunView {
            steps: self.journal.steps(&run.id)?,
            run,
        };
        emit(app, &view, || render_run(&view));
        Ok(())
    }
}

fn request_name(r: &day2::Request) -> String {
    match r {
        day2::Request::Switchover { from, to } => format!("switchover {from} → {to}"),
        day2::Request::Failover { to } => format!("failover to {to}"),
        day2::Request::Reinit { node, force } => {
            format!("reinit {node}{}", if *force { " (rebuild)" } else { "" })
        }
    }
}
