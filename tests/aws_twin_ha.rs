//! `--ha` on the EC2 twin end to end (issue 13 §2): three real VMs behind moto, one per AZ,
//! Patroni + etcd over the private addresses, the real dbctl binary on `--provider aws`. Its
//! own binary so `scripts/test` runs it in the lane of the other three-VM test (`local_ha`),
//! one after the other: a TCG VM takes a core.

mod support;
#[path = "support/twin.rs"]
mod twin;

use std::time::{Duration, Instant};

use support::{Env, stderr, stdout};
use twin::{CONFIG, Twin, create, destroy_leaves_nothing, group_id, psql_query, tunnel, with_twin};

/// `--ha` on the twin, the same flow as the local provider's: three instances in three AZs, a
/// subnet each, Patroni + etcd over the private addresses (the security group opens etcd and
/// Patroni to its own members), RUNNING only once both replicas stream. Through the tunnel the
/// URI follows the leader (`target_session_attrs=read-write`) and `--replica` reaches a
/// standby. Destroy leaves nothing.
async fn ha(twin: &Twin) {
    let env = Env::aws(CONFIG);
    let started = Instant::now();
    let (out, run, status) = create(&env, twin, "hx", &["--ha"]);
    assert!(
        out.status.success(),
        "HA create on the twin failed after {:?}:\n{}\n--- status\n{status:#}\n--- twin\n{}",
        started.elapsed(),
        stderr(&out),
        twin.log()
    );
    eprintln!("aws --ha on the twin: RUNNING in {:?}", started.elapsed());
    assert_eq!(twin.vms().len(), 3, "{:?}", twin.vms());
    let vms: Vec<serde_json::Value> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("provision.vm."))
        .map(|s| s["outputs"].clone())
        .collect();
    assert_eq!(vms.len(), 3, "{status:#}");
    let distinct = |key: &str| {
        let mut v: Vec<&str> = vms.iter().map(|o| o[key].as_str().unwrap()).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    assert_eq!(distinct("zone"), 3, "one node per AZ: {vms:?}");
    assert_eq!(distinct("subnet_id"), 3, "a subnet per AZ: {vms:?}");
    // The live topology, read from Patroni over SSH: one leader, both others streaming from it
    // (pg_stat_replication's state is the leader's view, hidden from the application's role).
    let (code, st) = env.json(&["status", "hx"]);
    assert_eq!(code, 0, "{st}");
    let mut streaming: Vec<&str> = st["cluster"]["replication"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "streaming")
        .filter_map(|r| r["application_name"].as_str())
        .collect();
    streaming.sort();
    let leaders = st["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "leader" && m["state"] == "running")
        .count();
    assert_eq!(leaders, 1, "{:#}", st["cluster"]);
    assert_eq!(
        streaming.len(),
        2,
        "two replicas streaming: {:#}",
        st["cluster"]
    );

    forgotten_replication_rule_stops_streaming(&env, twin, &status, &st).await;

    let (doc, mut holder) = tunnel(&env, "hx", &[]);
    let (uri, passfile) = (
        doc["uri"].as_str().unwrap(),
        doc["passfile"].as_str().unwrap(),
    );
    assert!(uri.contains("target_session_attrs=read-write"), "{doc}");
    assert_eq!(doc["hosts"].as_array().map(Vec::len), Some(3), "{doc}");
    let leader = psql_query(uri, passfile, "select pg_is_in_recovery()");
    assert_eq!(stdout(&leader).trim(), "f", "{}", stderr(&leader));
    // SAFETY: kill(2) of our own child.
    unsafe {
        libc::kill(holder.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(holder.wait().unwrap().success());
    let (doc, mut holder) = tunnel(&env, "hx", &["--replica"]);
    let standby = psql_query(
        doc["uri"].as_str().unwrap(),
        doc["passfile"].as_str().unwrap(),
        "select pg_is_in_recovery()",
    );
    assert_eq!(stdout(&standby).trim(), "t", "{}", stderr(&standby));
    // SAFETY: as above.
    unsafe {
        libc::kill(holder.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(holder.wait().unwrap().success());
    destroy_leaves_nothing(&env, twin, "hx", &run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_ha_on_the_twin_is_running_with_two_streaming_replicas_and_destroyed_to_nothing() {
    with_twin(ha).await;
}

/// Replicas streaming from the leader (by member name), from `dbctl status`.
fn streaming(env: &Env, name: &str) -> Vec<String> {
    let (_, st) = env.json(&["status", name]);
    let mut v: Vec<String> = st["cluster"]["replication"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "streaming")
        .filter_map(|r| r["application_name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Polls `check` with backoff until it holds or `within` has passed; its last value.
fn eventually<T>(within: Duration, mut check: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(250);
    loop {
        let (ok, v) = check();
        if ok || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The security group is what lets replicas stream (issue 13 §1: a group that forgets
/// replication fails the way it would on EC2). With every 5432 rule revoked, a replica whose
/// walreceiver reconnects is dropped by the VPC network (its hub logs the denied flow) and
/// streams no more, while the other, connected before, keeps streaming (the group is stateful,
/// as EC2's is); the rules authorized again, both stream.
async fn forgotten_replication_rule_stops_streaming(
    env: &Env,
    twin: &Twin,
    status: &serde_json::Value,
    cluster: &serde_json::Value,
) {
    let members = cluster["cluster"]["members"].as_array().unwrap();
    let leader = members
        .iter()
        .find(|m| m["role"] == "leader")
        .and_then(|m| m["name"].as_str())
        .unwrap();
    let replica = members
        .iter()
        .filter_map(|m| m["name"].as_str())
        .find(|n| *n != leader)
        .unwrap();
    let private = |node: &str| -> String {
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == format!("provision.vm.{node}"))
            .and_then(|s| s["outputs"]["private_ip"].as_str())
            .unwrap_or_else(|| panic!("{node}'s private address: {status:#}"))
            .to_string()
    };
    let group = group_id(status);
    let ec2 = dbctl::provider::aws::Ec2::connect(&Default::default())
        .await
        .unwrap();
    let described = ec2
        .sdk()
        .describe_security_groups()
        .group_ids(&group)
        .send()
        .await
        .unwrap();
    let postgres: Vec<_> = described.security_groups()[0]
        .ip_permissions()
        .iter()
        .filter(|p| p.from_port() == Some(5432))
        .cloned()
        .collect();
    assert!(
        postgres.iter().any(|p| !p.user_id_group_pairs().is_empty()),
        "the group admits its own members on 5432: {postgres:?}"
    );
    ec2.sdk()
        .revoke_security_group_ingress()
        .group_id(&group)
        .set_ip_permissions(Some(postgres.clone()))
        .send()
        .await
        .unwrap();
    // SIGTERM to the replica's walreceiver: the startup process starts a new one, whose
    // connection is a new flow ("[w]" keeps pkill off sudo's own command line).
    let kill = env.run(
        &[
            "ssh",
            "hx",
            "--node",
            replica,
            "--",
            "sudo pkill -TERM -f '[w]alreceiver'",
        ],
        None,
    );
    assert!(
        kill.status.success(),
        "pkill walreceiver: {}",
        stderr(&kill)
    );
    let revoked = Instant::now();
    let denied = format!("denied: {} -> {}:5432", private(replica), private(leader));
    let log = eventually(Duration::from_secs(120), || {
        let log = twin.hub_logs();
        (log.contains(&denied), log)
    });
    assert!(
        log.contains(&denied),
        "no {denied:?} in the hub log:\n{log}"
    );
    let now = eventually(Duration::from_secs(120), || {
        let s = streaming(env, "hx");
        (s.len() == 1, s)
    });
    assert_eq!(
        now.len(),
        1,
        "one replica streams without its rule: {now:?}"
    );
    assert!(
        !now.iter().any(|n| n == replica),
        "{replica} still streams: {now:?}"
    );
    eprintln!(
        "aws --ha on the twin: 5432 rules revoked, {replica}'s reconnect denied, {now:?} alone \
         streaming after {:?}",
        revoked.elapsed()
    );

    ec2.sdk()
        .authorize_security_group_ingress()
        .group_id(&group)
        .set_ip_permissions(Some(postgres))
        .send()
        .await
        .unwrap();
    let authorized = Instant::now();
    let again = eventually(Duration::from_secs(180), || {
        let s = streaming(env, "hx");
        (s.len() == 2, s)
    });
    assert_eq!(again.len(), 2, "both stream with the rules back: {again:?}");
    eprintln!(
        "aws --ha on the twin: rules back, {again:?} streaming after {:?}",
        authorized.elapsed()
    );
}
