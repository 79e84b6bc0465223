//! The EC2 twin as the aws end-to-end tests use it: moto_server with `ec2-twin` in front of
//! it (both real processes, gone with the test), and the real dbctl binary driven against it.
//! Included by path (`#[path = "support/twin.rs"] mod twin;`) from the test binaries that need
//! the `twin` feature, since `CARGO_BIN_EXE_ec2-twin` exists only there.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Env, stderr};

/// moto_server and the twin in front of it; both stopped (the twin's VMs with it) on drop.
pub struct Twin {
    pub moto: Child,
    pub twin: Child,
    pub state: tempfile::TempDir,
    pub endpoint: String,
    pub ami: String,
    /// The second AMI, a stock cloud image, when started with one ([`Twin::start_with`]).
    pub ami_cloud: Option<String>,
}

pub fn spawn_dying_with_us(cmd: &mut Command) -> Child {
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
    pub fn start() -> Twin {
        Twin::start_with(None)
    }

    /// A twin that also serves `cloud_image` (a stock cloud image) as a second AMI.
    pub fn start_with(cloud_image: Option<&Path>) -> Twin {
        Twin::start_full(cloud_image, None)
    }

    /// A twin serving `cloud_image` as a second AMI, and S3 endpoint `s3` (`NAME:PORT`, on
    /// 127.0.0.1) to its VMs, when given.
    pub fn start_full(cloud_image: Option<&Path>, s3: Option<&str>) -> Twin {
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
        let mut serve = Command::new(env!("CARGO_BIN_EXE_ec2-twin"));
        serve
            .args(["serve", "--moto", &format!("http://127.0.0.1:{port}")])
            .arg("--state")
            .arg(state.path())
            .env_remove("DBCTL_TWIN_CLOUD_IMAGE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("twin.log")).unwrap());
        if let Some(image) = cloud_image {
            serve.arg("--cloud-image").arg(image);
        }
        serve.env_remove("DBCTL_TWIN_S3");
        if let Some(endpoint) = s3 {
            serve.args(["--s3", endpoint]);
        }
        let twin = spawn_dying_with_us(&mut serve);
        // A cloud image is imported (checksummed, converted) the first time.
        let deadline = Instant::now() + Duration::from_secs(180);
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
        let ami_cloud = cloud_image.map(|_| read("ami-cloud"));
        Twin {
            moto,
            twin,
            state,
            endpoint,
            ami,
            ami_cloud,
        }
    }

    pub fn vms(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state.path().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// What the VPC networks' hubs logged (the flows their security groups denied).
    pub fn hub_logs(&self) -> String {
        let mut all = String::new();
        for vpc in std::fs::read_dir(self.state.path().join("vpcs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            all += &std::fs::read_to_string(vpc.path().join("hub.log")).unwrap_or_default();
        }
        all
    }

    pub fn log(&self) -> String {
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

/// QEMU processes the twin started (named `ec2-twin-<instance id>`, their files in its
/// state directory); forks of a VM are not counted (see `support::qemus`).
pub fn twin_qemus(state: &Path) -> usize {
    let marker = state.display().to_string();
    crate::support::qemus(&marker)
        .iter()
        .filter(|(_, c)| c.contains("ec2-twin-"))
        .count()
}

/// The run's security group, from its `dbctl status` document.
pub fn group_id(status: &serde_json::Value) -> String {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["outputs"]["group_id"].as_str())
        .expect("the security group's id")
        .to_string()
}

pub fn step_state(status: &serde_json::Value, step: &str) -> String {
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
pub fn create(
    env: &Env,
    twin: &Twin,
    name: &str,
    extra: &[&str],
) -> (std::process::Output, String, serde_json::Value) {
    create_faulted(env, twin, name, extra, None)
}

/// [`create`] with `DBCTL_FAULTS` set to `faults`.
pub fn create_faulted(
    env: &Env,
    twin: &Twin,
    name: &str,
    extra: &[&str],
    faults: Option<&str>,
) -> (std::process::Output, String, serde_json::Value) {
    create_from(env, &twin.ami, name, extra, faults)
}

/// [`create_faulted`] of the AMI `ami`.
pub fn create_from(
    env: &Env,
    ami: &str,
    name: &str,
    extra: &[&str],
    faults: Option<&str>,
) -> (std::process::Output, String, serde_json::Value) {
    let mut args = vec![
        "create",
        name,
        "--provider",
        "aws",
        "--image",
        ami,
        "--ssh-cidr",
        "127.0.0.1/32",
        "--on-failure",
        "keep",
    ];
    args.extend(extra);
    let out = env.run(&args, faults);
    let (_, list) = env.json(&["list"]);
    let run = list[0]["run"].as_str().unwrap_or_default().to_string();
    let (_, status) = env.json(&["status", &run]);
    (out, run, status)
}

/// `dbctl destroy NAME` → no twin VM, no twin QEMU, nothing tagged with the run in moto.
pub async fn destroy_leaves_nothing(env: &Env, twin: &Twin, name: &str, run: &str) {
    let out = env.run(&["destroy", name], None);
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    assert!(twin.vms().is_empty(), "VMs left: {:?}", twin.vms());
    assert_eq!(twin_qemus(twin.state.path()), 0, "twin QEMU processes left");
    let left: Vec<_> = crate::support::aws::tagged_by_kind(run)
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(left.is_empty(), "tagged with {run} after destroy: {left:?}");
}

pub const CONFIG: &str = "[aws]\nssh_cidr = \"127.0.0.1/32\"\nssh_wait_secs = 300\n";

/// What a program on the node sees of the instance metadata service (IMDSv2), as JSON:
/// `v1` (the status of a GET without a token), and with a token the instance id, region,
/// zone, role and the role's credentials. Python's urllib, since the image has no curl.
pub const IMDS_PROBE: &str = r#"import json, urllib.request as u
B = "http://169.254.169.254/latest"
def call(path, method="GET", headers={}):
    try:
        with u.urlopen(u.Request(B + path, method=method, headers=headers), timeout=20) as r:
            return r.status, r.read().decode()
    except u.HTTPError as e:
        return e.code, ""
v1 = call("/meta-data/instance-id")[0]
token = call("/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[1]
h = {"X-aws-ec2-metadata-token": token}
get = lambda p: call("/meta-data/" + p, headers=h)[1]
role = get("iam/security-credentials/")
print(json.dumps({"v1": v1, "instance_id": get("instance-id"), "region": get("placement/region"),
    "zone": get("placement/availability-zone"), "role": role,
    "credentials": json.loads(get("iam/security-credentials/" + role) or "{}")}))
"#;

/// `dbctl connect NAME --tunnel --passfile --output json` in the background: its document
/// (read as soon as it is printed) and the process holding the tunnel.
// The child is returned to the caller, which ends and waits for it.
#[allow(clippy::zombie_processes)]
pub fn tunnel(env: &Env, name: &str, extra: &[&str]) -> (serde_json::Value, Child) {
    let mut args = vec![
        "connect",
        name,
        "--tunnel",
        "--passfile",
        "--output",
        "json",
    ];
    args.extend(extra);
    let mut child = env
        .command(&args, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dbctl connect --tunnel");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut doc = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait().unwrap();
            panic!("dbctl connect --tunnel ended ({status}) before its document: {doc}");
        }
        doc.push_str(&line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&doc) {
            return (v, child);
        }
    }
}

pub const PROBE: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

/// `psql URI -c PROBE` with the password from `passfile`.
pub fn psql(uri: &str, passfile: &str) -> std::process::Output {
    psql_query(uri, passfile, PROBE)
}

pub fn psql_query(uri: &str, passfile: &str, query: &str) -> std::process::Output {
    Command::new("psql")
        .args([uri, "-XAtc", query])
        .env("PGPASSFILE", passfile)
        .env("PSQLRC", "/dev/null")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

/// One twin per test, one test at a time (each points this process' SDK environment at its
/// own twin, and counts its own VMs).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn with_twin(case: impl AsyncFnOnce(&Twin)) {
    with_twin_serving(None, case).await;
}

/// [`with_twin`] of a twin that serves `cloud_image` as a second AMI too.
pub async fn with_twin_serving(cloud_image: Option<&Path>, case: impl AsyncFnOnce(&Twin)) {
    with_twin_full(cloud_image, None, case).await;
}

/// [`with_twin`] of a twin whose VMs reach the S3 endpoint `s3` (`NAME:PORT` on 127.0.0.1).
pub async fn with_twin_s3(s3: &str, case: impl AsyncFnOnce(&Twin)) {
    with_twin_full(None, Some(s3), case).await;
}

async fn with_twin_full(
    cloud_image: Option<&Path>,
    s3: Option<&str>,
    case: impl AsyncFnOnce(&Twin),
) {
    let _serial = SERIAL.lock().await;
    let twin = Twin::start_full(cloud_image, s3);
    // SAFETY: set while SERIAL is held, before this test builds an SDK client; no other test
    // of this binary runs meanwhile. The SDK must never probe the instance metadata service.
    unsafe {
        crate::support::aws::point_sdk_at(&twin.endpoint);
    }
    case(&twin).await;
}
