//! The register stage end to end on the local provider (real VMs, real PostgreSQL, pgBackRest
//! against an S3 endpoint served by moto over TLS): DNS names, Prometheus targets scraped from
//! the host, WAL archiving and backups — and a point-in-time restore into a new instance that
//! proves them, and again from the kept backups of the destroyed source. One test; at most two
//! VMs run at a time.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::s3::S3;
use support::{Env, conn, stderr};

const BUCKET: &str = "dbctl-backups";

fn outputs(status: &Value, step: &str) -> Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step {step}: {status}"))["outputs"]
        .clone()
}

/// A plain HTTP GET (what Prometheus does to a target).
fn http_get(target: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn ssh(env: &Env, name: &str, cmd: &str) -> String {
    let out = env.run(&["ssh", name, "--", cmd], None);
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_publishes_names_targets_backups_and_restore_recovers_a_point_in_time() {
    let s3 = S3::start(BUCKET);
    let env = Env::local_with(&s3.config(BUCKET));
    let creds = [
        ("DBCTL_S3_KEY", "testing"),
        ("DBCTL_S3_KEY_SECRET", "testing"),
    ];
    let json = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = env.command(&all, None).envs(creds).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stderr(&out)));
        (out.status.code().unwrap_or(-1), v)
    };

    let t0 = Instant::now();
    let (code, created) = json(&["create", "reg", "--disk-gib", "1"]);
    assert_eq!(code, 0, "{created}");
    eprintln!(
        "time to RUNNING with register: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    for s in ["register.dns", "register.monitoring", "register.backups"] {
        let st = created["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == s)
            .unwrap();
        eprintln!(
            "{s}: {} ms",
            st["finished_at"].as_i64().unwrap_or(0) - st["started_at"].as_i64().unwrap_or(0)
        );
    }
    let instance_id = created["run"]["instance_id"].as_str().unwrap().to_string();

    // DNS: the hosts file names the primary, and so does the VM's /etc/hosts (private address).
    let name = "reg.default.dbctl.internal";
    let hosts = std::fs::read_to_string(env.path("state/hosts")).unwrap();
    assert_eq!(
        dbctl::register::hosts::lookup(&hosts, name),
        ["127.0.0.1"],
        "{hosts}"
    );
    let inside = ssh(&env, "reg", &format!("getent hosts {name}"));
    assert_eq!(
        inside.split_whitespace().next(),
        Some("10.77.0.10"),
        "{inside}"
    );

    // Monitoring: one file_sd file, both exporters of the node, labelled; scraped from the host.
    let sd_path = env.path("state/prometheus/default.reg.json");
    let sd: Value = serde_json::from_str(&std::fs::read_to_string(&sd_path).unwrap()).unwrap();
    let groups = sd.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{sd}");
    let zone = outputs(&created, "provision.vm.primary")["zone"].clone();
    for g in groups {
        let l = &g["labels"];
        assert_eq!(l["project"], "default");
        assert_eq!(l["instance_name"], "reg");
        // No role label: roles change with failovers (pg_replication_is_replica says it live).
        assert!(l.get("role").is_none(), "{l}");
        assert_eq!(l["zone"], zone);
        let target = g["targets"][0].as_str().unwrap();
        let page = http_get(target, "/metrics");
        match l["exporter"].as_str().unwrap() {
            "postgres" => {
                assert!(page.lines().any(|x| x == "pg_up 1"), "{target}: no pg_up 1");
                assert!(
                    page.lines()
                        .any(|x| x.starts_with("pg_replication_is_replica") && x.ends_with(" 0")),
                    "{target}: the role is a metric"
                );
            }
            "node" => assert!(page.contains("node_boot_time_seconds"), "{target}"),
            other => panic!("unexpected exporter {other}"),
        }
    }

    // Backups: pgbackrest check passes on the node, one full backup is listed.
    let stanza = outputs(&created, "register.backups")["stanza"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stanza, instance_id);
    ssh(
        &env,
        "reg",
        &format!("sudo -u postgres pgbackrest --stanza={stanza} check"),
    );
    let (code, list) = json(&["backup", "list", "reg"]);
    assert_eq!(code, 0, "{list}");
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{list}");
    assert_eq!(backups[0]["kind"], "full");
    assert!(
        !s3.keys(BUCKET, &format!("dbctl/backup/{stanza}/"))
            .is_empty()
    );

    // Point in time: rows 1-100, the moment, rows 101-200; WAL archived (check switches and
    // waits); restore to the moment into a new instance: only the first rows are there.
    let c = conn(&env, &["reg"]).client().await.unwrap();
    c.batch_execute("CREATE TABLE events (id int PRIMARY KEY); INSERT INTO events SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let moment: String = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.batch_execute("SELECT pg_sleep(1.5); INSERT INTO events SELECT generate_series(101, 200)")
        .await
        .unwrap();
    ssh(
        &env,
        "reg",
        &format!("sudo -u postgres pgbackrest --stanza={stanza} check"),
    );

    let t1 = Instant::now();
    let (code, restored) = json(&["restore", "reg", "--as", "reg-pitr", "--to", &moment]);
    assert_eq!(code, 0, "{restored}");
    eprintln!("restore to RUNNING: {:.1} s", t1.elapsed().as_secs_f64());
    let r = conn(&env, &["reg-pitr"]).client().await.unwrap();
    let (n, max): (i64, Option<i32>) = r
        .query_one("SELECT count(*), max(id) FROM events", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!((n, max), (100, Some(100)), "restored to {moment}");
    // The copy is its own instance: writable, with its own stanza and first backup.
    r.batch_execute("INSERT INTO events VALUES (1000)")
        .await
        .unwrap();
    let own = outputs(&restored, "register.backups");
    assert_ne!(own["stanza"], stanza.as_str());
    assert_eq!(own["backups"].as_array().map(Vec::len), Some(1), "{own}");

    // On demand: a differential backup joins the list.
    let (code, now) = json(&["backup", "now", "reg", "--type", "diff"]);
    assert_eq!(code, 0, "{now}");
    let kinds: Vec<&str> = now["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "diff"], "{now}");

    // Destroy: names and targets go, backups stay unless purged.
    let (code, _) = json(&["destroy", "reg"]);
    assert_eq!(code, 0);
    let hosts = std::fs::read_to_string(env.path("state/hosts")).unwrap();
    assert!(
        dbctl::register::hosts::lookup(&hosts, name).is_empty(),
        "{hosts}"
    );
    assert!(!sd_path.exists());
    assert!(
        !s3.keys(BUCKET, &format!("dbctl/backup/{stanza}/"))
            .is_empty(),
        "backups kept"
    );
    let pitr_stanza = own["stanza"].as_str().unwrap().to_string();
    let (code, _) = json(&["destroy", "reg-pitr", "--purge-backups"]);
    assert_eq!(code, 0);
    assert!(
        s3.keys(BUCKET, &format!("dbctl/backup/{pitr_stanza}/"))
            .is_empty(),
        "purged"
    );
    assert!(
        s3.keys(BUCKET, &format!("dbctl/archive/{pitr_stanza}/"))
            .is_empty(),
        "purged"
    );

    // The kept backups are usable: the destroyed instance restores, with every row.
    let (code, again) = json(&["restore", "reg", "--as", "reg-again"]);
    assert_eq!(code, 0, "{again}");
    let a = conn(&env, &["reg-again"]).client().await.unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200);
    let (code, _) = json(&["destroy", "reg-again", "--purge-backups"]);
    assert_eq!(code, 0);
    assert!(
        !std::fs::read_to_string(env.path("state/hosts"))
            .unwrap()
            .contains("dbctl:begin")
    );
}
