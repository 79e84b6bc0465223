//! The files that configure an HA node: etcd's environment file and Patroni's config.
//!
//! Patroni's config is written as JSON, which YAML parsers read as YAML: serde does the
//! quoting, so no password or path can break the file. PostgreSQL's parameters and pg_hba rules
//! come from the same templates a single node uses (`templates/postgresql.conf.j2`,
//! `pg_hba.conf.j2`), so both kinds of instance are tuned and locked down alike.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::spec::Replication;

/// Ports of the HA services (etcd's and Patroni's defaults).
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const PATRONI_API_PORT: u16 = 8008;

/// Where Patroni's config lives on a node (the Debian package's `patroni.service` reads it).
pub const PATRONI_CONF: &str = "/etc/patroni/config.yml";
/// The environment file the Debian package's `etcd.service` reads.
pub const ETCD_ENV: &str = "/etc/default/etcd";

const TLS: &str = "/etc/dbctl/tls";
/// etcd runs as user `etcd`: it reads its own copy of the node's certificate and key.
const ETCD_TLS: &str = "/etc/dbctl/etcd";

/// One member of the cluster: its node name and private address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: String,
}

/// etcd's settings for `me` in a cluster of `members` (every node runs one member): peer and
/// client traffic TLS with certificates from dbctl's CA, client certificates required (only
/// the nodes hold one), timings loose enough for software-emulated VMs.
pub fn etcd_env(cluster_token: &str, me: &Member, members: &[Member]) -> String {
    let peers: Vec<String> = members
        .iter()
        .map(|m| format!("{}=https://{}:{ETCD_PEER_PORT}", m.name, m.address))
        .collect();
    let a = &me.address;
    let lines = [
        "# Written by dbctl: this node's member of the instance's etcd cluster (Patroni's DCS)."
            .to_string(),
        format!("ETCD_NAME={}", me.name),
        "ETCD_DATA_DIR=/var/lib/etcd/dbctl".to_string(),
        format!("ETCD_LISTEN_PEER_URLS=https://{a}:{ETCD_PEER_PORT}"),
        format!(
            "ETCD_LISTEN_CLIENT_URLS=https://{a}:{ETCD_CLIENT_PORT},https://127.0.0.1:{ETCD_CLIENT_PORT}"
        ),
        format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{a}:{ETCD_PEER_PORT}"),
        format!("ETCD_ADVERTISE_CLIENT_URLS=https://{a}:{ETCD_CLIENT_PORT}"),
        format!("ETCD_INITIAL_CLUSTER={}", peers.join(",")),
        "ETCD_INITIAL_CLUSTER_STATE=new".to_string(),
        format!("ETCD_INITIAL_CLUSTER_TOKEN={cluster_token}"),
        format!("ETCD_CERT_FILE={ETCD_TLS}/server.crt"),
        format!("ETCD_KEY_FILE={ETCD_TLS}/server.key"),
        format!("ETCD_TRUSTED_CA_FILE={ETCD_TLS}/ca.crt"),
        "ETCD_CLIENT_CERT_AUTH=true".to_string(),
        format!("ETCD_PEER_CERT_FILE={ETCD_TLS}/server.crt"),
        format!("ETCD_PEER_KEY_FILE={ETCD_TLS}/server.key"),
        format!("ETCD_PEER_TRUSTED_CA_FILE={ETCD_TLS}/ca.crt"),
        "ETCD_PEER_CLIENT_CERT_AUTH=true".to_string(),
        // Heartbeats every 100 ms and elections after 1 s (the defaults) turn a busy emulated
        // VM into leader churn; these still elect within seconds.
        "ETCD_HEARTBEAT_INTERVAL=500".to_string(),
        "ETCD_ELECTION_TIMEOUT=5000".to_string(),
        "ETCD_ENABLE_V2=false".to_string(),
    ];
    lines.join("\n") + "\n"
}

/// The secrets Patroni's config carries (the file is 0600, owned by postgres).
pub struct Credentials<'a> {
    /// Basic auth of Patroni's REST API (its unsafe endpoints).
    pub api_password: &'a str,
    pub replicator_password: &'a str,
    pub rewind_password: &'a str,
}

pub struct PatroniInput<'a> {
    /// The cluster's name in etcd: the instance id (unique, never reused).
    pub scope: &'a str,
    pub me: &'a Member,
    pub members: &'a [Member],
    pub major: u32,
    /// The rendered postgresql.conf of this instance: its parameters go to Patroni.
    pub postgresql_conf: &'a str,
    /// The rendered pg_hba.conf: its rules go to Patroni.
    pub pg_hba_conf: &'a str,
    pub replication: Replication,
    pub credentials: Credentials<'a>,
}

/// Parameters Patroni sets itself, or that would fight it.
const PATRONI_OWNS: &[&str] = &["listen_addresses", "port", "hot_standby"];

/// `key = value` lines of a postgresql.conf, quotes removed (YAML/JSON values are strings).
pub fn parameters(conf: &str) -> BTreeMap<String, String> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .filter(|(k, _)| !PATRONI_OWNS.contains(&k.as_str()))
        .collect()
}

/// The rule lines of a pg_hba.conf.
pub fn hba_rules(hba: &str) -> Vec<String> {
    hba.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Patroni's config for one node.
///
/// - DCS: etcd's v3 API on every member, over TLS with this node's certificate.
/// - REST API: TLS, client certificate required (only nodes hold one), unsafe endpoints only
///   from members and the node itself, with basic auth. Reachable only inside the network.
/// - Cluster-wide (bootstrap `dcs`): synchronous mode unless the spec asks for async, slots,
///   pg_rewind (data checksums are on, so no wal_log_hints), and a member whose rewind fails
///   or whose timeline diverged is rebuilt from the leader rather than left broken.
/// - The superuser connects over the local socket by peer authentication (no password exists).
pub fn patroni_config(i: &PatroniInput<'_>) -> Value {
    let tls = |f: &str| format!("{TLS}/{f}");
    let mut params = parameters(i.postgresql_conf);
    params.insert(
        "unix_socket_directories".into(),
        "/var/run/postgresql".into(),
    );
    params.insert("synchronous_commit".into(), "on".into());
    let sync = i.replication == Replication::Sync;
    let etcd_hosts: Vec<String> = i
        .members
        .iter()
        .map(|m| format!("{}:{ETCD_CLIENT_PORT}", m.address))
        .collect();
    let conn_tls = json!({ "sslmode": "verify-full", "sslrootcert": tls("ca.crt") });
    let with_tls = |user: &str, password: &str| {
        let mut v = json!({ "username": user, "password": password });
        v.as_object_mut()
            .unwrap()
            .extend(conn_tls.as_object().unwrap().clone());
        v
    };
    let data_dir = format!("/pgdata/{}/main", i.major);
    json!({
        "scope": i.scope,
        "namespace": "/dbctl/",
        "name": i.me.name,
        "restapi": {
            "listen": format!("0.0.0.0:{PATRONI_API_PORT}"),
            "connect_address": format!("{}:{PATRONI_API_PORT}", i.me.address),
            "certfile": tls("server.crt"),
            "keyfile": tls("server.key"),
            "cafile": tls("ca.crt"),
            "verify_client": "required",
            "allowlist": ["127.0.0.1/32"],
            "allowlist_include_members": true,
            "authentication": { "username": "dbctl", "password": i.credentials.api_password },
        },
        "ctl": {
            "certfile": tls("server.crt"),
            "keyfile": tls("server.key"),
            "cacert": tls("ca.crt"),
        },
        "etcd3": {
            "hosts": etcd_hosts,
            "protocol": "https",
            "cacert": tls("ca.crt"),
            "cert": tls("server.crt"),
            "key": tls("server.key"),
        },
        "bootstrap": {
            "dcs": {
                "ttl": 30,
                "loop_wait": 10,
                "retry_timeout": 10,
                "maximum_lag_on_failover": 1_048_576,
                "synchronous_mode": sync,
                "synchronous_node_count": 1,
                "postgresql": {
                    "use_pg_rewind": true,
                    "use_slots": true,
                    "remove_data_directory_on_rewind_failure": true,
                    "remove_data_directory_on_diverged_timelines": true,
                    "parameters": params,
                },
            },
            "initdb": [
                "data-checksums",
                { "encoding": "UTF8" },
                { "auth-local": "peer" },
                { "auth-host": "scram-sha-256" },
            ],
        },
        "postgresql": {
            "listen": "0.0.0.0:5432",
            "connect_address": format!("{}:5432", i.me.address),
            "data_dir": data_dir,
            "bin_dir": format!("/usr/lib/postgresql/{}/bin", i.major),
            "pgpass": "/var/lib/postgresql/.pgpass.patroni",
            "use_unix_socket": true,
            "authentication": {
                "superuser": { "username": "postgres" },
                "replication": with_tls(super::REPLICATOR, i.credentials.replicator_password),
                "rewind": with_tls(super::REWIND, i.credentials.rewind_password),
            },
            "parameters": { "unix_socket_directories": "/var/run/postgresql" },
            "pg_hba": hba_rules(i.pg_hba_conf),
            "callbacks": { "on_role_change": "/usr/local/lib/dbctl/on-role-change" },
            "basebackup": [{ "checkpoint": "fast" }],
        },
        "tags": { "nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false },
    })
}

/// The config file's text: a comment, then the JSON (which YAML reads as is).
pub fn patroni_config_text(i: &PatroniInput<'_>) -> String {
    format!(
        "# Written by dbctl for member {} of cluster {}. Holds passwords: 0600, postgres.\n{}\n",
        i.me.name,
        i.scope,
        serde_json::to_string_pretty(&patroni_config(i)).expect("json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        (1..=3)
            .map(|i| Member {
                name: format!("node-{i}"),
                address: format!("10.77.0.{}", 9 + i),
            })
            .collect()
    }

    #[test]
    fn etcd_members_know_each_other_and_require_client_certificates() {
        let m = members();
        let env = etcd_env("inst-1", &m[1], &m);
        assert!(env.contains("ETCD_NAME=node-2\n"));
        assert!(env.contains("ETCD_INITIAL_CLUSTER=node-1=https://10.77.0.10:2380,node-2=https://10.77.0.11:2380,node-3=https://10.77.0.12:2380\n"));
        assert!(
            env.contains(
                "ETCD_LISTEN_CLIENT_URLS=https://10.77.0.11:2379,https://127.0.0.1:2379\n"
            )
        );
        assert!(
            env.contains("ETCD_CLIENT_CERT_AUTH=true\n")
                && env.contains("ETCD_PEER_CLIENT_CERT_AUTH=true\n")
        );
        assert!(!env.contains("http://"));
    }

    fn input<'a>(m: &'a [Member], conf: &'a str, hba: &'a str, r: Replication) -> PatroniInput<'a> {
        PatroniInput {
            scope: "inst-1",
            me: &m[0],
            members: m,
            major: 15,
            postgresql_conf: conf,
            pg_hba_conf: hba,
            replication: r,
            credentials: Credentials {
                api_password: "api'pw\"x",
                replicator_password: "rep",
                rewind_password: "rew",
            },
        }
    }

    #[test]
    fn patroni_gets_the_tuned_parameters_and_locked_down_access() {
        let m = members();
        let t = crate::postgres::tuning::tune(1024, 1, 10);
        let conf = crate::postgres::config::postgresql_conf(&crate::postgres::config::ConfInput {
            instance: "db",
            node: "node-1",
            memory_mib: 1024,
            vcpus: 1,
            tuning: &t,
            tls_dir: "/etc/dbctl/tls",
            extensions: &["pg_stat_statements".into()],
            archive: true,
        });
        let hba = crate::postgres::config::pg_hba_conf("10.77.0.0/24", &["10.77.0.0/24".into()]);
        let c = patroni_config(&input(&m, &conf, &hba, Replication::Sync));
        let p = &c["bootstrap"]["dcs"]["postgresql"]["parameters"];
        assert_eq!(p["shared_buffers"], "256MB");
        assert_eq!(p["max_slot_wal_keep_size"], "2560MB");
        assert_eq!(p["ssl_cert_file"], "/etc/dbctl/tls/server.crt");
        assert_eq!(p["shared_preload_libraries"], "pg_stat_statements");
        assert!(p.get("listen_addresses").is_none() && p.get("port").is_none());
        assert_eq!(c["bootstrap"]["dcs"]["synchronous_mode"], true);
        assert_eq!(c["bootstrap"]["initdb"][0], "data-checksums");
        assert_eq!(c["restapi"]["verify_client"], "required");
        assert_eq!(c["etcd3"]["protocol"], "https");
        assert_eq!(c["etcd3"]["hosts"].as_array().unwrap().len(), 3);
        assert_eq!(
            c["postgresql"]["authentication"]["replication"]["sslmode"],
            "verify-full"
        );
        let rules: Vec<&str> = c["postgresql"]["pg_hba"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("hostssl replication replicator 10.77.0.0/24"))
        );
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("hostssl replication replicator 127.0.0.1/32")),
            "Patroni's own timeline check connects to localhost: {rules:?}"
        );
        assert!(rules.iter().all(|r| !r.contains("trust")));
        let async_ = patroni_config(&input(&m, &conf, &hba, Replication::Async));
        assert_eq!(async_["bootstrap"]["dcs"]["synchronous_mode"], false);
    }

    #[test]
    fn the_config_text_is_yaml_with_quoted_secrets() {
        let m = members();
        let text = patroni_config_text(&input(&m, "", "", Replication::Sync));
        assert!(text.starts_with("# Written by dbctl"));
        // A password with quotes stays one JSON string.
        let json: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        assert_eq!(json["restapi"]["authentication"]["password"], "api'pw\"x");
    }
}
