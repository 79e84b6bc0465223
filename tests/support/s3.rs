//! An S3 endpoint for backup tests: a `moto_server` of its own behind a TLS front with a
//! certificate for `s3.dbctl.test` from a test CA, on 127.0.0.1. The name does not resolve on
//! the host: dbctl is told its address (`backup.s3.address`), like `curl --resolve`; in the VMs
//! the name resolves to dbctl's relay. Killed when dropped (and with the test process).
//!
//! Why a front instead of `moto_server --ssl-cert`: moto's TLS closes connections without a
//! close_notify, and pgBackRest (rightly) fails every PUT whose response ends that way
//! ("TLS error … unexpected eof while reading"). The front ends each connection properly, as
//! S3 and any load balancer do.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const HOST: &str = "s3.dbctl.test";

pub struct S3 {
    pub port: u16,
    pub ca_file: PathBuf,
    ca_pem: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl S3 {
    pub fn start(bucket: &str) -> S3 {
        let dir = tempfile::tempdir().unwrap();
        let ca = dbctl::postgres::tls::LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let (cert, key) = ca.issue_server(&[HOST.to_string()]).unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, moto_port) = (free(), free());
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            // Path-style requests to a custom name: moto must be told the name is an endpoint.
            .env("MOTO_S3_CUSTOM_ENDPOINTS", format!("https://{HOST}:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("moto_server must be on PATH (pip install 'moto[server]')");
        tls_front(port, moto_port, &cert, &key);
        let s3 = S3 {
            port,
            ca_file: ca.cert_path.clone(),
            ca_pem: ca.cert_pem().to_string(),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", moto_port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server (S3) did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let (code, body) = s3.request("PUT", &format!("/{bucket}"));
        assert_eq!(code, 200, "create bucket: {body}");
        s3
    }

    /// The `[backup]` config that points dbctl at this endpoint.
    pub fn config(&self, bucket: &str) -> String {
        format!(
            "[backup]\nrepo = \"s3\"\n\n[backup.s3]\nendpoint = \"{HOST}:{}\"\naddress = \"127.0.0.1\"\nbucket = \"{bucket}\"\nuri_style = \"path\"\nca_file = \"{}\"\n",
            self.port,
            self.ca_file.display()
        )
    }

    /// Keys in `bucket` under `prefix` (one ListObjectsV2 page is enough for tests).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, body) = self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"));
        assert_eq!(code, 200, "{body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(String::from)
            .collect()
    }

    /// One HTTPS request (unsigned: moto does not check signatures), TLS verified.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(HOST).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let sock = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        write!(
            tls,
            "{method} {path} HTTP/1.1\r\nHost: {HOST}:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }
}

/// Terminates TLS on `port` and forwards each connection to moto on `upstream`, ending it with
/// a close_notify once moto is done. Runs on its own thread and runtime for the process' life.
fn tls_front(port: u16, upstream: u16, cert_pem: &str, key_pem: &str) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    // Ends with shutdown of both sides: the TLS side sends close_notify.
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                });
            }
        });
    });
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
