//! End to end on the local provider: real QEMU VMs, real sshd, real PostgreSQL. Two tests, one
//! VM each, run at once. Needs the base image (`scripts/test` builds it: `dbctl image build`).

mod support;

use std::time::{Duration, Instant};

use dbctl::ssh::{ClientKey, SshError, SshSession, SshTarget, parse_public_key};
use serde_json::Value;
use support::{Conn, Env, conn, qemu_processes, stderr, was_killed};

fn require_image(env: &Env) {
    let (_, images) = env.json(&["image", "list"]);
    assert!(
        images
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["current"] == true)),
        "no base image for this dbctl: run scripts/test (it builds one) or `sudo dbctl image build`"
    );
}

fn step_outputs(status: &Value, step: &str) -> Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap()["outputs"]
        .clone()
}

async fn show(c: &tokio_postgres::Client, setting: &str) -> String {
    c.query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_instance_end_to_end() {
    let env = Env::local();
    require_image(&env);
    let t0 = Instant::now();
    // A throwaway instance (what CI pipelines create): the full flow but for backups and
    // exporters, which local_register covers.
    let (code, created) = env.json(&[
        "create",
        "e2e",
        "--throwaway",
        "--disk-gib",
        "1",
        "--extension",
        "pg_stat_statements",
        "--extension",
        "pgcrypto",
    ]);
    assert_eq!(code, 0, "{created}");
    eprintln!("time to RUNNING: {:.1} s", t0.elapsed().as_secs_f64());
    let run = created["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(qemu_processes(&run), 1);

    // The hot-plugged data disk: the guest sees a block device of the requested size.
    let attach = step_outputs(&created, "provision.attach.primary");
    assert_eq!(attach["size_bytes"], 1u64 << 30, "{attach}");
    let out = env.run(
        &[
            "ssh",
            "e2e",
            "--",
            "lsblk",
            "-bdno",
            "SIZE,SERIAL",
            "/dev/disk/by-id/virtio-dbctl-data",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1073741824", "dbctl-data"],
        "{}",
        stderr(&out)
    );

    // SSH: the recorded host key is accepted, any other is refused by our client.
    let vm = step_outputs(&created, "provision.vm.primary");
    let key = ClientKey::load_or_create(&env.path("state/ssh")).unwrap();
    let good = SshTarget {
        host: "127.0.0.1".into(),
        port: vm["ssh_port"].as_u64().unwrap() as u16,
        user: "dbctl".into(),
        host_key: parse_public_key(vm["host_key"].as_str().unwrap()).unwrap(),
    };
    let s = SshSession::connect(&good, &key, Duration::from_secs(30))
        .await
        .unwrap();
    let who = s
        .exec("id -un", None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(who.stdout_str().trim(), "dbctl");
    let other =
        russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let bad = SshTarget {
        host_key: other.public_key().clone(),
        ..good.clone()
    };
    match SshSession::connect(&bad, &key, Duration::from_secs(30)).await {
        Err(SshError::HostKeyMismatch { .. }) => {}
        Err(e) => panic!("expected a host key mismatch, got {e}"),
        Ok(_) => panic!("a wrong host key was accepted"),
    }

    // PostgreSQL from the host, TLS verified against dbctl's CA.
    let c = conn(&env, &["e2e"]);
    let pg = c.client().await.unwrap();
    assert_eq!(show(&pg, "data_checksums").await, "on");
    let t = dbctl::postgres::tuning::tune(1024, 1, 1);
    assert_eq!(
        show(&pg, "shared_buffers").await,
        format!("{}MB", t.shared_buffers_mb)
    );
    // Querying the view fails unless the library was preloaded.
    pg.query_one("SELECT count(*) FROM pg_stat_statements", &[])
        .await
        .expect("pg_stat_statements is preloaded");
    let exts: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname IN ('pg_stat_statements', 'pgcrypto')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exts, 2);
    // Throwaway: no archiving (nothing would consume the WAL), no exporters, and status says so.
    assert_eq!(show(&pg, "archive_mode").await, "off");
    let out = env.run(
        &[
            "ssh",
            "e2e",
            "--",
            "sudo",
            "systemctl",
            "is-active",
            "prometheus-postgres-exporter",
            "prometheus-node-exporter",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["inactive", "inactive"],
        "{}",
        stderr(&out)
    );
    let (_, st) = env.json(&["status", "e2e"]);
    assert_eq!(st["throwaway"], true, "{st}");

    // The pipeline's way in: a URI without the password plus a libpq password file (0600),
    // as create's JSON hands them out and `connect --passfile` writes them.
    let connection = &created["connection"];
    let uri = connection["uri"].as_str().unwrap();
    let passfile = connection["passfile"].as_str().unwrap();
    assert!(
        !created.to_string().contains(&c.password),
        "no password in create's JSON"
    );
    let (_, again) = env.json(&["connect", "e2e", "--passfile"]);
    assert_eq!(
        (again["uri"].as_str(), again["passfile"].as_str()),
        (Some(uri), Some(passfile))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(passfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = std::process::Command::new("psql")
        .args([
            uri,
            "-XAtc",
            "select current_user || ' ' || ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ])
        .env("PGPASSFILE", passfile)
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} true", c.user),
        "{}",
        stderr(&out)
    );
    pg.batch_execute("CREATE TABLE kept (id int PRIMARY KEY, v text); INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 500) g")
        .await
        .unwrap();

    // Without TLS, or with a wrong password: refused.
    let plain = format!(
        "host={} port={} user={} password={} dbname={} sslmode=disable",
        c.host, c.port, c.user, c.password, c.database
    );
    let err = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .err()
        .expect("non-TLS must be refused");
    assert!(format!("{err:?}").contains("no encryption"), "{err:?}");
    let wrong = Conn {
        password: "not-the-password".into(),
        ..conn(&env, &["e2e"])
    };
    let Err(err) = wrong.client().await else {
        panic!("wrong password must be refused")
    };
    assert!(err.contains("password authentication failed"), "{err}");

    // Restart the VM: the service comes back by itself with the data.
    let _ = env.run(&["ssh", "e2e", "--", "sudo", "systemctl", "reboot"], None);
    let t = Instant::now();
    let rows = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(pg) = c.client().await
            && let Ok(r) = pg.query_one("SELECT count(*) FROM kept", &[]).await
        {
            break r.get::<_, i64>(0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "PostgreSQL did not come back after reboot"
        );
    };
    assert_eq!(rows, 500);
    eprintln!("back after reboot: {:.1} s", t.elapsed().as_secs_f64());
    let (_, st) = env.json(&["status", "e2e"]);
    assert_eq!(st["nodes"][0]["state"], "running", "{st}");

    // Destroy leaves nothing: no process, no run directory, no stored password.
    let (code, _) = env.json(&["destroy", "e2e"]);
    assert_eq!(code, 0);
    assert_eq!(qemu_processes(&run), 0);
    assert!(!env.path(&format!("state/local/{run}")).exists());
    let secrets: Vec<_> = std::fs::read_dir(env.path("state/secrets"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(secrets.is_empty(), "{secrets:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_after_qemu_start_and_in_setup_resume_without_duplicates_then_roll_back() {
    let env = Env::local();
    require_image(&env);
    // kill -9 right after QEMU started, before the journal heard of it.
    let out = env.run(
        &["create", "crashy"],
        Some("provision.vm.primary@qemu-started=crash"),
    );
    assert!(was_killed(&out), "{}", stderr(&out));
    let run = env.last_run();
    assert_eq!(qemu_processes(&run), 1);
    // Resume adopts that VM; then dies again after the setup SQL ran, before its journal write.
    let out = env.run(&["resume", &run], Some("setup.primary@after=crash"));
    assert!(was_killed(&out), "{}", stderr(&out));
    assert_eq!(
        qemu_processes(&run),
        1,
        "resume must adopt the running VM, not start another"
    );
    let logs = String::from_utf8_lossy(&env.run(&["logs", &run], None).stdout).into_owned();
    assert!(logs.contains("adopting running VM"), "{logs}");
    // The last resume re-runs setup: roles and database already exist, nothing fails or doubles.
    let out = env.run(&["resume", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, st) = env.json(&["status", &run]);
    let attempts = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "setup.primary")
        .unwrap()["attempts"]
        .clone();
    assert_eq!(attempts, 2);
    let pg = conn(&env, &["crashy"]).client().await.unwrap();
    let roles: i64 = pg
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = 'app'", &[])
        .await
        .unwrap()
        .get(0);
    let dbs: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'crashy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((roles, dbs), (1, 1));
    assert_eq!(qemu_processes(&run), 1);

    let out = env.run(&["rollback", &run], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(qemu_processes(&run), 0);
    assert!(
        !env.path(&format!("state/local/{run}")).exists(),
        "VM, disk and network files removed"
    );
}
