//! The request: what instance the user asks for (the seed's API layer).
//!
//! A spec is assembled from a TOML file and/or flags ([`SpecInput`]), completed with defaults
//! from the config, then validated as a whole ([`validate`]) before anything is written
//! anywhere. Its canonical JSON form is what the journal stores and what the default
//! idempotency key is derived from.

mod input;
mod size;
pub mod validate;

pub use input::SpecInput;
pub use size::{Resources, SizeClass};
pub use validate::{Defaults, ValidationError, validate};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// PostgreSQL major versions dbctl can deploy.
pub const SUPPORTED_POSTGRES: &[u32] = &[14, 15, 16, 17];
pub const DEFAULT_POSTGRES: u32 = 15;

/// A complete, validated request for one instance (a primary, plus replicas with `ha`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub project: String,
    pub name: String,
    pub engine: String,
    pub version: u32,
    /// The size class it was asked by, if any (informational; `resources` is authoritative).
    pub size: Option<String>,
    pub resources: Resources,
    pub disk_gib: u32,
    pub ha: bool,
    /// Replicas besides the primary (2 with `ha`, else 0).
    pub replicas: u32,
    /// How an HA cluster commits (`None` for a single node). Absent from single-node specs, so
    /// their canonical JSON (and idempotency keys) stay what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    pub provider: String,
    pub region: String,
    /// Zones the nodes may be placed in; empty = any zone the provider offers.
    pub zones: Vec<String>,
    pub image: Option<String>,
    /// Cloud instance type (aws); default: derived from `resources`.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// The only source allowed to reach port 22 (aws); default: the config's `aws.ssh_cidr`.
    #[serde(default)]
    pub ssh_cidr: Option<String>,
    /// Database created for the application (defaults to the name with `-` → `_`).
    pub database: String,
    pub extensions: Vec<String>,
    pub users: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// Time to live in seconds; the instance is reported expired after it.
    pub ttl_secs: Option<u64>,
    /// A throwaway test database: the register stage leaves out what a short-lived database
    /// does not need, backups (no archiving, no first full backup, no schedule) and the
    /// Prometheus exporters. Asked for explicitly (`--throwaway`): a TTL alone changes nothing.
    /// Absent when false, so other specs' canonical JSON (and idempotency keys) stay the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub throwaway: bool,
    /// Set by `dbctl restore`: the primary starts from another instance's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreFrom>,
}

/// How an HA cluster acknowledges a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// A commit returns only once one standby has it on disk too (Patroni's
    /// `synchronous_mode`): a failover never loses an acknowledged commit (RDS Multi-AZ
    /// semantics). Costs one network round trip per commit.
    Sync,
    /// Commits return at once; a failover may lose the last moments of acknowledged commits
    /// that had not reached a standby yet.
    Async,
}

impl Replication {
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Sync => "sync",
            Replication::Async => "async",
        }
    }
}

/// Where a restored instance's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// The source instance (it may have been destroyed since; its backups are kept).
    pub instance_id: String,
    pub instance: String,
    /// The source's pgBackRest stanza.
    pub stanza: String,
    /// Recovery target (`YYYY-MM-DD HH:MM:SS+00`); none = the end of the archived WAL.
    pub target_time: Option<String>,
}

impl InstanceSpec {
    /// Primary plus replicas.
    pub fn nodes(&self) -> u32 {
        1 + self.replicas
    }

    /// Canonical JSON: field order is fixed by the struct and maps are sorted, so equal specs
    /// serialize to equal bytes.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("spec serializes")
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }

    /// The idempotency key used when none is given: project, name and the spec's hash, so the
    /// same command run twice maps to the same run.
    pub fn default_idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.project, self.name, &self.hash()[..16])
    }
}

/// Test helper: a validated spec from TOML text, with local-provider defaults.
#[cfg(test)]
pub fn test_spec(toml_text: &str) -> InstanceSpec {
    let input: SpecInput = toml::from_str(toml_text).expect("test TOML parses");
    validate(input, &Defaults::for_tests()).expect("test spec is valid")
}
