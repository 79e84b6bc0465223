//! The local provider's network hub (`dbctl local-hub`, the real binary): one hub per network
//! however many are started, and stopping a network stops every hub of its socket — the
//! guarantees whose absence left a hub running after the HA fault matrix's destroy (a hub
//! started, its starter killed before recording it, a second one started by the resume).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dbctl::provider::local::hub;

fn start(socket: &Path, pidfile: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["local-hub", "--socket"])
        .arg(socket)
        .arg("--pidfile")
        .arg(pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').unwrap().1.split_whitespace().next() != Some("Z"))
}

/// Polls (with backoff) until `f` holds; panics with `what` after 10 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

fn net() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (socket, pidfile) = (dir.path().join("hub.sock"), dir.path().join("hub.pid"));
    (dir, socket, pidfile)
}

fn recorded(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

#[test]
fn of_hubs_started_together_for_one_network_exactly_one_serves_and_its_pid_file_names_it() {
    let (_dir, socket, pidfile) = net();
    let mut hubs: Vec<Child> = (0..4).map(|_| start(&socket, &pidfile)).collect();
    // Every hub but one finds the lock taken and exits, successfully.
    wait_for("all hubs but one to exit", || {
        hubs.iter_mut()
            .map(|h| h.try_wait().unwrap())
            .filter(Option::is_none)
            .count()
            == 1
    });
    let mut serving = None;
    for mut h in hubs {
        match h.try_wait().unwrap() {
            Some(status) => assert!(
                status.success(),
                "a hub that lost the lock exits 0: {status}"
            ),
            None => serving = Some(h),
        }
    }
    let mut serving = serving.unwrap();
    let server = serving.id();
    wait_for("the hub to name itself", || {
        recorded(&pidfile) == Some(server)
    });
    assert!(socket.exists(), "the serving hub binds the socket");
    // ensure() adopts the hub that serves (it spawns nothing: there is one hub still).
    assert_eq!(hub::ensure(&socket, &pidfile).unwrap(), server);
    // A hub started later (a resume whose starter never recorded anything) changes nothing.
    let mut late = start(&socket, &pidfile);
    assert!(late.wait().unwrap().success());
    assert_eq!(recorded(&pidfile), Some(server));
    assert!(alive(server));
    serving.kill().unwrap();
    serving.wait().unwrap();
}

#[test]
fn a_hub_started_again_after_the_first_died_takes_over_its_stale_pid_file() {
    let (_dir, socket, pidfile) = net();
    let mut first = start(&socket, &pidfile);
    wait_for("the first hub", || recorded(&pidfile) == Some(first.id()));
    first.kill().unwrap();
    first.wait().unwrap();
    // The pid file still names the dead hub; the lock died with it.
    let mut second = start(&socket, &pidfile);
    wait_for("the second hub", || recorded(&pidfile) == Some(second.id()));
    assert!(alive(second.id()));
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn stopping_a_network_stops_every_hub_of_its_socket_recorded_or_not() {
    let (dir, socket, pidfile) = net();
    let mut recorded_hub = start(&socket, &pidfile);
    wait_for("the recorded hub", || {
        recorded(&pidfile) == Some(recorded_hub.id())
    });
    // A second hub for the same socket that no pid file of the network names (what a dbctl
    // without the lock left behind): only the socket ties it to the network.
    let stray_pidfile = dir.path().join("elsewhere.pid");
    let mut stray = start(&socket, &stray_pidfile);
    wait_for("the stray hub", || {
        recorded(&stray_pidfile) == Some(stray.id())
    });
    // A hub of another network is not touched.
    let (_other_dir, other_socket, other_pidfile) = net();
    let mut other = start(&other_socket, &other_pidfile);
    wait_for("the other hub", || {
        recorded(&other_pidfile) == Some(other.id())
    });

    hub::stop(&socket, &pidfile).await;
    for (what, h) in [("recorded", &mut recorded_hub), ("stray", &mut stray)] {
        // stop() returns once /proc shows each gone or a zombie; the kernel may still be
        // finishing the exit when this test (their parent) asks, so poll briefly. A hub stop
        // never signalled would run on and fail this after 10 s.
        let mut status = None;
        wait_for(&format!("the {what} hub to have exited"), || {
            status = h.try_wait().unwrap();
            status.is_some()
        });
        let status = status.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{what}: {status}");
    }
    assert!(alive(other.id()), "another network's hub keeps running");
    other.kill().unwrap();
    other.wait().unwrap();
}
