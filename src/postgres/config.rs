//! Rendering postgresql.conf and pg_hba.conf from `templates/`.

use minijinja::{Environment, context};

use super::tuning::Tuning;

const POSTGRESQL_CONF: &str = include_str!("../../templates/postgresql.conf.j2");
const PG_HBA_CONF: &str = include_str!("../../templates/pg_hba.conf.j2");

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.add_template("postgresql.conf", POSTGRESQL_CONF)
        .expect("template parses");
    env.add_template("pg_hba.conf", PG_HBA_CONF)
        .expect("template parses");
    env
}

pub struct ConfInput<'a> {
    pub instance: &'a str,
    pub node: &'a str,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub tuning: &'a Tuning,
    pub tls_dir: &'a str,
    pub extensions: &'a [String],
    /// WAL archiving (`archive_mode`): off for a throwaway instance, which has no backups.
    /// With it on and no `archive_command`, PostgreSQL would keep every WAL segment.
    pub archive: bool,
}

/// Extensions that must be preloaded to work.
const PRELOAD: &[&str] = &["pg_stat_statements"];

pub fn postgresql_conf(c: &ConfInput<'_>) -> String {
    let preload: Vec<&str> = c
        .extensions
        .iter()
        .map(String::as_str)
        .filter(|e| PRELOAD.contains(e))
        .collect();
    env()
        .get_template("postgresql.conf")
        .and_then(|t| {
            t.render(context! {
                instance => c.instance, node => c.node, memory_mib => c.memory_mib, vcpus => c.vcpus,
                t => c.tuning, tls_dir => c.tls_dir, preload => preload.join(","),
                archive => c.archive,
            })
        })
        .expect("postgresql.conf renders")
}

pub fn pg_hba_conf(vpc_cidr: &str, client_cidrs: &[String]) -> String {
    env()
        .get_template("pg_hba.conf")
        .and_then(|t| {
            t.render(context! {
                vpc_cidr => vpc_cidr,
                client_cidrs => client_cidrs,
                peer_roles => super::roles::PEER,
            })
        })
        .expect("pg_hba.conf renders")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_carries_tuning_tls_and_preload() {
        let t = super::super::tuning::tune(1024, 1, 10);
        let input = ConfInput {
            instance: "db",
            node: "primary",
            memory_mib: 1024,
            vcpus: 1,
            tuning: &t,
            tls_dir: "/etc/dbctl/tls",
            extensions: &["pgcrypto".into(), "pg_stat_statements".into()],
            archive: true,
        };
        let conf = postgresql_conf(&input);
        assert!(conf.contains("shared_buffers = 256MB\n"));
        assert!(
            conf.contains("ssl = on\n")
                && conf.contains("ssl_key_file = '/etc/dbctl/tls/server.key'")
        );
        assert!(conf.contains("shared_preload_libraries = 'pg_stat_statements'"));
        assert!(conf.contains("wal_level = replica"));
        assert!(conf.contains("archive_mode = on\n"));
        let throwaway = postgresql_conf(&ConfInput {
            archive: false,
            ..input
        });
        assert!(throwaway.contains("archive_mode = off\n"), "{throwaway}");
    }

    #[test]
    fn only_the_superuser_and_the_exporter_log_in_locally() {
        let hba = pg_hba_conf("10.77.0.0/24", &["10.77.0.0/24".into()]);
        let local: Vec<Vec<&str>> = hba
            .lines()
            .filter(|l| l.starts_with("local"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            local,
            [
                vec!["local", "all", "postgres", "peer"],
                vec!["local", "all", "prometheus", "peer"],
                vec!["local", "all", "all", "reject"],
            ],
            "{hba}"
        );
    }

    #[test]
    fn hba_is_tls_and_scram_only() {
        let hba = pg_hba_conf(
            "10.77.0.0/24",
            &["10.77.0.0/24".into(), "10.0.2.2/32".into()],
        );
        let rules: Vec<&str> = hba
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert!(
            rules.iter().all(|r| r.starts_with("local")
                || r.starts_with("hostssl")
                || r.ends_with("reject")),
            "{hba}"
        );
        assert!(
            rules
                .iter()
                .filter(|r| r.starts_with("hostssl"))
                .all(|r| r.ends_with("scram-sha-256"))
        );
        assert!(
            !hba.contains("trust")
                && !hba.contains(" md5")
                && !hba.contains("0.0.0.0/0               scram")
        );
        assert!(hba.contains("10.0.2.2/32"));
    }
}
