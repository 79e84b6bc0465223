//! Detached processes (QEMU, the network hub) identified by pid file plus command line, so a
//! recycled pid is never mistaken for ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// This program's path, for helpers it starts (the network hub, QEMU's relays) — also after
/// the file was replaced on disk while this process runs (a rebuild, an upgrade during a long
/// create, a long-running EC2 twin): Linux then names the old, unlinked inode `PATH (deleted)`,
/// which cannot be executed; the file now at PATH can, and takes the same arguments.
pub fn self_exe() -> std::io::Result<PathBuf> {
    Ok(replaced(std::env::current_exe()?))
}

fn replaced(exe: PathBuf) -> PathBuf {
    if exe.exists() {
        return exe;
    }
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(now) if Path::new(now).exists() => PathBuf::from(now),
        _ => exe,
    }
}

/// The pid in `pidfile` if that process is alive and its command line contains `marker`.
pub fn running(pidfile: &Path, marker: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    cmdline.contains(marker).then_some(pid)
}

/// One process on this host, as /proc shows it.
pub(crate) struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
}

/// Every process on this host (those that vanish while being read are left out).
pub(crate) fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            // "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok();
            Some(Proc {
                pid,
                ppid,
                argv,
                cwd,
            })
        })
        .collect()
}

/// Live processes whose arguments (after the program) begin with `args`, in order.
pub fn with_args(args: &[&str]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.argv.len() > args.len() && args.iter().zip(&p.argv[1..]).all(|(a, b)| a == b))
        .map(|p| p.pid)
        .filter(|pid| alive(*pid))
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// Sends `signal` and polls (with backoff) until the process is gone; `false` on timeout.
pub async fn signal_and_wait(pid: u32, signal: i32, limit: Duration) -> bool {
    // SAFETY: plain kill(2); the pid was checked against its command line by the caller.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
    wait_gone(pid, limit).await
}

pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(20);
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    true
}

/// Stops a process politely (SIGTERM), then firmly (SIGKILL).
pub async fn stop(pid: u32) {
    if !signal_and_wait(pid, libc::SIGTERM, Duration::from_secs(10)).await {
        signal_and_wait(pid, libc::SIGKILL, Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_executable_is_found_at_its_path_again() {
        let dir = tempfile::tempdir().unwrap();
        let now = dir.path().join("dbctl");
        let unlinked = PathBuf::from(format!("{} (deleted)", now.display()));
        // Replaced: the new file is at the path.
        std::fs::write(&now, b"").unwrap();
        assert_eq!(replaced(unlinked.clone()), now);
        // An executable that still exists is left alone.
        assert_eq!(replaced(now.clone()), now);
        // Removed for good: nothing better to offer than what the kernel said.
        std::fs::remove_file(&now).unwrap();
        assert_eq!(replaced(unlinked.clone()), unlinked);
    }
}
