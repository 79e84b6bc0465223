//! The database roles dbctl itself creates or relies on: one list, used by the code that
//! creates them and by spec validation, so a user role can never collide with one of them
//! (`--user prometheus` would otherwise make the exporter's role the database owner).

/// The superuser; reached only over the local socket by peer authentication (no password).
pub const SUPERUSER: &str = "postgres";
/// Streaming replication (HA): clones and WAL receivers.
pub const REPLICATOR: &str = "replicator";
/// `pg_rewind` of a former leader (HA).
pub const REWIND: &str = "rewind";
/// The postgres exporter: a `pg_monitor` member, peer-authenticated as OS user prometheus.
pub const MONITOR: &str = "prometheus";

/// Every role above, plus the names PostgreSQL reserves.
pub const RESERVED: &[&str] = &[SUPERUSER, REPLICATOR, REWIND, MONITOR, "public"];

/// Roles that log in over the local socket by peer authentication; every other role must
/// come over TLS with SCRAM (pg_hba.conf rejects it locally).
pub const PEER: &[&str] = &[SUPERUSER, MONITOR];

/// Why `name` cannot be an application role, if it cannot.
pub fn reserved_reason(name: &str) -> Option<String> {
    let prefixes = ["pg_", "dbctl"];
    if RESERVED.contains(&name) || prefixes.iter().any(|p| name.starts_with(p)) {
        Some(format!(
            "{name:?} is reserved ({}, pg_*, dbctl*)",
            RESERVED.join(", ")
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_dbctl_makes_is_reserved() {
        for role in [
            SUPERUSER, REPLICATOR, REWIND, MONITOR, "public", "pg_x", "dbctl_x",
        ] {
            assert!(reserved_reason(role).is_some(), "{role}");
        }
        assert!(reserved_reason("app").is_none());
        assert!(
            reserved_reason("monitor").is_none(),
            "not a role dbctl makes"
        );
    }
}
