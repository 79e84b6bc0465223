//! How the journal holds up under a CI pipeline's history: builds a journal of N destroyed
//! throwaway instances (default 10,000, ~84 events each, destroyed over the last 60 days) plus
//! 20 live ones, then times what must stay fast:
//!
//! * `dbctl list`, `dbctl list --all`, `dbctl status RUN`, `dbctl status NAME`,
//!   `dbctl gc --dry-run` and `dbctl gc` (pruning what was destroyed over 30 days ago) through
//!   the real binary (`target/debug/dbctl` beside this example), each as wall time and the
//!   child's CPU time (median of 5; `gc` once);
//! * admission (placement + `operations::admit`, what `create` does before any step) in-process,
//!   median of 20.
//!
//! ```sh
//! cargo build --features testbed
//! cargo run --features testbed --example journal_scale -- [INSTANCES]
//! ```
//!
//! Everything lives in a temporary directory: its own journal and config, the `testbed`
//! provider, nothing expired (gc removes nothing but old history). The journal is built by bulk
//! insert in large transactions through the journal's own `instances::insert` / `runs::insert`
//! with the real flow's steps, plus step outputs, resources and events shaped like a real run's.
//! `JOURNAL_SCALE_BASELINE=PATH` also times `list --all` and `status RUN` with another dbctl
//! binary (e.g. one built from main) on a copy migrated back to schema 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dbctl::config::Config;
use dbctl::journal::steps::NewStep;
use dbctl::journal::{Journal, JournalError, instances, now_ms, runs};
use dbctl::operations::admit::{Admission, Request};
use rusqlite::params;

const EVENTS_PER_RUN: usize = 84;
const LIVE: usize = 20;
const DAY_MS: i64 = 86_400_000;

fn spec(config: &Config, project: &str, name: &str) -> dbctl::spec::InstanceSpec {
    let input = dbctl::spec::SpecInput {
        project: Some(project.into()),
        name: Some(name.into()),
        provider: Some("testbed".into()),
        ttl: Some("2h".into()),
        tags: Some([("ci".to_string(), "github".to_string())].into()),
        ..Default::default()
    };
    let defaults = config.spec_defaults(&input);
    dbctl::spec::validate(input, &defaults).expect("bench spec is valid")
}

/// CPU time (user + system) of this process' waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Bench {
    dir: PathBuf,
    bin: PathBuf,
}

impl Bench {
    fn journal(&self) -> PathBuf {
        self.dir.join("state/journal.db")
    }

    /// Runs the binary with an isolated journal, config and testbed; returns (wall, cpu).
    fn time(&self, bin: &Path, journal: &Path, args: &[&str]) -> (Duration, Duration) {
        let cpu = children_cpu();
        let start = Instant::now();
        let out = Command::new(bin)
            .args(args)
            .env("DBCTL_JOURNAL", journal)
            .env("DBCTL_CONFIG", self.dir.join("config.toml"))
            .env("DBCTL_TESTBED_DIR", self.dir.join("testbed"))
            .env("DBCTL_CACHE_DIR", self.dir.join("cache"))
            .env("XDG_STATE_HOME", self.dir.join("xdg-state"))
            .env("XDG_CONFIG_HOME", self.dir.join("xdg-config"))
            .env_remove("DBCTL_FAULTS")
            .output()
            .expect("dbctl runs");
        let wall = start.elapsed();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (wall, children_cpu() - cpu)
    }

    fn median(&self, bin: &Path, journal: &Path, args: &[&str], n: usize) -> (Duration, Duration) {
        let mut runs: Vec<_> = (0..n).map(|_| self.time(bin, journal, args)).collect();
        runs.sort();
        runs[n / 2]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Writes `n` destroyed instances (and `LIVE` live ones) in batches of 500 per transaction.
fn build(journal: &Journal, config: &Config, n: usize) -> (String, String) {
    let template = spec(config, "ci", "ci-0");
    let placement = dbctl::operations::place(config, None, &template, None).unwrap();
    let placement_json = serde_json::to_string(&placement).unwrap();
    let planned = dbctl::flow::plan(&template, &placement);
    let steps: Vec<NewStep> = planned
        .iter()
        .map(|s| NewStep {
            name: s.name.clone(),
            stage: s.stage.as_str().to_string(),
            action_json: serde_json::to_string(&s.action).unwrap(),
            deps: s.deps.clone(),
        })
        .collect();
    let settings = config.run_settings_json();
    let now = now_ms();
    let (mut last_run, mut live_name) = (String::new(), String::new());
    let total = n + LIVE;
    for batch in (0..total).collect::<Vec<_>>().chunks(500) {
        journal
            .write(|tx| {
                for &i in batch {
                    let live = i >= n;
                    let (project, name) = if live {
                        ("live", format!("db-{i}"))
                    } else {
                        ("ci", format!("ci-{i}"))
                    };
                    let s = spec(config, project, &name);
                    let (inst, run) = (format!("inst-{i:010}"), format!("run-{i:010}"));
                    instances::insert(
                        tx,
                        &instances::NewInstance {
                            id: &inst,
                            project,
                            name: &name,
                            provider: "testbed",
                            region: &s.region,
                            spec_json: &s.canonical_json(),
                            vcpus: s.resources.vcpus,
                            memory_gib: s.resources.memory_gib,
                            disk_gib: s.disk_gib,
                            nodes: s.nodes(),
                            expires_at: Some(now + 7_200_000),
                        },
                    )?;
                    runs::insert(
                        tx,
                        &runs::NewRun {
                            id: &run,
                            instance_id: &inst,
                            operation: "create",
                            idempotency_key: &s.default_idempotency_key(),
                            spec_hash: &s.hash(),
                            spec_json: &s.canonical_json(),
                            placement_json: &placement_json,
                            on_failure: "rollback",
                            settings_json: Some(&settings),
                            steps: &steps,
                        },
                    )?;
                    // Destroyed evenly over the last 60 days, oldest first.
                    let at = now - (60 * DAY_MS) + (i as i64 * 60 * DAY_MS / total as i64);
                    fill(tx, &run, &inst, &name, live, at)?;
                    if live {
                        live_name = name;
                    } else {
                        last_run = run;
                    }
                }
                Ok::<_, JournalError>(())
            })
            .unwrap();
    }
    (last_run, live_name)
}

/// What a finished run leaves in the journal: step outputs and states, resources, events.
fn fill(
    tx: &rusqlite::Transaction<'_>,
    run: &str,
    inst: &str,
    name: &str,
    live: bool,
    at: i64,
) -> Result<(), JournalError> {
    let (step_state, run_state, inst_state) = if live {
        ("done", "succeeded", "running")
    } else {
        ("rolled_back", "rolled_back", "destroyed")
    };
    let endpoints = serde_json::json!({"endpoints": [{"node": "node-1", "role": "primary",
        "zone": "tb-a", "host": "127.0.0.1", "port": 54321, "database": name.replace('-', "_"),
        "user": "app"}]})
    .to_string();
    let dns = serde_json::json!({"records": [{"node": "node-1",
        "name": format!("{name}.ci.dbctl.internal"), "address": "127.0.0.1"}]})
    .to_string();
    tx.execute(
        "UPDATE steps SET state = ?2, attempts = 1, generation = 1, client_token = hex(randomblob(16)),
                outputs = json_object('marker', name), started_at = ?3, finished_at = ?3 + 900
         WHERE run_id = ?1",
        params![run, step_state, at - 600_000],
    )?;
    for (step, out) in [("register.endpoints", &endpoints), ("register.dns", &dns)] {
        tx.execute(
            "UPDATE steps SET outputs = ?3 WHERE run_id = ?1 AND name = ?2",
            params![run, step, out],
        )?;
    }
    tx.execute(
        "INSERT INTO resources (run_id, step, kind, name, provider_id, state, created_at, updated_at)
         SELECT run_id, name, 'marker', name, name, ?2, ?3, ?3 FROM steps
         WHERE run_id = ?1 AND stage = 'provision'",
        params![run, if live { "created" } else { "deleted" }, at],
    )?;
    let mut ev = tx.prepare_cached(
        "INSERT INTO events (run_id, ts, level, step, message) VALUES (?1, ?2, 'info', ?3, ?4)",
    )?;
    for e in 0..EVENTS_PER_RUN {
        let step = format!("provision.step-{}", e / 4);
        let msg = format!(
            "{step}: attempt 1 {} after {} ms (client token {run}-{e:04}, generation 1)",
            ["started", "running", "done", "undone"][e % 4],
            e * 37
        );
        ev.execute(params![run, at - 600_000 + e as i64 * 1000, step, msg])?;
    }
    tx.execute(
        "UPDATE runs SET state = ?2, finished_at = ?3, updated_at = ?3, purge_backups = 0,
                purge_reason = 'the instance reached RUNNING; backups kept'
         WHERE id = ?1",
        params![run, run_state, at],
    )?;
    tx.execute(
        "UPDATE instances SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![inst, inst_state, at],
    )?;
    Ok(())
}

/// Median time of `n` admissions (placement + admit) into the big journal.
fn admissions(journal: &Journal, config: &Config, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|k| {
            let s = spec(config, &format!("bench-{k}"), "adm");
            let start = Instant::now();
            let placement = dbctl::operations::place(config, Some(journal), &s, None).unwrap();
            let steps = dbctl::flow::plan(&s, &placement);
            let key = s.default_idempotency_key();
            let req = Request {
                spec: &s,
                key: &key,
                placement: &placement,
                steps: &steps,
                on_failure: "rollback",
            };
            let admitted = dbctl::operations::admit(journal, config, &req).unwrap();
            assert!(matches!(admitted, Admission::New { .. }));
            start.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("INSTANCES is a number"))
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("dbctl");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --features testbed"
    );
    let b = Bench {
        dir: tmp.path().to_path_buf(),
        bin,
    };
    std::fs::write(
        b.dir.join("config.toml"),
        "[defaults]\nprovider = \"testbed\"\n[gc]\nkeep_history = \"30d\"\n",
    )
    .unwrap();
    let config: Config = toml::from_str("[defaults]\nprovider = \"testbed\"\n").unwrap();

    let start = Instant::now();
    let journal = Journal::open(&b.journal()).unwrap();
    let (run, live) = build(&journal, &config, n);
    journal
        .read(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?))
        .unwrap();
    let size = std::fs::metadata(b.journal()).unwrap().len();
    println!(
        "journal: {n} destroyed + {LIVE} live instances, {} events, {:.0} MB, built in {:.1} s",
        (n + LIVE) * EVENTS_PER_RUN,
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    let baseline = std::env::var_os("JOURNAL_SCALE_BASELINE").map(PathBuf::from);
    if let Some(old) = &baseline {
        let copy = b.dir.join("state/baseline.db");
        std::fs::copy(b.journal(), &copy).unwrap();
        let c = rusqlite::Connection::open(&copy).unwrap();
        c.execute_batch(
            "DROP INDEX instances_live_expiry; DROP INDEX instances_live_where;
             DROP INDEX instances_destroyed_at; DROP INDEX instances_created;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(c);
        for args in [&["list", "--all"][..], &["status", run.as_str()]] {
            let (wall, cpu) = b.median(old, &copy, args, 3);
            println!(
                "baseline {:<22} wall {:>8}  cpu {:>8}",
                args.join(" "),
                ms(wall),
                ms(cpu)
            );
        }
        std::fs::remove_file(&copy).unwrap();
    }

    let journal_path = b.journal();
    for args in [
        &["list"][..],
        &["list", "--all"],
        &["list", "--all", "--output", "json"],
        &["status", run.as_str()],
        &["status", live.as_str(), "--project", "live"],
        &["gc", "--dry-run"],
    ] {
        let (wall, cpu) = b.median(&b.bin, &journal_path, args, 5);
        println!(
            "{:<31} wall {:>8}  cpu {:>8}",
            args.join(" "),
            ms(wall),
            ms(cpu)
        );
    }
    let adm = admissions(&journal, &config, 20);
    println!(
        "{:<31} wall {:>8}  (median of 20, in-process)",
        "admission",
        ms(adm)
    );
    drop(journal);
    let (wall, cpu) = b.time(&b.bin, &journal_path, &["gc"]);
    let left: i64 = rusqlite::Connection::open(&journal_path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM instances WHERE state = 'destroyed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "{:<31} wall {:>8}  cpu {:>8}  ({} destroyed instances left)",
        "gc (prune > 30d)",
        ms(wall),
        ms(cpu),
        left
    );
    let (wall, cpu) = b.median(&b.bin, &journal_path, &["list", "--all"], 5);
    println!(
        "{:<31} wall {:>8}  cpu {:>8}",
        "list --all after gc",
        ms(wall),
        ms(cpu)
    );
}
