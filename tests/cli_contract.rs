//! The command-line contract: validation, exit codes, idempotency, quotas, JSON shapes.

mod support;

use support::{Env, stderr};

#[test]
fn invalid_spec_exits_2_names_the_field_and_writes_nothing() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (&["create", "Bad_Name"], "name:"),
        (&["create", "db", "--version", "9"], "version:"),
        (&["create", "db", "--disk-gib", "0"], "disk_gib:"),
        (&["create", "db", "--size", "huge"], "size:"),
        (&["create", "db", "--tag", "novalue"], "tags:"),
        (&["create", "db", "--ttl", "1s"], "ttl:"),
        (&["create", "db", "--provider", "gcp"], "provider:"),
        (
            &["create", "db", "--extension", "timescaledb"],
            "extensions[0]:",
        ),
        (&["create", "-f", "/nonexistent/spec.toml"], "file:"),
        (&["create", "db", "--replication", "async"], "replication:"),
        (
            &["create", "db", "--ha", "--replication", "quorum"],
            "replication:",
        ),
    ];
    for (args, field) in cases {
        let out = env.run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(field), "{args:?} should name {field}: {err}");
    }
    // Usage errors from clap itself are exit 2 as well.
    assert_eq!(
        env.run(&["create", "--no-such-flag"], None).status.code(),
        Some(2)
    );
    assert!(
        !env.journal_path().exists(),
        "no journal may be created by bad input"
    );
    assert!(!env.path("testbed").exists(), "no provider side effect");
}

#[test]
fn json_errors_carry_kind_field_and_exit_code() {
    let env = Env::new();
    let (code, v) = env.json(&["create", "db", "--cpus", "99"]);
    assert_eq!(code, 2);
    assert_eq!(v["error"]["kind"], "invalid");
    assert_eq!(v["error"]["field"], "cpus");
    assert_eq!(v["error"]["exit_code"], 2);
    let (code, v) = env.json(&["status", "run-doesnotexist"]);
    assert_eq!((code, v["error"]["kind"].as_str()), (8, Some("not_found")));
}

#[test]
fn spec_file_and_flags_combine() {
    let env = Env::new();
    std::fs::write(
        env.path("spec.toml"),
        "name = \"orders\"\ndisk_gib = 20\nha = true\n[tags]\nteam = \"pay\"\n",
    )
    .unwrap();
    let (code, v) = env.json(&[
        "plan",
        "-f",
        env.path("spec.toml").to_str().unwrap(),
        "--disk-gib",
        "30",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["spec"]["name"], "orders");
    assert_eq!(v["spec"]["disk_gib"], 30);
    assert_eq!(v["spec"]["tags"]["team"], "pay");
    assert_eq!(v["placement"]["nodes"].as_array().unwrap().len(), 3);
    assert!(!env.journal_path().exists(), "plan creates no journal");
    std::fs::write(env.path("typo.toml"), "name = \"x\"\ndisk_gb = 1\n").unwrap();
    let out = env.run(
        &["plan", "-f", env.path("typo.toml").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("disk_gb"), "{}", stderr(&out));
}

#[test]
fn plan_shows_the_whole_flow_for_every_provider() {
    let env = Env::new();
    for provider in ["local", "aws", "testbed"] {
        let (code, v) = env.json(&[
            "plan",
            "db",
            "--ha",
            "--provider",
            provider,
            "--region",
            "us-east-1",
            "--offline",
        ]);
        assert_eq!(code, 0, "{provider}: {v}");
        let steps = step_names(&v);
        assert!(
            steps.contains(&"setup.patroni.node-3") && steps.contains(&"register.endpoints"),
            "{steps:?}"
        );
        let zones: std::collections::HashSet<&str> = v["placement"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["zone"].as_str().unwrap())
            .collect();
        assert_eq!(zones.len(), 3, "anti-affinity for {provider}");
        assert_eq!(v["executable"], true, "{provider} is built in");
    }
    let out = env.run(
        &["plan", "db", "--ha", "--zone", "tb-a", "--zone", "tb-b"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("zones:"), "{}", stderr(&out));
}

#[test]
fn create_is_idempotent_by_key() {
    let env = Env::new();
    let (code, first) = env.json(&["create", "db", "--idempotency-key", "deploy-1"]);
    assert_eq!(code, 0, "{first}");
    let run = first["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(first["run"]["state"], "succeeded");
    // Same key, same spec: the same run comes back and nothing is created again.
    let (code, again) = env.json(&["create", "db", "--idempotency-key", "deploy-1"]);
    assert_eq!((code, again["run"]["id"].as_str()), (0, Some(run.as_str())));
    assert!(env.count("create").values().all(|&n| n == 1));
    // Same key, different spec: refused.
    let out = env.run(
        &[
            "create",
            "db",
            "--idempotency-key",
            "deploy-1",
            "--disk-gib",
            "20",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("idempotency_key"), "{}", stderr(&out));
    // Default key: the same command twice maps to the same run as well.
    let (_, a) = env.json(&["create", "other"]);
    let (_, b) = env.json(&["create", "other"]);
    assert_eq!(a["run"]["id"], b["run"]["id"]);
    // A different spec under an existing name is refused, naming the field.
    let out = env.run(&["create", "other", "--disk-gib", "11"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("name: instance \"other\" already exists"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unfinished_run_is_resumed_by_repeating_create() {
    let env = Env::new();
    let out = env.run(&["create", "db"], Some("deploy.primary@before=crash"));
    assert!(support::was_killed(&out));
    let run = env.last_run();
    let (code, v) = env.json(&["create", "db"]);
    assert_eq!((code, v["run"]["id"].as_str()), (0, Some(run.as_str())));
    assert!(env.count("create").values().all(|&n| n == 1));
}

#[test]
fn quota_exceeded_exits_3_and_writes_nothing() {
    let env = Env::with_config("[quotas.default]\ninstances = 1\nvcpus = 4\ndisk_gib = 100\n");
    assert_eq!(env.run(&["create", "one"], None).status.code(), Some(0));
    let out = env.run(&["create", "two"], None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("instances: 1 of 1 in use"),
        "{}",
        stderr(&out)
    );
    let out = env.run(
        &["create", "big", "--project", "other", "--ha", "--cpus", "2"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("vcpus: 0 of 4 in use, this instance needs 6"),
        "{}",
        stderr(&out)
    );
    let (_, list) = env.json(&["list", "--all"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the admitted instance is journaled"
    );
    // Destroying frees the quota.
    assert_eq!(env.run(&["destroy", "one"], None).status.code(), Some(0));
    assert_eq!(env.run(&["create", "two"], None).status.code(), Some(0));
}

#[test]
fn failure_rolls_back_by_default_and_keep_leaves_everything() {
    let env = Env::new();
    let out = env.run(&["create", "db"], Some("setup.primary@before=permanent"));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(env.markers_left().is_empty());
    let run = env.last_run();
    assert_eq!(env.run_state(&run), "rolled_back");
    // The name is free again after a rolled-back failure.
    let out = env.run(
        &["create", "db", "--on-failure", "keep"],
        Some("setup.primary@before=permanent"),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let kept = env.last_run();
    assert_eq!(env.run_state(&kept), "failed");
    assert!(env.markers_left().contains(&"deploy.primary".to_string()));
    // Resume after fixing the cause finishes it.
    let (code, v) = env.json(&["resume", &kept]);
    assert_eq!((code, v["run"]["state"].as_str()), (0, Some("succeeded")));
}

#[test]
fn status_list_logs_and_destroy() {
    let env = Env::new();
    let (_, created) = env.json(&["create", "db", "--ttl", "2h", "--tag", "team=pay"]);
    let run = created["run"]["id"].as_str().unwrap();
    let (code, st) = env.json(&["status", "db"]);
    assert_eq!(code, 0);
    assert_eq!(st["instance"]["state"], "running");
    assert_eq!(st["run"]["id"], run);
    assert!(
        st["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "created")
    );
    let (_, list) = env.json(&["list"]);
    assert_eq!(list[0]["name"], "db");
    assert!(list[0]["expires_at"].is_i64());
    assert_eq!(list[0]["expired"], false);
    let logs = env.run(&["logs", run], None);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.contains("provision.network: execute started (attempt 1)")
            && text.contains("succeeded"),
        "{text}"
    );
    let (code, _) = env.json(&["destroy", "db"]);
    assert_eq!(code, 0);
    assert!(env.markers_left().is_empty());
    let (_, list) = env.json(&["list"]);
    assert!(list.as_array().unwrap().is_empty());
    assert_eq!(env.run(&["destroy", "db"], None).status.code(), Some(8));
    assert_eq!(env.run(&["resume", run], None).status.code(), Some(2));
}

#[test]
fn help_documents_commands_examples_and_exit_codes() {
    let env = Env::new();
    let out = env.run(&["--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "create",
        "plan",
        "resume",
        "rollback",
        "destroy",
        "logs",
        "Exit codes",
        "130",
        "Examples",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let out = env.run(&["create", "--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--ha",
        "--idempotency-key",
        "--on-failure",
        "--ttl",
        "Examples",
    ] {
        assert!(help.contains(needle), "create --help lacks {needle}");
    }
}

#[test]
fn shipped_examples_are_valid() {
    let env = Env::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = env
        .command(
            &[
                "plan",
                "-f",
                &format!("{root}/examples/orders.toml"),
                "--output",
                "json",
            ],
            None,
        )
        .env("DBCTL_CONFIG", format!("{root}/examples/config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["spec"]["project"].as_str(),
            v["spec"]["replicas"].as_u64()
        ),
        (Some("payments"), Some(2))
    );
}

#[test]
fn bad_register_config_and_restore_requests_exit_2_and_write_nothing() {
    let s3 =
        "[backup]\nrepo = \"s3\"\n[backup.s3]\nendpoint = \"s3.example.test\"\nbucket = \"b\"\n";
    let no_creds = |env: &Env, args: &[&str]| {
        env.command(args, None)
            .env_remove("DBCTL_S3_KEY")
            .env_remove("DBCTL_S3_KEY_SECRET")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap()
    };
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "[backup]\nrepo = \"s3\"\n",
            &["create", "db"],
            "backup.s3.endpoint:",
        ),
        ("[backup]\nrepo = \"tape\"\n", &["create", "db"], "config:"),
        (
            "[backup]\nretention_full = 0\n",
            &["create", "db"],
            "backup.retention_full:",
        ),
        (
            "[register]\ndns_suffix = \"bad_suffix\"\n",
            &["create", "db"],
            "register.dns_suffix:",
        ),
        (s3, &["create", "db"], "backup.s3:"),
        ("", &["restore", "db", "--as", "copy"], "backup.repo:"),
        (s3, &["restore", "db", "--as", "Bad_Name"], "as:"),
        (
            s3,
            &["restore", "db", "--as", "copy", "--to", "yesterday"],
            "to:",
        ),
        (
            s3,
            &[
                "restore",
                "db",
                "--as",
                "copy",
                "--to",
                "2999-01-01T00:00:00Z",
            ],
            "to:",
        ),
    ];
    for (config, args, field) in cases {
        let env = Env::with_config(config);
        let out = no_creds(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{config} {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(field), "{args:?} should name {field}: {err}");
        assert!(!env.journal_path().exists(), "{args:?} created a journal");
        assert!(
            !env.path("testbed").exists(),
            "{args:?}: provider side effect"
        );
    }
}

#[test]
fn bad_image_files_exit_2_and_import_nothing() {
    let env = Env::local();
    let text = env.path("notes.qcow2");
    std::fs::write(&text, "not a disk\n").unwrap();
    let with_backing = env.path("overlay.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&text)
        .arg(&with_backing)
        .status()
        .unwrap();
    assert!(made.success());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["/nonexistent/disk.qcow2".into()],
            "No such file or directory",
        ),
        (
            vec![text.display().to_string()],
            "not a bootable disk image",
        ),
        (vec![with_backing.display().to_string()], "backing file"),
    ];
    let images_before = std::fs::read_dir(dirs_cache().join("images"))
        .map(|d| d.count())
        .unwrap_or(0);
    for (path, why) in &cases {
        for args in [
            vec!["create", "db", "--image", path[0].as_str()],
            vec!["image", "import", path[0].as_str()],
        ] {
            let out = env.run(&args, None);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(
                err.contains("image:") && err.contains(why),
                "{args:?}: {err}"
            );
            assert!(!env.journal_path().exists(), "{args:?} created a journal");
        }
    }
    let images_after = std::fs::read_dir(dirs_cache().join("images"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(images_before, images_after, "nothing imported");
}

/// The image cache the binary uses (`$XDG_CACHE_HOME/dbctl`, default `~/.cache/dbctl`).
fn dirs_cache() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
        .join("dbctl")
}

#[test]
fn day2_commands_refuse_what_is_not_an_ha_cluster_and_record_nothing() {
    let env = Env::new();
    assert_eq!(env.run(&["create", "db"], None).status.code(), Some(0));
    let runs = || {
        env.journal()
            .runs_of_instance(&env.journal().instances(true).unwrap()[0].id)
            .unwrap()
            .len()
    };
    let before = runs();
    for args in [
        vec!["switchover", "db"],
        vec!["switchover", "db", "--to", "node-2"],
        vec!["failover", "db", "--to", "node-2"],
        vec!["reinit", "db", "primary"],
    ] {
        let out = env.run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("name: db is not an HA instance"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    for args in [vec!["switchover", "nope"], vec!["reinit", "nope", "node-1"]] {
        assert_eq!(env.run(&args, None).status.code(), Some(8), "{args:?}");
    }
    // A day-2 run cannot be "rolled back"; an unknown run is not found.
    assert_eq!(
        env.run(&["rollback", "run-0000000000"], None).status.code(),
        Some(8)
    );
    assert_eq!(runs(), before, "nothing recorded");
}

#[test]
fn create_json_ends_with_what_a_pipeline_needs() {
    let env = Env::new();
    let (code, v) = env.json(&["create", "db", "--ttl", "2h"]);
    assert_eq!(code, 0, "{v}");
    let run = v["run"]["id"].as_str().unwrap();
    assert!(run.starts_with("run-"), "{v}");
    assert_eq!(v["run"]["state"], "succeeded");
    assert_eq!(v["instance"]["name"], "db");
    assert_eq!(v["instance"]["state"], "running");
    assert!(v["instance"]["expires_at"].is_i64(), "{v}");
    assert!(v["endpoints"].is_array(), "{v}");
    assert_eq!(v["connect"], "dbctl connect db --project default");
    // The testbed records no endpoint, so there is nothing to connect to (yet) — and never a
    // password without --show-secrets.
    assert!(v["connection"].is_null(), "{v}");
    assert!(!v.to_string().contains("password"), "{v}");
    // The same document when the idempotency key returns the finished run.
    let (code, again) = env.json(&["create", "db", "--ttl", "2h", "--show-secrets"]);
    assert_eq!((code, again["run"]["id"].as_str()), (0, Some(run)));
    assert_eq!(again["instance"]["name"], "db");
}

#[test]
fn a_throwaway_instance_has_no_backups_or_exporters_and_says_so() {
    let env = Env::new();
    let (code, v) = env.json(&["create", "scratch", "--throwaway", "--ttl", "1h"]);
    assert_eq!(code, 0, "{v}");
    let steps = step_names(&v);
    assert!(steps.contains(&"register.endpoints"), "{steps:?}");
    assert!(!steps.contains(&"register.backups"), "{steps:?}");
    assert!(!steps.contains(&"register.monitoring"), "{steps:?}");
    let (_, status) = env.json(&["status", "scratch"]);
    assert_eq!(status["throwaway"], true, "{status}");
    assert_eq!(status["left_out"].as_array().unwrap().len(), 2, "{status}");
    let text = env.run(&["status", "scratch"], None);
    assert!(
        support::stdout(&text).contains("throwaway (--throwaway): built without backups"),
        "{}",
        support::stdout(&text)
    );
    // Nothing to back up or list: exit 2 naming the instance, and nothing recorded.
    let runs_before = env.json(&["list", "--all"]).1;
    for args in [
        &["backup", "now", "scratch"][..],
        &["backup", "list", "scratch"],
    ] {
        let out = env.run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .starts_with("error: invalid request: name: scratch is a throwaway instance"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(env.json(&["list", "--all"]).1, runs_before);
    // A TTL alone changes nothing: the same create without the flag has every step.
    let (_, full) = env.json(&["create", "kept", "--ttl", "1h"]);
    let (_, status) = env.json(&["status", "kept"]);
    assert_eq!(status["throwaway"], false);
    assert!(
        full["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "register.backups")
    );
}

/// The step names of a run document (`create`, `plan`, `status` JSON).
fn step_names(v: &serde_json::Value) -> Vec<&str> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}
