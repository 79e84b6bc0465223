//! `dbctl gc`: destroys the instances whose TTL ran out, sweeps what runs left on a provider
//! that no live run owns, and prunes the history of instances destroyed long ago.
//!
//! Safe by construction:
//! * an expired instance is destroyed by the ordinary rollback of its create run (journaled,
//!   under the run's lease, resumable); an instance with a live lease on any run is skipped;
//! * a provider is scanned *before* the journal is read (a run is recorded before it creates
//!   anything, so whatever the scan saw belongs to a run that read can see), and each leaked
//!   run is checked again right before its removal; runs of the journals beside this one (same
//!   state directory) count as owning;
//! * history goes only for destroyed instances with no leased run (`journal::gc`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::App;
use crate::error::CliError;
use crate::journal::gc::{InstanceKey, owning_instances_beside, owning_runs_beside};
use crate::journal::lease::is_live;
use crate::journal::resources::ResourceState;
use crate::journal::{Journal, Pruned, RunState, format_ms, now_ms};
use crate::register::leftovers::{self, Published};

/// What `gc` was asked to do (validated).
pub struct GcRequest {
    pub dry_run: bool,
    /// Only this provider (TTL, leaks and history); `None`: every provider in use.
    pub provider: Option<String>,
    /// Prune the history of instances destroyed longer ago than this.
    pub keep_history: Duration,
    /// `keep_history` as the user wrote it.
    pub keep_history_text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An expired instance: destroyed like `dbctl destroy`.
    Destroy,
    /// A leaked run's leftovers on a provider: removed directly.
    Sweep,
    /// Something gc found and leaves alone (and why).
    Skip,
}

/// One thing gc did, or would do in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct GcAction {
    pub action: Kind,
    pub provider: String,
    pub run: Option<String>,
    /// `project/name` of the instance (destroy, skip).
    pub instance: Option<String>,
    /// What goes (or would go).
    pub resources: Vec<String>,
    pub reason: String,
    /// Done (never in a dry run).
    pub done: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryPrune {
    pub keep_history: String,
    /// Destroyed before this (ms since the epoch) is pruned.
    pub cutoff: i64,
    #[serde(flatten)]
    pub rows: Pruned,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub actions: Vec<GcAction>,
    /// `null` when there is no journal.
    pub history: Option<HistoryPrune>,
}

impl GcReport {
    pub fn failures(&self) -> Vec<&GcAction> {
        self.actions.iter().filter(|a| a.error.is_some()).collect()
    }
}

pub async fn gc(app: &App, req: &GcRequest) -> Result<GcReport, CliError> {
    let journal = app.existing_journal()?;
    let mut actions = Vec::new();
    if let Some(j) = &journal {
        expire(app, j, req, &mut actions).await?;
    }
    for provider in providers_to_scan(app, journal.as_deref(), req)? {
        sweep(app, journal.as_deref(), &provider, req, &mut actions).await?;
    }
    if req.provider.is_none() {
        sweep_published(app, journal.as_deref(), req, &mut actions)?;
    }
    let history = match &journal {
        Some(j) => {
            let cutoff = now_ms() - req.keep_history.as_millis() as i64;
            let rows = j.prune_history(cutoff, req.provider.as_deref(), req.dry_run)?;
            Some(HistoryPrune {
                keep_history: req.keep_history_text.clone(),
                cutoff,
                rows,
                done: !req.dry_run,
            })
        }
        None => None,
    };
    Ok(GcReport {
        dry_run: req.dry_run,
        actions,
        history,
    })
}

/// Destroys (or lists) every live instance whose TTL ran out, unless a run of it is leased.
async fn expire(
    app: &App,
    journal: &Arc<Journal>,
    req: &GcRequest,
    actions: &mut Vec<GcAction>,
) -> Result<(), CliError> {
    for inst in journal.expired_instances(now_ms())? {
        if req.provider.as_ref().is_some_and(|p| *p != inst.provider) {
            continue;
        }
        let runs = journal.runs_of_instance(&inst.id)?;
        let Some(create) = runs.iter().find(|r| r.operation == "create") else {
            continue;
        };
        let expired = format!(
            "its TTL expired at {}",
            format_ms(inst.expires_at.unwrap_or_default())
        );
        let mut action = GcAction {
            action: Kind::Destroy,
            provider: inst.provider.clone(),
            run: Some(create.id.clone()),
            instance: Some(format!("{}/{}", inst.project, inst.name)),
            resources: journal
                .resources(&create.id)?
                .into_iter()
                .filter(|r| r.state != ResourceState::Deleted)
                .map(|r| match r.provider_id {
                    Some(id) => format!("{} {} ({id})", r.kind, r.name),
                    None => format!("{} {}", r.kind, r.name),
                })
                .collect(),
            reason: expired.clone(),
            done: false,
            error: None,
        };
        let leased = runs
            .iter()
            .find_map(|r| r.holder.as_ref().filter(|h| is_live(h)).map(|h| (r, h)));
        if let Some((run, h)) = leased {
            action.action = Kind::Skip;
            action.reason = format!(
                "{expired}, but pid {} on {} drives {} (lease until {})",
                h.pid,
                h.host,
                run.id,
                format_ms(h.expires_at)
            );
        } else if !req.dry_run {
            let reporter = crate::progress::reporter(!app.json);
            match super::drive_rollback(app, journal.clone(), &create.id, reporter, false).await {
                Ok(_) => action.done = true,
                Err(e @ CliError::Interrupted { .. }) => return Err(e),
                // Taken between our look and the rollback's: someone drives it now.
                Err(CliError::LeaseHeld { run, holder }) => {
                    action.action = Kind::Skip;
                    action.reason = format!(
                        "{expired}, but pid {} on {} took {run} meanwhile",
                        holder.pid, holder.host
                    );
                }
                Err(e) => action.error = Some(e.to_string()),
            }
        }
        actions.push(action);
    }
    Ok(())
}

/// `--provider`, else local (always cheap to scan), the default provider, and every provider
/// the journal's instances used.
fn providers_to_scan(
    app: &App,
    journal: Option<&Journal>,
    req: &GcRequest,
) -> Result<Vec<String>, CliError> {
    if let Some(p) = &req.provider {
        return Ok(vec![p.clone()]);
    }
    let mut all = BTreeSet::from(["local".to_string(), app.config.defaults.provider.clone()]);
    if let Some(j) = journal {
        all.extend(j.providers()?);
    }
    Ok(all.into_iter().collect())
}

/// Runs that own what they made: not rolled back or leased, here or in a journal beside.
fn owning(app: &App, journal: Option<&Journal>) -> Result<HashSet<String>, CliError> {
    let mut owning = owning_runs_beside(&app.journal_path)?;
    if let Some(j) = journal {
        owning.extend(j.owning_runs()?);
    }
    Ok(owning)
}

/// Why a run's leftovers are a leak.
fn why_leaked(app: &App, journal: Option<&Journal>, run: &str) -> Result<String, CliError> {
    let Some(j) = journal else {
        return Ok(format!(
            "no journal at {}: no run owns it",
            app.journal_path.display()
        ));
    };
    Ok(match j.run(run)? {
        Some(r) if r.state == RunState::RolledBack => format!(
            "left behind by {run}, rolled back at {}",
            format_ms(r.finished_at.unwrap_or(r.updated_at))
        ),
        Some(r) => format!("{run} is {}", r.state),
        None => format!("{run} is not in the journal"),
    })
}

/// Finds the provider's leftovers of runs nothing owns and removes them (or lists them).
async fn sweep(
    app: &App,
    journal: Option<&Journal>,
    name: &str,
    req: &GcRequest,
    actions: &mut Vec<GcAction>,
) -> Result<(), CliError> {
    let failed = |error: String| GcAction {
        action: Kind::Sweep,
        provider: name.to_string(),
        run: None,
        instance: None,
        resources: Vec::new(),
        reason: "scan for leftovers".into(),
        done: false,
        error: Some(error),
    };
    let provider = match app.provider(name) {
        Ok(p) => p,
        Err(e) if req.provider.is_some() => return Err(e.into()),
        Err(e) => {
            actions.push(failed(e.to_string()));
            return Ok(());
        }
    };
    // First the provider, then the journal: see the module comment.
    let found = match provider.leftovers().await {
        Ok(f) => f,
        Err(e) => {
            actions.push(failed(e));
            return Ok(());
        }
    };
    let owned = owning(app, journal)?;
    let mut by_run: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in found.into_iter().filter(|l| !owned.contains(&l.run_id)) {
        by_run.entry(l.run_id).or_default().push(l.what);
    }
    for (run, resources) in by_run {
        let mut action = GcAction {
            action: Kind::Sweep,
            provider: name.to_string(),
            reason: why_leaked(app, journal, &run)?,
            run: Some(run.clone()),
            instance: None,
            resources,
            done: false,
            error: None,
        };
        if !req.dry_run {
            if owning(app, journal)?.contains(&run) {
                action.action = Kind::Skip;
                action.reason = format!("{run} was recorded meanwhile");
            } else {
                match provider.remove_leftovers(&run).await {
                    Ok(()) => action.done = true,
                    Err(e) => action.error = Some(e),
                }
            }
        }
        actions.push(action);
    }
    Ok(())
}

/// What `gc` reports as the provider of the register stage's own files.
pub const PUBLISHED: &str = "register";

/// Instances that may still use what was published for them, here or in a journal beside.
fn owning_instances(
    app: &App,
    journal: Option<&Journal>,
) -> Result<HashSet<InstanceKey>, CliError> {
    let mut owners = owning_instances_beside(&app.journal_path)?;
    if let Some(j) = journal {
        owners.extend(j.owning_instances()?);
    }
    Ok(owners)
}

/// Why a published entry is a leak.
fn why_unowned(app: &App, journal: Option<&Journal>, p: &Published) -> Result<String, CliError> {
    let Some(j) = journal else {
        return Ok(format!(
            "no journal at {}: no instance owns it",
            app.journal_path.display()
        ));
    };
    Ok(match p {
        Published::HostsBlock { instance, .. } => match j.instance(instance)? {
            Some(i) => format!("{instance} was destroyed at {}", format_ms(i.updated_at)),
            None => format!("{instance} is not in the journal"),
        },
        Published::Targets { project, name, .. } => {
            format!("no live instance {project}/{name} in the journal")
        }
    })
}

/// The register stage's hosts blocks and Prometheus target files that no owning instance
/// claims: left by a run whose journal rows, or whole journal, were lost. Swept only when no
/// `--provider` narrows gc (they serve instances of every provider). Same order as the
/// provider sweep: the files first, then the journal, and again right before each removal.
fn sweep_published(
    app: &App,
    journal: Option<&Journal>,
    req: &GcRequest,
    actions: &mut Vec<GcAction>,
) -> Result<(), CliError> {
    let settings = crate::register::Settings::new(&app.config, &app.state_dir());
    let found = match leftovers::scan(&settings) {
        Ok(f) => f,
        Err(e) => {
            actions.push(GcAction {
                action: Kind::Sweep,
                provider: PUBLISHED.into(),
                run: None,
                instance: None,
                resources: Vec::new(),
                reason: "scan of the hosts file and Prometheus targets".into(),
                done: false,
                error: Some(e.to_string()),
            });
            return Ok(());
        }
    };
    let owners = owning_instances(app, journal)?;
    for p in found.into_iter().filter(|p| !p.is_owned(&owners)) {
        let mut action = GcAction {
            action: Kind::Sweep,
            provider: PUBLISHED.into(),
            run: None,
            instance: Some(p.instance()),
            resources: vec![p.describe()],
            reason: why_unowned(app, journal, &p)?,
            done: false,
            error: None,
        };
        if !req.dry_run {
            if p.is_owned(&owning_instances(app, journal)?) {
                action.action = Kind::Skip;
                action.reason = format!("{} was recorded meanwhile", p.instance());
            } else {
                match p.remove() {
                    Ok(()) => action.done = true,
                    Err(e) => action.error = Some(e.to_string()),
                }
            }
        }
        actions.push(action);
    }
    Ok(())
}
