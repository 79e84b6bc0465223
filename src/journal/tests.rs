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
    assert_eq!(version, 1);
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
