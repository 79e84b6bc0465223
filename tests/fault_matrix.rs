//! The fault matrix of the aws flow, through the real binary against moto_server: for every
//! provision step and every fault — crash before the side effect, crash after it before the
//! journal write, a transient error after it, a permanent error after it, the step executed
//! twice, its undo executed twice — two checks, each from a fresh run:
//!
//! * **resume**: after the fault, `dbctl resume` (or the run itself, for faults it survives)
//!   carries the run forward to the deploy stage with exactly one of every resource tagged with
//!   the run. moto has no machines, so deploy is as far as any aws run gets here (it fails there
//!   for want of an SSH host key); past it the cells wait for the EC2 twin (issue 13).
//! * **rollback**: `dbctl rollback` (or the automatic one, for a permanent failure) leaves zero
//!   resources tagged with the run in EC2 and no live resource in the journal.
//!
//! It prints one table, pass/fail per cell with the time taken; `scripts/fault-matrix` runs it.
//! Beside it, the local flow on one real VM with one fault per stage (the VM matrix's share of
//! `.ci/run`).

mod support;

use std::time::Instant;

use support::matrix::{Cell, Fault, check, report, table, timed};
use support::{Env, moto, stderr, was_killed};

/// Exit 5 at the deploy stage, for want of SSH: the furthest an aws run gets on moto.
fn reached_deploy(out: &std::process::Output) -> Result<(), String> {
    let err = stderr(out);
    check(
        out.status.code() == Some(5) && err.contains("no SSH host key"),
        || format!("expected exit 5 at deploy, got {:?}: {err}", out.status),
    )
}

/// Exactly one of each kind of resource the provision stage makes, nothing doubled.
async fn exactly_one_of_each(run: &str) -> Result<(), String> {
    let kinds = support::aws::tagged_by_kind(run).await;
    let wanted = [
        "Vpc",
        "SecurityGroup",
        "Instance",
        "Volume:provision.disk.primary",
        "KeyPair",
    ];
    check(
        wanted.iter().all(|k| kinds.get(*k) == Some(&1)) && kinds.values().all(|n| *n == 1),
        || format!("not exactly one of each: {kinds:?}"),
    )
}

async fn nothing_left(env: &Env, run: &str) -> Result<(), String> {
    let kinds = support::aws::tagged_by_kind(run).await;
    check(kinds.is_empty(), || format!("left in EC2: {kinds:?}"))?;
    let live = env.live_resources(run);
    check(live.is_empty(), || format!("live in the journal: {live:?}"))
}

fn rollback(env: &Env, run: &str, faults: Option<&str>) -> Result<(), String> {
    let out = env.run(&["rollback", run], faults);
    check(out.status.code() == Some(0), || {
        format!("rollback: {:?}: {}", out.status, stderr(&out))
    })
}

fn killed(out: &std::process::Output) -> Result<(), String> {
    check(was_killed(out), || {
        format!(
            "expected the injected SIGKILL, got {:?}: {}",
            out.status,
            stderr(out)
        )
    })
}

const KEEP: [&str; 4] = ["create", "db", "--on-failure", "keep"];

/// Fault → resume → the run reaches deploy with one of each; then a clean rollback.
async fn resume_cell(step: &str, fault: Fault) -> Result<(), String> {
    let env = support::aws::env();
    let rule = |point: &str, action: &str| format!("{step}@{point}={action}");
    match fault {
        Fault::CrashBefore | Fault::CrashAfter => {
            killed(&env.run(&KEEP, Some(&rule(fault.crash_point(), "crash"))))?;
            let run = env.last_run();
            reached_deploy(&env.run(&["resume", &run], None))?;
        }
        Fault::Transient => {
            reached_deploy(&env.run(&KEEP, Some(&rule("after", "transient*1"))))?;
            let (_, st) = env.json(&["status", &env.last_run()]);
            let s = st["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == step)
                .unwrap();
            check(s["attempts"].as_u64() >= Some(2), || {
                format!("not retried: {s}")
            })?;
        }
        Fault::Permanent => {
            let out = env.run(&KEEP, Some(&rule("after", "permanent*1")));
            check(
                out.status.code() == Some(5) && stderr(&out).contains(step),
                || format!("expected a kept failure at {step}: {}", stderr(&out)),
            )?;
            // The cause is gone (the rule fires on attempt 1 only): resume goes on from there.
            reached_deploy(&env.run(&["resume", &env.last_run()], None))?;
        }
        Fault::Twice => reached_deploy(&env.run(&KEEP, Some(&rule("after", "repeat"))))?,
        Fault::UndoTwice => unreachable!("an undo happens only in a rollback"),
    }
    let run = env.last_run();
    exactly_one_of_each(&run).await?;
    rollback(&env, &run, None)?;
    nothing_left(&env, &run).await
}

/// Fault → rollback (or the automatic one) → nothing tagged with the run, nothing live.
async fn rollback_cell(step: &str, fault: Fault) -> Result<(), String> {
    let env = support::aws::env();
    let rule = |point: &str, action: &str| format!("{step}@{point}={action}");
    match fault {
        Fault::CrashBefore | Fault::CrashAfter => {
            killed(&env.run(&["create", "db"], Some(&rule(fault.crash_point(), "crash"))))?;
            rollback(&env, &env.last_run(), None)?;
        }
        Fault::Transient => {
            reached_deploy(&env.run(&KEEP, Some(&rule("after", "transient*1"))))?;
            rollback(&env, &env.last_run(), None)?;
        }
        Fault::Permanent => {
            let out = env.run(&["create", "db"], Some(&rule("after", "permanent")));
            check(out.status.code() == Some(4), || {
                format!("expected exit 4 (rolled back): {}", stderr(&out))
            })?;
        }
        Fault::Twice => {
            reached_deploy(&env.run(&KEEP, Some(&rule("after", "repeat"))))?;
            rollback(&env, &env.last_run(), None)?;
        }
        Fault::UndoTwice => {
            reached_deploy(&env.run(&KEEP, None))?;
            rollback(&env, &env.last_run(), Some(&rule("undo-after", "repeat")))?;
        }
    }
    nothing_left(&env, &env.last_run()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_flow_every_provision_step_times_every_fault_resumes_and_rolls_back_clean() {
    let _moto = moto::session().await;
    let env = support::aws::env();
    let (_, plan) = env.json(&["plan", "db", "--provider", "aws"]);
    let steps: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "provision")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps.len(), 6, "{steps:?}");
    let t0 = Instant::now();
    let mut cells = Vec::new();
    for step in &steps {
        for fault in Fault::ALL {
            cells.push(Cell {
                step: step.clone(),
                fault,
                resume: match fault {
                    // Undo happens only in a rollback: its cell is the rollback one.
                    Fault::UndoTwice => None,
                    _ => Some(timed(resume_cell(step, fault)).await),
                },
                rollback: Some(timed(rollback_cell(step, fault)).await),
            });
        }
    }
    let t = table("aws on moto", &cells, t0.elapsed().as_secs_f64(), &[]);
    report(&t);
    assert!(cells.iter().all(Cell::passed), "{t}");
}

/// The local flow, one fault per stage on one VM (what `.ci/run` affords; each fault is a
/// different kind, so the run goes through all of them in turn): crash after the disk is
/// attached (provision), a transient error after deploy, setup executed twice, a permanent
/// failure after the DNS name is published (register, kept) — each resumed — then RUNNING over
/// verified TLS, and a destroy whose every undo runs twice leaves no VM and no run directory.
#[tokio::test(flavor = "multi_thread")]
async fn local_flow_one_fault_per_stage_resumes_to_running_and_destroys_clean() {
    let env = Env::local();
    let t0 = Instant::now();
    let create = [
        "create",
        "fm",
        "--throwaway",
        "--disk-gib",
        "1",
        "--on-failure",
        "keep",
    ];
    let out = env.run(&create, Some("provision.attach.primary@after=crash*1"));
    assert!(was_killed(&out), "{}", stderr(&out));
    let run = env.last_run();
    assert_eq!(env.run_state(&run), "interrupted");
    let out = env.run(
        &["resume", &run],
        Some(
            "deploy.primary@after=transient*1;setup.primary@after=repeat*1;\
             register.dns@after=permanent*1",
        ),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("register.dns"), "{}", stderr(&out));
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    eprintln!(
        "local, one fault per stage: RUNNING after {:.0} s",
        t0.elapsed().as_secs_f64()
    );

    let (_, st) = env.json(&["status", &run]);
    let attempts = |name: &str| {
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["attempts"]
            .as_u64()
            .unwrap()
    };
    for step in ["provision.attach.primary", "deploy.primary", "register.dns"] {
        assert!(attempts(step) >= 2, "{step} was not retried: {st}");
    }
    assert_eq!(support::qemu_processes(&run), 1, "one VM, not two");
    let c = support::conn(&env, &["fm"]);
    let pg = c.client().await.unwrap();
    let one: i32 = pg.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(pg);

    let every_undo_twice = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}@undo-after=repeat", s["name"].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(";");
    let out = env.run(&["destroy", "fm"], Some(&every_undo_twice));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(support::qemu_processes(&run), 0);
    assert!(!env.path(&format!("state/local/{run}")).exists());
    assert_eq!(env.live_resources(&run), Vec::<String>::new());
}
