//! One `moto_server` per test binary, shared by its tests one at a time.
//!
//! * Started lazily by the first test, on a free port (`-p 0`, the real port is parsed from its
//!   stderr), with `MOTO_AMIS_PATH` pointing at a fixture of official-looking Debian 12 images.
//! * Never leaked: the server is spawned from a thread that lives as long as the process with
//!   `PR_SET_PDEATHSIG=SIGKILL` (so it dies even if the test binary is killed), and an `atexit`
//!   hook kills it when the harness exits normally.
//! * Tests take [`session`], which serializes them (they share one server) and resets moto's
//!   state (`POST /moto-api/reset`) so each test starts from an empty account.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

/// The running server (its endpoint is exported as `AWS_ENDPOINT_URL`).
pub struct Moto {
    port: u16,
}

static SERVER: OnceLock<Moto> = OnceLock::new();
static PID: AtomicI32 = AtomicI32::new(0);
static WARM: AtomicBool = AtomicBool::new(false);
/// Unauthenticated requests moto serves after each reset before IAM is enforced; 0: IAM off.
static NO_AUTH_CALLS: AtomicUsize = AtomicUsize::new(0);
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

extern "C" fn kill_moto() {
    let pid = PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: plain syscalls on a pid this process spawned.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

fn spawn() -> (Child, u16) {
    let amis = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/debian12-amis.json"
    );
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", "0"])
        .env("MOTO_AMIS_PATH", amis)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let no_auth = NO_AUTH_CALLS.load(Ordering::SeqCst);
    if no_auth > 0 {
        // IAM on after that many requests, with the signature check corrected
        // (tests/fixtures/moto-sigv4/sitecustomize.py says how).
        cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth.to_string())
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/moto-sigv4"),
            );
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .expect("moto_server must be on PATH (pip install 'moto[server]')");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    // Keep draining stderr for the whole run: a full pipe would block moto's request logging.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, port)) = line.split_once("Running on http://127.0.0.1:")
                && let Some(t) = tx.take()
            {
                let _ = t.send(port.trim().trim_end_matches('/').parse::<u16>().ok());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .expect("moto_server did not report its port within 30 s");
    (child, port)
}

/// Makes the server this binary starts enforce IAM after `calls` unauthenticated requests
/// following each reset (moto's `INITIAL_NO_AUTH_ACTION_COUNT`). Call before the first
/// [`session`].
pub fn enforce_iam_after(calls: usize) {
    assert!(SERVER.get().is_none(), "moto already started without IAM");
    NO_AUTH_CALLS.store(calls, Ordering::SeqCst);
}

/// Starts the server (once) and points the AWS SDK at it through the standard env variables.
pub fn server() -> &'static Moto {
    SERVER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        // PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, so spawn from a
        // thread that never exits (test threads end after each test).
        std::thread::spawn(move || {
            let (child, port) = spawn();
            PID.store(child.id() as i32, Ordering::SeqCst);
            tx.send(port).expect("receiver alive");
            loop {
                std::thread::park();
            }
        });
        let port = rx.recv().expect("moto spawner thread");
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(kill_moto) };
        let endpoint = format!("http://127.0.0.1:{port}");
        // SAFETY: runs inside OnceLock init, before any test builds an SDK client (every test
        // calls `session()` first), so no other thread reads the environment concurrently.
        unsafe {
            super::aws::point_sdk_at(&endpoint);
        }
        Moto { port }
    })
}

impl Moto {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `POST <path>` with an empty body; returns the status code.
    pub fn post(&self, path: &str) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect moto");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// Exclusive use of a freshly reset moto for the rest of the test.
pub struct Session {
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

/// Serializes tests on the shared server, warms it once, and resets its state.
pub async fn session() -> Session {
    let moto = server();
    let guard = LOCK.lock().await;
    if !WARM.swap(true, Ordering::SeqCst) {
        // The first EC2 call loads moto's instance-type and AMI data (~2 s): pay it once here so
        // per-test timings are honest.
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .load()
            .await;
        aws_sdk_ec2::Client::new(&conf)
            .describe_availability_zones()
            .send()
            .await
            .expect("warm-up call to moto");
    }
    assert_eq!(moto.post("/moto-api/reset"), 200, "moto reset");
    Session { _guard: guard }
}
