//! Command-line surface: clap types, and one small module per command that wires arguments to
//! `operations` and prints the result as text or JSON.

mod backup;
mod cluster;
mod completions;
mod connect;
mod create;
mod destroy;
mod failover;
mod gc;
mod image;
mod list;
mod logs;
mod output;
mod plan;
mod reinit;
mod restore;
mod resume;
mod rollback;
mod spec_args;
mod ssh;
mod status;
mod switchover;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, default_config_path, default_journal_path};
use crate::error::CliError;
use crate::operations::App;

/// A macro so the text can be `concat!`-ed into both help variants.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0    success
  1    internal error (bug, journal unreadable)
  2    usage or validation error: nothing was created or journaled
  3    quota exceeded: nothing was created or journaled
  4    run failed and was rolled back: nothing it created remains
  5    run failed and was kept (--on-failure keep): resume or roll it back
  6    rollback failed: resources may remain; fix the cause and roll back again
  7    the run is leased by another live dbctl process
  8    run or instance not found
  130  interrupted (Ctrl-C): continue with `dbctl resume RUN`"
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "dbctl",
    version,
    about = "Provision production-grade PostgreSQL on virtual machines",
    long_about = "Provision production-grade PostgreSQL on virtual machines.\n\n\
        dbctl runs the provisioning flow (validate → schedule → provision → deploy → setup → \
        register) as a saga on your machine. Every step is journaled in a local SQLite file \
        before it touches anything, so a run that died half-way can be resumed \
        (`dbctl resume RUN`) or removed completely (`dbctl rollback RUN`).",
    after_help = exit_codes!(),
    after_long_help = concat!(
        "Examples:\n",
        "  dbctl create orders --engine postgres --size medium --disk-gib 50\n",
        "  dbctl create orders --ha --ttl 2h --output json\n",
        "  dbctl plan -f spec.toml\n",
        "  dbctl status orders\n",
        "  dbctl resume run-3f9a0c1b2d\n",
        "  dbctl destroy orders\n\n",
        exit_codes!()
    )
)]
pub struct Cli {
    /// Journal database [default: $XDG_STATE_HOME/dbctl/journal.db]
    #[arg(long, global = true, env = "DBCTL_JOURNAL", value_name = "PATH")]
    pub journal: Option<PathBuf>,

    /// Config file [default: $XDG_CONFIG_HOME/dbctl/config.toml]
    #[arg(long, global = true, env = "DBCTL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output format: text for people, json (stable, documented in the README) for scripts
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Debug logs on stderr (-vv for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an instance (or return the run an idempotency key already names)
    Create(create::CreateArgs),
    /// Show the placement and steps a spec would run; executes nothing
    Plan(plan::PlanArgs),
    /// List instances
    List(list::ListArgs),
    /// Show an instance (by name) or a run (by id) with its steps and resources
    Status(status::StatusArgs),
    /// Continue an interrupted or failed run from the journal
    Resume(resume::ResumeArgs),
    /// Undo a run: remove everything it created
    Rollback(rollback::RollbackArgs),
    /// Destroy an instance: roll back the run that created it
    Destroy(destroy::DestroyArgs),
    /// Show a run's event log
    Logs(logs::LogsArgs),
    /// Destroy expired instances, sweep leaked resources, prune old history (--dry-run: list)
    Gc(gc::GcArgs),
    /// Build or list the local provider's base VM image
    Image(image::ImageArgs),
    /// Print an instance's connection URI (or open psql with it)
    Connect(connect::ConnectArgs),
    /// Open a shell (or run a command) on a node, its host key verified (local and aws)
    Ssh(ssh::SshArgs),
    /// List or take an instance's pgBackRest backups
    Backup(backup::BackupArgs),
    /// Create a new instance from another's backups (optionally to a point in time)
    Restore(restore::RestoreArgs),
    /// HA: move leadership to another node (planned; waits until it accepts writes)
    Switchover(switchover::SwitchoverArgs),
    /// HA: promote a node while the cluster has no healthy leader
    Failover(failover::FailoverArgs),
    /// HA: bring a member back (start its VM, rejoin; rebuild its data only if needed)
    Reinit(reinit::ReinitArgs),
    /// Print a shell completion script (bash, zsh, fish) generated from these definitions
    Completions(completions::CompletionsArgs),
    /// Print the man page (or write every command's page into a directory)
    Man(completions::ManArgs),
    /// Internal: the private-network hub of a local VPC (started by dbctl, detached)
    #[command(hide = true)]
    LocalHub {
        #[arg(long)]
        socket: PathBuf,
        /// Locked and written by the hub itself: one hub per network
        #[arg(long)]
        pidfile: PathBuf,
        /// Security groups to enforce (a JSON policy, reloaded when it changes); none: pass all
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Internal: splices stdin/stdout to HOST:PORT (run by QEMU for a guest's S3 connection)
    #[command(hide = true)]
    Relay {
        target: String,
        /// The VM directory it serves: read by `dbctl gc` from the command line, nothing else
        #[arg(long = "for")]
        vm_dir: Option<PathBuf>,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Relay { target, .. } = &cli.command {
        return crate::provider::local::relay::run(target)
            .map_err(|e| anyhow::anyhow!("relay to {target}: {e}").into());
    }
    // Generated from the clap types alone: no config or journal needed (or read).
    match cli.command {
        Command::Completions(a) => return Ok(completions::run_completions(a)?),
        Command::Man(a) => return Ok(completions::run_man(a)?),
        _ => {}
    }
    let (config_path, explicit) = match cli.config {
        Some(p) => (p, true),
        None => (default_config_path(), false),
    };
    let app = App {
        journal_path: cli.journal.unwrap_or_else(default_journal_path),
        config: Config::load(&config_path, explicit)?,
        json: cli.output == Output::Json,
    };
    match cli.command {
        Command::Create(a) => create::run(&app, a).await,
        Command::Plan(a) => plan::run(&app, a).await,
        Command::List(a) => list::run(&app, a),
        Command::Status(a) => status::run(&app, a).await,
        Command::Resume(a) => resume::run(&app, a).await,
        Command::Rollback(a) => rollback::run(&app, a).await,
        Command::Destroy(a) => destroy::run(&app, a).await,
        Command::Logs(a) => logs::run(&app, a).await,
        Command::Gc(a) => gc::run(&app, a).await,
        Command::Image(a) => image::run(&app, a).await,
        Command::Ssh(a) => ssh::run(&app, a).await,
        Command::Connect(a) => connect::run(&app, a).await,
        Command::Backup(a) => backup::run(&app, a).await,
        Command::Restore(a) => restore::run(&app, a).await,
        Command::Switchover(a) => switchover::run(&app, a).await,
        Command::Failover(a) => failover::run(&app, a).await,
        Command::Reinit(a) => reinit::run(&app, a).await,
        Command::Relay { .. } | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled before the config is loaded")
        }
        Command::LocalHub {
            socket,
            pidfile,
            policy,
        } => {
            crate::provider::local::hub::serve(&socket, &pidfile, policy.as_deref())
                .map_err(|e| anyhow::anyhow!("local hub {}: {e}", socket.display()))?;
            Ok(())
        }
    }
}
