//! Crash matrix through the real binary: for every step of the flow and each crash point
//! (before the side effect; after it but before the journal write), the process is killed,
//! then `resume` must finish with every side effect exactly once, and `rollback` must undo
//! every side effect, including the one the journal never heard about.

mod support;

use support::{Env, stderr, was_killed};

fn step_names(env: &Env, ha: bool) -> Vec<String> {
    let mut args = vec!["plan", "db"];
    if ha {
        args.push("--ha");
    }
    let (_, v) = env.json(&args);
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn assert_exactly_once(env: &Env, steps: &[String], ctx: &str) {
    let created = env.count("create");
    for s in steps {
        assert_eq!(
            created.get(s),
            Some(&1),
            "{ctx}: {s} created {:?} times",
            created.get(s)
        );
    }
}

fn assert_all_undone(env: &Env, steps: &[String], ctx: &str) {
    assert!(
        env.markers_left().is_empty(),
        "{ctx}: left behind {:?}",
        env.markers_left()
    );
    let created = env.count("create");
    let deleted = env.count("delete");
    assert_eq!(created, deleted, "{ctx}: every effect undone exactly once");
    assert!(steps.iter().any(|s| deleted.contains_key(s)) || created.is_empty());
}

fn crash(env: &Env, step: &str, point: &str, ha: bool) -> String {
    let args: &[&str] = if ha {
        &["create", "db", "--ha"]
    } else {
        &["create", "db"]
    };
    let out = env.run(args, Some(&format!("{step}@{point}=crash")));
    assert!(
        was_killed(&out),
        "{step}@{point}: expected SIGKILL, got {:?}: {}",
        out.status,
        stderr(&out)
    );
    env.last_run()
}

#[test]
fn crash_then_resume_completes_with_every_effect_exactly_once_then_rollback_undoes_all() {
    let steps = step_names(&Env::new(), false);
    assert!(steps.len() >= 9, "every stage is covered: {steps:?}");
    for step in &steps {
        for point in ["before", "after"] {
            let ctx = format!("{step}@{point}");
            let env = Env::new();
            let run = crash(&env, step, point, false);
            let state = env.run_state(&run);
            assert_eq!(
                state, "interrupted",
                "{ctx}: a crashed run is shown interrupted"
            );
            let out = env.run(&["resume", &run], None);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{ctx}: resume: {}",
                stderr(&out)
            );
            assert_eq!(env.run_state(&run), "succeeded", "{ctx}");
            assert_exactly_once(&env, &steps, &ctx);
            let out = env.run(&["rollback", &run], None);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{ctx}: rollback: {}",
                stderr(&out)
            );
            assert_all_undone(&env, &steps, &ctx);
            assert_eq!(env.run_state(&run), "rolled_back");
        }
    }
}

#[test]
fn crash_then_rollback_undoes_every_effect() {
    let steps = step_names(&Env::new(), false);
    for step in &steps {
        for point in ["before", "after"] {
            let ctx = format!("{step}@{point}");
            let env = Env::new();
            let run = crash(&env, step, point, false);
            let out = env.run(&["rollback", &run], None);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{ctx}: rollback: {}",
                stderr(&out)
            );
            assert_all_undone(&env, &steps, &ctx);
            // The crashed step's effect (for "after") is undone although its outputs were lost.
            if point == "after" {
                assert_eq!(env.count("delete").get(step.as_str()), Some(&1), "{ctx}");
            }
            let (_, v) = env.json(&["status", &run]);
            for s in v["steps"].as_array().unwrap() {
                let st = s["state"].as_str().unwrap();
                assert!(
                    st == "rolled_back" || st == "skipped",
                    "{ctx}: {} is {st}",
                    s["name"]
                );
            }
        }
    }
}

#[test]
fn every_step_and_every_undo_executed_twice_still_acts_exactly_once() {
    let env = Env::new();
    let steps = step_names(&env, true);
    let every = |point: &str| {
        steps
            .iter()
            .map(|s| format!("{s}@{point}=repeat"))
            .collect::<Vec<_>>()
            .join(";")
    };
    let out = env.run(&["create", "db", "--ha"], Some(&every("after")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&env, &steps, "executed twice");
    let out = env.run(&["destroy", "db"], Some(&every("undo-after")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_all_undone(&env, &steps, "undone twice");
    assert!(env.count("delete").values().all(|n| *n == 1));
}

#[test]
fn crash_during_rollback_is_finished_by_rollback_or_resume() {
    let env = Env::new();
    let steps = step_names(&env, true);
    assert_eq!(
        env.run(&["create", "db", "--ha"], None).status.code(),
        Some(0)
    );
    let run = env.last_run();
    // The network is undone after everything in it, so the second crash point is still ahead.
    for fault in [
        "provision.vm.node-2@undo-before=crash",
        "provision.network@undo-after=crash",
    ] {
        let out = env.run(&["rollback", &run], Some(fault));
        assert!(was_killed(&out), "{}", stderr(&out));
        assert_eq!(env.run_state(&run), "rolling_back");
    }
    // The 3 a.m. command: resume finishes what was started, which here is the rollback.
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_all_undone(&env, &steps, "rollback crash");
    assert_eq!(env.run_state(&run), "rolled_back");
}

#[test]
fn ha_crash_in_one_replica_branch_resumes_without_redoing_the_other() {
    let env = Env::new();
    let steps = step_names(&env, true);
    let run = crash(&env, "setup.patroni.node-3", "after", true);
    let before = env.count("create");
    assert_eq!(before.get("setup.patroni.node-3"), Some(&1));
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&env, &steps, "ha");
    let (_, v) = env.json(&["status", &run]);
    let attempts = |n: &str| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["attempts"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        attempts("setup.patroni.node-3"),
        2,
        "re-executed after the crash"
    );
    assert_eq!(attempts("provision.vm.node-2"), 1, "not redone");
}

#[test]
fn transient_faults_are_retried_and_permanent_ones_roll_back() {
    let env = Env::new();
    let out = env.run(
        &["create", "db"],
        Some("provision.vm.primary@after=transient*2"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("retrying"), "{}", stderr(&out));
    // The transient error struck after the side effect: the retry adopted it, no duplicate.
    assert_eq!(env.count("create").get("provision.vm.primary"), Some(&1));
    let env = Env::new();
    let out = env.run(
        &["create", "db"],
        Some("provision.attach.primary@before=transient"),
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "exhausted retries roll back: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("gave up after 5 attempts"),
        "{}",
        stderr(&out)
    );
    assert!(env.markers_left().is_empty());
}

#[test]
fn failed_rollback_exits_6_and_a_later_rollback_finishes() {
    let env = Env::new();
    assert_eq!(env.run(&["create", "db"], None).status.code(), Some(0));
    let run = env.last_run();
    let out = env.run(
        &["rollback", &run],
        Some("deploy.primary@undo-before=permanent"),
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    // Dependencies of the step that could not be undone are kept.
    let left = env.markers_left();
    assert!(
        left.contains(&"provision.attach.primary".to_string()),
        "{left:?}"
    );
    assert!(!left.contains(&"register.dns".to_string()), "{left:?}");
    assert_eq!(env.run(&["rollback", &run], None).status.code(), Some(0));
    assert!(env.markers_left().is_empty());
}
