//! pgbackrest.conf for a node: the repository (a directory on the node, or S3) and one stanza.

use super::Settings;
use super::settings::S3Credentials;
use crate::config::RepoKind;

/// The repository directory of `backup.repo = "node"`: on the data disk, lost with the node.
pub const NODE_REPO_PATH: &str = "/pgdata/backups";
/// Where the S3 endpoint's CA certificate is put on the node.
pub const CA_PATH: &str = "/etc/pgbackrest/s3-ca.crt";

/// Renders the config. `creds` is required for S3 (the file is 0600 postgres on the node).
pub fn render(
    s: &Settings,
    stanza: &str,
    data_dir: &str,
    creds: Option<&S3Credentials>,
    route: Option<&str>,
) -> String {
    let b = &s.backup;
    let mut c = String::from("# Written by dbctl.\n[global]\n");
    c += &format!("repo1-retention-full={}\n", b.retention_full);
    // Bundling packs the many small files of a cluster into few repository objects: far fewer
    // requests to S3 (a fresh cluster is ~1000 files).
    c += "start-fast=y\nlog-level-console=warn\nlog-level-file=info\ncompress-type=lz4\nrepo1-bundle=y\n";
    match b.repo {
        RepoKind::Node => {
            c += &format!("repo1-type=posix\nrepo1-path={NODE_REPO_PATH}\n");
        }
        RepoKind::S3 => {
            let (host, port) = s.s3_host_port();
            c += &format!(
                "repo1-type=s3\nrepo1-path={}\nrepo1-s3-bucket={}\nrepo1-s3-endpoint={host}\nrepo1-s3-region={}\nrepo1-s3-uri-style={}\nrepo1-storage-verify-tls={}\n",
                b.s3.path,
                b.s3.bucket,
                b.s3.region,
                b.s3.uri_style,
                if b.s3.verify_tls { "y" } else { "n" },
            );
            c += &format!("repo1-storage-port={port}\n");
            // A named endpoint is routed by the node's /etc/hosts; an IP cannot be, so connect
            // to the route directly (pgBackRest then verifies TLS against the route's address).
            if let Some(via) = route
                && s.s3_endpoint_is_ip()
            {
                c += &format!("repo1-storage-host={via}\n");
            }
            if b.s3.ca_file.is_some() {
                c += &format!("repo1-storage-ca-file={CA_PATH}\n");
            }
            if let Some(k) = creds {
                c += &format!("repo1-s3-key={}\nrepo1-s3-key-secret={}\n", k.key, k.secret);
            }
        }
    }
    c += &format!("\n[{stanza}]\npg1-path={data_dir}\npg1-socket-path=/var/run/postgresql\n");
    c
}

/// A human-readable description of the repository (no secrets), for outputs and `backup list`.
pub fn describe(s: &Settings) -> String {
    match s.backup.repo {
        RepoKind::Node => format!("node:{NODE_REPO_PATH} (on the node's data disk; throwaway)"),
        RepoKind::S3 => format!(
            "s3://{}{} at {}",
            s.backup.s3.bucket, s.backup.s3.path, s.backup.s3.endpoint
        ),
    }
}
