//! What the local provider leaves on this host, found without the journal: the run directories
//! under `<state>/local/` and the processes started for them — QEMU, the network hub
//! (`dbctl local-hub`) and the relays QEMU spawns per guest connection (`dbctl relay`).
//!
//! A process belongs to a run when its command line points into that run's directory (QEMU's
//! pid file, disks and sockets; the hub's socket), resolved against the process' own working
//! directory; a relay names the VM directory it serves (`--for`), and one started before it
//! did belongs to the run of the QEMU that spawned it. Processes of other state
//! directories (another journal, another user's dbctl) never match, nor does anything that
//! merely mentions the path (a `tail -f` of a console log): only QEMU and dbctl's own helpers.

use std::path::{Component, Path, PathBuf};

use super::process::{self, Proc, processes};
use crate::provider::Leftover;

impl Proc {
    fn program(&self) -> &str {
        let argv0 = self.argv.first().map(String::as_str).unwrap_or("");
        argv0.rsplit('/').next().unwrap_or(argv0)
    }

    fn is_qemu(&self) -> bool {
        self.program().starts_with("qemu-system")
    }

    fn helper(&self) -> Option<&str> {
        match self.argv.get(1).map(String::as_str) {
            Some(h @ ("local-hub" | "relay")) => Some(h),
            _ => None,
        }
    }

    /// The run whose directory under `root` (`<state>/local`) the command line points into.
    fn run_under(&self, root: &Path) -> Option<String> {
        self.argv.iter().skip(1).find_map(|arg| {
            arg.split([',', '='])
                .filter(|t| t.contains("run-"))
                .find_map(|t| {
                    let p = Path::new(t);
                    let abs = match (&self.cwd, p.is_relative()) {
                        (Some(cwd), true) => cwd.join(p),
                        _ => p.to_path_buf(),
                    };
                    run_in(&abs, root)
                })
        })
    }

    fn describe(&self) -> String {
        let detail = if self.is_qemu() {
            let name = self
                .argv
                .iter()
                .skip_while(|a| *a != "-name")
                .nth(1)
                .and_then(|n| n.split(',').next())
                .unwrap_or("");
            format!(" ({name})")
        } else {
            // The helper and what says whose it is: the hub's socket, the relay's target and
            // VM directory.
            let words = if self.helper() == Some("relay") { 4 } else { 3 };
            self.argv
                .iter()
                .skip(1)
                .take(words)
                .map(|a| format!(" {a}"))
                .collect()
        };
        format!("process {} {}{detail}", self.pid, self.program())
    }
}

/// The run directory `path` lies in, when it is under `root`.
fn run_in(path: &Path, root: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    match rest.components().next()? {
        Component::Normal(c) => c
            .to_str()
            .filter(|s| s.starts_with("run-"))
            .map(String::from),
        _ => None,
    }
}

fn local_root(state_dir: &Path) -> PathBuf {
    std::path::absolute(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .join("local")
}

/// Processes of runs under `root`: QEMU, hubs and relays by their command line, relays without
/// `--for` (started by an older dbctl) by their parent.
fn owned_processes(root: &Path) -> Vec<(String, Proc)> {
    let all = processes();
    let mut owned: Vec<(String, Proc)> = Vec::new();
    let mut rest = Vec::new();
    for p in all {
        // A relay outlives its QEMU when its server never closes: its parent is init by then
        // (libslirp double-forks), so only its own command line can say whose it is.
        let ours = p.is_qemu() || p.helper().is_some();
        match p.run_under(root).filter(|_| ours) {
            Some(run) => owned.push((run, p)),
            None => rest.push(p),
        }
    }
    // A relay without `--for` (an older dbctl's): its parent or grandparent may still be its
    // QEMU (while GLib's intermediate child lives, or under `/bin/sh -c`).
    let parent: std::collections::HashMap<u32, u32> =
        rest.iter().map(|p| (p.pid, p.ppid)).collect();
    let relays: Vec<(String, Proc)> = rest
        .into_iter()
        .filter(|p| p.helper() == Some("relay"))
        .filter_map(|p| {
            let up = [Some(p.ppid), parent.get(&p.ppid).copied()];
            let (run, _) = owned
                .iter()
                .find(|(_, q)| q.is_qemu() && up.contains(&Some(q.pid)))?;
            Some((run.clone(), p))
        })
        .collect();
    owned.extend(relays);
    owned
}

/// Every run directory and process of a run under `<state_dir>/local`.
pub fn scan(state_dir: &Path) -> Vec<Leftover> {
    let root = local_root(state_dir);
    let mut found: Vec<Leftover> = owned_processes(&root)
        .into_iter()
        .map(|(run_id, p)| Leftover {
            run_id,
            what: p.describe(),
        })
        .collect();
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("run-") && e.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(Leftover {
                    run_id: name,
                    what: format!("directory {}", e.path().display()),
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.run_id, &a.what).cmp(&(&b.run_id, &b.what)));
    found
}

/// Stops every process of `run_id` (relays, then QEMU, then the hub) and removes its
/// directory; `Ok` only when a new scan finds nothing of the run.
pub async fn remove(state_dir: &Path, run_id: &str) -> Result<(), String> {
    let root = local_root(state_dir);
    let mut procs: Vec<Proc> = owned_processes(&root)
        .into_iter()
        .filter(|(run, _)| run == run_id)
        .map(|(_, p)| p)
        .collect();
    // Relays first (their QEMU would only spawn more), the hub last (the VMs' network).
    procs.sort_by_key(|p| match p.helper() {
        Some("relay") => 0,
        Some(_) => 2,
        None => 1,
    });
    for p in &procs {
        tracing::info!(pid = p.pid, run_id, "gc: stopping {}", p.describe());
        process::stop(p.pid).await;
    }
    let dir = root.join(run_id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let left: Vec<String> = scan(state_dir)
        .into_iter()
        .filter(|l| l.run_id == run_id)
        .map(|l| l.what)
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still present: {}", left.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(argv: &[&str], cwd: &str) -> Proc {
        Proc {
            pid: 1,
            ppid: 0,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: Some(cwd.into()),
        }
    }

    #[test]
    fn a_process_belongs_to_the_run_its_command_line_points_into() {
        let root = Path::new("/s/local");
        let qemu = proc(
            &[
                "qemu-system-x86_64",
                "-name",
                "dbctl-run-1-node-1,process=dbctl-run-1-node-1",
                "-drive",
                "if=none,id=root,file=/s/local/run-1/vms/node-1/root.qcow2,format=qcow2",
            ],
            "/",
        );
        assert_eq!(qemu.run_under(root).as_deref(), Some("run-1"));
        assert_eq!(
            qemu.describe(),
            "process 1 qemu-system-x86_64 (dbctl-run-1-node-1)"
        );
        // Relative paths count from the process' working directory.
        let hub = proc(
            &["dbctl", "local-hub", "--socket", "local/run-2/net/hub.sock"],
            "/s",
        );
        assert_eq!(hub.run_under(root).as_deref(), Some("run-2"));
        // Another state directory's run is not ours.
        let other = proc(
            &[
                "dbctl",
                "local-hub",
                "--socket",
                "/t/local/run-3/net/hub.sock",
            ],
            "/",
        );
        assert_eq!(other.run_under(root), None);
        // A relay by the VM directory it names, whoever its parent is by now.
        let relay = proc(
            &[
                "/usr/bin/dbctl",
                "relay",
                "127.0.0.1:9000",
                "--for",
                "/s/local/run-4/vms/node-1",
            ],
            "/",
        );
        assert_eq!(relay.run_under(root).as_deref(), Some("run-4"));
        assert_eq!(
            relay.describe(),
            "process 1 dbctl relay 127.0.0.1:9000 --for /s/local/run-4/vms/node-1"
        );
        assert_eq!(run_in(Path::new("/s/local/runs"), root), None);
        assert_eq!(run_in(Path::new("/s/local"), root), None);
    }

    #[tokio::test]
    async fn run_directories_are_found_and_removed_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        for run in ["run-keep", "run-gone"] {
            std::fs::create_dir_all(state.join("local").join(run).join("net")).unwrap();
        }
        std::fs::create_dir_all(state.join("local/images-not-a-run")).unwrap();
        let found = scan(state);
        let runs: Vec<&str> = found.iter().map(|l| l.run_id.as_str()).collect();
        assert_eq!(runs, ["run-gone", "run-keep"], "{found:?}");
        remove(state, "run-gone").await.unwrap();
        assert!(!state.join("local/run-gone").exists());
        assert!(state.join("local/run-keep").exists());
        // Again: nothing left is success.
        remove(state, "run-gone").await.unwrap();
    }
}
