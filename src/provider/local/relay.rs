//! `dbctl relay HOST:PORT`: what QEMU runs (guestfwd `cmd:`) for each connection a guest opens
//! to the S3 relay address — the connection arrives on stdin/stdout and is spliced to
//! HOST:PORT. The guest stays restricted (restrict=on) yet reaches exactly this one endpoint,
//! wherever it is, with no listener opened on the host.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// The QEMU `guestfwd` rule that runs `exe relay TARGET --for VM_DIR` for each connection the
/// guest opens to `addr:port` (`exe`: dbctl, or the EC2 twin, both of which have the `relay`
/// command).
///
/// `--for` names the VM directory the relay serves, for `dbctl gc` only: libslirp spawns the
/// command with GLib's double fork, so a relay's parent is init, not its QEMU, and a relay
/// left when its QEMU died (a server that never closes) could be told from nothing else.
pub fn guestfwd_rule(exe: &Path, addr: &str, port: u16, target: &str, vm_dir: &Path) -> String {
    format!(
        "tcp:{addr}:{port}-cmd:'{}' relay {target} --for '{}'",
        exe.display(),
        vm_dir.display()
    )
}

/// Stops the relays serving `vm_dir` (their `--for`), once its QEMU is gone: a relay whose
/// server keeps the connection open would otherwise outlive the VM it served.
pub async fn stop_for(vm_dir: &Path) {
    let dir = vm_dir.display().to_string();
    for p in super::process::processes() {
        let serves = p.argv.get(1).is_some_and(|a| a == "relay")
            && p.argv.windows(2).any(|w| w[0] == "--for" && w[1] == dir);
        if serves {
            super::process::stop(p.pid).await;
        }
    }
}

/// How long the guest may keep sending after the server has finished.
const DRAIN: Duration = Duration::from_secs(30);

/// Splices stdin/stdout and `target` until the server is done and the guest has closed.
pub fn run(target: &str) -> std::io::Result<()> {
    let upstream = TcpStream::connect(target)?;
    let _ = upstream.set_nodelay(true);
    let mut to_upstream = upstream.try_clone()?;
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        let mut open = true;
        // Keep reading even after the server is gone: see below.
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if open && to_upstream.write_all(&buf[..n]).is_err() {
                open = false;
            }
        }
        let _ = to_upstream.shutdown(Shutdown::Write);
        let _ = done_tx.send(());
    });
    let mut from_upstream = upstream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from_upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    // The server is done: tell the guest (EOF on its side), then wait until it closes too.
    // Exiting while the guest's last bytes (e.g. a TLS close_notify) sit unread in our socket
    // would make the kernel reset the connection, and the reset can overtake the response
    // still queued for the guest.
    // SAFETY: shutdown(2) on our own stdout descriptor.
    unsafe { libc::shutdown(1, libc::SHUT_WR) };
    let _ = done_rx.recv_timeout(DRAIN);
    Ok(())
}

#[cfg(test)]
mod rule_tests {
    #[test]
    fn the_guestfwd_rule_runs_the_relay_command_for_its_address() {
        let rule = super::guestfwd_rule(
            std::path::Path::new("/usr/bin/dbctl"),
            "10.0.2.101",
            80,
            "deb.debian.org:80",
            std::path::Path::new("/s/local/run-1/node-1"),
        );
        assert_eq!(
            rule,
            "tcp:10.0.2.101:80-cmd:'/usr/bin/dbctl' relay deb.debian.org:80 --for '/s/local/run-1/node-1'"
        );
    }
}
