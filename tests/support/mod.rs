//! Drives the real `dbctl` binary (built with the `testbed` provider) in a private directory.
#![allow(dead_code)]

pub mod aws;
pub mod matrix;
pub mod moto;
pub mod s3;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
}

/// One side effect line from the testbed's effects.log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Effect {
    pub verb: String,
    pub run: String,
    pub step: String,
}

impl Env {
    /// A fresh environment whose config retries fast (tests must not wait on backoff).
    pub fn new() -> Env {
        Env::with_config("")
    }

    pub fn with_config(extra: &str) -> Env {
        Env::for_provider("testbed", extra)
    }

    /// An environment whose default provider is aws (point AWS_ENDPOINT_URL at moto first).
    pub fn aws(extra: &str) -> Env {
        Env::for_provider("aws", extra)
    }

    /// An environment whose default provider is the real local one (QEMU VMs).
    pub fn local() -> Env {
        Env::for_provider("local", "")
    }

    /// The local provider with more config (e.g. a `[backup]` section).
    pub fn local_with(extra: &str) -> Env {
        Env::for_provider("local", extra)
    }

    fn for_provider(provider: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[defaults]\nprovider = \"{provider}\"\n\n[retry]\nbase_delay_ms = 5\nmax_delay_ms = 20\n\n{extra}"
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Env { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.path("state/journal.db")
    }

    pub fn command(&self, args: &[&str], faults: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dbctl"));
        c.args(args)
            .env("DBCTL_JOURNAL", self.journal_path())
            .env("DBCTL_CONFIG", self.path("config.toml"))
            .env("DBCTL_TESTBED_DIR", self.path("testbed"))
            .env_remove("DBCTL_FAULTS")
            .env_remove("DBCTL_TESTBED_DELAY_MS")
            .stdin(Stdio::null());
        if let Some(f) = faults {
            c.env("DBCTL_FAULTS", f);
        }
        c
    }

    pub fn run(&self, args: &[&str], faults: Option<&str>) -> Output {
        self.command(args, faults).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str], delay_ms: u64) -> Child {
        self.command(args, None)
            .env("DBCTL_TESTBED_DELAY_MS", delay_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs and parses stdout as JSON (commands given `--output json`).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all, None);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    pub fn effects(&self) -> Vec<Effect> {
        let text = std::fs::read_to_string(self.path("testbed/effects.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut p = l.split(' ');
                Effect {
                    verb: p.next().unwrap().into(),
                    run: p.next().unwrap().into(),
                    step: p.next().unwrap().into(),
                }
            })
            .collect()
    }

    /// How many times each step's side effect happened (verb = create or delete).
    pub fn count(&self, verb: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in self.effects().into_iter().filter(|e| e.verb == verb) {
            *m.entry(e.step).or_default() += 1;
        }
        m
    }

    /// Steps whose resource still exists (last effect a create: not undone).
    pub fn markers_left(&self) -> Vec<String> {
        let mut last: BTreeMap<(String, String), String> = BTreeMap::new();
        for e in self.effects() {
            last.insert((e.run, e.step), e.verb);
        }
        last.into_iter()
            .filter(|(_, verb)| verb == "create")
            .map(|((_, step), _)| step)
            .collect()
    }

    /// The id of the newest run, read through `dbctl list`.
    pub fn last_run(&self) -> String {
        let (_, v) = self.json(&["list", "--all"]);
        v[0]["run"].as_str().expect("a run").to_string()
    }

    pub fn run_state(&self, run: &str) -> String {
        let (_, v) = self.json(&["status", run]);
        v["run"]["state"].as_str().unwrap().to_string()
    }

    /// The run's resources the journal does not hold deleted, as `step:name`.
    pub fn live_resources(&self, run: &str) -> Vec<String> {
        self.journal()
            .resources(run)
            .unwrap()
            .into_iter()
            .filter(|r| r.state != dbctl::journal::ResourceState::Deleted)
            .map(|r| format!("{}:{}", r.step, r.name))
            .collect()
    }

    pub fn journal(&self) -> dbctl::journal::Journal {
        dbctl::journal::Journal::open(&self.journal_path()).unwrap()
    }
}

/// A test that fails half-way must not leave VMs running: roll back every live run.
impl Drop for Env {
    fn drop(&mut self) {
        if !self.journal_path().exists() {
            return;
        }
        let Ok(out) = self.command(&["list", "--output", "json"], None).output() else {
            return;
        };
        let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
            return;
        };
        for run in list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["run"].as_str())
        {
            let _ = self.command(&["rollback", run], None).output();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every row of dbctl's tables, or `None` when the file has no `runs` table.
pub fn journal_rows(path: &std::path::Path) -> Option<String> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    let ours: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
            [],
            |r| r.get(0),
        )
        .ok()?;
    if ours == 0 {
        return None;
    }
    let mut out = String::new();
    for table in ["instances", "runs", "steps", "resources", "events"] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out += &format!("{table}: {}\n", row.unwrap().join(" | "));
        }
    }
    Some(out)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether the process was killed by SIGKILL (the injected crash).
pub fn was_killed(o: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(9)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Every process as (pid, command line with NULs as spaces).
pub fn processes() -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        })
        .collect()
}

/// The QEMU processes (VMs) whose command line carries `marker`, as (pid, command line).
///
/// A VM's QEMU forks: libslirp spawns the guestfwd relay (`cmd:`) for every connection the
/// guest opens through it (pgBackRest's WAL pushes to S3 open one every few seconds) with
/// GLib's double fork, and until the grandchild execs, both copies carry QEMU's command line.
/// Counting those made `local_ha` see 4 VMs for 3 once in CI. So a VM is a process seen in
/// two readings half a second apart whose parent is not itself a QEMU of the marker: a fork
/// lives microseconds before its exec, a second (daemonized) QEMU of the same node persists.
pub fn qemus(marker: &str) -> Vec<(i32, String)> {
    let read = || -> Vec<(i32, String)> {
        processes()
            .into_iter()
            .filter(|(_, c)| c.starts_with("qemu-system") && c.contains(marker))
            .collect()
    };
    let first = read();
    std::thread::sleep(Duration::from_millis(500));
    let second = read();
    let pids: HashSet<i32> = second.iter().map(|(p, _)| *p).collect();
    second
        .iter()
        .filter(|(pid, c)| first.iter().any(|(p, c1)| p == pid && c1 == c))
        .filter(|(pid, _)| !parent_of(*pid).is_some_and(|pp| pids.contains(&pp)))
        .cloned()
        .collect()
}

/// A process's parent pid, from /proc/PID/stat ("pid (comm) state ppid …"; comm may hold
/// spaces, so the fields are read after its last ')').
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pid of one node's QEMU process (what a test kills to take a node down hard).
pub fn qemu_pid(run: &str, node: &str) -> Option<i32> {
    qemus(&format!("dbctl-{run}-{node},"))
        .into_iter()
        .next()
        .map(|(pid, _)| pid)
}

/// QEMU processes of a run (its VMs), found by the process name dbctl gives them.
pub fn qemu_processes(run: &str) -> usize {
    qemus(&format!("dbctl-{run}-")).len()
}

/// What `dbctl connect` hands out, parsed.
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub ca: String,
}

/// `dbctl connect ARGS`, parsed.
pub fn conn(env: &Env, args: &[&str]) -> Conn {
    let mut all = vec!["connect"];
    all.extend(args);
    let (code, v) = env.json(&all);
    assert_eq!(code, 0, "{v}");
    let uri = v["uri"].as_str().unwrap();
    assert!(uri.contains("sslmode=verify-full"), "{uri}");
    let password = uri
        .split_once("://")
        .unwrap()
        .1
        .split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    Conn {
        host: v["host"].as_str().unwrap().into(),
        port: v["port"].as_u64().unwrap() as u16,
        user: v["user"].as_str().unwrap().into(),
        database: v["database"].as_str().unwrap().into(),
        ca: std::fs::read_to_string(v["sslrootcert"].as_str().unwrap()).unwrap(),
        password,
    }
}

impl Conn {
    pub async fn client(&self) -> Result<tokio_postgres::Client, String> {
        dbctl::postgres::client::connect(
            &self.host,
            self.port,
            &self.user,
            &self.password,
            &self.database,
            &self.ca,
        )
        .await
    }
}
