//! pgbackrest.conf for a node: the repository (a directory on the node, or S3) and one stanza.

use super::Settings;
use super::settings::S3Credentials;
use crate::config::RepoKind;

/// The repository directory of `backup.repo = "node"`: on the data disk, lost with the node.
pub const NODE_REPO_PATH: &str = "/pgdata/backups";
/// Where the S3 endpoint's CA certificate is put on the node.
pub const CA_PATH: &str = "/etc/pgbackrest/s3-ca.crt";

/// Renders the config. S3 with `creds`: those keys (the file is 0600 postgres on the node);
/// without: the node's instance profile, read by pgBackRest from the instance metadata
/// service (`repo1-s3-key-type=auto`; pgBackRest 2.45 speaks IMDSv2).
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
            match creds {
                Some(k) => {
                    c += &format!("repo1-s3-key={}\nrepo1-s3-key-secret={}\n", k.key, k.secret)
                }
                None => c += "repo1-s3-key-type=auto\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_settings() -> Settings {
        let mut s = Settings {
            dns_suffix: "dbctl.internal".into(),
            hosts_file: "/h".into(),
            file_sd_dir: "/f".into(),
            route53_zone: None,
            backup: Default::default(),
        };
        s.backup.repo = RepoKind::S3;
        s.backup.s3.endpoint = "s3.us-east-1.amazonaws.com".into();
        s.backup.s3.bucket = "backups".into();
        s
    }

    #[test]
    fn s3_keys_are_written_only_when_the_node_has_none_of_its_own() {
        let s = s3_settings();
        let keys = S3Credentials {
            key: "AKIA1".into(),
            secret: "secret".into(),
        };
        let with_keys = render(&s, "st", "/pgdata/15/main", Some(&keys), None);
        assert!(with_keys.contains("repo1-s3-key=AKIA1\nrepo1-s3-key-secret=secret\n"));
        assert!(!with_keys.contains("key-type"));
        // The instance profile's credentials, from IMDS: no key in the file at all.
        let own = render(&s, "st", "/pgdata/15/main", None, None);
        assert!(own.contains("repo1-s3-key-type=auto\n"), "{own}");
        assert!(
            !own.contains("repo1-s3-key=") && !own.contains("secret"),
            "{own}"
        );
    }
}
