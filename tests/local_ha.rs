//! HA on the local provider: a primary and two streaming replicas in three zones, built in
//! parallel, verified, crash-resumed without re-cloning, destroyed without leftovers. Its own
//! test binary, so its three VMs do not boot alongside the other VM tests' on a small host.

mod support;

use std::collections::HashSet;

use serde_json::Value;
use support::{Env, conn, qemu_processes, stderr, was_killed};

fn steps(st: &Value) -> &Vec<Value> {
    st["steps"].as_array().unwrap()
}

fn step<'a>(st: &'a Value, name: &str) -> &'a Value {
    steps(st).iter().find(|s| s["name"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ha_instance_replicates_resumes_without_recloning_and_destroys_cleanly() {
    let env = Env::local();
    // Replica 2's clone fails at once; replica 1's, in flight, finishes: the run stops, kept.
    let out = env.run(
        &["create", "ha", "--ha", "--on-failure", "keep"],
        Some("setup.clone.replica-2@before=permanent"),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let run = env.last_run();
    assert_eq!(qemu_processes(&run), 3);
    let (_, st) = env.json(&["status", &run]);
    let zones: HashSet<&str> = steps(&st)
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("provision.vm."))
        .map(|s| s["outputs"]["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones.len(), 3, "anti-affinity: three distinct zones");
    assert_eq!(step(&st, "setup.clone.replica-1")["state"], "done");

    // Resume dies right after replica 2 was cloned, before the journal heard of it.
    let out = env.run(&["resume", &run], Some("setup.clone.replica-2@after=crash"));
    assert!(was_killed(&out), "{}", stderr(&out));
    // The last resume finishes: replica 2's clone is found complete, replica 1 is not touched.
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, st) = env.json(&["status", &run]);
    assert_eq!(
        step(&st, "setup.clone.replica-1")["attempts"],
        1,
        "replica 1 was not cloned again"
    );
    assert_eq!(step(&st, "setup.clone.replica-2")["attempts"], 3);
    let verified = &step(&st, "setup.verify-replication")["outputs"]["replicas"];
    assert_eq!(verified.as_array().unwrap().len(), 2, "{verified}");
    assert!(
        verified
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "streaming")
    );
    let (_, status) = env.json(&["status", "ha"]);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    let endpoints = status["endpoints"].as_array().unwrap();
    assert_eq!(
        endpoints.iter().filter(|e| e["role"] == "replica").count(),
        2,
        "{endpoints:?}"
    );

    // Register across the cluster: the read-only name stands for both replicas (in every
    // node's /etc/hosts), the Prometheus file lists both exporters of all three nodes.
    let ro = "ha-ro.default.dbctl.internal";
    let out = env.run(
        &[
            "ssh",
            "ha",
            "--node",
            "replica-1",
            "--",
            &format!("grep ' {ro}$' /etc/hosts; getent hosts {ro}"),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("10.77.0.11 ") && text.contains("10.77.0.12 "),
        "{text}"
    );
    let sd: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("state/prometheus/default.ha.json")).unwrap(),
    )
    .unwrap();
    let roles: Vec<&str> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["labels"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.len(), 6, "{sd}");
    assert_eq!(roles.iter().filter(|r| **r == "replica").count(), 4, "{sd}");

    // Exactly two slots on the primary, both in use: no orphan from the crashed clone.
    let out = env.run(
        &[
            "ssh",
            "ha",
            "--",
            // One argument: like ssh, `dbctl ssh` hands the command line to the remote shell.
            "sudo -u postgres psql -Atc \"select slot_name || ':' || active from pg_replication_slots order by 1\"",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "replica_1:true\nreplica_2:true",
        "{}",
        stderr(&out)
    );

    // Written on the primary, read on a replica (read-only: it is a hot standby).
    let primary = conn(&env, &["ha"]).client().await.unwrap();
    primary.batch_execute("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100)").await.unwrap();
    let replica = conn(&env, &["ha", "--replica"]).client().await.unwrap();
    let mut seen = 0i64;
    for _ in 0..50 {
        if let Ok(r) = replica.query_one("SELECT count(*) FROM orders", &[]).await {
            seen = r.get(0);
            if seen == 100 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(seen, 100);
    assert!(
        replica
            .batch_execute("INSERT INTO orders VALUES (101)")
            .await
            .is_err(),
        "a standby refuses writes"
    );

    let (code, _) = env.json(&["destroy", "ha"]);
    assert_eq!(code, 0);
    assert_eq!(qemu_processes(&run), 0);
    assert!(!env.path(&format!("state/local/{run}")).exists());
    assert!(!env.path("state/prometheus/default.ha.json").exists());
}
