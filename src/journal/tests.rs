use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn new_journal_is_private_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/dbctl/journal.db");
    let j = Journal::open(&path).unwrap();
    drop(j);
    let j = Journal::open(&path).unwrap();
    j.integrity_check().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let version: i64 = j
        .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(version, 3);
    let mode: String = j
        .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_journal_from_a_newer_dbctl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    Journal::open(&path)
        .unwrap()
        .read(|c| Ok(c.execute_batch("PRAGMA user_version = 99")?))
        .unwrap();
    assert!(matches!(
        Journal::open(&path),
        Err(JournalError::TooNew { found: 99, .. })
    ));
}

fn journal_with_run() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.write(|tx| {
        instances::insert(
            tx,
            &instances::NewInstance {
                id: "i",
                project: "p",
                name: "n",
                provider: "x",
                region: "r",
                spec_json: "{}",
                vcpus: 2,
                memory_gib: 4,
                disk_gib: 10,
                nodes: 3,
                expires_at: None,
            },
        )?;
        runs::insert(
            tx,
            &runs::NewRun {
                id: "run-1",
                instance_id: "i",
                operation: "create",
                idempotency_key: "k",
                spec_hash: "h",
                spec_json: "{}",
                placement_json: "{}",
                on_failure: "rollback",
                settings_json: None,
                steps: &[],
            },
        )
    })
    .unwrap();
    (dir, j)
}

#[test]
fn usage_sums_over_nodes_of_live_instances() {
    let (_d, j) = journal_with_run();
    let u = j.read(|c| instances::usage(c, "p")).unwrap();
    assert_eq!(
        u,
        instances::Usage {
            instances: 1,
            vcpus: 6,
            disk_gib: 30
        }
    );
    j.set_instance_state("i", InstanceState::Destroyed).unwrap();
    assert_eq!(
        j.read(|c| instances::usage(c, "p")).unwrap(),
        instances::Usage::default()
    );
}

#[test]
fn a_live_lease_is_exclusive_and_released_leases_can_be_taken() {
    let (_d, j) = journal_with_run();
    let lease = j.acquire("run-1").unwrap().unwrap();
    // Same host, live pid (ours, as another holder would appear): held until expiry.
    j.write(|tx| {
        tx.execute("UPDATE runs SET lease_pid = 1 WHERE id = 'run-1'", [])?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
    let holder = j.acquire("run-1").unwrap().unwrap_err();
    assert_eq!(holder.pid, 1);
    assert!(
        !j.renew(&Lease {
            run_id: "run-1".into(),
            token: "other".into()
        })
        .unwrap()
    );
    assert!(j.renew(&lease).unwrap());
    j.release(&lease).unwrap();
    assert!(j.acquire("run-1").unwrap().is_ok());
}

#[test]
fn lease_of_a_dead_process_or_expired_lease_is_taken_over() {
    let (_d, j) = journal_with_run();
    j.acquire("run-1").unwrap().unwrap();
    // A pid that cannot exist (above pid_max) stands for a crashed dbctl on this host.
    j.write(|tx| {
        tx.execute(
            "UPDATE runs SET lease_pid = 2147483646 WHERE id = 'run-1'",
            [],
        )?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
    assert!(j.acquire("run-1").unwrap().is_ok());
    // Another host's live lease is respected until it expires.
    j.write(|tx| {
        tx.execute(
            "UPDATE runs SET lease_host = 'elsewhere', lease_pid = 1 WHERE id = 'run-1'",
            [],
        )?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
    assert!(j.acquire("run-1").unwrap().is_err());
    j.write(|tx| {
        tx.execute(
            "UPDATE runs SET lease_expires_at = 1 WHERE id = 'run-1'",
            [],
        )?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
    assert!(j.acquire("run-1").unwrap().is_ok());
}

/// A journal whose run `run-1` has one step `s`.
fn journal_with_step() -> (tempfile::TempDir, Journal) {
    let (d, j) = journal_with_run();
    j.write(|tx| {
        steps::insert(
            tx,
            "run-1",
            0,
            &steps::NewStep {
                name: "s".into(),
                stage: "provision".into(),
                action_json: "{}".into(),
                deps: vec![],
            },
        )
    })
    .unwrap();
    (d, j)
}

fn force(j: &Journal, sql: &str) {
    j.write(|tx| {
        tx.execute(sql, [])?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
}

fn run_state(j: &Journal) -> RunState {
    j.run("run-1").unwrap().unwrap().state
}

fn step_state(j: &Journal) -> (StepState, u32) {
    let s = &j.steps("run-1").unwrap()[0];
    (s.state, s.attempts)
}

#[test]
fn every_run_write_obeys_the_transition_table() {
    for from in RunState::ALL {
        for to in RunState::ALL {
            let (_d, j) = journal_with_run();
            force(
                &j,
                &format!("UPDATE runs SET state = '{from}' WHERE id = 'run-1'"),
            );
            let res = j.set_run_state("run-1", to, None);
            let expect = from.may_become(to);
            assert_eq!(res.is_ok(), expect, "run {from} → {to}: {res:?}");
            let now = run_state(&j);
            assert_eq!(now, if expect { to } else { from }, "run {from} → {to}");
            if !expect {
                assert!(matches!(res, Err(JournalError::IllegalTransition { .. })));
            }
        }
    }
}

/// Moves step `s` to `to` with the one journal call that writes that state.
fn write_step(j: &Journal, to: StepState) -> Result<()> {
    match to {
        StepState::Running => j.step_begin("run-1", "s", "tok").map(drop),
        StepState::Done => j.step_done("run-1", "s", &serde_json::json!({})),
        StepState::Failed | StepState::RollbackFailed => j.step_error("run-1", "s", to, "x"),
        StepState::RollingBack => j.rollback_begin("run-1", "s").map(drop),
        StepState::RolledBack => j.rollback_done("run-1", "s"),
        StepState::Skipped => j.skip_unstarted("run-1"),
        StepState::Pending => Err(JournalError::Corrupt("no call writes pending".into())),
    }
}

#[test]
fn every_step_write_obeys_the_transition_table() {
    for from in StepState::ALL {
        for to in StepState::ALL {
            let (_d, j) = journal_with_step();
            // A step that never started (attempts 0) is what may be skipped; any other state
            // was reached by starting it.
            let attempts = u32::from(from != StepState::Pending);
            force(
                &j,
                &format!("UPDATE steps SET state = '{from}', attempts = {attempts}"),
            );
            let res = write_step(&j, to);
            let expect = from.may_become(to);
            let (now, _) = step_state(&j);
            if to == StepState::Skipped {
                // skip_unstarted is a sweep: it skips what may be skipped and leaves the rest.
                assert!(res.is_ok());
                assert_eq!(now, if expect { to } else { from }, "step {from} → {to}");
                continue;
            }
            assert_eq!(res.is_ok(), expect, "step {from} → {to}: {res:?}");
            assert_eq!(now, if expect { to } else { from }, "step {from} → {to}");
        }
    }
}

#[test]
fn a_process_that_lost_its_lease_writes_nothing_more_for_the_run() {
    let (_d, j) = journal_with_step();
    let lease = j.acquire("run-1").unwrap().unwrap();
    j.set_run_state("run-1", RunState::Running, None).unwrap();
    j.step_begin("run-1", "s", "tok").unwrap();
    // Another process takes the run over (ours expired) and moves it on.
    force(
        &j,
        "UPDATE runs SET lease_token = 'theirs', state = 'succeeded' WHERE id = 'run-1'",
    );
    let fenced = |r: Result<()>| assert!(matches!(r, Err(JournalError::LeaseLost(_))), "{r:?}");
    fenced(j.set_run_state("run-1", RunState::Interrupted, Some("stale")));
    fenced(j.step_done("run-1", "s", &serde_json::json!({})));
    fenced(j.step_error("run-1", "s", StepState::Failed, "stale"));
    fenced(j.event("run-1", "warn", None, "stale"));
    fenced(j.step_begin("run-1", "s", "tok").map(drop));
    assert_eq!(run_state(&j), RunState::Succeeded);
    assert_eq!(step_state(&j), (StepState::Running, 1));
    assert!(j.events("run-1", 0).unwrap().is_empty());
    // Releasing a lost lease leaves the new holder's lease alone.
    j.release(&lease).unwrap();
    let token: Option<String> = j
        .read(|c| Ok(c.query_row("SELECT lease_token FROM runs", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(token.as_deref(), Some("theirs"));
}

#[test]
fn the_purge_decision_is_made_once() {
    let (_d, j) = journal_with_run();
    assert!(!j.decide_purge("run-1", false, "kept").unwrap());
    // A later rollback that derives "purge" from the run's state does not override it…
    assert!(!j.decide_purge("run-1", false, "derived").unwrap());
    let r = j.run("run-1").unwrap().unwrap();
    assert_eq!(
        (r.purge_backups, r.purge_reason.as_deref()),
        (Some(false), Some("kept"))
    );
    // …but an explicit request to purge does, and then stands.
    assert!(j.decide_purge("run-1", true, "asked").unwrap());
    assert!(j.decide_purge("run-1", false, "derived").unwrap());
}
