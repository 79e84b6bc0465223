//! The whole fault matrix of the local flows on real VMs, on demand (`scripts/fault-matrix
//! --vm`; `.ci/run` runs one fault per stage, in `fault_matrix.rs`): every step of the create
//! flow, single and HA, times every fault — crash before the side effect, crash after it before
//! the journal write, a transient error, a permanent error, the step executed twice, its undo
//! executed twice.
//!
//! **Resume** cells are chained, one run per fault: a VM boot is the dearest thing here, and a
//! fault at one step leaves the others untouched. The run is armed with the fault at every step
//! not yet hit; the first step to reach its fault point takes it (the process dies, or the step
//! fails for good and the run is kept) and `dbctl resume` carries on, armed at the steps still
//! left, until every step has taken the fault once. The last resume must reach RUNNING, verified
//! (one QEMU per node, nothing live twice in the journal, `SELECT 1` through psql over verified
//! TLS, both replicas streaming for HA); that verdict is every cell's in the column. A transient
//! error and a step done twice do not stop a run, so those columns are one run each with every
//! step armed at once. The time of a chained cell is that of the process that took the fault;
//! of a one-run cell, the step's own time.
//!
//! **Rollback** cells are each a fresh run, faulted at that one step and rolled back (by
//! `dbctl rollback`, or the automatic one for a permanent failure): no QEMU, hub or relay
//! process of the run, no run directory or file named for it, no live resource in the journal.
//! A transient error or a double step does not stop a run, so the run is stopped by a crash
//! where the first step after it starts. "undo twice" is one destroy of the RUNNING cluster with
//! every undo done twice. `DBCTL_MATRIX_ROLLBACK=none|all|STEP,STEP` picks the rollback cells
//! (default all): on 2 TCG cores a fresh HA run per cell does not fit in an afternoon;
//! `DBCTL_MATRIX_RESUME=none` leaves the resume columns out (to add rollback cells later).

#[path = "../examples/support/psql.rs"]
mod psql;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use dbctl::journal::ResourceState;
use psql::psql;
use serde_json::Value;
use support::matrix::{Cell, Fault, Outcome, check, report, table};
use support::{Env, qemu_processes, stderr, was_killed};

struct Flow {
    name: &'static str,
    args: &'static [&'static str],
    nodes: usize,
}

const SINGLE: Flow = Flow {
    name: "local single",
    args: &["--disk-gib", "1"],
    nodes: 1,
};

const HA: Flow = Flow {
    name: "local HA",
    args: &["--ha", "--disk-gib", "1"],
    nodes: 3,
};

const NAME: &str = "fm";

struct Step {
    name: String,
    deps: Vec<String>,
}

impl Flow {
    fn create(&self, keep: bool) -> Vec<&'static str> {
        let mut a = vec!["create", NAME];
        a.extend(self.args);
        if keep {
            a.extend(["--on-failure", "keep"]);
        }
        a
    }

    fn steps(&self) -> Vec<Step> {
        let mut a = vec!["plan", NAME];
        a.extend(self.args);
        let (code, plan) = Env::local().json(&a);
        assert_eq!(code, 0, "{plan}");
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Step {
                name: s["name"].as_str().unwrap().into(),
                deps: s["deps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().into())
                    .collect(),
            })
            .collect()
    }
}

fn status(env: &Env, run: &str) -> Value {
    env.json(&["status", run]).1
}

fn steps_in(st: &Value) -> &Vec<Value> {
    st["steps"].as_array().unwrap()
}

fn done(st: &Value) -> BTreeSet<String> {
    steps_in(st)
        .iter()
        .filter(|s| s["state"] == "done")
        .map(|s| s["name"].as_str().unwrap().into())
        .collect()
}

/// The step whose injected crash killed the process, from its last words.
fn crashed_at(out: &std::process::Output) -> Option<String> {
    let err = stderr(out);
    let at = err.split("injected fault at ").nth(1)?;
    Some(at.split('@').next()?.to_string())
}

/// Steps whose attempt failed with an injected error (what a kept run reports per step).
fn failed_by_fault(st: &Value) -> Vec<String> {
    steps_in(st)
        .iter()
        .filter(|s| {
            s["error"]
                .as_str()
                .is_some_and(|e| e.contains("injected fault at"))
        })
        .map(|s| s["name"].as_str().unwrap().into())
        .collect()
}

/// RUNNING and serving: one QEMU per node, no resource live twice in the journal, a TLS
/// `SELECT 1` through what `dbctl connect` hands out, and for HA every replica streaming.
async fn verified(env: &Env, run: &str, flow: &Flow) -> Result<(), String> {
    let st = status(env, run);
    check(st["instance"]["state"] == "running", || {
        format!("instance not running: {}", st["instance"])
    })?;
    let vms = qemu_processes(run);
    check(vms == flow.nodes, || {
        format!("{vms} QEMU processes for {} nodes", flow.nodes)
    })?;
    let mut live: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in env.journal().resources(run).unwrap() {
        if r.state != ResourceState::Deleted {
            *live.entry((r.kind.clone(), r.name.clone())).or_default() += 1;
        }
    }
    check(live.values().all(|n| *n == 1), || {
        format!("a resource is live twice: {live:?}")
    })?;
    // What a user's client does: libpq with the URI `dbctl connect` hands out (for HA, every
    // node with target_session_attrs=read-write), the server verified against dbctl's CA.
    let (code, c) = env.json(&["connect", NAME]);
    let uri = c["uri"].as_str().unwrap_or_default();
    check(code == 0 && uri.contains("sslmode=verify-full"), || {
        format!("connect: {c}")
    })?;
    let got = psql(
        uri,
        "SELECT 1 || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )?;
    check(got == "1 true", || {
        format!("SELECT 1 over TLS gave {got:?}")
    })?;
    if flow.nodes > 1 {
        let streaming = st["cluster"]["replication"]
            .as_array()
            .map(|r| r.iter().filter(|s| s["state"] == "streaming").count())
            .unwrap_or(0);
        check(streaming == flow.nodes - 1, || {
            format!("{streaming} replicas streaming: {}", st["cluster"])
        })?;
    }
    Ok(())
}

/// Processes whose command line names the run (QEMU, the network hub, relays).
fn processes_of(run: &str) -> Vec<String> {
    support::processes()
        .into_iter()
        .filter(|(_, c)| c.contains(run))
        .map(|(pid, c)| format!("{pid} {c}"))
        .collect()
}

/// Files and directories under the test's home whose path names the run (the journal aside).
fn files_of(env: &Env, run: &str) -> Vec<String> {
    fn walk(dir: &std::path::Path, run: &str, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.to_string_lossy().contains(run) {
                found.push(p.display().to_string());
            } else if p.is_dir() {
                walk(&p, run, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(env.dir.path(), run, &mut found);
    found
}

/// Nothing of the run is left: no process, no file, no live resource in the journal.
fn nothing_left(env: &Env, run: &str) -> Result<(), String> {
    let procs = processes_of(run);
    check(procs.is_empty(), || format!("processes left: {procs:?}"))?;
    let files = files_of(env, run);
    check(files.is_empty(), || format!("files left: {files:?}"))?;
    let live = env.live_resources(run);
    check(live.is_empty(), || format!("live in the journal: {live:?}"))
}

fn exit0(out: &std::process::Output, what: &str) -> Result<(), String> {
    check(out.status.code() == Some(0), || {
        format!("{what}: {:?}: {}", out.status, stderr(out))
    })
}

/// What a resume column hands back: each step's outcome, the run (to destroy) and its env.
struct Column {
    cells: BTreeMap<String, Outcome>,
    env: Env,
    run: Option<String>,
}

/// A crash (before or after) or a permanent failure at every step, one step per process, then
/// the last resume to RUNNING, verified.
async fn chained(flow: &Flow, steps: &[Step], fault: Fault) -> Column {
    let env = Env::local();
    let (point, action) = match fault {
        Fault::Permanent => ("after", "permanent"),
        f => (f.crash_point(), "crash"),
    };
    let mut hit: BTreeMap<String, f64> = BTreeMap::new();
    let mut run: Option<String> = None;
    let mut broken: Option<String> = None;
    while hit.len() < steps.len() {
        let finished = run
            .as_ref()
            .map(|r| done(&status(&env, r)))
            .unwrap_or_default();
        let armed: Vec<&str> = steps
            .iter()
            .map(|s| s.name.as_str())
            .filter(|s| !hit.contains_key(*s) && !finished.contains(*s))
            .collect();
        if armed.is_empty() {
            broken = Some(format!(
                "steps done without taking the fault: {:?}",
                steps
                    .iter()
                    .filter(|s| !hit.contains_key(&s.name))
                    .map(|s| &s.name)
                    .collect::<Vec<_>>()
            ));
            break;
        }
        let rules: Vec<String> = armed
            .iter()
            .map(|s| format!("{s}@{point}={action}"))
            .collect();
        let t0 = Instant::now();
        let out = match &run {
            None => env.run(&flow.create(true), Some(&rules.join(";"))),
            Some(r) => env.run(&["resume", r], Some(&rules.join(";"))),
        };
        let secs = t0.elapsed().as_secs_f64();
        run = Some(env.last_run());
        let took: Vec<String> = match fault {
            Fault::Permanent if out.status.code() == Some(5) => {
                failed_by_fault(&status(&env, run.as_ref().unwrap()))
            }
            Fault::Permanent => vec![],
            _ if was_killed(&out) => crashed_at(&out).into_iter().collect(),
            _ => vec![],
        };
        if took.is_empty() {
            broken = Some(format!(
                "armed {armed:?}, no fault taken: {:?}: {}",
                out.status,
                stderr(&out)
            ));
            break;
        }
        eprintln!("{} / {}: {took:?} in {secs:.0} s", flow.name, fault.label());
        for s in took {
            hit.insert(s, secs);
        }
    }
    let verdict = match (&broken, &run) {
        (Some(why), _) => Err(why.clone()),
        (None, None) => Err("no run".into()),
        (None, Some(r)) => {
            let out = env.run(&["resume", r], None);
            match exit0(&out, "the last resume") {
                Ok(()) => verified(&env, r, flow).await,
                Err(e) => Err(e),
            }
        }
    };
    let cells = steps
        .iter()
        .map(|s| {
            let outcome = match (hit.get(&s.name), &verdict) {
                (Some(secs), v) => (v.clone(), *secs),
                (None, _) => (Err("the fault was never taken here".into()), 0.0),
            };
            (s.name.clone(), outcome)
        })
        .collect();
    Column { cells, env, run }
}

/// A transient error after every step's side effect, or every step done twice, in one run.
async fn one_run(flow: &Flow, steps: &[Step], fault: Fault) -> Column {
    let env = Env::local();
    let rule = match fault {
        Fault::Transient => "after=transient*1",
        _ => "after=repeat",
    };
    let rules: Vec<String> = steps.iter().map(|s| format!("{}@{rule}", s.name)).collect();
    let out = env.run(&flow.create(true), Some(&rules.join(";")));
    let run = env.last_run();
    let verdict = match exit0(&out, "create") {
        Ok(()) => verified(&env, &run, flow).await,
        Err(e) => Err(e),
    };
    let st = status(&env, &run);
    let cells = steps
        .iter()
        .map(|s| {
            let j = steps_in(&st).iter().find(|j| j["name"] == s.name.as_str());
            let secs = j
                .and_then(|j| Some((j["finished_at"].as_i64()? - j["started_at"].as_i64()?) as f64))
                .unwrap_or(0.0)
                / 1000.0;
            let retried = j.and_then(|j| j["attempts"].as_u64()).unwrap_or(0) >= 2;
            let v = match (&verdict, fault) {
                (Ok(()), Fault::Transient) if !retried => Err("not retried".to_string()),
                (v, _) => v.clone(),
            };
            (s.name.clone(), (v, secs))
        })
        .collect();
    Column {
        cells,
        env,
        run: Some(run),
    }
}

/// Destroys a column's run, checking nothing is left (every undo done twice when asked).
fn destroy(col: &Column, steps: &[Step], undo_twice: bool) -> Outcome {
    let t0 = Instant::now();
    let Some(run) = &col.run else {
        return (Err("no run".into()), 0.0);
    };
    let rules: Vec<String> = steps
        .iter()
        .map(|s| format!("{}@undo-after=repeat", s.name))
        .collect();
    let faults = undo_twice.then(|| rules.join(";"));
    let out = col
        .env
        .run(&["destroy", NAME, "--purge-backups"], faults.as_deref());
    let r = exit0(&out, "destroy").and_then(|()| nothing_left(&col.env, run));
    (r, t0.elapsed().as_secs_f64())
}

/// One fresh run faulted at `step`, rolled back, nothing left.
fn rollback_cell(flow: &Flow, steps: &[Step], step: &Step, fault: Fault) -> Result<(), String> {
    let env = Env::local();
    let killed = |out: &std::process::Output| {
        check(was_killed(out), || {
            format!(
                "expected the injected crash: {:?}: {}",
                out.status,
                stderr(out)
            )
        })
    };
    match fault {
        Fault::CrashBefore | Fault::CrashAfter => {
            let rule = format!("{}@{}=crash", step.name, fault.crash_point());
            killed(&env.run(&flow.create(false), Some(&rule)))?;
        }
        Fault::Transient | Fault::Twice => {
            let action = if fault == Fault::Transient {
                "transient*1"
            } else {
                "repeat"
            };
            // Stopped where the first step after it starts: the fault is behind the run.
            let next: Vec<String> = steps
                .iter()
                .filter(|s| s.deps.contains(&step.name))
                .map(|s| format!("{}@before=crash", s.name))
                .collect();
            let rules = format!("{}@after={action};{}", step.name, next.join(";"));
            let out = env.run(&flow.create(true), Some(&rules));
            if next.is_empty() {
                exit0(&out, "create")?;
            } else {
                killed(&out)?;
            }
        }
        Fault::Permanent => {
            let rule = format!("{}@after=permanent", step.name);
            let out = env.run(&flow.create(false), Some(&rule));
            check(out.status.code() == Some(4), || {
                format!(
                    "expected exit 4 (rolled back): {:?}: {}",
                    out.status,
                    stderr(&out)
                )
            })?;
        }
        Fault::UndoTwice => unreachable!("one destroy covers the undo-twice column"),
    }
    let run = env.last_run();
    if fault != Fault::Permanent {
        exit0(&env.run(&["rollback", &run], None), "rollback")?;
    }
    nothing_left(&env, &run)
}

/// `DBCTL_MATRIX_RESUME=none` leaves the resume columns (and the undo-twice destroy) out: a
/// second on-demand run can then add rollback cells alone.
fn resume_wanted() -> bool {
    std::env::var("DBCTL_MATRIX_RESUME").as_deref() != Ok("none")
}

fn rollback_wanted(step: &str) -> bool {
    match std::env::var("DBCTL_MATRIX_ROLLBACK").as_deref() {
        Err(_) | Ok("all") => true,
        Ok("none") => false,
        Ok(list) => list.split(',').any(|s| s.trim() == step),
    }
}

async fn whole_matrix(flow: &Flow) {
    let steps = flow.steps();
    let t0 = Instant::now();
    let mut resume: BTreeMap<Fault, BTreeMap<String, Outcome>> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut undo_twice = None;
    let columns = [
        Fault::CrashBefore,
        Fault::CrashAfter,
        Fault::Permanent,
        Fault::Transient,
        Fault::Twice,
    ];
    for fault in columns.into_iter().filter(|_| resume_wanted()) {
        let t = Instant::now();
        let col = match fault {
            Fault::Transient | Fault::Twice => one_run(flow, &steps, fault).await,
            _ => chained(flow, &steps, fault).await,
        };
        let twice = fault == Fault::Twice;
        let d = destroy(&col, &steps, twice);
        notes.push(format!(
            "resume column '{}': {:.0} s; its destroy{}: {} in {:.0} s",
            fault.label(),
            t.elapsed().as_secs_f64() - d.1,
            if twice { " (every undo twice)" } else { "" },
            match &d.0 {
                Ok(()) => "clean".to_string(),
                Err(e) => format!("FAIL ({e})"),
            },
            d.1
        ));
        if twice {
            undo_twice = Some(d);
        }
        resume.insert(fault, col.cells);
    }
    let mut cells = Vec::new();
    for step in &steps {
        for fault in Fault::ALL {
            let rollback = match fault {
                Fault::UndoTwice => undo_twice.clone(),
                _ if !rollback_wanted(&step.name) => None,
                _ => {
                    let t = Instant::now();
                    let r = rollback_cell(flow, &steps, step, fault);
                    eprintln!(
                        "{} / {} / {} rollback: {}",
                        flow.name,
                        step.name,
                        fault.label(),
                        if r.is_ok() { "pass" } else { "FAIL" }
                    );
                    Some((r, t.elapsed().as_secs_f64()))
                }
            };
            cells.push(Cell {
                step: step.name.clone(),
                fault,
                resume: resume.get(&fault).and_then(|c| c.get(&step.name)).cloned(),
                rollback,
            });
        }
    }
    notes.push(
        "resume: chained columns time the process that took the fault; one-run columns (transient, \
         step twice) the step itself. undo twice: one destroy, its whole time in every cell."
            .into(),
    );
    let t = table(flow.name, &cells, t0.elapsed().as_secs_f64(), &notes);
    report(&t);
    assert!(cells.iter().all(Cell::passed), "{t}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the whole single-node VM matrix takes about 100 minutes: scripts/fault-matrix --vm=single"]
async fn local_single_every_step_times_every_fault() {
    whole_matrix(&SINGLE).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the whole HA matrix takes hours: scripts/fault-matrix --vm"]
async fn local_ha_every_step_times_every_fault() {
    whole_matrix(&HA).await;
}
