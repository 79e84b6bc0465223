//! `dbctl reinit NAME NODE`: bring one member back — its VM started again if it is down, its
//! data disk attached, its services running — until it streams from the leader. Patroni rewinds
//! a former leader by itself; the data is rebuilt from the leader only when the member cannot
//! rejoin, or with --force.

use clap::Args;

use super::cluster;
use crate::error::CliError;
use crate::operations::{App, day2};
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  dbctl reinit orders node-1          # after its VM died: start it, let it rejoin\n  \
    dbctl reinit orders node-3 --force  # rebuild its data from the leader"
)]
pub struct ReinitArgs {
    /// Instance name
    pub name: String,

    /// The member to bring back (not the leader)
    pub node: String,

    /// Rebuild the member's data from the leader even if it could rejoin
    #[arg(long)]
    pub force: bool,

    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(app: &App, args: ReinitArgs) -> Result<(), CliError> {
    let c = cluster::find(app, &args.name, args.project.as_deref(), "reinit")?;
    c.check_node("node", &args.node)?;
    // The rest of the cluster may be in trouble too; then the step itself finds out.
    if let Ok(t) = c.topology(app).await
        && t.leader().map(|l| l.name.as_str()) == Some(args.node.as_str())
    {
        return Err(ValidationError::new(
            "node",
            format!(
                "{} leads {}: switch over first (dbctl switchover {}), then reinit it",
                args.node, args.name, args.name
            ),
        )
        .into());
    }
    c.run_request(
        app,
        day2::Request::Reinit {
            node: args.node,
            force: args.force,
        },
    )
    .await
}
