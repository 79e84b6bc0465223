//! The spec flags shared by `create` and `plan`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::spec::{InstanceSpec, SpecInput, ValidationError, validate};

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Instance name (a DNS label); may come from the spec file instead
    pub name: Option<String>,

    /// Spec file (TOML, same keys as the flags); flags override it
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Project the instance belongs to (quotas are per project)
    #[arg(long)]
    pub project: Option<String>,

    /// Database engine
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<String>,

    /// PostgreSQL major version (14-17) [default: 15]
    #[arg(long = "version", value_name = "MAJOR")]
    pub pg_version: Option<u32>,

    /// Size class: small (1 vCPU, 1 GiB), medium (2, 4), large (4, 16), xlarge (8, 32)
    #[arg(long, conflicts_with_all = ["cpus", "memory_gib"])]
    pub size: Option<String>,

    /// vCPUs per node (instead of --size)
    #[arg(long)]
    pub cpus: Option<u32>,

    /// Memory per node in GiB (instead of --size)
    #[arg(long)]
    pub memory_gib: Option<u32>,

    /// Data disk per node in GiB [default: 10]
    #[arg(long)]
    pub disk_gib: Option<u32>,

    /// High availability: a primary and two streaming replicas in three zones
    #[arg(long)]
    pub ha: bool,

    /// With --ha: sync (default; a commit waits until a standby has it, so a failover loses no
    /// acknowledged commit) or async (lower commit latency; a failover may lose the last commits)
    #[arg(long, value_name = "MODE")]
    pub replication: Option<String>,

    /// Where to provision: local (QEMU VMs on this machine) or aws
    #[arg(long)]
    pub provider: Option<String>,

    #[arg(long)]
    pub region: Option<String>,

    /// Restrict placement to these zones (repeatable)
    #[arg(long = "zone", value_name = "ZONE")]
    pub zones: Vec<String>,

    /// Machine image: local, a name from `dbctl image list` or a cloud image file (qcow2/raw,
    /// imported first); aws, an AMI id
    #[arg(long)]
    pub image: Option<String>,

    /// AWS instance type, e.g. m6i.large [default: from the size]
    #[arg(long)]
    pub instance_type: Option<String>,

    /// AWS: the only source range allowed to reach SSH (port 22) [default: config aws.ssh_cidr]
    #[arg(long, value_name = "CIDR")]
    pub ssh_cidr: Option<String>,

    /// Application database name [default: NAME with - as _]
    #[arg(long)]
    pub database: Option<String>,

    /// Extension to enable (repeatable) [default: pg_stat_statements]
    #[arg(long = "extension", value_name = "EXT")]
    pub extensions: Vec<String>,

    /// Application role to create (repeatable) [default: app]
    #[arg(long = "user", value_name = "ROLE")]
    pub users: Vec<String>,

    /// Tag KEY=VALUE put on every resource (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// Time to live, e.g. 90m, 2h, 7d: the instance is reported expired after it
    #[arg(long)]
    pub ttl: Option<String>,

    /// A throwaway test database: no backups (no WAL archiving, no first full backup, no
    /// schedule) and no exporters, so it is RUNNING sooner. It cannot be restored or backed up
    #[arg(long)]
    pub throwaway: bool,
}

impl SpecArgs {
    /// The validated spec from the file (if any) overlaid with the flags.
    pub fn resolve(&self, config: &Config) -> Result<InstanceSpec, ValidationError> {
        let base = match &self.file {
            Some(path) => SpecInput::from_file(path)?,
            None => SpecInput::default(),
        };
        let mut tags = BTreeMap::new();
        for t in &self.tags {
            let (k, v) = t.split_once('=').ok_or_else(|| {
                ValidationError::new("tags", format!("expected KEY=VALUE, got {t:?}"))
            })?;
            tags.insert(k.to_string(), v.to_string());
        }
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let flags = SpecInput {
            project: self.project.clone(),
            name: self.name.clone(),
            engine: self.engine.clone(),
            version: self.pg_version,
            size: self.size.clone(),
            cpus: self.cpus,
            memory_gib: self.memory_gib,
            disk_gib: self.disk_gib,
            ha: self.ha.then_some(true),
            replication: self.replication.clone(),
            provider: self.provider.clone(),
            region: self.region.clone(),
            zones: some_vec(&self.zones),
            image: self.image.clone(),
            instance_type: self.instance_type.clone(),
            ssh_cidr: self.ssh_cidr.clone(),
            database: self.database.clone(),
            extensions: some_vec(&self.extensions),
            users: some_vec(&self.users),
            tags: (!tags.is_empty()).then_some(tags),
            ttl: self.ttl.clone(),
            throwaway: self.throwaway.then_some(true),
        };
        let input = base.overlay(flags);
        let defaults = config.spec_defaults(&input);
        validate(input, &defaults)
    }
}
