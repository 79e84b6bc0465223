//! A real PostgreSQL client from the host: TLS verified against dbctl's CA (the server name
//! must match the certificate, as with libpq's `sslmode=verify-full`).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connects with TLS required and verified; the connection task runs in the background.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
    ca_pem: &str,
) -> Result<Client, String> {
    let tls = MakeRustlsConnect::new(tls_config(ca_pem)?);
    let (client, conn) = config(user, password, dbname)
        .host(host)
        .port(port)
        .connect(tls)
        .await
        .map_err(describe)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Like [`connect`], over a stream already open to the server (an SSH direct-tcpip channel):
/// `server_name` is the name the certificate must carry, as libpq's `host` with `hostaddr`.
pub async fn connect_over<S>(
    stream: S,
    server_name: &str,
    user: &str,
    password: &str,
    dbname: &str,
    ca_pem: &str,
) -> Result<Client, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = MakeTlsConnect::<S>::make_tls_connect(
        &mut MakeRustlsConnect::new(tls_config(ca_pem)?),
        server_name,
    )
    .map_err(|e| format!("server name {server_name}: {e}"))?;
    let (client, conn) = config(user, password, dbname)
        .host(server_name)
        .connect_raw(stream, tls)
        .await
        .map_err(describe)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn config(user: &str, password: &str, dbname: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.user(user)
        .password(password)
        .dbname(dbname)
        .ssl_mode(SslMode::Require)
        .connect_timeout(std::time::Duration::from_secs(15));
    c
}

fn tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("CA: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn describe(e: tokio_postgres::Error) -> String {
    format!(
        "{e}{}",
        e.as_db_error()
            .map(|d| format!(": {}", d.message()))
            .unwrap_or_default()
    )
}
