use super::*;
use crate::journal::steps::NewStep;
use crate::journal::{instances, runs};

/// Adds instance `id` with create run `run-<id>` (two steps, three events, one resource), in
/// `state` with its create run in `run_state`, last changed at `updated_at`.
fn add(j: &Journal, id: &str, state: &str, run_state: &str, updated_at: i64) {
    let run = format!("run-{id}");
    j.write(|tx| {
        instances::insert(
            tx,
            &instances::NewInstance {
                id,
                project: "p",
                name: id,
                provider: "testbed",
                region: "r",
                spec_json: "{}",
                vcpus: 1,
                memory_gib: 1,
                disk_gib: 1,
                nodes: 1,
                expires_at: None,
            },
        )?;
        let steps = ["provision.vm.node-1", "register.backups"].map(|n| NewStep {
            name: n.into(),
            stage: "provision".into(),
            action_json: "{}".into(),
            deps: vec![],
        });
        runs::insert(
            tx,
            &runs::NewRun {
                id: &run,
                instance_id: id,
                operation: "create",
                idempotency_key: id,
                spec_hash: "h",
                spec_json: "{}",
                placement_json: "{}",
                on_failure: "rollback",
                settings_json: None,
                steps: &steps,
            },
        )?;
        for i in 0..3 {
            tx.execute(
                "INSERT INTO events (run_id, ts, level, message) VALUES (?1, ?2, 'info', 'x')",
                params![run, i],
            )?;
        }
        tx.execute(
            "INSERT INTO resources (run_id, step, kind, name, state, created_at, updated_at)
             VALUES (?1, 'provision.vm.node-1', 'vm', 'node-1', 'deleted', 0, 0)",
            [&run],
        )?;
        tx.execute(
            "UPDATE instances SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, state, updated_at],
        )?;
        tx.execute(
            "UPDATE runs SET state = ?2 WHERE id = ?1",
            params![run, run_state],
        )?;
        Ok::<_, JournalError>(())
    })
    .unwrap();
}

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    (dir, j)
}

fn force(j: &Journal, sql: &str) {
    j.write(|tx| Ok::<_, JournalError>(tx.execute_batch(sql)?))
        .unwrap();
}

fn ids(j: &Journal) -> Vec<String> {
    let mut v: Vec<String> = j
        .instances(true)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    v.sort();
    v
}

fn count(j: &Journal, table: &str) -> i64 {
    j.read(|c| Ok(c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?))
        .unwrap()
}

const DAY: i64 = 86_400_000;

#[test]
fn pruning_removes_old_destroyed_history_and_keeps_everything_else() {
    let (_dir, j) = journal();
    let now = now_ms();
    add(&j, "old", "destroyed", "rolled_back", now - 40 * DAY);
    add(&j, "recent", "destroyed", "rolled_back", now - DAY);
    add(&j, "live", "running", "succeeded", now - 400 * DAY);
    add(&j, "kept", "failed", "failed", now - 400 * DAY);
    // Destroyed long ago, but its backups were kept in S3: `restore` still needs it.
    add(&j, "s3", "destroyed", "rolled_back", now - 40 * DAY);
    force(
        &j,
        r#"UPDATE steps SET outputs = '{"repo":"s3","stanza":"s3"}'
           WHERE run_id = 'run-s3' AND name = 'register.backups';
           UPDATE runs SET purge_backups = 0 WHERE id = 'run-s3';"#,
    );
    // Destroyed long ago, and a (day-2) run of it is leased right now.
    add(&j, "leased", "destroyed", "rolled_back", now - 40 * DAY);
    j.acquire("run-leased").unwrap().unwrap();

    let cutoff = now - 30 * DAY;
    let before = (count(&j, "events"), count(&j, "steps"), ids(&j));
    let would = j.prune_history(cutoff, None, true).unwrap();
    assert_eq!(
        (count(&j, "events"), count(&j, "steps"), ids(&j)),
        before,
        "a dry run changes nothing"
    );
    let done = j.prune_history(cutoff, None, false).unwrap();
    assert_eq!(would, done);
    assert_eq!(
        done,
        Pruned {
            instances: 1,
            runs: 1,
            steps: 2,
            events: 3,
            resources: 1,
            kept_restorable: 1
        }
    );
    assert_eq!(ids(&j), ["kept", "leased", "live", "recent", "s3"]);
    for table in ["runs", "steps", "events", "resources"] {
        let orphans: i64 = j
            .read(|c| {
                Ok(c.query_row(
                    &format!(
                        "SELECT COUNT(*) FROM {table} WHERE {} = 'run-old'",
                        if table == "runs" { "id" } else { "run_id" }
                    ),
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(orphans, 0, "{table}");
    }
    assert_eq!(j.prune_history(cutoff, None, false).unwrap().instances, 0);
    // Another provider's history is left alone when gc is limited to one.
    add(&j, "aws-old", "destroyed", "rolled_back", now - 40 * DAY);
    force(
        &j,
        "UPDATE instances SET provider = 'aws' WHERE id = 'aws-old'",
    );
    assert_eq!(
        j.prune_history(cutoff, Some("testbed"), false)
            .unwrap()
            .instances,
        0
    );
    assert_eq!(
        j.prune_history(cutoff, Some("aws"), false)
            .unwrap()
            .instances,
        1
    );
    j.integrity_check().unwrap();
}

#[test]
fn pruning_works_in_batches() {
    let (_dir, j) = journal();
    let n = BATCH as usize * 2 + 7;
    for i in 0..n {
        add(&j, &format!("i{i}"), "destroyed", "rolled_back", 1);
    }
    let done = j.prune_history(2, None, false).unwrap();
    assert_eq!(done.instances as usize, n);
    assert_eq!(done.events as usize, 3 * n);
    assert_eq!(count(&j, "instances"), 0);
    assert_eq!(count(&j, "events"), 0);
}

#[test]
fn owning_runs_are_those_not_rolled_back_or_leased() {
    let (_dir, j) = journal();
    add(&j, "gone", "destroyed", "rolled_back", 1);
    add(&j, "live", "running", "succeeded", 1);
    add(&j, "half", "failed", "rollback_failed", 1);
    let owning = j.owning_runs().unwrap();
    assert_eq!(
        owning,
        HashSet::from(["run-live".to_string(), "run-half".to_string()])
    );
    force(
        &j,
        &format!(
            "UPDATE runs SET lease_token = 't', lease_pid = 1, lease_host = 'h',
             lease_expires_at = {} WHERE id = 'run-gone'",
            now_ms() + 60_000
        ),
    );
    assert!(j.owning_runs().unwrap().contains("run-gone"));
}

#[test]
fn runs_of_journals_beside_this_one_count_as_owning() {
    let dir = tempfile::tempdir().unwrap();
    let other = Journal::open(&dir.path().join("other.db")).unwrap();
    add(&other, "theirs", "running", "succeeded", 1);
    add(&other, "done", "destroyed", "rolled_back", 1);
    let ours = dir.path().join("journal.db");
    let j = Journal::open(&ours).unwrap();
    add(&j, "mine", "running", "succeeded", 1);
    std::fs::write(dir.path().join("notes.txt"), "not a database").unwrap();
    let beside = owning_runs_beside(&ours).unwrap();
    assert_eq!(beside, HashSet::from(["run-theirs".to_string()]));
    // Also when this journal was deleted.
    drop(j);
    std::fs::remove_file(&ours).unwrap();
    assert_eq!(owning_runs_beside(&ours).unwrap(), beside);
    // A directory that does not exist has no journals.
    assert!(
        owning_runs_beside(&dir.path().join("nope/journal.db"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn expired_instances_are_the_live_ones_past_their_ttl() {
    let (_dir, j) = journal();
    add(&j, "a", "running", "succeeded", 1);
    add(&j, "b", "running", "succeeded", 1);
    add(&j, "c", "destroyed", "rolled_back", 1);
    add(&j, "d", "running", "succeeded", 1);
    force(
        &j,
        "UPDATE instances SET expires_at = 100 WHERE id IN ('a', 'c');
         UPDATE instances SET expires_at = 50 WHERE id = 'd';
         UPDATE instances SET expires_at = 9000 WHERE id = 'b';",
    );
    let expired: Vec<String> = j
        .expired_instances(1000)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(expired, ["d", "a"]);
}
