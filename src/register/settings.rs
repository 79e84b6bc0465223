//! The register stage's settings, resolved once per command from the config: where names and
//! Prometheus targets are published and where backups go.

use std::path::{Path, PathBuf};

use crate::config::{BackupSection, Config, RepoKind};
use crate::spec::{InstanceSpec, ValidationError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub dns_suffix: String,
    pub hosts_file: PathBuf,
    pub file_sd_dir: PathBuf,
    pub route53_zone: Option<String>,
    pub backup: BackupSection,
}

/// S3 credentials for pgBackRest, read from the environment (never from config or journal).
pub struct S3Credentials {
    pub key: String,
    pub secret: String,
}

impl Settings {
    /// `state_dir` is where the journal lives: the default home of the hosts and file_sd files.
    pub fn new(config: &Config, state_dir: &Path) -> Settings {
        let r = &config.register;
        Settings {
            dns_suffix: r.dns_suffix.clone(),
            hosts_file: r
                .hosts_file
                .clone()
                .unwrap_or_else(|| state_dir.join("hosts")),
            file_sd_dir: r
                .file_sd_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("prometheus")),
            route53_zone: r.route53_zone.clone(),
            backup: config.backup.clone(),
        }
    }

    /// The primary's stable name: `<name>.<project>.<suffix>`.
    pub fn primary_name(&self, spec: &InstanceSpec) -> String {
        format!("{}.{}.{}", spec.name, spec.project, self.dns_suffix)
    }

    /// The name every replica answers to: `<name>-ro.<project>.<suffix>` (single-node and
    /// legacy HA instances; a Patroni cluster has no fixed replicas to name).
    pub fn replica_name(&self, spec: &InstanceSpec) -> String {
        format!("{}-ro.{}.{}", spec.name, spec.project, self.dns_suffix)
    }

    /// One member of an HA cluster: `<node>.<name>.<project>.<suffix>`.
    pub fn node_name(&self, spec: &InstanceSpec, node: &str) -> String {
        format!("{node}.{}.{}.{}", spec.name, spec.project, self.dns_suffix)
    }

    /// Every name dbctl may publish for the instance (what its certificates carry, and what a
    /// rollback removes).
    pub fn all_names(&self, spec: &InstanceSpec, nodes: &[String]) -> Vec<String> {
        let mut names = vec![self.primary_name(spec), self.replica_name(spec)];
        if spec.ha {
            names.extend(nodes.iter().map(|n| self.node_name(spec, n)));
        }
        names
    }

    /// Checks what `create` needs before anything is made: a usable backup repository (and its
    /// credentials, unless `node_credentials`: the nodes have their own, an instance profile)
    /// and a DNS suffix that yields valid names.
    pub fn validate(&self, node_credentials: bool) -> Result<(), ValidationError> {
        let bad = |field: &str, why: &str| Err(ValidationError::new(field, why.to_string()));
        let suffix_ok = !self.dns_suffix.is_empty()
            && self.dns_suffix.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !suffix_ok {
            return bad(
                "register.dns_suffix",
                "must be DNS labels (letters, digits, '-') separated by dots",
            );
        }
        let b = &self.backup;
        if b.retention_full == 0 {
            return bad("backup.retention_full", "must be at least 1");
        }
        for (field, v) in [
            ("backup.full_schedule", &b.full_schedule),
            ("backup.diff_schedule", &b.diff_schedule),
        ] {
            if v.trim().is_empty() || v.contains(['\n', '\'', '"']) {
                return bad(field, "must be a systemd OnCalendar expression");
            }
        }
        if b.repo == RepoKind::S3 {
            let s3 = &b.s3;
            if s3.endpoint.is_empty() || s3.endpoint.contains(['/', ' ']) {
                return bad("backup.s3.endpoint", "must be host[:port] of the S3 API");
            }
            if s3.bucket.is_empty()
                || !s3
                    .bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return bad("backup.s3.bucket", "must be an S3 bucket name");
            }
            if !matches!(s3.uri_style.as_str(), "host" | "path") {
                return bad("backup.s3.uri_style", "must be \"host\" or \"path\"");
            }
            if !s3.path.starts_with('/') {
                return bad("backup.s3.path", "must start with /");
            }
            if let Some(ca) = &s3.ca_file
                && !ca.is_file()
            {
                return bad(
                    "backup.s3.ca_file",
                    &format!("{} is not a readable file", ca.display()),
                );
            }
            if !node_credentials && let Err(why) = s3_credentials() {
                return bad("backup.s3", &why);
            }
        }
        Ok(())
    }

    /// The S3 endpoint as (host, port).
    pub fn s3_host_port(&self) -> (String, u16) {
        host_port(&self.backup.s3.endpoint, 443)
    }

    /// Whether the S3 endpoint is an IP address (a name can be routed through a node's
    /// /etc/hosts, an address cannot).
    pub fn s3_endpoint_is_ip(&self) -> bool {
        self.s3_host_port().0.parse::<std::net::IpAddr>().is_ok()
    }

    /// Where dbctl's host connects for the S3 endpoint (`address`, else the endpoint).
    pub fn s3_connect_to(&self) -> String {
        let (host, port) = self.s3_host_port();
        match &self.backup.s3.address {
            Some(a) => {
                let (h, p) = host_port(a, port);
                format!("{h}:{p}")
            }
            None => format!("{host}:{port}"),
        }
    }
}

fn host_port(s: &str, default_port: u16) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap()),
        _ => (s.to_string(), default_port),
    }
}

/// The pgBackRest stanza of an instance: its id, so a new instance reusing a destroyed one's
/// name never writes into the kept backups of the old one.
pub fn stanza(instance_id: &str) -> String {
    instance_id.to_string()
}

/// The S3 credentials from the environment, or why there are none.
pub fn s3_credentials() -> Result<S3Credentials, String> {
    let get = |a: &str, b: &str| {
        std::env::var(a)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| std::env::var(b).ok().filter(|v| !v.is_empty()))
    };
    let found = || {
        Some(S3Credentials {
            key: get("DBCTL_S3_KEY", "AWS_ACCESS_KEY_ID")?,
            secret: get("DBCTL_S3_KEY_SECRET", "AWS_SECRET_ACCESS_KEY")?,
        })
    };
    found().ok_or_else(|| {
        "no credentials: set DBCTL_S3_KEY and DBCTL_S3_KEY_SECRET (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".to_string()
    })
}
