//! HA on the local provider, end to end, on one cluster (three VMs; its own test binary so they
//! do not boot alongside the other VM tests): Patroni + etcd built through crashes and a failed
//! member, then the promises an HA instance makes — it survives losing its leader with no
//! acknowledged commit lost and the same URI working, the dead node comes back as a replica,
//! a switchover and a forced rebuild, backups continuing on the new leader, a point-in-time
//! restore across the failover — and a destroy that leaves nothing.

#[path = "../examples/support/psql.rs"]
mod psql;
mod support;

use std::collections::{BTreeSet, HashSet};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use psql::psql;
use serde_json::Value;
use support::s3::S3;
use support::{Env, qemu_pid, qemu_processes, stderr, was_killed};

const BUCKET: &str = "dbctl-ha-backups";
const CREDS: [(&str, &str); 2] = [
    ("DBCTL_S3_KEY", "testing"),
    ("DBCTL_S3_KEY_SECRET", "testing"),
];

struct Ha {
    env: Env,
}

impl Ha {
    fn run(&self, args: &[&str], faults: Option<&str>) -> Output {
        self.env.command(args, faults).envs(CREDS).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all, None);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stderr(&out)));
        (out.status.code().unwrap_or(-1), v)
    }

    /// The live topology `dbctl status` reads from Patroni.
    fn cluster(&self) -> Value {
        let (code, st) = self.json(&["status", "ha"]);
        assert_eq!(code, 0, "{st}");
        st["cluster"].clone()
    }

    fn leader(&self) -> Option<String> {
        let c = self.cluster();
        c["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "leader" && m["state"] == "running")
            .map(|m| m["name"].as_str().unwrap().to_string())
    }

    /// Polls the cluster (with backoff) until `check` holds.
    fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(500);
        loop {
            let c = self.cluster();
            if check(&c) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}: {c}"
            );
            std::thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
    }

    fn ssh(&self, node: &str, cmd: &str) -> String {
        let out = self.run(&["ssh", "ha", "--node", node, "--", cmd], None);
        assert!(out.status.success(), "{node}: {cmd}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn operations(&self) -> usize {
        let (_, st) = self.json(&["status", "ha"]);
        st["operations"].as_array().map(Vec::len).unwrap_or(0)
    }
}

fn step<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn streaming(c: &Value, node: &str) -> bool {
    c["replication"].as_array().is_some_and(|r| {
        r.iter()
            .any(|s| s["application_name"] == node && s["state"] == "streaming")
    })
}

fn sync_standby(c: &Value) -> Option<String> {
    c["replication"].as_array()?.iter().find_map(|s| {
        (s["sync_state"] == "sync" && s["state"] == "streaming")
            .then(|| s["application_name"].as_str().unwrap().to_string())
    })
}

/// Commits one row at a time through the URI, recording every commit psql reported done.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    last_error: Arc<Mutex<String>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(uri: &str, first: i64) -> Writer {
        let (stop, acked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let last_error = Arc::new(Mutex::new(String::new()));
        let (s, a, e, uri) = (
            stop.clone(),
            acked.clone(),
            last_error.clone(),
            uri.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let mut id = first;
            while !s.load(Ordering::Relaxed) {
                match psql(&uri, &format!("INSERT INTO acked (id) VALUES ({id})")) {
                    Ok(_) => {
                        a.lock().unwrap().push((id, Instant::now()));
                        id += 1;
                    }
                    // The commit happened but its acknowledgement was lost (the connection
                    // dropped in the failover): not acknowledged, so not counted; next id.
                    Err(err) if err.contains("duplicate key") => id += 1,
                    Err(err) => {
                        *e.lock().unwrap() = err;
                        // Failing over: every node refuses at once; do not spin.
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        Writer {
            stop,
            acked,
            last_error,
            handle: Some(handle),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn first_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at > t)
    }

    /// Waits (polling) until `n` more rows than now are committed.
    fn wait_more(&self, n: usize, limit: Duration) {
        let (want, deadline) = (self.count() + n, Instant::now() + limit);
        while self.count() < want {
            assert!(
                Instant::now() < deadline,
                "writer stalled at {} rows; last error: {}",
                self.count(),
                self.last_error.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the writer; returns the committed ids and the longest gap between two commits.
    fn finish(mut self) -> (BTreeSet<i64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        let acked = self.acked.lock().unwrap();
        let gap = acked
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        (acked.iter().map(|(id, _)| *id).collect(), gap)
    }
}

fn rows(uri: &str) -> BTreeSet<i64> {
    psql(uri, "SELECT id FROM acked")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ha_cluster_fails_over_rejoins_switches_over_and_loses_no_acknowledged_commit() {
    let s3 = S3::start(BUCKET);
    let ha = Ha {
        env: Env::local_with(&s3.config(BUCKET)),
    };

    // Where the time goes, in the log (`scripts/test` runs this binary with --nocapture).
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("local_ha: {what} at {:.0} s", t0.elapsed().as_secs_f64());

    // Built through trouble: dbctl dies while Patroni bootstraps; node-3 then fails for good
    // (the run is kept, node-2 joins meanwhile); the next resume dies right after node-3
    // joined, before the journal heard of it; the last one finishes.
    let out = ha.run(
        &["create", "ha", "--ha", "--on-failure", "keep"],
        Some("setup.patroni.node-1@patroni-started=crash"),
    );
    assert!(was_killed(&out), "{}", stderr(&out));
    let run = ha.env.last_run();
    assert_eq!(qemu_processes(&run), 3);
    let out = ha.run(
        &["resume", &run],
        Some("setup.patroni.node-3@before=permanent"),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = ha.run(&["resume", &run], Some("setup.patroni.node-3@after=crash"));
    assert!(was_killed(&out), "{}", stderr(&out));
    let out = ha.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    eprintln!(
        "HA RUNNING (with two crashes and a failure) after {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let (_, st) = ha.json(&["status", &run]);
    assert_eq!(
        step(&st, "setup.patroni.node-1")["attempts"],
        2,
        "bootstrap resumed"
    );
    assert_eq!(
        step(&st, "setup.patroni.node-2")["attempts"],
        1,
        "node-2 not joined again"
    );
    assert_eq!(step(&st, "setup.patroni.node-3")["attempts"], 3);
    let zones: HashSet<&str> = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("provision.vm."))
        .map(|s| s["outputs"]["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones.len(), 3, "anti-affinity: three distinct zones");

    // Patroni: one leader, both others streaming, one of them synchronous.
    let c = ha.cluster();
    assert_eq!(ha.leader().as_deref(), Some("node-1"), "{c}");
    assert!(streaming(&c, "node-2") && streaming(&c, "node-3"), "{c}");
    let sync = sync_standby(&c).expect("a synchronous standby");
    // Slots are Patroni's, one per member, all in use; the tuned settings are the cluster's.
    assert_eq!(
        ha.ssh("node-1", "sudo -u postgres psql -XAtc \"select slot_name || ':' || active from pg_replication_slots order by 1\""),
        "node_2:true\nnode_3:true"
    );
    let (code, v) = ha.json(&["connect", "ha"]);
    assert_eq!(code, 0, "{v}");
    let uri = v["uri"].as_str().unwrap().to_string();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 3, "{v}");
    assert!(uri.contains("target_session_attrs=read-write"), "{uri}");
    assert_eq!(
        psql(&uri, "SELECT current_setting('data_checksums') || ' ' || current_setting('max_slot_wal_keep_size') || ' ' || current_setting('synchronous_standby_names') || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").unwrap(),
        format!("on 2560MB \"{sync}\" true")
    );
    let replica_uri = ha.json(&["connect", "ha", "--replica"]).1["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        psql(&replica_uri, "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    // Names and targets say nothing about roles (they would go stale at the first failover).
    let sd: Value = serde_json::from_str(
        &std::fs::read_to_string(ha.env.path("state/prometheus/default.ha.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sd.as_array().unwrap().len(), 6, "{sd}");
    assert!(
        sd.as_array()
            .unwrap()
            .iter()
            .all(|g| g["labels"].get("role").is_none()),
        "{sd}"
    );
    let hosts = ha.ssh(
        "node-3",
        "getent ahostsv4 ha.default.dbctl.internal | awk '{print $1}' | sort -u",
    );
    assert_eq!(hosts, "10.77.0.10\n10.77.0.11\n10.77.0.12");

    // Bad day-2 requests change nothing (exit 2, the field named).
    for (args, field) in [
        (vec!["switchover", "ha", "--to", "node-1"], "to"),
        (vec!["switchover", "ha", "--to", "node-9"], "to"),
        (vec!["failover", "ha", "--to", "node-2"], "to"),
        (vec!["reinit", "ha", "node-1"], "node"),
        (vec!["reinit", "ha", "node-7"], "node"),
    ] {
        let (code, v) = ha.json(&args);
        assert_eq!(
            (code, v["error"]["field"].as_str()),
            (2, Some(field)),
            "{args:?}: {v}"
        );
    }
    assert_eq!(
        ha.operations(),
        0,
        "no run was recorded for a refused request"
    );

    // Rows 1-50 and a moment to restore to later, from the backups taken before the failover.
    psql(&uri, "CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); INSERT INTO acked (id) SELECT generate_series(1, 50)").unwrap();
    let before = psql(
        &uri,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    phase("cluster checked");
    // The leader's VM dies (kill -9 of QEMU) under a writer using the URI from before.
    let writer = Writer::start(&uri, 100);
    writer.wait_more(20, Duration::from_secs(300));
    let killed = Instant::now();
    let pid = qemu_pid(&run, "node-1").expect("node-1's QEMU");
    // SAFETY: a plain kill(2) of a process this test found by its name.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = killed + Duration::from_secs(300);
    let first = loop {
        if let Some(t) = writer.first_after(killed) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded within 300 s of the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "failover: first acknowledged write {:.1} s after the kill",
        (first - killed).as_secs_f64()
    );
    writer.wait_more(10, Duration::from_secs(300));
    let (acked, _) = writer.finish();
    let new_leader = ha.leader().expect("a new leader");
    assert_ne!(new_leader, "node-1");
    assert_eq!(new_leader, sync, "the synchronous standby took over");
    let have = rows(&uri);
    let lost: Vec<&i64> = acked.difference(&have).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let (_, st) = ha.json(&["status", "ha"]);
    assert!(
        !st["cluster"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "node-1"),
        "the dead node is out of the cluster: {}",
        st["cluster"]
    );

    phase("failed over");
    // Backups follow the leader: it backs up as soon as it is promoted (incremental here: the
    // S3 repository holds the cluster's full backup), and archives.
    let stanza = step(&st, "register.backups")["outputs"]["stanza"]
        .as_str()
        .unwrap()
        .to_string();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - killed.elapsed().as_secs() as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut delay = Duration::from_secs(2);
    loop {
        let (code, list) = ha.json(&["backup", "list", "ha"]);
        assert_eq!(code, 0, "{list}");
        assert_eq!(list["node"], new_leader.as_str(), "{list}");
        let after = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "incr" && b["started"].as_i64().unwrap() >= since);
        if after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no backup by the new leader: {list}"
        );
        std::thread::sleep(delay);
        delay = (delay * 3 / 2).min(Duration::from_secs(15));
    }
    ha.ssh(
        &new_leader,
        &format!("sudo -u postgres pgbackrest --stanza={stanza} check"),
    );
    let moment = psql(
        &uri,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .unwrap();
    let at_moment = rows(&uri);
    psql(
        &uri,
        "SELECT pg_sleep(1.5); INSERT INTO acked (id) VALUES (1000000)",
    )
    .unwrap();
    ha.ssh(
        &new_leader,
        &format!("sudo -u postgres pgbackrest --stanza={stanza} check"),
    );

    phase("the new leader backed up");
    // The dead node comes back: its VM runs again and it rejoins as a replica, streaming.
    let out = ha.run(&["reinit", "ha", "node-1"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(qemu_processes(&run), 3);
    let c = ha.wait_for("node-1 streaming", Duration::from_secs(120), |c| {
        streaming(c, "node-1")
    });
    assert_eq!(ha.leader().as_deref(), Some(new_leader.as_str()), "{c}");
    assert_eq!(ha.operations(), 1);

    phase("node-1 rejoined");
    // A switchover under the writer: a new leader, writes resume, no row lost.
    let writer = Writer::start(&uri, 10_000);
    writer.wait_more(10, Duration::from_secs(300));
    let target = sync_standby(&ha.cluster()).expect("a synchronous standby");
    let t = Instant::now();
    let (code, v) = ha.json(&["switchover", "ha"]);
    assert_eq!(code, 0, "{v}");
    eprintln!("switchover took {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(
        step(&v, "switchover")["outputs"]["to"],
        target.as_str(),
        "{v}"
    );
    writer.wait_more(10, Duration::from_secs(300));
    let (acked, gap) = writer.finish();
    eprintln!(
        "switchover: longest gap between acknowledged writes {:.1} s",
        gap.as_secs_f64()
    );
    assert_eq!(ha.leader().as_deref(), Some(target.as_str()));
    let (_, list) = ha.json(&["list"]);
    assert_eq!(
        list[0]["run"],
        run.as_str(),
        "list names the create run, not the last day-2 run"
    );
    let have = rows(&uri);
    assert!(acked.is_subset(&have), "rows lost in the switchover");

    phase("switched over");
    // A replica rebuilt from the leader on request streams again.
    let replica = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|n| *n != target)
        .unwrap();
    let (code, v) = ha.json(&["reinit", "ha", replica, "--force"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        step(&v, &format!("reinit.rejoin.{replica}"))["outputs"]["rebuilt"],
        true
    );
    ha.wait_for("rebuilt replica streaming", Duration::from_secs(120), |c| {
        streaming(c, replica)
    });
    assert_eq!(
        rows(&replica_uri).len(),
        have.len(),
        "the rebuilt replica has every row"
    );

    phase("replica rebuilt");
    // Destroyed, the cluster leaves nothing behind but its backups (kept by default)...
    let (code, v) = ha.json(&["destroy", "ha"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(qemu_processes(&run), 0);
    assert!(!ha.env.path(&format!("state/local/{run}")).exists());
    assert!(!ha.env.path("state/prometheus/default.ha.json").exists());
    assert!(
        !s3.keys(BUCKET, &format!("dbctl/backup/{stanza}/"))
            .is_empty(),
        "kept"
    );

    phase("destroyed");
    // ...which restore, into one node each, to a moment before the failover (the backup taken
    // at create) and to one after it (the new leader's, with WAL across the timeline switch).
    let (first, second) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            ha.json(&[
                "restore",
                "ha",
                "--as",
                "ha-before",
                "--single",
                "--to",
                &before,
            ])
        });
        let b = s.spawn(|| {
            ha.json(&[
                "restore", "ha", "--as", "ha-after", "--single", "--to", &moment,
            ])
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    phase("restored twice");
    assert_eq!(first.0, 0, "{}", first.1);
    assert_eq!(second.0, 0, "{}", second.1);
    for (name, want) in [
        ("ha-before", (1..=50).collect::<BTreeSet<i64>>()),
        ("ha-after", at_moment),
    ] {
        let (code, c) = ha.json(&["connect", name]);
        assert_eq!(code, 0, "{c}");
        assert_eq!(rows(c["uri"].as_str().unwrap()), want, "{name}");
        let (code, v) = ha.json(&["destroy", name, "--purge-backups"]);
        assert_eq!(code, 0, "{v}");
    }
}
