//! The aws provider end to end on the EC2 twin (issue 13 §1): moto_server with `ec2-twin` in
//! front of it, both real processes, and the real dbctl binary on `--provider aws`. One VM.
//! Needs moto_server on PATH and dbctl's image (`scripts/test` builds it: `dbctl image build`).
//!
//! Asserts the furthest points the aws flow reaches on the twin (see the test's doc): with the
//! default config, setup's readiness check is refused (issue 13 §3); with 5432 open to the
//! operator, RUNNING and a verified-TLS `psql` through the URI `dbctl connect` hands out. Each
//! `dbctl destroy` leaves no twin VM and nothing tagged with the run in moto.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Env, stderr, stdout};

/// moto_server and the twin in front of it; both stopped (the twin's VMs with it) on drop.
struct Twin {
    moto: Child,
    twin: Child,
    state: tempfile::TempDir,
    endpoint: String,
    ami: String,
}

fn spawn_dying_with_us(cmd: &mut Command) -> Child {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("spawn")
}

impl Twin {
    fn start() -> Twin {
        let mut moto = spawn_dying_with_us(
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let lines = BufReader::new(moto.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in lines.lines().map_while(Result::ok) {
                if let Some((_, port)) = line.split_once("Running on http://127.0.0.1:")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(port.trim().trim_end_matches('/').to_string());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("moto_server reports its port (pip install 'moto[server]')");
        let state = tempfile::tempdir().unwrap();
        let twin = spawn_dying_with_us(
            Command::new(env!("CARGO_BIN_EXE_ec2-twin"))
                .args(["serve", "--moto", &format!("http://127.0.0.1:{port}")])
                .arg("--state")
                .arg(state.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(state.path().join("twin.log")).unwrap()),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !state.path().join("endpoint").exists() {
            assert!(
                Instant::now() < deadline,
                "the twin did not come up: {}",
                std::fs::read_to_string(state.path().join("twin.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let read = |f: &str| {
            std::fs::read_to_string(state.path().join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        let (endpoint, ami) = (read("endpoint"), read("ami"));
        assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
        Twin {
            moto,
            twin,
            state,
            endpoint,
            ami,
        }
    }

    fn vms(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state.path().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("twin.log")).unwrap_or_default()
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        // SIGTERM: the twin stops every VM it started before it exits.
        unsafe { libc::kill(self.twin.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.twin.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.twin.kill();
        let _ = self.twin.wait();
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

/// QEMU processes the twin started (named `ec2-twin-<instance id>`).
fn twin_qemus(state: &Path) -> usize {
    let marker = state.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("qemu-system") && c.contains("ec2-twin-") && c.contains(&marker))
        .count()
}

fn step_state(status: &serde_json::Value, step: &str) -> String {
    status["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step)
        .map(|s| s["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// `dbctl create NAME --provider aws --image AMI --ssh-cidr 127.0.0.1/32` in `env`; a failed
/// create keeps what it made, so its status shows where it stopped. Returns (output, run, status).
fn create(env: &Env, twin: &Twin, name: &str) -> (std::process::Output, String, serde_json::Value) {
    let out = env.run(
        &[
            "create",
            name,
            "--provider",
            "aws",
            "--image",
            &twin.ami,
            "--ssh-cidr",
            "127.0.0.1/32",
            "--on-failure",
            "keep",
        ],
        None,
    );
    let (_, list) = env.json(&["list"]);
    let run = list[0]["run"].as_str().unwrap_or_default().to_string();
    let (_, status) = env.json(&["status", &run]);
    (out, run, status)
}

/// `dbctl destroy NAME` → no twin VM, no twin QEMU, nothing tagged with the run in moto.
async fn destroy_leaves_nothing(env: &Env, twin: &Twin, name: &str, run: &str) {
    let out = env.run(&["destroy", name], None);
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    assert!(twin.vms().is_empty(), "VMs left: {:?}", twin.vms());
    assert_eq!(twin_qemus(twin.state.path()), 0, "twin QEMU processes left");
    let left: Vec<_> = support::aws::tagged_by_kind(run)
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(left.is_empty(), "tagged with {run} after destroy: {left:?}");
}

const CONFIG: &str = "[aws]\nssh_cidr = \"127.0.0.1/32\"\nssh_wait_secs = 300\n";

/// One twin, two creates one after the other (one VM at a time).
///
/// 1. The default config stops at `setup.primary`: its readiness check connects from the
///    operator's machine to the public address on 5432, which pg_hba (VPC CIDR only) refuses,
///    as EC2 would (there the security group drops it even before) — issue 13 §3's second
///    defect, reproduced. Everything before it (provision, host key from the console, SSH to
///    the loopback public address, packages, data volume on NVMe, initdb) is done.
/// 2. With the operator's address in `aws.extra_pg_cidrs` — on the twin that is 10.0.2.2,
///    where QEMU's user network puts the host's connections — it is RUNNING and psql works.
#[tokio::test(flavor = "multi_thread")]
async fn aws_create_on_the_twin_runs_psql_and_destroy_leaves_nothing() {
    let twin = Twin::start();
    // SAFETY: set before any thread of this test binary builds an SDK client (one test here).
    // The SDK must never probe the instance metadata service from the host.
    unsafe {
        support::aws::point_sdk_at(&twin.endpoint);
    }

    // 1. The default config: as far as setup's readiness check.
    let env = Env::aws(CONFIG);
    let started = Instant::now();
    let (out, run, status) = create(&env, &twin, "tw");
    eprintln!("default config: create ended in {:?}", started.elapsed());
    assert_eq!(
        out.status.code(),
        Some(5),
        "expected a kept failure at setup.primary:\n{}\n--- status\n{status:#}\n--- twin\n{}",
        stderr(&out),
        twin.log()
    );
    for step in [
        "provision.vm.primary",
        "provision.attach.primary",
        "deploy.packages.primary",
        "deploy.primary",
    ] {
        assert_eq!(step_state(&status, step), "done", "{step}: {status:#}");
    }
    assert_eq!(step_state(&status, "setup.primary"), "failed", "{status:#}");
    assert!(
        stderr(&out).contains("no pg_hba.conf entry for host \"10.0.2.2\""),
        "{}",
        stderr(&out)
    );
    destroy_leaves_nothing(&env, &twin, "tw", &run).await;

    // 2. 5432 open to the operator: RUNNING, psql through the URI dbctl connect hands out.
    let env = Env::aws(&format!("{CONFIG}extra_pg_cidrs = [\"10.0.2.2/32\"]\n"));
    let started = Instant::now();
    let (out, run, status) = create(&env, &twin, "tw2");
    assert!(
        out.status.success(),
        "create on the twin failed after {:?}:\n{}\n--- status\n{status:#}\n--- twin\n{}",
        started.elapsed(),
        stderr(&out),
        twin.log()
    );
    eprintln!("aws create on the twin: RUNNING in {:?}", started.elapsed());
    assert_eq!(twin.vms().len(), 1, "{:?}", twin.vms());
    let vm = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "provision.vm.primary")
        .unwrap()["outputs"]
        .clone();
    let public = vm["public_ip"].as_str().unwrap_or_default();
    assert!(public.starts_with("127.77."), "public address {vm}");
    let (code, conn) = env.json(&["connect", "tw2", "--passfile"]);
    assert_eq!(code, 0, "{conn}");
    let uri = conn["uri"].as_str().unwrap();
    assert!(
        uri.contains("sslmode=verify-full") && uri.contains(public),
        "{uri}"
    );
    let psql = Command::new("psql")
        .args([
            uri,
            "-XAtc",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ])
        .env("PGPASSFILE", conn["passfile"].as_str().unwrap())
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert_eq!(stdout(&psql).trim(), "t", "{}", stderr(&psql));
    destroy_leaves_nothing(&env, &twin, "tw2", &run).await;
}
