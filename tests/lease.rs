//! One process drives a run at a time.

mod support;

use std::time::Duration;

use support::{Env, stderr, was_killed};

#[test]
fn two_processes_resuming_the_same_run_exactly_one_proceeds() {
    let env = Env::new();
    let out = env.run(&["create", "db"], Some("provision.network@before=crash"));
    assert!(was_killed(&out));
    let run = env.last_run();
    // Both start while the crashed process's lease is still recorded (its pid is dead).
    let a = env.spawn(&["resume", &run], 300);
    let b = env.spawn(&["resume", &run], 300);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(7)],
        "a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(7) { &a } else { &b };
    assert!(
        stderr(loser).contains("is being driven by pid"),
        "{}",
        stderr(loser)
    );
    assert!(env.count("create").values().all(|&n| n == 1));
    assert_eq!(env.run_state(&run), "succeeded");
}

#[test]
fn rollback_is_refused_while_another_process_drives_the_run() {
    let env = Env::new();
    let child = env.spawn(&["create", "db"], 400);
    // Wait (polling) until the run exists and is leased.
    let mut run = None;
    for _ in 0..100 {
        if env.journal_path().exists() {
            let (_, v) = env.json(&["list"]);
            if let Some(r) = v[0]["run"].as_str() {
                run = Some(r.to_string());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = run.expect("run appears");
    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Once the driver is done, the lease is free.
    assert_eq!(env.run(&["rollback", &run], None).status.code(), Some(0));
}
