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
    assert_eq!(hub::ensure(&socket, &pidfile, None).unwrap(), server);
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

/// An Ethernet frame from MAC `from` to MAC `to`: IPv4 TCP `src:sport` → `dst:dport`, or
/// (with `dst` None) an ARP broadcast.
fn frame(from: u8, to: u8, ip: Option<([u8; 4], u16, [u8; 4], u16)>) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0x77, 1, to]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0x77, 1, from]);
    let Some((src, sport, dst, dport)) = ip else {
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        return f;
    };
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[14 + 9] = 6;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

/// The TCP destination port of a received IPv4 frame, or None for anything else (ARP).
fn tcp_port(frame: &[u8]) -> Option<u16> {
    (frame[12..14] == [0x08, 0x00]).then(|| u16::from_be_bytes([frame[36], frame[37]]))
}

fn policy(ports: &[u16]) -> String {
    let rules: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                r#"{{"protocol":"tcp","from_port":{p},"to_port":{p},"sources":["10.0.0.6/32"]}}"#
            )
        })
        .collect();
    format!(r#"{{"instances":{{"10.0.0.5":[{}]}}}}"#, rules.join(","))
}

/// The EC2 twin's hubs are its VPCs' security groups: given a policy, the real hub process
/// forwards a TCP frame only where a rule of the destination admits its source and port,
/// lets replies of an admitted flow back without a rule, passes ARP, says what it denied,
/// and follows the policy file when the twin rewrites it.
#[test]
fn a_hub_with_a_policy_forwards_only_what_the_security_groups_admit() {
    use std::os::unix::net::UnixDatagram;
    const A: [u8; 4] = [10, 0, 0, 5];
    const B: [u8; 4] = [10, 0, 0, 6];
    let (dir, socket, pidfile) = net();
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, policy(&[5432])).unwrap();
    let mut hub = Command::new(env!("CARGO_BIN_EXE_dbctl"))
        .args(["local-hub", "--socket"])
        .arg(&socket)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--policy")
        .arg(&policy_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the hub", || recorded(&pidfile) == Some(hub.id()));
    let nic = |name: &str| {
        let s = UnixDatagram::bind(dir.path().join(name)).unwrap();
        s.connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let (a, b) = (nic("a.sock"), nic("b.sock"));
    let mut buf = [0u8; 2048];
    let mut recv = |s: &UnixDatagram| {
        let n = s.recv(&mut buf).expect("a frame within 10 s");
        buf[..n].to_vec()
    };
    // ARP passes (flooded to the ports the hub has heard from), and teaches the hub which
    // port each MAC is on.
    a.send(&frame(5, 0, None)).unwrap();
    b.send(&frame(6, 0, None)).unwrap();
    assert_eq!(tcp_port(&recv(&a)), None);
    a.send(&frame(5, 0, None)).unwrap();
    assert_eq!(tcp_port(&recv(&b)), None);

    // B → A: 5433 has no rule, 5432 has one. The hub keeps order, so the first frame A gets
    // tells whether the denied one was dropped.
    b.send(&frame(6, 5, Some((B, 40000, A, 5433)))).unwrap();
    b.send(&frame(6, 5, Some((B, 40001, A, 5432)))).unwrap();
    assert_eq!(tcp_port(&recv(&a)), Some(5432));
    // A's reply needs no rule of B's (stateful); a new connection from A to B is denied.
    a.send(&frame(5, 6, Some((A, 5432, B, 40001)))).unwrap();
    assert_eq!(tcp_port(&recv(&b)), Some(40001));
    a.send(&frame(5, 6, Some((A, 41000, B, 22)))).unwrap();
    a.send(&frame(5, 0, None)).unwrap();
    assert_eq!(tcp_port(&recv(&b)), None, "B got the denied frame");

    // The twin authorizes 5433: the hub follows the rewritten file.
    let next = dir.path().join("policy.json.new");
    std::fs::write(&next, policy(&[5432, 5433])).unwrap();
    std::fs::rename(&next, &policy_file).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut port = 42000;
    wait_for("the new rule to admit 5433", || {
        port += 1;
        b.send(&frame(6, 5, Some((B, port, A, 5433)))).unwrap();
        let mut buf = [0u8; 2048];
        a.recv(&mut buf)
            .is_ok_and(|n| tcp_port(&buf[..n]) == Some(5433))
    });

    hub.kill().unwrap();
    let out = hub.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("denied: 10.0.0.6 -> 10.0.0.5:5433")
            && said.contains("denied: 10.0.0.5 -> 10.0.0.6:22"),
        "{said}"
    );
}
