//! `dbctl restore NAME --as NEW [--to TIMESTAMP]`: a new instance whose primary starts from
//! NAME's pgBackRest backups — at the end of the archived WAL, or at a point in time — created
//! through the same flow as `create` (replicas, DNS, monitoring, its own backups).

use clap::Args;

use super::create::{OnFailure, create_spec};
use crate::config::RepoKind;
use crate::error::CliError;
use crate::operations::{self, App};
use crate::spec::{InstanceSpec, RestoreFrom, ValidationError};

#[derive(Debug, Args)]
#[command(
    after_long_help = "The source may be live or destroyed (its backups are kept unless \
    it was destroyed with --purge-backups); the repository must be shared (backup.repo = \"s3\").\n\n\
    Examples:\n  \
    dbctl restore orders --as orders-copy\n  \
    dbctl restore orders --as orders-before-migration --to 2026-11-26T17:30:00Z\n  \
    dbctl restore orders --as orders-scratch --single   # one node, whatever the source"
)]
pub struct RestoreArgs {
    /// Instance whose backups are restored
    pub name: String,

    /// Name of the new instance
    #[arg(long = "as", value_name = "NEW")]
    pub new_name: String,

    /// Recover to this moment (RFC 3339, UTC offset required, e.g. 2026-11-26T17:30:00Z)
    /// [default: everything archived]
    #[arg(long = "to", value_name = "TIMESTAMP")]
    pub to: Option<String>,

    /// Project of both instances [default: from config]
    #[arg(long)]
    pub project: Option<String>,

    /// Names this request (as for create)
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Restore into a single node even when the source is an HA cluster (a copy to inspect or
    /// test against needs no failover)
    #[arg(long)]
    pub single: bool,

    /// What to do when a step fails for good
    #[arg(long, value_enum, default_value_t = OnFailure::Rollback)]
    pub on_failure: OnFailure,
}

/// `--to` as PostgreSQL's recovery_target_time wants it, rejecting the future.
fn target_time(to: &str) -> Result<String, ValidationError> {
    let at = to
        .ends_with('Z')
        .then(|| humantime::parse_rfc3339_weak(to).ok())
        .flatten()
        .ok_or_else(|| {
            ValidationError::new(
                "to",
                format!("{to:?} is not an RFC 3339 UTC time like 2026-11-26T17:30:00Z"),
            )
        })?;
    if at > std::time::SystemTime::now() {
        return Err(ValidationError::new("to", format!("{to} is in the future")));
    }
    let text = humantime::format_rfc3339_micros(at).to_string();
    // 2026-11-26T17:30:00.000000Z → 2026-11-26 17:30:00.000000+00
    Ok(text.replace('T', " ").replace('Z', "+00"))
}

/// `--to` in journal time (ms since the epoch); already validated by [`target_time`].
fn epoch_ms(to: &str) -> Result<i64, ValidationError> {
    let at = humantime::parse_rfc3339_weak(to)
        .map_err(|e| ValidationError::new("to", format!("{to:?}: {e}")))?;
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// Refuses, before anything is created, a target the source's backups cannot reach: before its
/// backups began (there is no base backup to replay from), or after it was destroyed
/// (its archiving had stopped by then, so recovery would end before the target). A target in
/// the last moments of a live source's WAL can still be past its end: the restore step finds
/// that in PostgreSQL's log and fails it for good instead of waiting.
fn check_target(
    to: &str,
    at: i64,
    first_backup: Option<i64>,
    destroyed: Option<i64>,
) -> Result<(), ValidationError> {
    use crate::journal::format_ms;
    if let Some(first) = first_backup.filter(|&f| at < f) {
        return Err(ValidationError::new(
            "to",
            format!(
                "{to} is before the source's backups began ({}): there is nothing to recover from",
                format_ms(first)
            ),
        ));
    }
    if let Some(gone) = destroyed.filter(|&d| at > d) {
        return Err(ValidationError::new(
            "to",
            format!(
                "{to} is after the source was destroyed ({}): its archived WAL ends before that",
                format_ms(gone)
            ),
        ));
    }
    Ok(())
}

pub async fn run(app: &App, args: RestoreArgs) -> Result<(), CliError> {
    crate::spec::validate::check_dns_label("as", &args.new_name, crate::spec::validate::MAX_NAME)?;
    let target = args.to.as_deref().map(target_time).transpose()?;
    let target_ms = args.to.as_deref().map(epoch_ms).transpose()?;
    if app.config.backup.repo != RepoKind::S3 {
        return Err(ValidationError::new(
            "backup.repo",
            "restore reads a shared repository: set backup.repo = \"s3\" (a \"node\" repository lives and dies with its node)",
        )
        .into());
    }
    let spec = restore_spec(app, &args, target, target_ms)?;
    create_spec(app, spec, args.idempotency_key, args.on_failure, false).await
}

/// The source's spec, renamed, with where its data comes from.
fn restore_spec(
    app: &App,
    args: &RestoreArgs,
    target: Option<String>,
    target_ms: Option<i64>,
) -> Result<InstanceSpec, CliError> {
    let journal = app.journal_for(&format!("instance {:?}", args.name))?;
    let project = args
        .project
        .clone()
        .unwrap_or_else(|| app.config.defaults.project.clone());
    // A live instance, else the newest destroyed one of that name (its backups may be kept).
    let source = match journal.live_instance(&project, &args.name)? {
        Some(i) => i,
        None => journal
            .instances(true)?
            .into_iter()
            .find(|i| i.project == project && i.name == args.name)
            .ok_or_else(|| {
                CliError::NotFound(format!(
                    "instance {:?} not found in project {project:?}",
                    args.name
                ))
            })?,
    };
    let run = operations::latest_create_run(&journal, &source)?;
    operations::require_backups(&run, &args.name)?;
    let steps = journal.steps(&run.id)?;
    let backups = crate::journal::outputs_of(&steps, "register.backups").ok_or_else(|| {
        ValidationError::new(
            "name",
            format!(
                "{} has no backups recorded (its register.backups step never finished)",
                args.name
            ),
        )
    })?;
    if backups["repo"] != "s3" {
        return Err(ValidationError::new(
            "name",
            format!(
                "{} keeps its backups on its own node ({}); only instances backed up to S3 can be restored elsewhere",
                args.name,
                backups["repository"].as_str().unwrap_or("node")
            ),
        )
        .into());
    }
    if let Some(at) = target_ms {
        // When the backup step first started: its first backup finished after that. (Not its
        // `finished_at`: a destroy's rollback of the step rewrites it.)
        let first_backup = steps
            .iter()
            .find(|s| s.name == "register.backups")
            .and_then(|s| s.started_at);
        let destroyed = (source.state.as_str() == "destroyed").then_some(source.updated_at);
        check_target(
            args.to.as_deref().unwrap_or_default(),
            at,
            first_backup,
            destroyed,
        )?;
    }
    let mut spec = operations::run_spec(&run)?;
    spec.name = args.new_name.clone();
    if args.single {
        spec.ha = false;
        spec.replicas = 0;
        spec.replication = None;
    }
    spec.restore = Some(RestoreFrom {
        instance_id: source.id.clone(),
        instance: source.name.clone(),
        stanza: backups["stanza"].as_str().unwrap_or_default().to_string(),
        target_time: target,
    });
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_outside_what_the_backups_cover_are_refused_naming_to() {
        let (first, gone) = (1_000_000, 2_000_000);
        assert!(check_target("t", 1_500_000, Some(first), Some(gone)).is_ok());
        assert!(check_target("t", 1_500_000, Some(first), None).is_ok());
        for at in [999_999, 2_000_001] {
            let e = check_target("t", at, Some(first), Some(gone)).unwrap_err();
            assert_eq!(e.field, "to", "{at}");
        }
        assert_eq!(epoch_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
    }

    #[test]
    fn target_times_are_utc_and_not_in_the_future() {
        assert_eq!(
            target_time("2026-01-02T03:04:05Z").unwrap(),
            "2026-01-02 03:04:05.000000+00"
        );
        assert_eq!(
            target_time("2026-01-02T03:04:05.25Z").unwrap(),
            "2026-01-02 03:04:05.250000+00"
        );
        for bad in ["yesterday", "2026-01-02 03:04:05", "2999-01-01T00:00:00Z"] {
            assert_eq!(target_time(bad).unwrap_err().field, "to", "{bad}");
        }
    }
}
