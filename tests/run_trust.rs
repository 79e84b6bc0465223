//! What a run promises after it was cut short, through the real binary (testbed provider):
//! a retried destroy keeps what the first was told to keep, and a run whose process died is
//! shown interrupted with the command that carries it on.

mod support;

use std::collections::BTreeSet;

use support::{Env, stderr, was_killed};

/// The backup verdicts (`purge`/`keep`) that the undo of each step of `run` was given.
fn verdicts(env: &Env, run: &str) -> BTreeSet<String> {
    std::fs::read_to_string(env.path("testbed/backups.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{run} ")))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// A step in the middle of the plan, so an interrupted rollback has undone some steps.
fn middle_step(env: &Env) -> String {
    let (_, v) = env.json(&["plan", "db"]);
    let steps = v["steps"].as_array().unwrap();
    steps[steps.len() / 2]["name"].as_str().unwrap().to_string()
}

fn interrupted_destroy(env: &Env, args: &[&str]) -> String {
    let (code, _) = env.json(&["create", "db"]);
    assert_eq!(code, 0);
    let run = env.last_run();
    let rule = format!("{}@undo-before=crash", middle_step(env));
    let out = env.run(args, Some(&rule));
    assert!(was_killed(&out), "destroy should crash: {}", stderr(&out));
    assert_eq!(
        env.json(&["status", &run]).1["run"]["journal_state"],
        "rolling_back"
    );
    run
}

#[test]
fn a_retried_destroy_keeps_the_backups_the_first_destroy_kept() {
    let env = Env::new();
    let run = interrupted_destroy(&env, &["destroy", "db"]);
    let out = env.run(&["destroy", "db"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(verdicts(&env, &run), BTreeSet::from(["keep".to_string()]));
    let (_, st) = env.json(&["status", &run]);
    assert_eq!(st["run"]["purge_backups"], false, "{st}");
    assert!(
        st["run"]["purge_reason"]
            .as_str()
            .unwrap()
            .contains("RUNNING")
    );
}

#[test]
fn a_purge_that_was_asked_for_stands_when_the_destroy_is_retried() {
    let env = Env::new();
    let run = interrupted_destroy(&env, &["destroy", "db", "--purge-backups"]);
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(verdicts(&env, &run), BTreeSet::from(["purge".to_string()]));
}

#[test]
fn a_failed_create_purges_and_says_why() {
    let env = Env::new();
    let rule = format!("{}@before=permanent", middle_step(&env));
    let out = env.run(&["create", "db"], Some(&rule));
    assert_ne!(out.status.code(), Some(0));
    let run = env.last_run();
    assert_eq!(verdicts(&env, &run), BTreeSet::from(["purge".to_string()]));
    let (_, st) = env.json(&["status", &run]);
    assert_eq!(st["run"]["purge_backups"], true, "{st}");
}

#[test]
fn a_run_whose_process_died_is_shown_interrupted_with_the_resume_command() {
    let env = Env::new();
    let rule = format!("{}@after=crash", middle_step(&env));
    let out = env.run(&["create", "db"], Some(&rule));
    assert!(was_killed(&out));
    let run = env.last_run();

    let (_, st) = env.json(&["status", &run]);
    assert_eq!(st["run"]["state"], "interrupted", "{st}");
    assert_eq!(st["run"]["journal_state"], "running");
    assert_eq!(st["run"]["stalled"], true);
    assert_eq!(st["run"]["next"], format!("dbctl resume {run}"));
    let text = env.run(&["status", &run], None);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("interrupted") && text.contains(&format!("dbctl resume {run}")),
        "{text}"
    );

    let (_, list) = env.json(&["list"]);
    assert_eq!(list[0]["stalled"], true, "{list}");
    let text = env.run(&["list"], None);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("dbctl resume {run}")));

    // Resumed, it is an ordinary finished run again.
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, st) = env.json(&["status", &run]);
    assert_eq!(st["run"]["state"], "succeeded");
    assert_eq!(st["run"]["stalled"], false);
}
