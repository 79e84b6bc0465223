//! The user's config file (`$XDG_CONFIG_HOME/dbctl/config.toml`): defaults, quotas, retry
//! policy and provider settings. Every section is optional; unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::saga::RetryPolicy;
use crate::spec::validate::Defaults;
use crate::spec::{SpecInput, ValidationError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub defaults: DefaultsSection,
    pub retry: RetryPolicy,
    pub quotas: Quotas,
    pub local: LocalSection,
    pub aws: AwsSection,
    pub register: RegisterSection,
    pub backup: BackupSection,
    pub gc: GcSection,
}

/// `dbctl gc`: how much history of destroyed instances the journal keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcSection {
    /// `gc` prunes the journal rows of instances destroyed longer ago than this (`30d`;
    /// `0s` prunes every destroyed instance).
    #[serde(deserialize_with = "history_age")]
    pub keep_history: String,
}

impl Default for GcSection {
    fn default() -> Self {
        GcSection {
            keep_history: "30d".into(),
        }
    }
}

/// Parses a history age (`30d`, `12h`, `0s`): what `[gc] keep_history` and `gc
/// --keep-history` accept.
pub fn parse_history_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| format!("expected a duration like 30d, 12h or 0s, got {text:?}"))
}

fn history_age<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    parse_history_age(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// Where an instance is published: DNS names and Prometheus targets.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterSection {
    /// Names are `<name>.<project>.<dns_suffix>` (primary) and `<name>-ro.<project>.<suffix>`
    /// (replicas).
    pub dns_suffix: String,
    /// The hosts-format file dbctl keeps up to date (for dnsmasq `addn-hosts`, or to include in
    /// /etc/hosts); default: `hosts` beside the journal.
    pub hosts_file: Option<PathBuf>,
    /// Directory of Prometheus `file_sd_configs` JSON files, one per instance; default:
    /// `prometheus/` beside the journal.
    pub file_sd_dir: Option<PathBuf>,
    /// Route53 private hosted zone for the aws provider's names (must exist); unset = names are
    /// published in the hosts file and the nodes' /etc/hosts only.
    pub route53_zone: Option<String>,
}

impl Default for RegisterSection {
    fn default() -> Self {
        RegisterSection {
            dns_suffix: "dbctl.internal".into(),
            hosts_file: None,
            file_sd_dir: None,
            route53_zone: None,
        }
    }
}

/// Where pgBackRest keeps WAL and backups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    #[default]
    /// A directory on the node's own data disk: lost with the node. For throwaway databases
    /// only; `restore` cannot read it once the instance is gone.
    Node,
    /// An S3 bucket (AWS or any S3-compatible endpoint).
    S3,
}

/// pgBackRest: continuous WAL archiving and scheduled backups.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    pub repo: RepoKind,
    /// systemd OnCalendar expression for full backups.
    pub full_schedule: String,
    /// systemd OnCalendar expression for differential backups.
    pub diff_schedule: String,
    /// Full backups kept (older ones and their WAL are expired by pgBackRest).
    pub retention_full: u32,
    pub s3: S3Section,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            repo: RepoKind::Node,
            full_schedule: "Sun *-*-* 01:00:00".into(),
            diff_schedule: "Mon..Sat *-*-* 01:00:00".into(),
            retention_full: 2,
            s3: S3Section::default(),
        }
    }
}

/// The S3 repository. Credentials are not kept in config: they are read from
/// `DBCTL_S3_KEY`/`DBCTL_S3_KEY_SECRET` (else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`) when
/// the backup step runs and written only to the node's 0640 pgbackrest.conf.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// `host[:port]` of the S3 API, e.g. `s3.eu-west-1.amazonaws.com` or `minio.lan:9000`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// `host` (virtual-hosted buckets, AWS) or `path` (most S3-compatible servers).
    pub uri_style: String,
    /// Path prefix inside the bucket.
    pub path: String,
    /// CA certificate (PEM) the nodes verify the endpoint with; default: the system CAs.
    pub ca_file: Option<PathBuf>,
    /// Verify the endpoint's TLS certificate (turn off only for a test endpoint).
    pub verify_tls: bool,
    /// local provider: the `host[:port]` dbctl's host connects to for the endpoint when the
    /// endpoint's name does not resolve there (like `curl --resolve`). TLS is still verified
    /// against the endpoint's name.
    pub address: Option<String>,
}

impl Default for S3Section {
    fn default() -> Self {
        S3Section {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            uri_style: "host".into(),
            path: "/dbctl".into(),
            ca_file: None,
            verify_tls: true,
            address: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsSection {
    pub project: String,
    pub provider: String,
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            project: "default".into(),
            provider: "local".into(),
        }
    }
}

/// Limits on what one project's live instances may hold (summed over all nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    pub instances: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            instances: 20,
            vcpus: 64,
            disk_gib: 2048,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Applies to every project without an entry in `projects`.
    pub default: Quota,
    pub projects: BTreeMap<String, Quota>,
}

impl Quotas {
    pub fn for_project(&self, project: &str) -> Quota {
        self.projects.get(project).copied().unwrap_or(self.default)
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSection {
    pub region: String,
    /// Zones are labels the scheduler spreads nodes over.
    pub zones: Vec<String>,
    /// `auto` (KVM where it really works, else TCG), `kvm` or `tcg`.
    #[serde(deserialize_with = "accel_mode")]
    pub accel: String,
    /// How long a VM may take from start to a verified SSH session.
    pub boot_timeout_secs: u64,
    /// `HOST:PORT` package mirrors a VM booted from an imported cloud image may reach (relayed
    /// one by one; nothing else is reachable): that image has no PostgreSQL, which is
    /// installed from its own package sources on first boot.
    pub package_hosts: Vec<String>,
}

/// Refuses an accelerator QEMU would not be started with (it used to fall back to TCG silently).
fn accel_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "auto" | "kvm" | "tcg" => Ok(s),
        _ => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&s),
            &"auto, kvm or tcg",
        )),
    }
}

impl Default for LocalSection {
    fn default() -> Self {
        LocalSection {
            region: "local".into(),
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            accel: "auto".into(),
            boot_timeout_secs: 900,
            package_hosts: [
                "deb.debian.org:80",
                "security.debian.org:80",
                "archive.ubuntu.com:80",
                "security.ubuntu.com:80",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    /// Overrides AWS_REGION / the profile's region.
    pub region: Option<String>,
    /// Zones to plan with when the API is not asked; `<region>a..c` when empty.
    pub zones: Vec<String>,
    /// AMI id; default: the newest official Debian 12 image.
    pub ami: Option<String>,
    /// Instance type; default: derived from the spec's size.
    pub instance_type: Option<String>,
    /// The only source allowed on port 22; unset = no SSH rule (private-only).
    pub ssh_cidr: Option<String>,
    /// Sources allowed on 5432 besides the VPC (never 0.0.0.0/0).
    pub extra_pg_cidrs: Vec<String>,
    pub vpc_cidr: String,
    /// A VPC the account already has (the network team's): instances go into its subnets and
    /// dbctl creates, changes and deletes nothing of it. Unset: a VPC made for each instance.
    pub vpc_id: Option<String>,
    /// With `vpc_id`: the subnets to use, one per zone (default: the VPC's, when each zone has
    /// only one).
    pub subnet_ids: Vec<String>,
    /// An instance profile (name or ARN) the nodes are launched with: their role's temporary
    /// credentials, from the instance metadata service, are how a node reaches AWS (S3
    /// backups) with no operator key on it. Unset: none.
    pub instance_profile: Option<String>,
    /// Internet gateway + public IPs (needed for dbctl to SSH in from outside the VPC).
    pub public: bool,
    /// How long the deploy stage waits for a node's host key and SSH before failing the run.
    pub ssh_wait_secs: u64,
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            region: None,
            zones: Vec::new(),
            ami: None,
            instance_type: None,
            ssh_cidr: None,
            extra_pg_cidrs: Vec::new(),
            vpc_cidr: "10.42.0.0/16".into(),
            vpc_id: None,
            subnet_ids: Vec::new(),
            instance_profile: None,
            public: true,
            ssh_wait_secs: 600,
        }
    }
}

/// The settings a run's steps are bound with, resolved when the run is admitted and kept in
/// its journal record: rollback (a `destroy` weeks later) must undo what was made with them
/// (the VPC's CIDR, the DNS zone and suffix, the S3 bucket), whatever the config says by then.
/// Only non-secret settings live in the config file, so none reach the journal.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub local: LocalSection,
    pub aws: AwsSection,
    pub register: RegisterSection,
    pub backup: BackupSection,
}

impl Config {
    /// This config's run settings, as JSON for the journal.
    pub fn run_settings_json(&self) -> String {
        serde_json::to_string(&RunSettings {
            local: self.local.clone(),
            aws: self.aws.clone(),
            register: self.register.clone(),
            backup: self.backup.clone(),
        })
        .expect("settings serialize")
    }

    /// This config with a run's recorded settings in place of the current ones; a run admitted
    /// before settings were recorded (`None`) keeps the current config.
    pub fn for_run(&self, settings_json: Option<&str>) -> Result<Config, ValidationError> {
        let Some(json) = settings_json else {
            return Ok(self.clone());
        };
        let s: RunSettings = serde_json::from_str(json).map_err(|e| {
            ValidationError::new("settings", format!("the run's recorded settings: {e}"))
        })?;
        Ok(Config {
            local: s.local,
            aws: s.aws,
            register: s.register,
            backup: s.backup,
            ..self.clone()
        })
    }

    /// Loads the config; a missing file at the default location means "all defaults", a
    /// missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ValidationError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(ValidationError::new(
                    "config",
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        };
        toml::from_str(&text).map_err(|e| {
            let msg = crate::toml_error::describe(&text, &e);
            ValidationError::new("config", format!("{}: {msg}", path.display()))
        })
    }

    /// Defaults and the provider list that spec validation needs for `input`.
    ///
    /// The aws region, unless `aws.region` is set, is what aws-config's default region chain
    /// resolves (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, IMDS), like every
    /// AWS tool. It is asked only when `input` goes to aws without a region of its own: the chain
    /// reads the profile files and may try IMDS, which a local run must not pay for.
    pub fn spec_defaults(&self, input: &SpecInput) -> Defaults {
        let mut regions = BTreeMap::new();
        regions.insert("local".to_string(), self.local.region.clone());
        let provider = input.provider.as_deref().unwrap_or(&self.defaults.provider);
        let aws_region = match &self.aws.region {
            Some(r) => Some(r.clone()),
            None if provider == "aws" && input.region.is_none() => {
                crate::provider::aws::client::default_region()
            }
            None => None,
        };
        if let Some(r) = aws_region {
            regions.insert("aws".to_string(), r);
        }
        #[cfg(feature = "testbed")]
        regions.insert("testbed".to_string(), "testbed".to_string());
        Defaults {
            project: self.defaults.project.clone(),
            provider: self.defaults.provider.clone(),
            providers: crate::provider::NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            regions,
        }
    }
}

/// `$XDG_CONFIG_HOME/dbctl/config.toml`, falling back to `~/.config`.
pub fn default_config_path() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("dbctl/config.toml")
}

/// `$XDG_STATE_HOME/dbctl/journal.db`, falling back to `~/.local/state`.
pub fn default_journal_path() -> PathBuf {
    xdg_dir("XDG_STATE_HOME", ".local/state").join("dbctl/journal.db")
}

/// `$DBCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/dbctl`, falling back to `~/.cache/dbctl`.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("DBCTL_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => xdg_dir("XDG_CACHE_HOME", ".cache").join("dbctl"),
    }
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(fallback)
        }
    }
}

#[cfg(test)]
mod run_settings_tests {
    use super::*;

    #[test]
    fn a_run_is_undone_with_the_settings_it_was_made_with() {
        let made: Config = toml::from_str(
            "[aws]\nvpc_cidr = \"10.9.0.0/16\"\n[register]\ndns_suffix = \"old.example\"\n",
        )
        .unwrap();
        let recorded = made.run_settings_json();
        let today: Config = toml::from_str(
            "[aws]\nvpc_cidr = \"10.1.0.0/16\"\n[register]\ndns_suffix = \"new.example\"\n\
             [retry]\nmax_attempts = 9\n",
        )
        .unwrap();
        let bound = today.for_run(Some(&recorded)).unwrap();
        assert_eq!(bound.aws.vpc_cidr, "10.9.0.0/16");
        assert_eq!(bound.register.dns_suffix, "old.example");
        // How hard to retry is today's choice, not part of what was made.
        assert_eq!(bound.retry.max_attempts, 9);
        // Runs admitted before settings were recorded keep today's config.
        assert_eq!(today.for_run(None).unwrap().aws.vpc_cidr, "10.1.0.0/16");
        assert!(today.for_run(Some("{")).is_err());
    }
}
