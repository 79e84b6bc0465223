//! Raw request input (flags and/or a TOML file), before defaults and validation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::ValidationError;

/// Every field optional: a TOML spec file and the command-line flags each fill some, flags win.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecInput {
    pub project: Option<String>,
    pub name: Option<String>,
    pub engine: Option<String>,
    pub version: Option<u32>,
    pub size: Option<String>,
    pub cpus: Option<u32>,
    pub memory_gib: Option<u32>,
    pub disk_gib: Option<u32>,
    pub ha: Option<bool>,
    /// HA only: `sync` (default) or `async`.
    pub replication: Option<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub zones: Option<Vec<String>>,
    pub image: Option<String>,
    pub instance_type: Option<String>,
    pub ssh_cidr: Option<String>,
    pub database: Option<String>,
    pub extensions: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Human duration: `90m`, `2h`, `7d`.
    pub ttl: Option<String>,
    /// A short-lived test database: no backups, no exporters (see [`super::InstanceSpec`]).
    pub throwaway: Option<bool>,
}

impl SpecInput {
    /// Reads a TOML spec file. Unknown keys are errors (a typo must not be silently ignored).
    pub fn from_file(path: &Path) -> Result<SpecInput, ValidationError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ValidationError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            let msg = crate::toml_error::describe(&text, &e);
            ValidationError::new("file", format!("{}: {msg}", path.display()))
        })
    }

    /// `self` with every field that `over` sets replaced by `over`'s value.
    pub fn overlay(self, over: SpecInput) -> SpecInput {
        macro_rules! pick {
            ($($f:ident),*) => { SpecInput { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            project,
            name,
            engine,
            version,
            size,
            cpus,
            memory_gib,
            disk_gib,
            ha,
            replication,
            provider,
            region,
            zones,
            image,
            instance_type,
            ssh_cidr,
            database,
            extensions,
            users,
            tags,
            ttl,
            throwaway
        )
    }
}
