//! The journal survives kill -9 at arbitrary moments: SQLite stays consistent, and no side
//! effect happens without its intent having been journaled first.

mod support;

use std::time::Duration;

use support::Env;

#[test]
fn kill_9_during_writes_leaves_a_consistent_journal_and_no_lost_steps() {
    let env = Env::new();
    // Steps of 15 ms keep the process writing throughout; kill it at spread-out moments.
    let mut child = env.spawn(&["create", "db", "--ha"], 15);
    let mut kills = 0;
    for i in 0..25u64 {
        std::thread::sleep(Duration::from_millis(20 + (i * 37) % 90));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let j = env.journal();
        j.integrity_check()
            .expect("integrity_check ok after kill -9");
        drop(j);
        if !env.journal_path().exists() {
            child = env.spawn(&["create", "db", "--ha"], 15);
            continue;
        }
        let (_, v) = env.json(&["list"]);
        let Some(run) = v[0]["run"].as_str().map(String::from) else {
            child = env.spawn(&["create", "db", "--ha"], 15);
            continue;
        };
        // No lost steps: every effect that happened belongs to a step the journal knows started.
        let (_, st) = env.json(&["status", &run]);
        for e in env.effects() {
            let s = st["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == e.step.as_str())
                .unwrap();
            assert!(
                s["attempts"].as_u64().unwrap() >= 1,
                "effect of {} without journaled intent",
                e.step
            );
        }
        if st["run"]["state"] == "succeeded" {
            break;
        }
        child = env.spawn(&["resume", &run], 15);
    }
    assert!(kills >= 3, "the run finished too fast to be interrupted");
    let run = env.last_run();
    if env.run_state(&run) != "succeeded" {
        assert_eq!(env.run(&["resume", &run], None).status.code(), Some(0));
    }
    assert!(
        env.count("create").values().all(|&n| n == 1),
        "{:?}",
        env.count("create")
    );
    let (_, plan) = env.json(&["plan", "db", "--ha"]);
    assert_eq!(
        env.count("create").len(),
        plan["steps"].as_array().unwrap().len()
    );
}
