//! A real PostgreSQL client from the host: TLS verified against dbctl's CA (the server name
//! must match the certificate, as with libpq's `sslmode=verify-full`).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

/// Connects with TLS required and verified; the connection task runs in the background.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
    ca_pem: &str,
) -> Result<Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("CA: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .ssl_mode(SslMode::Require)
        .connect_timeout(std::time::Duration::from_secs(15))
        .connect(tls)
        .await
        .map_err(|e| {
            format!(
                "{e}{}",
                e.as_db_error()
                    .map(|d| format!(": {}", d.message()))
                    .unwrap_or_default()
            )
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
