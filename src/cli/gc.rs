//! `dbctl gc`: destroy expired instances, sweep leaked resources, prune old history.

use clap::Args;

use super::output::emit;
use crate::error::CliError;
use crate::journal::format_ms;
use crate::operations::App;
use crate::operations::gc::{GcAction, GcReport, GcRequest, Kind};
use crate::spec::ValidationError;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Removes (1) live instances whose --ttl expired, each by a normal destroy (journaled, leased, \
resumable); (2) leaks: resources dbctl made (local: run directories, QEMU and helper \
processes; aws: resources tagged with this state directory's dbctl:owner) that no live run of \
the journal owns, also when the journal file was deleted, and (without --provider) hosts-file \
blocks and Prometheus targets files of instances no longer live; (3) the journal history of instances \
destroyed longer ago than --keep-history. Never touches a run that is live or leased.\n\n\
Examples:\n  \
dbctl gc --dry-run\n  \
dbctl gc --provider aws --output json\n  \
dbctl gc --keep-history 7d")]
pub struct GcArgs {
    /// List what would be removed, and why; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Only this provider's expired instances, leftovers and history [default: local, the
    /// default provider and every provider the journal's instances used]
    #[arg(long)]
    pub provider: Option<String>,

    /// Prune the history of instances destroyed longer ago than this, e.g. 30d, 12h, 0s
    /// [default: config gc.keep_history, else 30d]
    #[arg(long, value_name = "AGE")]
    pub keep_history: Option<String>,
}

fn request(app: &App, args: GcArgs) -> Result<GcRequest, ValidationError> {
    if let Some(p) = &args.provider
        && !crate::provider::NAMES.contains(&p.as_str())
    {
        return Err(ValidationError::new(
            "provider",
            format!(
                "{p:?} is not a provider of this build (expected one of {})",
                crate::provider::NAMES.join(", ")
            ),
        ));
    }
    let (text, field) = match args.keep_history {
        Some(t) => (t, "keep_history"),
        None => (app.config.gc.keep_history.clone(), "gc.keep_history"),
    };
    let keep =
        crate::config::parse_history_age(&text).map_err(|e| ValidationError::new(field, e))?;
    Ok(GcRequest {
        dry_run: args.dry_run,
        provider: args.provider,
        keep_history: keep,
        keep_history_text: text,
    })
}

pub async fn run(app: &App, args: GcArgs) -> Result<(), CliError> {
    let req = request(app, args)?;
    let report = crate::operations::gc::gc(app, &req).await?;
    let failures = report.failures();
    if let Some(first) = failures.first() {
        if !app.json {
            println!("{}", render(&report).trim_end());
        }
        return Err(CliError::GcIncomplete {
            failed: failures.len(),
            total: report.actions.len(),
            first: format!(
                "{} {}: {}",
                first.provider,
                first.run.as_deref().unwrap_or("scan"),
                first.error.as_deref().unwrap_or_default()
            ),
            report: Box::new(serde_json::to_value(&report).expect("report serializes")),
        });
    }
    emit(app, &report, || render(&report));
    Ok(())
}

fn verb(a: &GcAction, dry_run: bool) -> &'static str {
    match (a.action, dry_run, a.error.is_some()) {
        (Kind::Skip, ..) => "skip",
        (_, _, true) => "FAILED",
        (Kind::Destroy, true, _) => "would destroy",
        (Kind::Destroy, false, _) => "destroyed",
        (Kind::Sweep, true, _) => "would sweep",
        (Kind::Sweep, false, _) => "swept",
    }
}

/// One line per action (`VERB  TARGET (PROVIDER): WHY`), its resources indented below, then
/// the history line and, for a dry run, that nothing changed.
fn render(r: &GcReport) -> String {
    let mut out = String::new();
    for a in &r.actions {
        let run = a.run.as_deref().unwrap_or("-");
        let target = match (&a.instance, &a.run) {
            (Some(i), Some(_)) => format!("instance {i} (run {run}, {})", a.provider),
            (Some(i), None) => format!("instance {i} ({})", a.provider),
            (None, _) => format!("run {run} ({})", a.provider),
        };
        out += &format!("{:<13}  {target}: {}\n", verb(a, r.dry_run), a.reason);
        for res in &a.resources {
            out += &format!("    {res}\n");
        }
        if let Some(e) = &a.error {
            out += &format!("    error: {e}\n");
        }
    }
    if let Some(h) = &r.history {
        let p = &h.rows;
        out += &format!(
            "{:<13}  history of {} destroyed instance(s) ({} runs, {} steps, {} events, {} resources): destroyed before {} (keep_history {})\n",
            if r.dry_run { "would prune" } else { "pruned" },
            p.instances,
            p.runs,
            p.steps,
            p.events,
            p.resources,
            format_ms(h.cutoff),
            h.keep_history
        );
        if p.kept_restorable > 0 {
            out += &format!(
                "{:<13}  history of {} destroyed instance(s) whose backups are kept in S3 (dbctl restore reads it)\n",
                "keep", p.kept_restorable
            );
        }
    }
    if r.dry_run {
        out += "dry run: nothing was changed\n";
    } else if r.actions.is_empty() && r.history.as_ref().is_none_or(|h| h.rows.instances == 0) {
        out += "gc: nothing to do\n";
    }
    out
}
