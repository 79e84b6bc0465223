//! `dbctl switchover NAME [--to NODE]`: a planned change of leader, waited for until the new
//! leader accepts writes.

use clap::Args;

use super::cluster;
use crate::error::CliError;
use crate::operations::{App, day2};
use crate::spec::{Replication, ValidationError};

#[derive(Debug, Args)]
#[command(
    after_long_help = "Patroni demotes the leader and promotes the target; clients using the URI \
    of `dbctl connect` (every node, target_session_attrs=read-write) follow by themselves. In \
    synchronous mode only the synchronous standby can take over (it has every acknowledged \
    commit); without --to it is chosen.\n\n\
    Examples:\n  dbctl switchover orders\n  dbctl switchover orders --to node-3 --output json"
)]
pub struct SwitchoverArgs {
    /// Instance name
    pub name: String,

    /// The node to lead [default: the synchronous standby, else the most caught-up replica]
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,

    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(app: &App, args: SwitchoverArgs) -> Result<(), CliError> {
    let c = cluster::find(app, &args.name, args.project.as_deref(), "switchover")?;
    if let Some(to) = &args.to {
        c.check_node("to", to)?;
    }
    let t = c
        .topology(app)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot read the cluster's state: {e}", args.name))?;
    let leader = t
        .leader()
        .ok_or_else(|| {
            ValidationError::new(
                "name",
                format!(
                    "{} has no healthy leader ({}): use dbctl failover {} --to NODE",
                    args.name,
                    t.summary(),
                    args.name
                ),
            )
        })?
        .name
        .clone();
    let sync = crate::operations::run_spec(&c.run)?.replication != Some(Replication::Async);
    let to = match args.to {
        Some(to) if to == leader => {
            return Err(
                ValidationError::new("to", format!("{to} already leads {}", args.name)).into(),
            );
        }
        Some(to) => to,
        None => {
            let pick = if sync {
                t.sync_standby().map(|s| s.application_name.clone())
            } else {
                t.replication
                    .iter()
                    .filter(|s| s.state == "streaming")
                    .map(|s| s.application_name.clone())
                    .next()
            };
            pick.ok_or_else(|| {
                ValidationError::new(
                    "to",
                    format!(
                        "no replica of {} is ready to take over ({})",
                        args.name,
                        t.summary()
                    ),
                )
            })?
        }
    };
    if t.streaming(&to).is_none() {
        return Err(ValidationError::new(
            "to",
            format!(
                "{to} does not stream from {leader} ({}): it cannot take over",
                t.summary()
            ),
        )
        .into());
    }
    if sync && t.sync_standby().map(|s| s.application_name.as_str()) != Some(to.as_str()) {
        return Err(ValidationError::new(
            "to",
            format!(
                "{} commits synchronously: only the synchronous standby ({}) has every acknowledged commit",
                args.name,
                t.sync_standby().map(|s| s.application_name.as_str()).unwrap_or("none now")
            ),
        )
        .into());
    }
    c.run_request(app, day2::Request::Switchover { from: leader, to })
        .await
}
