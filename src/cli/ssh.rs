//! `dbctl ssh NAME`: a shell on a node for humans, through the system's OpenSSH client with
//! the host key dbctl verified (StrictHostKeyChecking=yes): a local VM's known_hosts, or on
//! aws the key read from the instance's console output (`provider::aws::login`), to its public
//! address (or its private one from inside the VPC).

use std::os::unix::process::CommandExt;

use clap::Args;

use crate::error::CliError;
use crate::journal::outputs_of;
use crate::operations::{self, App};
use crate::provider::local::VmOut;
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(
    after_long_help = "Like ssh, the command's words are joined for the remote shell: quote a compound \
    command as one word.\n\nExamples:\n  dbctl ssh orders\n  dbctl ssh orders --node node-2 -- sudo journalctl -u patroni\n  \
    dbctl ssh orders --node node-3 -- 'sudo -u postgres psql -c \"select 1\"'"
)]
pub struct SshArgs {
    /// Instance name
    pub name: String,

    /// Node: `primary` of a single node, node-1…node-3 of an HA cluster [default: the first]
    #[arg(long)]
    pub node: Option<String>,

    #[arg(long)]
    pub project: Option<String>,

    /// Command to run instead of a login shell
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(app: &App, args: SshArgs) -> Result<(), CliError> {
    let (journal, instance, run) =
        operations::instance_with_run(app, &args.name, args.project.as_deref())?;
    if !matches!(instance.provider.as_str(), "local" | "aws") {
        return Err(ValidationError::new(
            "name",
            format!(
                "dbctl ssh works for local and aws instances; {} is on {}",
                args.name, instance.provider
            ),
        )
        .into());
    }
    let node = match args.node {
        Some(n) => n,
        None => operations::run_placement(&run)?
            .nodes
            .first()
            .map(|n| n.node.clone())
            .unwrap_or_else(|| "primary".into()),
    };
    let step = format!("provision.vm.{node}");
    let steps = journal.steps(&run.id)?;
    let outputs = outputs_of(&steps, &step).cloned().ok_or_else(|| {
        CliError::NotFound(format!(
            "{}: node {node} has no running VM recorded",
            args.name
        ))
    })?;
    let key = app.state_dir().join("ssh/id_ed25519");
    let (port, known_hosts, destination) = if instance.provider == "aws" {
        let vm: crate::provider::aws::InstanceOut =
            serde_json::from_value(outputs).map_err(|e| anyhow::anyhow!("{step}: {e}"))?;
        let spec = operations::run_spec(&run)?;
        let login = crate::provider::aws::login::prepare(
            &app.config.aws,
            &spec,
            app.state_dir(),
            &vm,
            &node,
        )
        .await
        .map_err(|e| anyhow::anyhow!("ssh: {e}"))?;
        (
            22,
            login.known_hosts,
            format!("{}@{}", login.user, login.host),
        )
    } else {
        let vm: VmOut =
            serde_json::from_value(outputs).map_err(|e| anyhow::anyhow!("{step}: {e}"))?;
        (
            vm.ssh_port,
            vm.dir.join("known_hosts"),
            "dbctl@127.0.0.1".to_string(),
        )
    };
    let err = std::process::Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(&key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(destination)
        .args(&args.command)
        .exec();
    Err(anyhow::anyhow!("cannot run ssh: {err}").into())
}
