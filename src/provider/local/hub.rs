//! The private network of one VPC: a learning Ethernet switch over unix datagram sockets.
//!
//! Each VM's second NIC is a QEMU `-netdev dgram` whose frames go to the hub's socket; the hub
//! forwards them by destination MAC (flooding unknown and broadcast ones). Nothing leaves the
//! host and no root, bridge or multicast is needed. The hub runs as a detached
//! `dbctl local-hub` process so the network outlives the dbctl command, like the VMs do.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process;

/// Runs the switch forever (the `dbctl local-hub` process).
pub fn serve(socket: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let sock = UnixDatagram::bind(socket)?;
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

/// Starts the hub for `socket` unless it already runs; returns its pid.
pub fn ensure(socket: &Path, pidfile: &Path) -> std::io::Result<u32> {
    let marker = socket.display().to_string();
    if let Some(pid) = process::running(pidfile, &marker) {
        return Ok(pid);
    }
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("local-hub")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: Ctrl-C on dbctl must not take the network down.
        .process_group(0)
        .spawn()?;
    std::fs::write(pidfile, child.id().to_string())?;
    // Wait (briefly, polling) for the socket so the first VM finds it.
    for i in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5 + i));
    }
    Ok(child.id())
}

pub async fn stop(socket: &Path, pidfile: &Path) {
    if let Some(pid) = process::running(pidfile, &socket.display().to_string()) {
        process::stop(pid).await;
    }
}
