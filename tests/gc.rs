//! `dbctl gc` through the real binary (testbed provider; the local provider's run directories
//! and its real `dbctl local-hub` helper, no VM): expired instances are destroyed like
//! `destroy`, leaks are swept, old history is pruned — and nothing live, leased or owned by
//! the journal is ever touched, nor anything at all by `--dry-run`.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Env, journal_rows, stderr, was_killed};

fn ok(env: &Env, args: &[&str]) -> Value {
    let (code, v) = env.json(args);
    assert_eq!(code, 0, "{args:?}: {v}");
    v
}

fn create(env: &Env, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", name];
    args.extend(extra);
    ok(env, &args)["run"]["id"].as_str().unwrap().to_string()
}

fn sql(env: &Env, statement: &str) {
    env.journal()
        .write(|tx| Ok::<_, dbctl::journal::JournalError>(tx.execute_batch(statement)?))
        .unwrap();
}

/// Moves an instance's expiry into the past, as if its TTL ran out.
fn expire(env: &Env, name: &str) {
    sql(
        env,
        &format!("UPDATE instances SET expires_at = 1000 WHERE name = '{name}'"),
    );
}

/// The gc actions of a report, as (action, run, done).
fn actions(report: &Value) -> Vec<(String, String, bool)> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["run"].as_str().unwrap_or("").to_string(),
                a["done"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn state_of(env: &Env, name: &str) -> String {
    let list = ok(env, &["list", "--all"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .map(|i| i["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

fn markers_of(env: &Env, run: &str) -> usize {
    let mut last = std::collections::BTreeMap::new();
    for e in env.effects().into_iter().filter(|e| e.run == run) {
        last.insert(e.step, e.verb);
    }
    last.values().filter(|v| *v == "create").count()
}

/// Every row of the journal, the testbed's effects and the files under the state directory.
fn snapshot(env: &Env) -> String {
    let mut out = journal_rows(&env.journal_path()).unwrap_or_default();
    out += &std::fs::read_to_string(env.path("testbed/effects.log")).unwrap_or_default();
    out += &files(&env.path("state/local")).join("\n");
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        all.push(e.path().display().to_string());
        if e.path().is_dir() {
            all.extend(files(&e.path()));
        }
    }
    all.sort();
    all
}

/// A run left half-done by a crash: its markers exist, the journal says `running`.
fn crashed_run(env: &Env, name: &str) -> String {
    let out = env.run(
        &["create", name],
        Some("provision.disk.primary@after=crash"),
    );
    assert!(was_killed(&out), "{}", stderr(&out));
    let list = ok(env, &["list"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Deletes a run's rows (and its instance's) from the journal: a lost journal write.
fn forget(env: &Env, run: &str) {
    sql(
        env,
        &format!(
            "DELETE FROM events WHERE run_id = '{run}'; DELETE FROM steps WHERE run_id = '{run}';
             DELETE FROM resources WHERE run_id = '{run}';
             CREATE TEMP TABLE gone AS SELECT instance_id AS id FROM runs WHERE id = '{run}';
             DELETE FROM runs WHERE id = '{run}';
             DELETE FROM instances WHERE id IN (SELECT id FROM gone);"
        ),
    );
}

#[test]
fn an_expired_instance_is_destroyed_like_destroy_and_the_others_are_kept() {
    let env = Env::new();
    let old = create(&env, "old", &["--ttl", "2h"]);
    let fresh = create(&env, "fresh", &["--ttl", "2h"]);
    let forever = create(&env, "forever", &[]);
    expire(&env, "old");

    let report = ok(&env, &["gc"]);
    assert_eq!(actions(&report), [("destroy".into(), old.clone(), true)]);
    let a = &report["actions"][0];
    assert_eq!(a["instance"], "default/old");
    assert!(a["reason"].as_str().unwrap().contains("TTL expired"), "{a}");
    assert!(!a["resources"].as_array().unwrap().is_empty(), "{a}");
    assert_eq!(state_of(&env, "old"), "destroyed");
    assert_eq!(markers_of(&env, &old), 0);
    // Journaled like any destroy: the run's own log says so.
    assert_eq!(env.run_state(&old), "rolled_back");
    let logs = env.run(&["logs", &old], None);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("rolled back"));
    for (name, run) in [("fresh", &fresh), ("forever", &forever)] {
        assert_eq!(state_of(&env, name), "running");
        assert!(markers_of(&env, run) > 0);
    }
    // Nothing left to do.
    let again = ok(&env, &["gc"]);
    assert!(actions(&again).is_empty(), "{again}");
}

#[test]
fn a_leased_run_is_never_touched_even_when_expired() {
    let env = Env::new();
    // A create that is still being driven (each step takes 300 ms), already past its TTL.
    let child = env.spawn(&["create", "busy", "--ttl", "2h"], 300);
    let mut run = None;
    for _ in 0..200 {
        if env.journal_path().exists() {
            let list = ok(&env, &["list"]);
            if let Some(r) = list[0]["run"].as_str() {
                run = Some(r.to_string());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let run = run.expect("the run appears");
    expire(&env, "busy");
    std::thread::sleep(Duration::from_millis(700));
    let report = ok(&env, &["gc"]);
    assert_eq!(actions(&report), [("skip".into(), run.clone(), false)]);
    assert!(
        report["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("drives"),
        "{report}"
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.run_state(&run), "succeeded");
    // No marker was undone under the driver, and none created twice.
    assert!(env.count("delete").is_empty(), "{:?}", env.effects());
    assert!(env.count("create").values().all(|&n| n == 1));
}

#[test]
fn dry_run_lists_everything_with_why_and_changes_nothing() {
    let env = Env::with_config("[gc]\nkeep_history = \"7d\"\n");
    let expired = create(&env, "expired", &["--ttl", "2h"]);
    expire(&env, "expired");
    let leaked = crashed_run(&env, "leaked");
    forget(&env, &leaked);
    let gone = create(&env, "gone", &[]);
    ok(&env, &["destroy", "gone"]);
    sql(
        &env,
        "UPDATE instances SET updated_at = updated_at - 864000000 WHERE name = 'gone'",
    );
    std::fs::create_dir_all(env.path("state/local/run-00000000aa/vms/node-1")).unwrap();

    let before = snapshot(&env);
    let report = ok(&env, &["gc", "--dry-run"]);
    assert_eq!(snapshot(&env), before, "a dry run changed something");
    assert_eq!(report["dry_run"], true);
    let mut got = actions(&report);
    got.sort();
    let mut want: Vec<(String, String, bool)> = vec![
        ("destroy".into(), expired.clone(), false),
        ("sweep".into(), "run-00000000aa".into(), false),
        ("sweep".into(), leaked.clone(), false),
    ];
    want.sort();
    assert_eq!(got, want);
    let sweep = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["run"] == leaked.as_str())
        .unwrap();
    assert_eq!(sweep["provider"], "testbed");
    assert!(
        sweep["reason"]
            .as_str()
            .unwrap()
            .contains("not in the journal"),
        "{sweep}"
    );
    assert!(
        sweep["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "marker provision.disk.primary"),
        "{sweep}"
    );
    assert_eq!(report["history"]["instances"], 1, "{report}");
    assert_eq!(report["history"]["done"], false);
    let _ = gone;

    // The text form: one line per action with its resources below, then history, then the
    // promise.
    let text = env.run(&["gc", "--dry-run"], None);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "would destroy  instance default/expired (run {expired}, testbed): its TTL expired at"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "would sweep    run {leaked} (testbed): {leaked} is not in the journal\n    marker "
        )),
        "{text}"
    );
    assert!(
        text.contains("would prune    history of 1 destroyed instance(s)"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("dry run: nothing was changed"),
        "{text}"
    );
    assert_eq!(snapshot(&env), before, "a dry run changed something");

    // For real, then: all of it goes, and a second pass finds nothing.
    let done = ok(&env, &["gc"]);
    assert!(actions(&done).iter().all(|(_, _, d)| *d), "{done}");
    assert_eq!(markers_of(&env, &leaked), 0);
    assert_eq!(markers_of(&env, &expired), 0);
    assert!(!env.path("state/local/run-00000000aa").exists());
    assert_eq!(state_of(&env, "gone"), "absent");
    assert!(actions(&ok(&env, &["gc"])).is_empty());
}

#[test]
fn a_leak_is_swept_after_its_journal_row_or_the_whole_journal_is_gone() {
    let env = Env::new();
    let live = create(&env, "live", &[]);
    let lost_row = crashed_run(&env, "lost");
    forget(&env, &lost_row);
    let report = ok(&env, &["gc"]);
    assert_eq!(actions(&report), [("sweep".into(), lost_row.clone(), true)]);
    assert_eq!(markers_of(&env, &lost_row), 0);
    assert!(
        markers_of(&env, &live) > 0,
        "a live run's markers were swept"
    );

    // Now the journal file itself is lost, with a crashed run and a live one in it.
    let crashed = crashed_run(&env, "crashed");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.journal_path().display()));
    }
    let dry = ok(&env, &["gc", "--dry-run"]);
    let mut got = actions(&dry);
    got.sort();
    let mut want: Vec<(String, String, bool)> = vec![
        ("sweep".into(), crashed.clone(), false),
        ("sweep".into(), live.clone(), false),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(
        dry["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no journal at"),
        "{dry}"
    );
    assert!(dry["history"].is_null());
    let done = ok(&env, &["gc"]);
    assert!(actions(&done).iter().all(|(_, _, d)| *d), "{done}");
    assert_eq!(markers_of(&env, &crashed) + markers_of(&env, &live), 0);
    assert!(!env.journal_path().exists(), "gc created a journal");
}

/// The hosts blocks and Prometheus targets the register stage publishes (a testbed run
/// publishes none, so they are written here in the register stage's own format).
fn publish(env: &Env, instance: &str, name: &str) {
    let hosts = env.path("state/hosts");
    let text = std::fs::read_to_string(&hosts).unwrap_or_else(|_| "127.0.0.1 localhost\n".into());
    let line = format!("10.77.0.10 {name}.default.db.internal");
    let text = dbctl::register::hosts::replace_block(&text, instance, &[line]);
    std::fs::write(&hosts, text).unwrap();
    let sd = env.path("state/prometheus");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join(format!("default.{name}.json")), "[]\n").unwrap();
}

fn instance_id(env: &Env, name: &str) -> String {
    ok(env, &["status", name])["instance"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// (instance, first resource, done) of the register sweeps in a report.
fn published(report: &Value) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["provider"] == "register")
        .map(|a| {
            (
                a["instance"].as_str().unwrap().to_string(),
                a["resources"][0].as_str().unwrap().to_string(),
                a["done"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn published_names_and_targets_of_no_live_instance_are_swept_and_a_live_ones_kept() {
    let env = Env::new();
    create(&env, "live", &[]);
    let live = instance_id(&env, "live");
    create(&env, "gone", &[]);
    let gone = instance_id(&env, "gone");
    ok(&env, &["destroy", "gone"]);
    publish(&env, &live, "live");
    publish(&env, &gone, "gone");
    publish(&env, "inst-0123456789", "ghost");
    let hosts = env.path("state/hosts");
    let sd = env.path("state/prometheus");

    let now = || {
        let mut s = snapshot(&env);
        s += &std::fs::read_to_string(&hosts).unwrap();
        s += &files(&sd).join("\n");
        s
    };
    let before = now();
    let dry = ok(&env, &["gc", "--dry-run"]);
    assert_eq!(now(), before, "a dry run changed something");
    let got = published(&dry);
    let names: Vec<&str> = got.iter().map(|(i, _, _)| i.as_str()).collect();
    let mut want = vec![
        gone.as_str(),
        "default/ghost",
        "default/gone",
        "inst-0123456789",
    ];
    want.sort();
    assert_eq!(names, want, "{dry}");
    let text = dry.to_string();
    assert!(text.contains(&format!("{gone} was destroyed at")), "{text}");
    assert!(
        text.contains("inst-0123456789 is not in the journal"),
        "{text}"
    );
    assert!(
        text.contains("no live instance default/ghost in the journal"),
        "{text}"
    );
    let out = env.run(&["gc", "--dry-run"], None);
    let shown = support::stdout(&out);
    assert!(
        shown.contains("would sweep    instance inst-0123456789 (register): inst-0123456789 is not in the journal"),
        "{shown}"
    );
    println!("gc --dry-run, two leaked and one live instance's names and targets:\n{shown}");

    let done = ok(&env, &["gc"]);
    assert!(published(&done).iter().all(|(_, _, d)| *d), "{done}");
    let left = std::fs::read_to_string(&hosts).unwrap();
    let only_live = dbctl::register::hosts::replace_block(
        "127.0.0.1 localhost\n",
        &live,
        &["10.77.0.10 live.default.db.internal".into()],
    );
    assert_eq!(
        left, only_live,
        "the live block and the operator's lines stay byte for byte"
    );
    assert!(sd.join("default.live.json").exists());
    assert!(!sd.join("default.gone.json").exists());
    assert!(!sd.join("default.ghost.json").exists());
    assert!(
        published(&ok(&env, &["gc"])).is_empty(),
        "a second gc finds nothing"
    );

    // The journal itself lost: no instance owns anything any more.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.journal_path().display()));
    }
    let dry = ok(&env, &["gc", "--dry-run"]);
    let got = published(&dry);
    assert_eq!(got.len(), 2, "{dry}");
    assert!(dry.to_string().contains("no journal at"), "{dry}");
    assert!(got.iter().any(|(i, _, _)| *i == live));
}

#[test]
fn pointed_at_a_new_journal_beside_the_real_one_gc_sweeps_nothing() {
    let env = Env::new();
    let live = create(&env, "live", &[]);
    // `--journal` names a file that does not exist in the same directory: the runs of the
    // journal beside it still own their resources.
    let other = env.path("state/typo.db");
    let out = env
        .command(&["gc", "--output", "json"], None)
        .env("DBCTL_JOURNAL", &other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(actions(&report).is_empty(), "{report}");
    assert!(markers_of(&env, &live) > 0);
}

#[test]
fn history_pruning_removes_old_destroyed_instances_and_keeps_recent_and_live_ones() {
    let env = Env::new();
    let old = create(&env, "old", &[]);
    ok(&env, &["destroy", "old"]);
    create(&env, "recent", &[]);
    ok(&env, &["destroy", "recent"]);
    let live = create(&env, "live", &[]);
    // Destroyed 40 days ago; and the live one was created long ago too.
    sql(
        &env,
        "UPDATE instances SET updated_at = updated_at - 3456000000, created_at = created_at - 3456000000
         WHERE name IN ('old', 'live')",
    );
    let report = ok(&env, &["gc"]);
    assert_eq!(report["history"]["instances"], 1, "{report}");
    assert!(report["history"]["events"].as_u64().unwrap() > 0);
    assert_eq!(state_of(&env, "old"), "absent");
    assert_eq!(state_of(&env, "recent"), "destroyed");
    assert_eq!(state_of(&env, "live"), "running");
    let (code, _) = env.json(&["status", &old]);
    assert_eq!(code, 8, "the pruned run is gone");
    // The flag overrides the config: 0s prunes every destroyed instance, never a live one.
    let report = ok(&env, &["gc", "--keep-history", "0s"]);
    assert_eq!(report["history"]["instances"], 1, "{report}");
    assert_eq!(state_of(&env, "recent"), "absent");
    assert_eq!(state_of(&env, "live"), "running");
    assert_eq!(env.run_state(&live), "succeeded");
    env.journal().integrity_check().unwrap();
}

/// The real network hub of the local provider, started for a run directory (no VM).
fn hub(env: &Env, run: &str) -> Child {
    let net = env.path(&format!("state/local/{run}/net"));
    std::fs::create_dir_all(&net).unwrap();
    let child = env
        .command(&["local-hub", "--socket"], None)
        .arg(net.join("hub.sock"))
        .arg("--pidfile")
        .arg(net.join("hub.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The hub names itself in its pid file once its socket is bound.
    let mine = child.id().to_string();
    for _ in 0..200 {
        if std::fs::read_to_string(net.join("hub.pid")).is_ok_and(|p| p == mine) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').unwrap().1.split_whitespace().next() != Some("Z"))
}

#[test]
fn a_local_run_directory_and_hub_with_no_run_are_swept_and_an_owned_one_kept() {
    let env = Env::new();
    // A run of the journal that (as far as gc can tell) has a local directory and hub.
    let owned = create(&env, "owned", &[]);
    let mut owned_hub = hub(&env, &owned);
    let mut leaked_hub = hub(&env, "run-0badc0ffee");
    std::fs::create_dir_all(env.path("state/local/run-0badc0ffee/vms/node-1")).unwrap();
    std::fs::write(
        env.path("state/local/run-0badc0ffee/vms/node-1/console.log"),
        "x",
    )
    .unwrap();

    let dry = ok(&env, &["gc", "--dry-run", "--provider", "local"]);
    assert_eq!(
        actions(&dry),
        [("sweep".into(), "run-0badc0ffee".into(), false)]
    );
    let resources: Vec<String> = dry["actions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(
        resources.iter().any(|r| r
            == &format!(
                "process {} dbctl local-hub --socket {}",
                leaked_hub.id(),
                env.path("state/local/run-0badc0ffee/net/hub.sock")
                    .display()
            )),
        "{resources:?}"
    );
    assert!(
        resources
            .iter()
            .any(|r| r.starts_with("directory ") && r.ends_with("run-0badc0ffee")),
        "{resources:?}"
    );
    assert!(alive(leaked_hub.id()));

    let done = ok(&env, &["gc", "--provider", "local"]);
    assert_eq!(
        actions(&done),
        [("sweep".into(), "run-0badc0ffee".into(), true)]
    );
    let _ = leaked_hub.wait();
    assert!(!env.path("state/local/run-0badc0ffee").exists());
    assert!(alive(owned_hub.id()), "the owned run's hub was stopped");
    assert!(
        env.path(&format!("state/local/{owned}/net/hub.sock"))
            .exists()
    );
    let _ = owned_hub.kill();
    let _ = owned_hub.wait();
}

/// A relay whose QEMU is gone: the guest's connection was to a server that never closes, so
/// the relay (`dbctl relay`, what QEMU spawns per guest connection) outlives its VM, its
/// parent init by then. gc attributes it by the VM directory on its command line, lists it
/// with the run's directory, and stops it; a live run's relay is kept.
#[test]
fn a_relay_that_outlived_its_vm_is_swept_with_its_run_and_a_live_runs_kept() {
    let env = Env::new();
    let owned = create(&env, "owned", &[]);
    // The server: accepts and holds every connection, answering nothing.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap().to_string();
    let relay = |run: &str| -> Child {
        let vm = env.path(&format!("state/local/{run}/vms/node-1"));
        std::fs::create_dir_all(&vm).unwrap();
        env.command(&["relay", &target, "--for"], None)
            .arg(&vm)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut leaked = relay("run-0rphan0");
    let mut kept = relay(&owned);
    // Both relays are connected (and blocked on the silent server) before gc looks.
    let _held: Vec<std::net::TcpStream> = (0..2).map(|_| server.accept().unwrap().0).collect();

    let dry = ok(&env, &["gc", "--dry-run", "--provider", "local"]);
    assert_eq!(
        actions(&dry),
        [("sweep".into(), "run-0rphan0".into(), false)]
    );
    let resources = dry["actions"][0]["resources"].to_string();
    let line = format!(
        "process {} dbctl relay {target} --for {}",
        leaked.id(),
        env.path("state/local/run-0rphan0/vms/node-1").display()
    );
    assert!(resources.contains(&line), "{resources}");
    assert!(alive(leaked.id()), "a dry run stops nothing");

    let done = ok(&env, &["gc", "--provider", "local"]);
    assert_eq!(
        actions(&done),
        [("sweep".into(), "run-0rphan0".into(), true)]
    );
    let _ = leaked.wait();
    assert!(!env.path("state/local/run-0rphan0").exists());
    assert!(alive(kept.id()), "the live run's relay was stopped");
    let _ = kept.kill();
    let _ = kept.wait();
}

/// A real VM left by a crashed create whose journal is then deleted: gc finds its QEMU, hub and
/// directory, and removes them. Boots QEMU, so it is not part of the default run; it belongs
/// with the VM tests (`local_e2e`), e.g. `cargo test --features testbed --test gc -- --ignored`.
// Starts a real QEMU (needs the base image `scripts/test` builds) but kills dbctl before the
// guest boots: well under a second.
#[test]
fn a_leaked_vm_of_a_deleted_journal_is_found_and_stopped() {
    let env = Env::local();
    let out = env.run(
        &["create", "vmleak"],
        Some("provision.vm.primary@qemu-started=crash"),
    );
    assert!(was_killed(&out), "{}", stderr(&out));
    let run = env.last_run();
    assert_eq!(support::qemu_processes(&run), 1);
    // What an operator sees (printed for the record): the crashed run still owns its VM.
    let text = env.run(&["gc", "--dry-run", "--provider", "local"], None);
    eprintln!("gc --dry-run, journal kept:\n{}", support::stdout(&text));
    // The journal write after the call lost (its rows gone): a leak, listed with why.
    forget(&env, &run);
    let dry = ok(&env, &["gc", "--dry-run", "--provider", "local"]);
    assert_eq!(actions(&dry), [("sweep".into(), run.clone(), false)]);
    let text = env.run(&["gc", "--dry-run", "--provider", "local"], None);
    eprintln!(
        "gc --dry-run, the run's rows lost:\n{}",
        support::stdout(&text)
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.journal_path().display()));
    }
    let text = env.run(&["gc", "--dry-run", "--provider", "local"], None);
    eprintln!("gc --dry-run, journal deleted:\n{}", support::stdout(&text));
    let dry = ok(&env, &["gc", "--dry-run", "--provider", "local"]);
    assert_eq!(actions(&dry), [("sweep".into(), run.clone(), false)]);
    let resources = dry["actions"][0]["resources"].to_string();
    assert!(
        resources.contains("qemu-system-x86_64 (dbctl-"),
        "{resources}"
    );
    assert!(resources.contains("local-hub"), "{resources}");
    assert_eq!(
        support::qemu_processes(&run),
        1,
        "the dry run stopped the VM"
    );
    let done = ok(&env, &["gc", "--provider", "local"]);
    assert_eq!(actions(&done), [("sweep".into(), run.clone(), true)]);
    assert_eq!(support::qemu_processes(&run), 0);
    assert!(!env.path(&format!("state/local/{run}")).exists());
}
