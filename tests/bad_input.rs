//! A corpus of bad input for every command, through the real binary and the testbed provider.
//!
//! Each case is (setup, arguments, exit code, a substring of the message). For every case:
//! the exit code is the documented one (README "Exit codes"), stderr is one line that names
//! the field or the object, and nothing changed — the journal's rows (or, for a file that is
//! not dbctl's, its bytes) and the testbed's effects are the same before and after.

mod support;

use sha2::{Digest, Sha256};
use support::{Env, journal_rows, stderr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// No journal yet.
    Empty,
    /// A journal with instance `db` (testbed, running).
    Instance,
    /// The journal path holds random bytes.
    Garbage,
    /// The journal path holds another application's SQLite database.
    OtherApp,
}

use Setup::*;

/// (setup, args, exit code, substring of stderr)
#[rustfmt::skip]
const CASES: &[(Setup, &[&str], i32, &str)] = &[
    // create: every kind of bad flag value
    (Empty, &["create", "Bad_Name"], 2, "name:"),
    (Empty, &["create", "db", "--version", "9"], 2, "version:"),
    (Empty, &["create", "db", "--version", "abc"], 2, "--version"),
    (Empty, &["create", "db", "--size", "huge"], 2, "size:"),
    (Empty, &["create", "db", "--cpus", "99"], 2, "cpus:"),
    (Empty, &["create", "db", "--memory-gib", "0"], 2, "memory_gib:"),
    (Empty, &["create", "db", "--cpus", "2", "--size", "small"], 2, "--size"),
    (Empty, &["create", "db", "--disk-gib", "0"], 2, "disk_gib:"),
    (Empty, &["create", "db", "--disk-gib", "99999999"], 2, "disk_gib:"),
    (Empty, &["create", "db", "--ttl", "1s"], 2, "ttl:"),
    (Empty, &["create", "db", "--ttl", "forever"], 2, "ttl:"),
    (Empty, &["create", "db", "--ttl", "400d"], 2, "ttl:"),
    (Empty, &["create", "db", "--tag", "novalue"], 2, "tags:"),
    (Empty, &["create", "db", "--tag", "dbctl:owner=me"], 2, "tags.dbctl:owner"),
    (Empty, &["create", "db", "--tag", "=v"], 2, "tags."),
    (Empty, &["create", "db", "--provider", "gcp"], 2, "provider:"),
    (Empty, &["create", "db", "--engine", "mysql"], 2, "engine:"),
    (Empty, &["create", "db", "--provider", "aws", "--region", "us-east-1", "--ssh-cidr", "0.0.0.0/0"], 2, "ssh_cidr:"),
    (Empty, &["create", "db", "--provider", "aws", "--region", "us-east-1", "--ssh-cidr", "banana"], 2, "ssh_cidr:"),
    (Empty, &["create", "db", "--database", "1x"], 2, "database:"),
    (Empty, &["create", "db", "--user", "bad user"], 2, "users[0]:"),
    (Empty, &["create", "db", "--extension", "timescaledb"], 2, "extensions[0]:"),
    (Empty, &["create", "db", "--ha", "--zone", "nosuch"], 2, "zones[0]:"),
    (Empty, &["create", "db", "--ha", "--replication", "quorum"], 2, "replication:"),
    (Empty, &["create", "db", "--replication", "async"], 2, "replication:"),
    (Empty, &["create", "db", "--on-failure", "maybe"], 2, "--on-failure"),
    (Empty, &["create", "db", "--idempotency-key", ""], 2, "idempotency_key:"),
    (Empty, &["create", "db", "--no-such-flag"], 2, "--no-such-flag"),
    (Empty, &["restore", "db"], 2, "--as"),
    // spec files: TOML syntax, unknown key, wrong types, missing
    (Empty, &["create", "-f", "syntax.toml"], 2, "syntax.toml: "),
    (Empty, &["create", "-f", "unknown.toml"], 2, "`bogus`"),
    (Empty, &["create", "-f", "type.toml"], 2, "disk_gib: invalid type"),
    (Empty, &["plan", "-f", "type-bool.toml"], 2, "ha: invalid type"),
    (Empty, &["plan", "-f", "type-tag.toml"], 2, "tags.team: invalid type"),
    (Empty, &["create", "-f", "missing.toml"], 2, "file: cannot read"),
    // config files: same, for every command (the config is read first)
    (Empty, &["--config", "c-syntax.toml", "create", "db"], 2, "config: "),
    (Empty, &["--config", "c-unknown.toml", "list"], 2, "`providr`"),
    (Empty, &["--config", "c-type.toml", "create", "db"], 2, "retry.max_attempts: invalid type"),
    (Empty, &["--config", "c-negative.toml", "status", "db"], 2, "quotas.default.instances:"),
    (Empty, &["--config", "c-accel.toml", "create", "db"], 2, "local.accel:"),
    (Empty, &["--config", "c-section.toml", "destroy", "db"], 2, "`nosuch`"),
    (Empty, &["--config", "missing.toml", "list"], 2, "config: cannot read"),
    // unknown runs and instances, no journal at all
    (Empty, &["status", "run-0000000000"], 8, "run-0000000000"),
    (Empty, &["resume", "run-0000000000"], 8, "run-0000000000"),
    (Empty, &["rollback", "run-0000000000"], 8, "run-0000000000"),
    (Empty, &["logs", "run-0000000000"], 8, "run-0000000000"),
    (Empty, &["destroy", "nope"], 8, "\"nope\""),
    (Empty, &["connect", "nope"], 8, "\"nope\""),
    // unknown runs and instances beside a real one
    (Instance, &["status", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["status", "db", "--project", "other"], 8, "project \"other\""),
    (Instance, &["status", "run-0000000000"], 8, "run run-0000000000 not found"),
    (Instance, &["resume", "run-0000000000"], 8, "run run-0000000000 not found"),
    (Instance, &["rollback", "run-0000000000"], 8, "run run-0000000000 not found"),
    (Instance, &["logs", "run-0000000000", "--follow"], 8, "run run-0000000000 not found"),
    (Instance, &["destroy", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["connect", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["ssh", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["backup", "list", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["backup", "now", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["switchover", "nope"], 8, "instance \"nope\" not found"),
    (Instance, &["failover", "nope", "--to", "node-2"], 8, "instance \"nope\" not found"),
    (Instance, &["reinit", "nope", "node-1"], 8, "instance \"nope\" not found"),
    // requests that do not fit the instance
    (Instance, &["restore", "nope", "--as", "copy"], 2, "backup.repo:"),
    (Instance, &["restore", "db", "--as", "copy", "--to", "yesterday"], 2, "to:"),
    (Instance, &["backup", "now", "db", "--type", "weird"], 2, "--type"),
    (Instance, &["switchover", "db"], 2, "name: db is not an HA instance"),
    (Instance, &["failover", "db", "--to", "node-2"], 2, "name: db is not an HA instance"),
    (Instance, &["reinit", "db", "node-9"], 2, "name: db is not an HA instance"),
    (Instance, &["ssh", "db"], 2, "name:"),
    (Instance, &["connect", "db", "--tunnel"], 2, "tunnel: db is on testbed"),
    (Instance, &["connect", "db", "--tunnel", "--psql"], 2, "--psql"),
    (Instance, &["create", "db", "--disk-gib", "11"], 2, "name: instance \"db\" already exists"),
    // gc: bad ages, providers and flags are refused before anything is looked at
    (Empty, &["gc", "--keep-history", "soon"], 2, "keep_history:"),
    (Empty, &["gc", "--provider", "gcp"], 2, "provider:"),
    (Empty, &["--config", "c-gc.toml", "gc", "--dry-run"], 2, "gc.keep_history:"),
    (Empty, &["--config", "c-gc-key.toml", "gc"], 2, "`keep`"),
    (Instance, &["gc", "--keep-history=-1d"], 2, "keep_history:"),
    (Instance, &["gc", "--provider", "gcp", "--dry-run"], 2, "provider:"),
    (Instance, &["gc", "--older-than", "3d"], 2, "--older-than"),
    // a journal that is not dbctl's: exit 1 (unreadable journal), the file untouched
    (Garbage, &["list"], 1, "not a dbctl journal"),
    (Garbage, &["status", "db"], 1, "not a dbctl journal"),
    (Garbage, &["create", "db"], 1, "not a dbctl journal"),
    (Garbage, &["resume", "run-0000000000"], 1, "not a dbctl journal"),
    (OtherApp, &["list", "--all"], 1, "another application"),
    (OtherApp, &["create", "db"], 1, "another application"),
    (OtherApp, &["destroy", "db"], 1, "another application"),
    (OtherApp, &["logs", "run-0000000000"], 1, "another application"),
    (Garbage, &["gc"], 1, "not a dbctl journal"),
    (OtherApp, &["gc", "--dry-run"], 1, "another application"),
];

/// Spec and config files the cases name (relative: commands run in the environment's
/// directory). Every config names the testbed, so a case that wrongly passes creates nothing
/// real.
#[rustfmt::skip]
const FILES: &[(&str, &str)] = &[
    ("syntax.toml", "name = \"x\"\nsize = \n"),
    ("unknown.toml", "name = \"x\"\nbogus = 1\n"),
    ("type.toml", "name = \"x\"\ndisk_gib = \"ten\"\n"),
    ("type-bool.toml", "name = \"x\"\nha = \"yes\"\n"),
    ("type-tag.toml", "name = \"x\"\n[tags]\nteam = 5\n"),
    ("c-syntax.toml", "[defaults]\nprovider = \"testbed\"\n[retry\n"),
    ("c-unknown.toml", "[defaults]\nprovidr = \"testbed\"\n"),
    ("c-type.toml", "[defaults]\nprovider = \"testbed\"\n[retry]\nmax_attempts = \"three\"\n"),
    ("c-negative.toml", "[defaults]\nprovider = \"testbed\"\n[quotas.default]\ninstances = -1\n"),
    ("c-accel.toml", "[defaults]\nprovider = \"testbed\"\n[local]\naccel = \"magic\"\n"),
    ("c-section.toml", "[defaults]\nprovider = \"testbed\"\n[nosuch]\n"),
    ("c-gc.toml", "[defaults]\nprovider = \"testbed\"\n[gc]\nkeep_history = \"forever\"\n"),
    ("c-gc-key.toml", "[defaults]\nprovider = \"testbed\"\n[gc]\nkeep = \"30d\"\n"),
];

fn env_for(setup: Setup) -> Env {
    let env = Env::new();
    for (name, text) in FILES {
        std::fs::write(env.path(name), text).unwrap();
    }
    let journal = env.journal_path();
    match setup {
        Empty => {}
        Instance => {
            let out = env.run(&["create", "db"], None);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        Garbage => {
            std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
            let bytes: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            std::fs::write(&journal, bytes).unwrap();
        }
        OtherApp => {
            std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
            let c = rusqlite::Connection::open(&journal).unwrap();
            c.execute_batch(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
                 INSERT INTO notes (body) VALUES ('not dbctl''s');",
            )
            .unwrap();
        }
    }
    env
}

/// What must not change: the journal's rows (its bytes, when it is not dbctl's) and the
/// testbed's side effects.
fn snapshot(env: &Env) -> String {
    let path = env.journal_path();
    let journal = match std::fs::read(&path) {
        Err(_) => "no journal".to_string(),
        Ok(bytes) => journal_rows(&path).unwrap_or_else(|| {
            format!(
                "{} bytes, sha256 {}",
                bytes.len(),
                hex::encode(Sha256::digest(&bytes))
            )
        }),
    };
    let effects = std::fs::read_to_string(env.path("testbed/effects.log"))
        .unwrap_or_else(|_| "no testbed effects".into());
    format!("{journal}\n-- effects --\n{effects}")
}

#[test]
fn every_bad_input_exits_with_its_code_in_one_line_and_changes_nothing() {
    assert!(CASES.len() >= 40, "the corpus has {} cases", CASES.len());
    let mut failures = Vec::new();
    for setup in [Empty, Instance, Garbage, OtherApp] {
        let env = env_for(setup);
        for (_, args, code, needle) in CASES.iter().filter(|c| c.0 == setup) {
            let before = snapshot(&env);
            let out = env
                .command(args, None)
                .current_dir(env.dir.path())
                .output()
                .unwrap();
            let err = stderr(&out);
            let after = snapshot(&env);
            let mut problems = Vec::new();
            if out.status.code() != Some(*code) {
                problems.push(format!("exit {:?}, expected {code}", out.status.code()));
            }
            if err.trim_end().lines().count() != 1 {
                problems.push("stderr is not one line".to_string());
            }
            if !err.contains(needle) {
                problems.push(format!("stderr does not name {needle:?}"));
            }
            if before != after {
                problems.push(format!("state changed:\n{before}\n=> \n{after}"));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{setup:?} {args:?}: {}\n  stderr: {err}",
                    problems.join("; ")
                ));
            }
        }
        if setup != Instance {
            assert!(
                !env.path("testbed").exists(),
                "{setup:?}: a testbed resource was made"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn usage_errors_keep_help_and_version_on_stdout() {
    let env = Env::new();
    for args in [&["--help"][..], &["--version"], &["create", "--help"]] {
        let out = env.run(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}
