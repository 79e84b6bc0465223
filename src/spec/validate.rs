//! Validation of a whole request before anything happens: the first rule broken is reported
//! as `FIELD: RULE`, and the command exits 2 without touching the journal or any provider.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::size::{Resources, SizeClass};
use super::{DEFAULT_POSTGRES, InstanceSpec, SUPPORTED_POSTGRES, SpecInput};

/// A rejected request: which field, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What validation needs to know from outside the request.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub project: String,
    pub provider: String,
    /// Providers this build can run.
    pub providers: Vec<String>,
    /// Default region per provider.
    pub regions: BTreeMap<String, String>,
}

#[cfg(test)]
impl Defaults {
    pub fn for_tests() -> Defaults {
        Defaults {
            project: "default".into(),
            provider: "local".into(),
            providers: vec!["local".into(), "aws".into()],
            regions: [("local".to_string(), "local".to_string())].into(),
        }
    }
}

pub(crate) const MAX_NAME: usize = 40;
const MAX_PROJECT: usize = 30;
const DISK_GIB: (u32, u32) = (1, 16_384);
const VCPUS: (u32, u32) = (1, 64);
const MEMORY_GIB: (u32, u32) = (1, 512);
const TTL: (Duration, Duration) = (
    Duration::from_secs(5 * 60),
    Duration::from_secs(365 * 86_400),
);
const MAX_TAGS: usize = 40;
const DEFAULT_DISK_GIB: u32 = 10;
const DEFAULT_SIZE: &str = "small";

/// Extensions dbctl knows how to enable: the contrib modules Debian's server packages ship.
pub const EXTENSIONS: &[&str] = &[
    "amcheck",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "earthdistance",
    "fuzzystrmatch",
    "hstore",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "pg_buffercache",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_trgm",
    "pgcrypto",
    "pgstattuple",
    "postgres_fdw",
    "seg",
    "tablefunc",
    "tsm_system_rows",
    "unaccent",
    "uuid-ossp",
];
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError::new(field, message))
}

/// A DNS label: lowercase letters, digits and inner hyphens, starting with a letter.
pub(crate) fn check_dns_label(field: &str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.is_empty() {
        return err(field, "must not be empty");
    }
    if v.len() > max {
        return err(
            field,
            format!("must be at most {max} characters, got {}", v.len()),
        );
    }
    let ok_chars = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || !v.as_bytes()[0].is_ascii_lowercase() || v.ends_with('-') {
        return err(
            field,
            format!(
                "must be a DNS label (lowercase letters, digits and '-', starting with a letter, not ending with '-'), got {v:?}"
            ),
        );
    }
    Ok(())
}

/// A plain SQL identifier that never needs quoting.
fn check_sql_ident(field: &str, v: &str) -> Result<(), ValidationError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && (v.as_bytes()[0].is_ascii_lowercase() || v.starts_with('_'))
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return err(
            field,
            format!(
                "must be a SQL identifier (lowercase letters, digits, '_', at most 63), got {v:?}"
            ),
        );
    }
    Ok(())
}

fn check_region_like(field: &str, v: &str) -> Result<(), ValidationError> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return err(
            field,
            format!("must be 1-32 lowercase letters, digits or '-', got {v:?}"),
        );
    }
    Ok(())
}

fn in_range(field: &str, v: u32, (lo, hi): (u32, u32)) -> Result<u32, ValidationError> {
    if v < lo || v > hi {
        return err(field, format!("must be between {lo} and {hi}, got {v}"));
    }
    Ok(v)
}

fn resources(input: &SpecInput) -> Result<(Option<String>, Resources), ValidationError> {
    match (&input.size, input.cpus, input.memory_gib) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => err(
            "size",
            "give either a size class or cpus/memory_gib, not both",
        ),
        (Some(size), None, None) => match SizeClass::find(size) {
            Some(c) => Ok((Some(c.name.to_string()), c.resources)),
            None => err(
                "size",
                format!(
                    "unknown size class {size:?} (expected one of {})",
                    SizeClass::names()
                ),
            ),
        },
        (None, None, None) => Ok((
            Some(DEFAULT_SIZE.to_string()),
            SizeClass::find(DEFAULT_SIZE)
                .expect("default size exists")
                .resources,
        )),
        (None, cpus, mem) => {
            // One of the two given: the other follows a general-purpose 1 vCPU : 2 GiB shape.
            // Check what was given before deriving, so the error names the user's field.
            let cpus = cpus.map(|c| in_range("cpus", c, VCPUS)).transpose()?;
            let mem = mem
                .map(|m| in_range("memory_gib", m, MEMORY_GIB))
                .transpose()?;
            let vcpus = cpus.unwrap_or_else(|| (mem.unwrap_or(2) / 2).clamp(VCPUS.0, VCPUS.1));
            let memory_gib = mem.unwrap_or((vcpus * 2).min(MEMORY_GIB.1));
            Ok((None, Resources { vcpus, memory_gib }))
        }
    }
}

fn check_list(
    field: &str,
    items: &[String],
    each: impl Fn(&str, &str) -> Result<(), ValidationError>,
) -> Result<(), ValidationError> {
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        each(&f, item)?;
        if !seen.insert(item.as_str()) {
            return err(f, format!("{item:?} is listed twice"));
        }
    }
    Ok(())
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return err(
            "tags",
            format!("at most {MAX_TAGS} tags, got {}", tags.len()),
        );
    }
    for (k, v) in tags {
        let field = format!("tags.{k}");
        let key_ok = !k.is_empty()
            && k.len() <= 128
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c));
        if !key_ok {
            return err(
                field,
                "key must be 1-128 characters of letters, digits, spaces and _.:/=+-@",
            );
        }
        let lower = k.to_ascii_lowercase();
        if lower.starts_with("dbctl:") || lower.starts_with("aws:") {
            return err(field, "keys starting with dbctl: or aws: are reserved");
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return err(
                field,
                "value must be at most 256 characters without control characters",
            );
        }
    }
    Ok(())
}

fn parse_ttl(ttl: &str) -> Result<u64, ValidationError> {
    let d = humantime::parse_duration(ttl).or_else(|_| {
        err(
            "ttl",
            format!("expected a duration like 90m, 2h or 7d, got {ttl:?}"),
        )
    })?;
    if d < TTL.0 || d > TTL.1 {
        return err("ttl", format!("must be between 5m and 365d, got {ttl}"));
    }
    Ok(d.as_secs())
}

/// Completes `input` with defaults and checks every rule; on success the spec is canonical.
pub fn validate(input: SpecInput, defaults: &Defaults) -> Result<InstanceSpec, ValidationError> {
    let name = match &input.name {
        Some(n) => n.clone(),
        None => return err("name", "required: give NAME or set name in the spec file"),
    };
    check_dns_label("name", &name, MAX_NAME)?;
    let project = input
        .project
        .clone()
        .unwrap_or_else(|| defaults.project.clone());
    check_dns_label("project", &project, MAX_PROJECT)?;

    let engine = input.engine.clone().unwrap_or_else(|| "postgres".into());
    if engine != "postgres" {
        return err("engine", format!("must be postgres, got {engine:?}"));
    }
    let version = input.version.unwrap_or(DEFAULT_POSTGRES);
    if !SUPPORTED_POSTGRES.contains(&version) {
        let list: Vec<String> = SUPPORTED_POSTGRES.iter().map(u32::to_string).collect();
        return err(
            "version",
            format!(
                "PostgreSQL {version} is not supported (expected one of {})",
                list.join(", ")
            ),
        );
    }
    let (size, resources) = resources(&input)?;
    let disk_gib = in_range(
        "disk_gib",
        input.disk_gib.unwrap_or(DEFAULT_DISK_GIB),
        DISK_GIB,
    )?;
    let ha = input.ha.unwrap_or(false);
    let replication = match (ha, input.replication.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            return err(
                "replication",
                "applies to HA instances only (add --ha, or leave it out)",
            );
        }
        (true, None | Some("sync")) => Some(super::Replication::Sync),
        (true, Some("async")) => Some(super::Replication::Async),
        (true, Some(other)) => {
            return err(
                "replication",
                format!("expected sync or async, got {other:?}"),
            );
        }
    };

    let provider = input
        .provider
        .clone()
        .unwrap_or_else(|| defaults.provider.clone());
    if !defaults.providers.contains(&provider) {
        return err(
            "provider",
            format!(
                "unknown provider {provider:?} (expected one of {})",
                defaults.providers.join(", ")
            ),
        );
    }
    let region = match input
        .region
        .clone()
        .or_else(|| defaults.regions.get(&provider).cloned())
    {
        Some(r) => r,
        None => return err("region", format!("required for provider {provider}")),
    };
    check_region_like("region", &region)?;
    let zones = input.zones.clone().unwrap_or_default();
    check_list("zones", &zones, check_region_like)?;

    if let Some(image) = &input.image
        && (image.is_empty()
            || image.len() > 255
            || image.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return err("image", "must be 1-255 characters without spaces");
    }
    if let Some(t) = &input.instance_type {
        let ok = t.len() <= 32
            && t.split_once('.')
                .is_some_and(|(fam, size)| !fam.is_empty() && !size.is_empty())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !ok {
            return err(
                "instance_type",
                format!("expected a type like t3.medium, got {t:?}"),
            );
        }
    }
    if let Some(c) = &input.ssh_cidr {
        match crate::provider::aws::Cidr::parse(c) {
            Ok(cidr) if cidr.is_everything() => {
                return err(
                    "ssh_cidr",
                    "must not open SSH to the whole internet (0.0.0.0/0); give your own address range",
                );
            }
            Ok(_) => {}
            Err(e) => return err("ssh_cidr", e),
        }
    }
    let database = input
        .database
        .clone()
        .unwrap_or_else(|| name.replace('-', "_"));
    check_sql_ident("database", &database)?;
    if RESERVED_DATABASES.contains(&database.as_str()) {
        return err("database", format!("{database:?} is reserved"));
    }
    let extensions = input
        .extensions
        .clone()
        .unwrap_or_else(|| vec!["pg_stat_statements".into()]);
    check_list("extensions", &extensions, |f, e| {
        if EXTENSIONS.contains(&e) {
            Ok(())
        } else {
            err(
                f,
                format!(
                    "unknown extension {e:?} (supported: {})",
                    EXTENSIONS.join(", ")
                ),
            )
        }
    })?;
    let users = input.users.clone().unwrap_or_else(|| vec!["app".into()]);
    if users.is_empty() {
        return err("users", "at least one application role is needed");
    }
    check_list("users", &users, |f, u| {
        check_sql_ident(f, u)?;
        if let Some(why) = crate::postgres::roles::reserved_reason(u) {
            return err(f, why);
        }
        Ok(())
    })?;
    let tags = input.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    let ttl_secs = input.ttl.as_deref().map(parse_ttl).transpose()?;

    Ok(InstanceSpec {
        project,
        name,
        engine,
        version,
        size,
        resources,
        disk_gib,
        ha,
        replicas: if ha { 2 } else { 0 },
        replication,
        provider,
        region,
        zones,
        image: input.image,
        instance_type: input.instance_type,
        ssh_cidr: input.ssh_cidr,
        database,
        extensions,
        users,
        tags,
        ttl_secs,
        throwaway: input.throwaway.unwrap_or(false),
        restore: None,
    })
}

#[cfg(test)]
mod tests;
