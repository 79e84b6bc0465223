//! `dbctl backup list NAME` and `dbctl backup now NAME`: the pgBackRest backups of an instance.

use clap::{Args, Subcommand, ValueEnum};

use super::output::{emit, table};
use crate::error::CliError;
use crate::flow::Action;
use crate::operations::{self, App};
use crate::register::backup_info::Backup;

#[derive(Debug, Args)]
#[command(after_long_help = "Examples:\n  \
    dbctl backup list orders\n  \
    dbctl backup now orders --type diff\n  \
    dbctl backup list orders --output json | jq '.backups[-1].label'")]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: BackupCommand,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// List the instance's backups (oldest first)
    List(Target),
    /// Take a backup now, then list
    Now {
        #[command(flatten)]
        target: Target,
        /// Backup type
        #[arg(long = "type", value_enum, default_value_t = Kind::Full)]
        kind: Kind,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// Instance name
    pub name: String,
    /// Project of the instance [default: from config]
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Full,
    Diff,
    Incr,
}

pub async fn run(app: &App, args: BackupArgs) -> Result<(), CliError> {
    let (target, action, label) = match args.command {
        BackupCommand::List(t) => (t, Action::BackupInfo, "backup.list".to_string()),
        BackupCommand::Now { target, kind } => {
            // pgBackRest's --type values are the flag's own spellings.
            let kind = kind
                .to_possible_value()
                .expect("no skipped variants")
                .get_name()
                .to_string();
            let label = format!("backup.now.{kind}");
            (target, Action::BackupNow { kind }, label)
        }
    };
    let (journal, _, run) =
        operations::instance_with_run(app, &target.name, target.project.as_deref())?;
    operations::require_backups(&run, &target.name)?;
    let out = operations::run_task(app, &journal, &run, &label, &action).await?;
    emit(app, &out, || render(&out));
    Ok(())
}

fn render(out: &serde_json::Value) -> String {
    let backups: Vec<Backup> = serde_json::from_value(out["backups"].clone()).unwrap_or_default();
    let time = |s: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64),
        )
        .to_string()
    };
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            vec![
                b.label.clone(),
                b.kind.clone(),
                time(b.started),
                format!("{} s", b.stopped - b.started),
                mib(b.size),
                mib(b.repo_size),
            ]
        })
        .collect();
    format!(
        "stanza {} in {}\n{}",
        out["stanza"].as_str().unwrap_or(""),
        out["repository"].as_str().unwrap_or(""),
        table(
            &["LABEL", "TYPE", "STARTED", "TOOK", "SIZE", "IN REPO"],
            &rows
        )
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
