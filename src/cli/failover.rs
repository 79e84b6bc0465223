//! `dbctl failover NAME --to NODE`: promote a node while the cluster has no healthy leader
//! (Patroni fails over by itself when it can; this is for when it cannot or will not).

use clap::Args;

use super::cluster;
use crate::error::CliError;
use crate::operations::{App, day2};
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Refused while a leader is healthy (use switchover). Patroni promotes \
    only a node it considers safe; in synchronous mode that is the synchronous standby.\n\n\
    Example:\n  dbctl failover orders --to node-2"
)]
pub struct FailoverArgs {
    /// Instance name
    pub name: String,

    /// The node to promote
    #[arg(long, value_name = "NODE")]
    pub to: String,

    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(app: &App, args: FailoverArgs) -> Result<(), CliError> {
    let c = cluster::find(app, &args.name, args.project.as_deref(), "failover")?;
    c.check_node("to", &args.to)?;
    let t = c
        .topology(app)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot read the cluster's state: {e}", args.name))?;
    if let Some(l) = t.leader() {
        let why = if l.name == args.to {
            format!("{} already leads {}", l.name, args.name)
        } else {
            format!(
                "{} leads {} and is healthy: use dbctl switchover {} --to {}",
                l.name, args.name, args.name, args.to
            )
        };
        return Err(ValidationError::new("to", why).into());
    }
    match t.member(&args.to) {
        Some(m) if m.state == "running" => {}
        other => {
            return Err(ValidationError::new(
                "to",
                format!(
                    "{} is not running ({}): it cannot be promoted",
                    args.to,
                    other
                        .map(|m| m.state.as_str())
                        .unwrap_or("not in the cluster")
                ),
            )
            .into());
        }
    }
    c.run_request(app, day2::Request::Failover { to: args.to })
        .await
}
