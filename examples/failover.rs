//! Benchmark: an HA cluster on the local provider losing its leader, N times.
//!
//!   cargo build && cargo run --example failover -- 3
//!
//! One `dbctl create --ha` in a fresh journal; then N rounds of: a writer commits one row at a
//! time through `dbctl connect`'s URI (psql, i.e. libpq), the leader's QEMU process is killed
//! (SIGKILL), and the time from the kill to the first acknowledged write is taken; the dead node
//! is brought back with `dbctl reinit` (time taken too), and a `dbctl switchover` runs under the
//! writer (longest gap between two acknowledged writes). After each round every acknowledged
//! row is looked up: the number missing is the rows lost (0 in synchronous mode). Prints each
//! round and the medians. Uses the dbctl binary next to this example or $DBCTL_BIN.

#[path = "support/psql.rs"]
mod psql;
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{dbctl, median};

use psql::psql;
use serde_json::Value;

struct Bench {
    bin: PathBuf,
    journal: PathBuf,
    config: PathBuf,
}

/// Whatever ends the benchmark (a panic too) destroys its cluster before the temporary
/// journal goes, so no VM outlives the journal that could find it.
impl Drop for Bench {
    fn drop(&mut self) {
        if self.journal.exists() {
            let _ = self.run(&["destroy", "bench"]);
        }
    }
}

impl Bench {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("DBCTL_JOURNAL", &self.journal)
            .env("DBCTL_CONFIG", &self.config)
            .output()
            .expect("run dbctl")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// The leader, once a synchronous standby streams from it. Killed before that (right after
    /// a switchover, while the old leader still rejoins), no member is known to hold every
    /// commit, and Patroni rightly promotes none: that is `dbctl failover --to`, not this
    /// benchmark.
    fn leader_with_sync_standby(&self) -> String {
        let started = Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            let st = self.json(&["status", "bench"]);
            let c = &st["cluster"];
            let leader = c["members"].as_array().and_then(|ms| {
                ms.iter()
                    .find(|m| m["role"] == "leader" && m["state"] == "running")
                    .map(|m| m["name"].as_str().unwrap().to_string())
            });
            let sync = c["replication"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r["sync_state"] == "sync" && r["state"] == "streaming")
            });
            if let (Some(leader), true) = (leader, sync) {
                return leader;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "no leader with a synchronous standby: {c}"
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

fn qemu_pid(run: &str, node: &str) -> Option<i32> {
    let marker = format!("dbctl-{run}-{node},");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let c = std::fs::read(e.path().join("cmdline")).ok()?;
        let c = String::from_utf8_lossy(&c).replace('\0', " ");
        (c.starts_with("qemu-system") && c.contains(&marker)).then_some(pid)
    })
}

type Acks = Arc<Mutex<Vec<(i64, Instant)>>>;

/// Commits rows `first..` one at a time until stopped.
fn writer(uri: &str, first: i64, stop: &Arc<AtomicBool>) -> (Acks, std::thread::JoinHandle<()>) {
    let acks: Acks = Arc::default();
    let (a, s, uri) = (acks.clone(), stop.clone(), uri.to_string());
    let h = std::thread::spawn(move || {
        let mut id = first;
        while !s.load(Ordering::Relaxed) {
            match psql(&uri, &format!("INSERT INTO bench (id) VALUES ({id})")) {
                Ok(_) => {
                    a.lock().unwrap().push((id, Instant::now()));
                    id += 1;
                }
                // Committed, but the acknowledgement was lost in the failover: not counted.
                Err(e) if e.contains("duplicate key") => id += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    (acks, h)
}

fn wait_more(acks: &Acks, n: usize) {
    let want = acks.lock().unwrap().len() + n;
    let deadline = Instant::now() + Duration::from_secs(600);
    while acks.lock().unwrap().len() < want {
        assert!(Instant::now() < deadline, "writer stalled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lost(uri: &str, acks: &Acks) -> usize {
    let have: BTreeSet<i64> = psql(uri, "SELECT id FROM bench")
        .expect("read rows")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    acks.lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| !have.contains(id))
        .count()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    // $DBCTL_BENCH_DIR keeps the journal (and so every run's events) after the benchmark,
    // to find out why a round failed; by default it is a temporary directory.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("DBCTL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("bench dir");
    let b = Bench {
        bin: dbctl(),
        journal: dir.join("state/journal.db"),
        config: dir.join("config.toml"),
    };
    std::fs::write(&b.config, "[defaults]\nprovider = \"local\"\n").expect("config");
    let t0 = Instant::now();
    let created = b.json(&["create", "bench", "--ha"]);
    println!("HA RUNNING after {:.1} s", t0.elapsed().as_secs_f64());
    let run = created["run"]["id"].as_str().unwrap().to_string();
    let uri = b.json(&["connect", "bench"])["uri"]
        .as_str()
        .unwrap()
        .to_string();
    psql(&uri, "CREATE TABLE bench (id bigint PRIMARY KEY)").expect("table");

    let (mut failovers, mut reinits, mut gaps, mut lost_total) = (vec![], vec![], vec![], 0);
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let (acks, h) = writer(&uri, round as i64 * 1_000_000, &stop);
        wait_more(&acks, 10);
        let leader = b.leader_with_sync_standby();
        let pid = qemu_pid(&run, &leader).expect("leader's QEMU");
        let killed = Instant::now();
        // SAFETY: kill(2) of the QEMU process found by its name.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let first = loop {
            if let Some(t) = acks
                .lock()
                .unwrap()
                .iter()
                .map(|a| a.1)
                .find(|t| *t > killed)
            {
                break t;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let failover = (first - killed).as_secs_f64();
        wait_more(&acks, 5);
        let t = Instant::now();
        assert!(
            b.run(&["reinit", "bench", &leader]).status.success(),
            "reinit"
        );
        let reinit = t.elapsed().as_secs_f64();
        // A planned switchover under the writer: the longest pause in acknowledged writes.
        let mark = acks.lock().unwrap().len();
        assert!(
            b.run(&["switchover", "bench"]).status.success(),
            "switchover"
        );
        wait_more(&acks, 5);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let gap = acks.lock().unwrap()[mark.saturating_sub(1)..]
            .windows(2)
            .map(|w| (w[1].1 - w[0].1).as_secs_f64())
            .fold(0.0, f64::max);
        let missing = lost(&uri, &acks);
        println!(
            "round {}: killed {leader}; first write after {failover:.1} s; reinit {reinit:.1} s; \
             switchover write gap {gap:.1} s; {} rows acknowledged, {missing} lost",
            round + 1,
            acks.lock().unwrap().len()
        );
        failovers.push(failover);
        reinits.push(reinit);
        gaps.push(gap);
        lost_total += missing;
    }
    println!("\nmedian of {rounds} rounds (seconds):");
    println!(
        "  kill → first acknowledged write  {:>6.1}",
        median(failovers)
    );
    println!(
        "  reinit of the killed node        {:>6.1}",
        median(reinits)
    );
    println!("  switchover write unavailability  {:>6.1}", median(gaps));
    println!("  rows lost (all rounds)           {lost_total:>6}");
    assert!(b.run(&["destroy", "bench"]).status.success(), "destroy");
}
