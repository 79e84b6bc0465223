//! The private network of one VPC: a learning Ethernet switch over unix datagram sockets.
//!
//! Each VM's second NIC is a QEMU `-netdev dgram` whose frames go to the hub's socket; the hub
//! forwards them by destination MAC (flooding unknown and broadcast ones). Nothing leaves the
//! host and no root, bridge or multicast is needed. The hub runs as a detached
//! `dbctl local-hub` process so the network outlives the dbctl command, like the VMs do.
//!
//! Given a policy file (`--policy`, the EC2 twin's VPCs), the hub is also the network's
//! security groups: every IPv4 frame passes [`Firewall`] first, and each newly denied flow is
//! logged once on stderr (the twin sends that to `hub.log` beside the socket).
//!
//! One hub per network, enforced by the kernel rather than by whoever started it: the hub holds
//! an exclusive `flock` on its pid file for as long as it lives and writes its own pid there. A
//! second hub for the same network (a retry after its starter was killed between the spawn and
//! any record of it, or two steps racing) finds the lock taken and exits; there is no window in
//! which a hub runs that the pid file does not name.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::firewall::{Firewall, Packet, Verdict};
use super::process;

/// How long `ensure` waits for a hub it started to bind its socket and name itself.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Runs the switch forever (the `dbctl local-hub` process); returns at once, successfully,
/// when another hub already serves this network.
pub fn serve(socket: &Path, pidfile: &Path, policy: Option<&Path>) -> std::io::Result<()> {
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(pidfile)?;
    // SAFETY: flock(2) on a descriptor this function owns; released when the process ends.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(()),
            _ => Err(e),
        };
    }
    let _ = std::fs::remove_file(socket);
    let sock = UnixDatagram::bind(socket)?;
    // The pid goes in only once the socket is bound, so a pid file naming a live hub means
    // the network is ready for a VM.
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    lock.flush()?;
    let mut firewall = policy.map(Firewall::open);
    let mut logged: HashSet<(Ipv4Addr, Ipv4Addr, u8, u16)> = HashSet::new();
    let mut by_mac: HashMap<[u8; 6], PathBuf> = HashMap::new();
    let mut ports: Vec<PathBuf> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let Some(from) = from.as_pathname().map(Path::to_path_buf) else {
            continue;
        };
        if n < 14 {
            continue;
        }
        if !ports.contains(&from) {
            ports.push(from.clone());
        }
        let (dst, src): ([u8; 6], [u8; 6]) = (
            buf[0..6].try_into().unwrap(),
            buf[6..12].try_into().unwrap(),
        );
        by_mac.insert(src, from.clone());
        if let Some(fw) = firewall.as_mut()
            && fw.check(&buf[..n]) == Verdict::Denied
        {
            if let Some(p) = Packet::parse(&buf[..n])
                && logged.len() < 10_000
                && logged.insert((p.src, p.dst, p.protocol, p.dst_port))
            {
                eprintln!(
                    "denied: {} -> {}:{} (protocol {}): no security group rule admits it",
                    p.src, p.dst, p.dst_port, p.protocol
                );
            }
            continue;
        }
        let unicast = dst[0] & 1 == 0;
        let targets: Vec<PathBuf> = match by_mac.get(&dst) {
            Some(port) if unicast => vec![port.clone()],
            _ => ports.iter().filter(|p| **p != from).cloned().collect(),
        };
        for t in targets {
            if sock.send_to(&buf[..n], &t).is_err() {
                // The VM behind it is gone; forget the port and its MACs.
                ports.retain(|p| *p != t);
                by_mac.retain(|_, p| *p != t);
            }
        }
    }
}

/// Starts the hub for `socket` unless one already runs; returns the pid of the hub that serves
/// it (which the hub itself wrote to `pidfile`, once its socket was bound).
pub fn ensure(socket: &Path, pidfile: &Path, policy: Option<&Path>) -> std::io::Result<u32> {
    let marker = socket.display().to_string();
    if let Some(pid) = process::running(pidfile, &marker) {
        return Ok(pid);
    }
    let exe = process::self_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("local-hub")
        .arg("--socket")
        .arg(socket)
        .arg("--pidfile")
        .arg(pidfile);
    // A filtering hub says what it denied, in hub.log beside its socket.
    let log = match policy {
        Some(policy) => {
            cmd.arg("--policy").arg(policy);
            let path = socket.with_file_name("hub.log");
            Stdio::from(OpenOptions::new().create(true).append(true).open(path)?)
        }
        None => Stdio::null(),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: Ctrl-C on dbctl must not take the network down.
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + START_LIMIT;
    let mut delay = Duration::from_millis(5);
    loop {
        if let Some(pid) = process::running(pidfile, &marker) {
            // Reap ours if it lost the lock to another hub (it exits at once).
            let _ = child.try_wait();
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            return Err(std::io::Error::other(format!(
                "the network hub exited ({status}) before serving {marker}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::other(format!(
                "the network hub did not serve {marker} within {}s",
                START_LIMIT.as_secs()
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Stops the hub of `socket`: the one its pid file names, and any other `local-hub` process
/// for the same socket (one left by a dbctl older than the pid-file lock).
pub async fn stop(socket: &Path, pidfile: &Path) {
    let marker = socket.display().to_string();
    if let Some(pid) = process::running(pidfile, &marker) {
        process::stop(pid).await;
    }
    for pid in process::with_args(&["local-hub", "--socket", &marker]) {
        process::stop(pid).await;
    }
}
